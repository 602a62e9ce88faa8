//! History: room sessions and participant sessions derived from the
//! timeline, and usage figures over them.
//!
//! - the projector (here) follows the timeline by cursor and applies each
//!   event to the history's tables (`crate::store::history`), its
//!   checkpoint moved in the same transaction: exactly once, on any number
//!   of replicas sharing one PostgreSQL. It is woken when the timeline's
//!   tailer moves (an append here, another replica's NOTIFY, or the
//!   tailer's poll), at most once per `history.project_interval`: the
//!   intake never waits for it, and a busy moment's events are applied
//!   together;
//! - [`figures`]: a room session's figures from its participant sessions;
//! - [`usage`]: GetUsage's buckets in a time zone;
//! - the pruner (here) deletes what `history.retention` no longer keeps;
//! - [`export`]: `roomcontrol history export`, CSV or JSON.

pub mod export;
pub mod figures;
pub mod profile;
pub mod usage;

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::HistoryConfig;
use crate::events::Timeline;
use crate::store::Store;

/// Most events one projection transaction applies: on SQLite the
/// transaction holds the write lock, which the appender waits for.
pub const PROJECT_BATCH: u32 = 250;

/// Most room sessions the pruner deletes in one transaction.
const PRUNE_CHUNK: u32 = 1000;

/// Starts the projector and the pruner; they stop when their handles are
/// aborted.
pub fn start(timeline: &Timeline, config: &HistoryConfig) -> Vec<tokio::task::AbortHandle> {
    let store = timeline.store().clone();
    vec![
        tokio::spawn(project_loop(store.clone(), timeline.tailed(), config.project_interval)).abort_handle(),
        tokio::spawn(prune_loop(store, config.retention, config.prune_interval)).abort_handle(),
    ]
}

/// Brings the history up to the timeline's newest event; returns how many
/// events it applied.
pub async fn catch_up(store: &Store) -> Result<usize, crate::store::StoreError> {
    let mut total = 0;
    loop {
        let applied = store.project_history(PROJECT_BATCH).await?;
        total += applied;
        if applied < PROJECT_BATCH as usize {
            return Ok(total);
        }
    }
}

async fn project_loop(store: Store, mut tailed: watch::Receiver<u64>, interval: Duration) {
    let mut failing = false;
    loop {
        let started = tokio::time::Instant::now();
        match catch_up(&store).await {
            Ok(_) => failing = false,
            Err(error) => {
                // Logged once per run of failures; the next wake-up (at
                // the latest the tailer's poll) tries again.
                if !failing {
                    tracing::error!(%error, "cannot bring the history up to date with the timeline; retrying");
                }
                failing = true;
            }
        }
        if tailed.changed().await.is_err() {
            return;
        }
        // What arrives meanwhile is applied with it, in the next pass.
        tokio::time::sleep_until(started + interval).await;
    }
}

async fn prune_loop(store: Store, retention: Duration, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let cutoff = SystemTime::now().checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let before = crate::events::unix_micros(cutoff);
        let mut total = 0;
        loop {
            match store.prune_history(before, PRUNE_CHUNK).await {
                Ok(0) => break,
                Ok(deleted) => total += deleted,
                Err(error) => {
                    tracing::error!(%error, "cannot prune the history");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(room_sessions = total, retention = %crate::duration::display(retention), "pruned the history");
        }
    }
}
