//! Appending to the timeline and following it.
//!
//! - The appender is one task: callers hand it an event and wait for its
//!   answer; it takes everything queued (up to [`MAX_BATCH`]) into one
//!   transaction, so under load one commit carries many events (group
//!   commit), and answers each caller only once the commit returned.
//! - The tailer is one task per process: woken by the appender (and, on
//!   PostgreSQL, by every replica's NOTIFY, or by its poll should a wake-up
//!   be lost), it reads the store's new events in cursor order and
//!   publishes them on a broadcast channel. Watchers subscribe to that
//!   channel; a watcher that falls more than `events.watch_buffer` events
//!   behind loses its place (and is cut off by `watch`), never slowing the
//!   appender or the other watchers.
//! - The pruner deletes what is older than `events.retention`.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use super::EncodedStruct;
use crate::config::EventsConfig;
use crate::metrics::Metrics;
use crate::proto::v1::Event;
use crate::store::{Filter, NewEvent, Presence, Store, StoreError};

/// The tag of `Event.detail`, its last field.
const DETAIL: u32 = 12;

/// Most events in one append transaction.
pub const MAX_BATCH: usize = 512;

/// Most events the tailer reads, and publishes, at once.
const TAIL_PAGE: u32 = 1000;

/// Most events the pruner deletes in one transaction.
const PRUNE_CHUNK: u32 = 10_000;

/// Why an event could not be appended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TimelineError {
    #[error("the event store failed: {0}")]
    Store(String),
    #[error("the timeline is shutting down")]
    Closed,
}

/// What became of an appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this cursor.
    Stored(u64),
    /// An event with its id was stored before: nothing changed.
    Duplicate,
}

/// An event as the live feed carries it: encoded once, as the gRPC frame
/// of the `WatchEventsResponse` a watcher sends, and shared by every
/// watcher. The frames of the events published together lie end to end in
/// one buffer, so a watcher that sends them all sends that buffer as it is.
#[derive(Debug)]
pub struct LiveEvent {
    pub cursor: u64,
    pub kind: String,
    pub room: String,
    /// The gRPC frames of every event published with this one, end to end.
    pub frames: Bytes,
    /// This event's frame in `frames`.
    pub range: Range<usize>,
}

/// Length of a gRPC frame's prefix: a compression flag and a big-endian
/// u32 length.
pub const FRAME_PREFIX: usize = 5;

/// Makes room for a frame of a `len`-byte message and writes its prefix
/// (not compressed, the length).
fn put_prefix(dst: &mut BytesMut, len: usize) {
    dst.reserve(FRAME_PREFIX + len);
    dst.put_u8(0);
    dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Writes `message` as one gRPC frame (uncompressed).
pub fn put_frame(dst: &mut BytesMut, message: &impl Message) {
    let len = message.encoded_len();
    put_prefix(dst, len);
    // Cannot fail: the space was reserved.
    let _ = message.encode(dst);
}

/// `message` as one gRPC frame.
pub fn frame(message: &impl Message) -> Bytes {
    let mut dst = BytesMut::new();
    put_frame(&mut dst, message);
    dst.freeze()
}

/// Writes the gRPC frame of `WatchEventsResponse { event }` for a stored
/// event, from its stored bytes without decoding them: the event's field 1
/// (its cursor, which the stored bytes leave unset) and then the stored
/// fields, which start at field 2. The message is what encoding the decoded
/// event with its cursor gives, byte for byte.
pub fn put_event_frame(dst: &mut BytesMut, cursor: u64, payload: &[u8]) {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    // The `event` field of WatchEventsResponse and the `cursor` of Event.
    const EVENT: u32 = 1;
    const CURSOR: u32 = 1;
    let cursor_len = if cursor == 0 { 0 } else { key_len(CURSOR) + encoded_len_varint(cursor) };
    let event_len = cursor_len + payload.len();
    let len = key_len(EVENT) + encoded_len_varint(event_len as u64) + event_len;
    put_prefix(dst, len);
    encode_key(EVENT, WireType::LengthDelimited, dst);
    encode_varint(event_len as u64, dst);
    if cursor != 0 {
        encode_key(CURSOR, WireType::Varint, dst);
        encode_varint(cursor, dst);
    }
    dst.extend_from_slice(payload);
}

/// How the appender wakes the tailer: with the newest cursor this process
/// has committed.
struct Wake {
    notify: Notify,
    appended: AtomicU64,
}

struct Pending {
    event: NewEvent,
    done: oneshot::Sender<Result<Appended, TimelineError>>,
}

/// The timeline of one process: shared by the intake, the handlers and the
/// watchers.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    appends: mpsc::Sender<Pending>,
    live: broadcast::Sender<Arc<LiveEvent>>,
    /// The newest cursor the tailer has published.
    tailed: watch::Receiver<u64>,
    config: EventsConfig,
    /// The tailer and the pruner, stopped when the last handle goes (the
    /// appender stops by itself when no one can append any more).
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline").field("store", &self.inner.store).finish_non_exhaustive()
    }
}

impl Timeline {
    /// Starts the appender, the tailer and the pruner on `store`.
    pub async fn start(store: Store, config: &EventsConfig, metrics: Arc<Metrics>) -> Result<Timeline, StoreError> {
        let newest = store.latest_cursor().await?;
        metrics.set_timeline_position(newest);
        let (appends, queue) = mpsc::channel(MAX_BATCH * 8);
        // A watcher that had taken everything before a publication has
        // room for all of it: it is cut off only when it falls
        // `watch_buffer` events behind beyond that.
        let page = publication_size(config.watch_buffer);
        let (live, _) = broadcast::channel(config.watch_buffer + page as usize);
        let (tailed_tx, tailed) = watch::channel(newest);
        let wake = Arc::new(Wake { notify: Notify::new(), appended: AtomicU64::new(newest) });
        tokio::spawn(append_loop(store.clone(), queue, wake.clone(), metrics.clone()));
        let tasks = vec![
            tokio::spawn(tail_loop(
                store.clone(),
                newest,
                live.clone(),
                tailed_tx,
                wake,
                Pace { poll: config.poll_interval, publish: config.publish_interval, page },
                metrics,
            ))
            .abort_handle(),
            tokio::spawn(prune_loop(store.clone(), config.retention, config.prune_interval)).abort_handle(),
        ];
        Ok(Timeline { inner: Arc::new(Inner { store, appends, live, tailed, config: config.clone(), tasks }) })
    }

    /// Stops following and pruning, and closes the store once the queries
    /// in flight are done (the end of the drain).
    pub async fn shutdown(&self) {
        for task in &self.inner.tasks {
            task.abort();
        }
        self.inner.store.close().await;
    }

    /// Appends one event and waits until it is durably stored.
    pub async fn append(&self, event: Event, presence: Presence) -> Result<Appended, TimelineError> {
        let payload = event.encode_to_vec();
        self.append_encoded(event, payload, presence).await
    }

    /// [`Timeline::append`] for an event whose `detail` comes encoded
    /// already (`event.detail` is left unset): the stored bytes are those
    /// of the event with that detail, as `append` would store them.
    pub async fn append_with_detail(
        &self,
        event: Event,
        detail: &EncodedStruct,
        presence: Presence,
    ) -> Result<Appended, TimelineError> {
        debug_assert!(event.detail.is_none(), "the detail is the encoded one");
        let mut payload = Vec::with_capacity(event.encoded_len() + detail.field_len(DETAIL));
        // `detail` is the last field of an Event: prost writes the fields
        // in the order of their tags, so it goes after the others.
        event.encode_raw(&mut payload);
        detail.encode_field(DETAIL, &mut payload);
        self.append_encoded(event, payload, presence).await
    }

    async fn append_encoded(
        &self,
        event: Event,
        payload: Vec<u8>,
        presence: Presence,
    ) -> Result<Appended, TimelineError> {
        let new = NewEvent {
            id: event.id,
            kind: event.r#type,
            room: event.room.map(|room| room.name).unwrap_or_default(),
            received_at: event
                .received_at
                .and_then(|at| SystemTime::try_from(at).ok())
                .map_or_else(|| super::unix_micros(SystemTime::now()), super::unix_micros),
            payload,
            presence,
        };
        let (done, answer) = oneshot::channel();
        self.inner.appends.send(Pending { event: new, done }).await.map_err(|_| TimelineError::Closed)?;
        answer.await.map_err(|_| TimelineError::Closed)?
    }

    /// The live feed: every event stored from now on, in cursor order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.inner.live.subscribe()
    }

    /// The newest cursor published on the live feed.
    pub fn tailed(&self) -> watch::Receiver<u64> {
        self.inner.tailed.clone()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &EventsConfig {
        &self.inner.config
    }
}

/// Decodes a stored event, with its cursor.
pub fn decode(cursor: u64, payload: &[u8]) -> Result<Event, StoreError> {
    let mut event = Event::decode(payload).map_err(|source| StoreError::Corrupt { cursor, source })?;
    event.cursor = cursor;
    Ok(event)
}

async fn append_loop(store: Store, mut queue: mpsc::Receiver<Pending>, wake: Arc<Wake>, metrics: Arc<Metrics>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<NewEvent> = Vec::with_capacity(MAX_BATCH);
    let mut answers = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        for Pending { event, done } in batch.drain(..) {
            events.push(event);
            answers.push(done);
        }
        let started = std::time::Instant::now();
        let stored = store.append(&mut events).await;
        events.clear();
        match stored {
            Ok(cursors) => {
                metrics.events_appended(cursors.iter().filter(|cursor| cursor.is_some()).count(), started.elapsed());
                if let Some(newest) = cursors.iter().flatten().max() {
                    wake.appended.fetch_max(*newest, Ordering::Release);
                }
                for (done, cursor) in answers.drain(..).zip(cursors) {
                    let _ = done.send(Ok(cursor.map_or(Appended::Duplicate, Appended::Stored)));
                }
                wake.notify.notify_one();
            }
            Err(error) => {
                tracing::error!(%error, events = answers.len(), "cannot append to the timeline");
                let error = TimelineError::Store(error.to_string());
                for done in answers.drain(..) {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// How often the tailer reads the store unasked (a shared store), how
/// often it publishes at most, and how many events one publication holds.
struct Pace {
    poll: Duration,
    publish: Duration,
    page: u32,
}

/// Most events one publication holds: a page of the store, and never more
/// than a watcher may fall behind.
fn publication_size(watch_buffer: usize) -> u32 {
    u32::try_from(watch_buffer).unwrap_or(u32::MAX).clamp(1, TAIL_PAGE)
}

async fn tail_loop(
    store: Store,
    mut position: u64,
    live: broadcast::Sender<Arc<LiveEvent>>,
    tailed: watch::Sender<u64>,
    wake: Arc<Wake>,
    pace: Pace,
    metrics: Arc<Metrics>,
) {
    let Pace { poll: poll_interval, publish: publish_interval, page } = pace;
    // Before this, the live feed publishes nothing new: what is stored in
    // between reaches the watchers together, one write per stream instead
    // of one per commit.
    let mut next_publish = tokio::time::Instant::now();
    let mut listener = match &store {
        Store::Postgres(pool) => match crate::store::postgres::listen(pool).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for other replicas' events; polling instead");
                None
            }
        },
        Store::Sqlite(..) => None,
    };
    let shared = store.is_shared();
    let mut failing = false;
    // After a LISTEN error, the listener rests until the next poll: a
    // connection that fails at once (the database gone, the pool closed)
    // must not turn this loop into a spin.
    let mut listening = true;
    // The last publication was a full page: more is stored.
    let mut more = false;
    loop {
        // Woken by this process's appender only: what is new is what it
        // committed, up to `wake.appended`.
        let mut appended_here = false;
        if more {
            // The rest of it, once the watchers have taken the last page
            // (the pause below, or at least their turn).
            if publish_interval.is_zero() {
                tokio::task::yield_now().await;
            }
        } else {
            tokio::select! {
            () = wake.notify.notified() => appended_here = true,
            notification = async { listener.as_mut()?.recv().await.err() }, if listener.is_some() && listening => {
                if let Some(error) = notification {
                    tracing::warn!(%error, "lost the LISTEN connection; it reconnects, the poll covers the gap");
                    listening = false;
                }
            }
            () = tokio::time::sleep(poll_interval), if shared || failing || !listening => listening = true,
            }
        }
        if appended_here && !failing {
            // Read after the commits it counts, and before asking whether
            // anyone watches: as in `tail`, a watcher that subscribes later
            // reads the store itself, and finds everything up to it there.
            let appended = wake.appended.load(Ordering::Acquire);
            if live.receiver_count() == 0 {
                // No one to publish to: the newest cursor, without asking
                // the store (on PostgreSQL, other replicas' events arrive
                // with their NOTIFY or the poll, which do ask).
                position = position.max(appended);
                tailed.send_replace(position);
                metrics.set_timeline_position(position);
                continue;
            }
        }
        if !publish_interval.is_zero() && live.receiver_count() > 0 {
            tokio::time::sleep_until(next_publish).await;
        }
        let before = position;
        match tail(&store, &mut position, &live, page).await {
            Ok(full) => {
                failing = false;
                more = full;
                if position > before {
                    next_publish = tokio::time::Instant::now() + publish_interval;
                }
            }
            Err(error) => {
                if !failing {
                    tracing::error!(%error, "cannot read the timeline; retrying");
                }
                failing = true;
                more = false;
            }
        }
        tailed.send_replace(position);
        metrics.set_timeline_position(position);
    }
}

/// Publishes up to `most` of what was stored after `position`, moving it
/// on; true when that was a full page (more may be stored).
///
/// Whether anyone watches is asked after the store answered: a watcher
/// that subscribes later reads the store itself after subscribing, and
/// finds there everything this read found. So with no watcher the tailer
/// only learns the newest cursor, and reads and builds nothing.
async fn tail(
    store: &Store,
    position: &mut u64,
    live: &broadcast::Sender<Arc<LiveEvent>>,
    most: u32,
) -> Result<bool, StoreError> {
    let newest = store.latest_cursor().await?;
    if newest <= *position {
        return Ok(false);
    }
    if live.receiver_count() == 0 {
        *position = newest;
        return Ok(false);
    }
    let page = store.read_after(*position, most, &Filter::default()).await?;
    let full = page.len() == most as usize;
    let mut frames = BytesMut::with_capacity(page.iter().map(|stored| stored.payload.len() + 16).sum());
    let mut ranges = Vec::with_capacity(page.len());
    for stored in &page {
        let start = frames.len();
        put_event_frame(&mut frames, stored.cursor, &stored.payload);
        ranges.push(start..frames.len());
    }
    let frames = frames.freeze();
    for (stored, range) in page.into_iter().zip(ranges) {
        *position = stored.cursor;
        let event =
            LiveEvent { cursor: stored.cursor, kind: stored.kind, room: stored.room, frames: frames.clone(), range };
        // No receiver is not an error: the last watcher just left.
        let _ = live.send(Arc::new(event));
    }
    Ok(full)
}

async fn prune_loop(store: Store, retention: Duration, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let cutoff = SystemTime::now().checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let before = super::unix_micros(cutoff);
        let mut total = 0;
        loop {
            match store.prune(before, PRUNE_CHUNK).await {
                Ok(0) => break,
                Ok(deleted) => total += deleted,
                Err(error) => {
                    tracing::error!(%error, "cannot prune the timeline");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(events = total, retention = %crate::duration::display(retention), "pruned the timeline");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{EventRoom, WatchEventsResponse, watch_events_response};

    #[test]
    fn an_event_frame_is_the_grpc_frame_of_the_decoded_events_reply() {
        let event = Event {
            id: "EV_1".into(),
            r#type: "room_started".into(),
            room: Some(EventRoom { name: "standup".into(), sid: "RM_1".into() }),
            ..Default::default()
        };
        let payload = event.encode_to_vec();
        for cursor in [1, 127, 128, 300, u64::MAX] {
            let decoded = decode(cursor, &payload).unwrap();
            let reply = WatchEventsResponse { message: Some(watch_events_response::Message::Event(decoded)) };
            let mut written = BytesMut::new();
            put_event_frame(&mut written, cursor, &payload);
            assert_eq!(written, frame(&reply), "cursor {cursor}");
            let encoded = reply.encode_to_vec();
            assert_eq!(written[0], 0, "not compressed");
            assert_eq!(written[1..5], u32::try_from(encoded.len()).unwrap().to_be_bytes(), "the length");
            assert_eq!(written[5..], encoded, "cursor {cursor}");
        }
    }
}
