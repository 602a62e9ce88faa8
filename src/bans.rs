//! Bans: identities kept out of rooms, across replicas and old tokens.
//!
//! A ban lives in the store, written in the same transaction as its
//! timeline event (`Presence::Banned`), so every replica honours it. Each
//! replica keeps the bans in force in memory, for CreateToken and the
//! webhook intake to ask without a query: loaded at start, reloaded at once
//! after a ban or unban of its own, on every other replica's change
//! (PostgreSQL NOTIFY on `roomcontrol_bans`), and every `bans.refresh_interval`
//! should a notification be lost.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use prost::Message;

use crate::auth::RoomPatterns;
use crate::proto::v1::Ban;
use crate::store::{Store, StoreError};

/// The bans in force, as this replica last read them.
#[derive(Clone)]
pub struct Bans {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// By identity.
    in_force: RwLock<HashMap<String, Vec<Ban>>>,
    /// Held by every change of `in_force`: a reload (a store read, then a
    /// write) never interleaves with a change this replica just made, which
    /// would otherwise be lost behind a read from before its commit.
    changes: tokio::sync::Mutex<()>,
    refresher: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.lock().ok().and_then(|mut task| task.take()) {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Bans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bans").field("identities", &self.read().len()).finish_non_exhaustive()
    }
}

impl Bans {
    /// Loads the bans in force and keeps them fresh.
    pub async fn start(store: Store, refresh_interval: Duration) -> Result<Bans, StoreError> {
        let bans = Bans {
            inner: Arc::new(Inner {
                store,
                in_force: RwLock::new(HashMap::new()),
                changes: tokio::sync::Mutex::new(()),
                refresher: std::sync::Mutex::new(None),
            }),
        };
        bans.reload().await?;
        let weak = Arc::downgrade(&bans.inner);
        let task = tokio::spawn(refresh_loop(weak, refresh_interval));
        if let Ok(mut refresher) = bans.inner.refresher.lock() {
            *refresher = Some(task.abort_handle());
        }
        Ok(bans)
    }

    /// Reads the bans in force from the store.
    pub async fn reload(&self) -> Result<(), StoreError> {
        reload(&self.inner).await
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<Ban>>> {
        // A panic while holding the lock cannot leave the map half-written
        // (it is replaced whole): a poisoned lock is still good to read.
        self.inner.in_force.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ban in force that keeps `identity` out of `room`, if any.
    pub fn matching(&self, identity: &str, room: &str) -> Option<Ban> {
        let now = SystemTime::now();
        self.read().get(identity)?.iter().find(|ban| in_force(ban, now) && applies_to(ban, room)).cloned()
    }

    /// Adds a ban this replica just stored (others learn it from the store).
    pub async fn insert(&self, ban: Ban) {
        let _change = self.inner.changes.lock().await;
        let mut in_force = self.inner.in_force.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bans = in_force.entry(ban.identity.clone()).or_default();
        // A reload may have read it from the store already.
        if !bans.iter().any(|known| known.id == ban.id) {
            bans.push(ban);
        }
    }

    /// Drops a ban this replica just lifted.
    pub async fn remove(&self, id: &str) {
        let _change = self.inner.changes.lock().await;
        let mut in_force = self.inner.in_force.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for bans in in_force.values_mut() {
            bans.retain(|ban| ban.id != id);
        }
        in_force.retain(|_, bans| !bans.is_empty());
    }

    /// Every ban in force, newest first.
    pub fn list(&self) -> Vec<Ban> {
        let now = SystemTime::now();
        let mut bans: Vec<Ban> = self.read().values().flatten().filter(|ban| in_force(ban, now)).cloned().collect();
        bans.sort_by(|a, b| {
            let at = |ban: &Ban| ban.created_at.map(|at| (at.seconds, at.nanos)).unwrap_or_default();
            at(b).cmp(&at(a)).then_with(|| a.id.cmp(&b.id))
        });
        bans
    }

    /// The ban with this id, if in force.
    pub fn get(&self, id: &str) -> Option<Ban> {
        let now = SystemTime::now();
        self.read().values().flatten().find(|ban| ban.id == id && in_force(ban, now)).cloned()
    }
}

/// Whether a ban of `ban.room` (a name, a pattern or `*`) covers `room`.
pub fn applies_to(ban: &Ban, room: &str) -> bool {
    RoomPatterns::new(vec![ban.room.clone()]).allows(room)
}

/// Whether a ban's room is a pattern (or every room) rather than one name.
pub fn is_pattern(room: &str) -> bool {
    room.contains('*')
}

fn in_force(ban: &Ban, now: SystemTime) -> bool {
    match ban.expires_at.and_then(|at| SystemTime::try_from(at).ok()) {
        Some(expires) => expires > now,
        None => true,
    }
}

/// "until 2026-11-28T21:00:00Z" (to the second) or "until lifted".
pub fn until(ban: &Ban) -> String {
    match ban.expires_at {
        Some(at) => format!("until {}", prost_types::Timestamp { seconds: at.seconds, nanos: 0 }),
        None => "until lifted".to_owned(),
    }
}

async fn reload(inner: &Inner) -> Result<(), StoreError> {
    let _change = inner.changes.lock().await;
    let now = crate::events::unix_micros(SystemTime::now());
    let mut by_identity: HashMap<String, Vec<Ban>> = HashMap::new();
    for payload in inner.store.bans_in_force(now).await? {
        match Ban::decode(payload.as_slice()) {
            Ok(ban) => by_identity.entry(ban.identity.clone()).or_default().push(ban),
            Err(error) => tracing::error!(%error, "skipped a stored ban that cannot be decoded"),
        }
    }
    *inner.in_force.write().unwrap_or_else(std::sync::PoisonError::into_inner) = by_identity;
    Ok(())
}

async fn refresh_loop(inner: std::sync::Weak<Inner>, interval: Duration) {
    let store = match inner.upgrade() {
        Some(inner) => inner.store.clone(),
        None => return,
    };
    // On SQLite this process is the only writer: its own changes update
    // its memory, and there is nothing else to hear.
    let mut listener = match &store {
        Store::Postgres(pool) => match crate::store::postgres::listen_bans(pool).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for other replicas' bans; rereading them every events.poll_interval");
                None
            }
        },
        Store::Sqlite(..) => return,
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // After a LISTEN error, the listener rests until the next tick (see the
    // timeline's tailer).
    let mut listening = true;
    loop {
        tokio::select! {
            _ = ticks.tick() => listening = true,
            notification = async { listener.as_mut()?.recv().await.err() }, if listener.is_some() && listening => {
                if let Some(error) = notification {
                    tracing::warn!(%error, "lost the LISTEN connection for bans; it reconnects, the reload interval covers the gap");
                    listening = false;
                }
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        match reload(&inner).await {
            Ok(()) => failing = false,
            Err(error) => {
                if !failing {
                    tracing::error!(%error, "cannot reload the bans; keeping the last ones read");
                }
                failing = true;
            }
        }
    }
}
