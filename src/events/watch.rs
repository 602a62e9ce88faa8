//! ListEvents and WatchEvents.
//!
//! A watch never skips an event a client could have seen, and never sends
//! one twice: it subscribes to the live feed first, then reads the store
//! from its starting cursor until it has caught up, then takes the live
//! feed, dropping what it already sent (cursors at or below its position).
//! Every event of the live feed is published after the subscription or
//! was committed before the store read that follows it, so nothing falls
//! between the two.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use prost_types::Timestamp;
use tokio::sync::{broadcast, watch};
use tonic::Status;

use super::Timeline;
use super::timeline::{LiveEvent, decode, frame, put_event_frame};
use crate::api::{Admitted, convert};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::livekit::LiveKit;
use crate::metrics::Metrics;
use crate::proto::v1::watch_events_response::Message;
use crate::proto::v1::*;
use crate::store::Filter;

/// The default ListEvents page.
const DEFAULT_PAGE_SIZE: u32 = 100;

/// Events a replay reads at once.
const REPLAY_PAGE: u32 = 500;

const PAGE_TOKEN_PREFIX: &str = "after:";

/// The cursor in a page token; `None` for one this server never gave.
pub fn parse_page_token(token: &str) -> Option<u64> {
    token.strip_prefix(PAGE_TOKEN_PREFIX)?.parse().ok()
}

fn page_token(cursor: u64) -> String {
    format!("{PAGE_TOKEN_PREFIX}{cursor}")
}

/// The filters of a request, with the caller's room patterns.
struct Matcher {
    caller: Arc<Caller>,
    filter: Filter,
}

impl Matcher {
    fn new(caller: Arc<Caller>, rooms: Vec<String>, kinds: Vec<String>) -> Self {
        Self { caller, filter: Filter { rooms, kinds } }
    }

    /// Whether an event of type `kind` in `room` is one to send.
    fn matches(&self, room: &str, kind: &str) -> bool {
        (self.filter.rooms.is_empty() || self.filter.rooms.iter().any(|name| name == room))
            && (self.filter.kinds.is_empty() || self.filter.kinds.iter().any(|wanted| wanted == kind))
            && self.caller.may_touch(room)
    }
}

/// OUT_OF_RANGE when events after `since` were pruned, or when `since` is
/// beyond the newest cursor (a cursor from another store: waiting for the
/// store to reach it would skip every event until then).
async fn check_cursor(timeline: &Timeline, since: u64) -> Result<(), ApiError> {
    let pruned = timeline.store().pruned_through().await?;
    if since < pruned {
        return Err(ApiError::Pruned { asked: since, oldest: pruned });
    }
    let newest = timeline.store().latest_cursor().await?;
    if since > newest {
        return Err(ApiError::FutureCursor { asked: since, newest });
    }
    Ok(())
}

pub(crate) async fn list_events(
    timeline: &Timeline,
    call: Admitted<ListEventsRequest>,
) -> Result<ListEventsResponse, ApiError> {
    let Admitted { caller, request, .. } = call;
    let since = match parse_page_token(&request.page_token) {
        Some(cursor) => cursor.max(request.since_cursor),
        None => request.since_cursor,
    };
    check_cursor(timeline, since).await?;
    let size = u32::try_from(request.page_size).ok().filter(|size| *size > 0).unwrap_or(DEFAULT_PAGE_SIZE);
    let matcher = Matcher::new(caller, request.rooms, request.types);
    let page = timeline.store().read_after(since, size, &matcher.filter).await?;
    let full = page.len() == size as usize;
    let mut cursor = since;
    let mut events = Vec::with_capacity(page.len());
    for stored in page {
        cursor = stored.cursor;
        if matcher.matches(&stored.room, &stored.kind) {
            events.push(decode(stored.cursor, &stored.payload)?);
        }
    }
    Ok(ListEventsResponse { events, next_page_token: if full { page_token(cursor) } else { String::new() }, cursor })
}

/// What a watch needs besides its request.
#[derive(Clone)]
pub struct WatchContext {
    pub timeline: Timeline,
    pub livekit: Arc<LiveKit>,
    pub metrics: Arc<Metrics>,
    /// Turns true when the server drains: streams end with UNAVAILABLE and
    /// the cursor to resume from on another replica.
    pub closing: watch::Receiver<bool>,
}

/// The stream WatchEvents answers with: each item one or more replies as
/// gRPC frames (length-prefixed `WatchEventsResponse`s, end to end), so an
/// event is encoded once however many watch it, and the events a watcher
/// takes at once leave in one write (the route that sends them:
/// `crate::api::watch_route`). The stream
/// itself reads the live feed, polled by the connection that sends it: no
/// task or queue of its own between the feed and the client. A client that
/// stops reading stops the polling; the feed moves on without it, and the
/// next poll finds the watch lagged (ABORTED).
pub struct WatchStream {
    inner: Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, Status>> + Send>>,
}

impl futures_util::Stream for WatchStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

pub(crate) async fn watch_events(
    context: &WatchContext,
    call: Admitted<WatchEventsRequest>,
) -> Result<WatchStream, ApiError> {
    let Admitted { caller, request, deadline, .. } = call;
    let timeline = &context.timeline;
    if let Some(since) = request.since_cursor {
        check_cursor(timeline, since).await?;
    }
    // Subscribed before anything is read, so nothing falls in between.
    let live = timeline.subscribe();
    let matcher = Matcher::new(caller, request.rooms, request.types);
    let position = match request.since_cursor {
        Some(since) => since,
        None => timeline.store().latest_cursor().await?,
    };
    let mut pending = VecDeque::new();
    if request.include_current_state {
        for room in context.livekit.list_rooms(matcher.filter.rooms.clone(), deadline).await? {
            if !matcher.caller.may_touch(&room.name) {
                continue;
            }
            let participants = match context.livekit.list_participants(&room.name, deadline).await {
                Ok(participants) => participants,
                // Closed between the two questions: not live any more.
                Err(crate::livekit::LiveKitError::Twirp { code: crate::livekit::TwirpCode::NotFound, .. }) => continue,
                Err(error) => return Err(error.into()),
            };
            pending.push_back(encode(Message::Snapshot(Snapshot {
                room: Some(convert::room(room)),
                participants: participants.into_iter().map(convert::participant).collect(),
            })));
        }
        pending.push_back(encode(Message::SnapshotEnd(SnapshotEnd { cursor: position })));
    }
    let mut closing = context.closing.clone();
    let watcher = Watcher {
        timeline: timeline.clone(),
        matcher,
        position,
        live,
        closing: Box::pin(async move {
            // Closing, or the server is gone.
            let _ = closing.wait_for(|closing| *closing).await;
        }),
        heartbeat: timeline.config().heartbeat_interval,
        heartbeats: None,
        pending,
        run: None,
        phase: Phase::Replay,
        _guard: context.metrics.watcher_started(),
    };
    let inner = futures_util::stream::unfold(watcher, |mut watcher| async move {
        let reply = watcher.next().await?;
        Some((reply, watcher))
    });
    Ok(WatchStream { inner: Box::pin(inner) })
}

fn encode(message: Message) -> Bytes {
    frame(&WatchEventsResponse { message: Some(message) })
}

/// Where a watch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the store after the position, until caught up.
    Replay,
    /// Following the live feed.
    Live,
    /// Ended (its last reply was an error status).
    Ended,
}

struct Watcher {
    timeline: Timeline,
    matcher: Matcher,
    /// Every event up to here was sent (or did not match).
    position: u64,
    live: broadcast::Receiver<Arc<LiveEvent>>,
    /// Ready when the server drains: the watch ends with UNAVAILABLE and
    /// the cursor to resume from.
    closing: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    heartbeat: std::time::Duration,
    /// Started when the watch goes live.
    heartbeats: Option<tokio::time::Interval>,
    /// Replies ready to send, as gRPC frames.
    pending: VecDeque<Bytes>,
    /// Live events taken since the last of `pending`, whose frames lie end
    /// to end in one published buffer: that buffer and their span in it.
    run: Option<(Bytes, std::ops::Range<usize>)>,
    phase: Phase,
    _guard: crate::metrics::Watcher,
}

impl Watcher {
    /// The next replies, all those ready as one buffer of frames; `None`
    /// once the watch has ended.
    async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        loop {
            self.end_run();
            if let Some(frames) = self.take_pending() {
                return Some(Ok(frames));
            }
            let step = match self.phase {
                Phase::Ended => return None,
                Phase::Replay => self.replay().await,
                Phase::Live => self.follow().await,
            };
            if let Err(status) = step {
                self.phase = Phase::Ended;
                return Some(Err(status));
            }
        }
    }

    fn resume(&self, code: tonic::Code, why: impl Into<String>) -> Status {
        ApiError::Resume { code, why: why.into(), resume: self.position }.into()
    }

    /// Queues a live event if it is new and matches.
    fn take(&mut self, event: &LiveEvent) {
        if event.cursor <= self.position {
            return;
        }
        self.position = event.cursor;
        if !self.matcher.matches(&event.room, &event.kind) {
            return;
        }
        // Right after the last one taken, in the same buffer: one span.
        if let Some((frames, span)) = &mut self.run
            && frames.as_ptr() == event.frames.as_ptr()
            && frames.len() == event.frames.len()
            && span.end == event.range.start
        {
            span.end = event.range.end;
            return;
        }
        self.end_run();
        self.run = Some((event.frames.clone(), event.range.clone()));
    }

    /// Queues the span of live events taken so far.
    fn end_run(&mut self) {
        if let Some((frames, span)) = self.run.take() {
            self.pending.push_back(frames.slice(span));
        }
    }

    /// Everything queued, as one buffer: shared as it is when it is one
    /// piece (every event of a publication, say), else copied end to end.
    fn take_pending(&mut self) -> Option<Bytes> {
        if self.pending.len() <= 1 {
            return self.pending.pop_front();
        }
        let mut frames = BytesMut::with_capacity(self.pending.iter().map(Bytes::len).sum());
        for piece in self.pending.drain(..) {
            frames.extend_from_slice(&piece);
        }
        Some(frames.freeze())
    }

    fn lagged(&self, missed: u64) -> Status {
        self.resume(
            tonic::Code::Aborted,
            format!("this watch fell {missed} events behind the timeline (events.watch_buffer) and was cut off"),
        )
    }

    /// Waits for live events (taking every one already published), a
    /// heartbeat, or the drain.
    async fn follow(&mut self) -> Result<(), Status> {
        let heartbeats = self.heartbeats.get_or_insert_with(|| {
            let mut heartbeats = tokio::time::interval(self.heartbeat);
            heartbeats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            heartbeats.reset();
            heartbeats
        });
        tokio::select! {
            received = self.live.recv() => match received {
                Ok(event) => self.take(&event),
                Err(broadcast::error::RecvError::Lagged(missed)) => return Err(self.lagged(missed)),
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(self.resume(tonic::Code::Unavailable, "the timeline stopped"));
                }
            },
            _ = heartbeats.tick() => {
                let sent_at = Some(Timestamp::from(SystemTime::now()));
                self.end_run();
                self.pending.push_back(encode(Message::Heartbeat(Heartbeat { cursor: self.position, sent_at })));
                return Ok(());
            }
            () = &mut self.closing => {
                return Err(self.resume(tonic::Code::Unavailable, "the server is shutting down"));
            }
        }
        // What else is already published, without waiting.
        loop {
            match self.live.try_recv() {
                Ok(event) => self.take(&event),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => return Err(self.lagged(missed)),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => return Ok(()),
            }
        }
    }

    /// Queues one page of what the store holds after the position; live
    /// once caught up.
    async fn replay(&mut self) -> Result<(), Status> {
        let page = self
            .timeline
            .store()
            .read_after(self.position, REPLAY_PAGE, &self.matcher.filter)
            .await
            .map_err(|error| self.resume(tonic::Code::Unavailable, format!("the event store failed: {error}")))?;
        if page.len() < REPLAY_PAGE as usize {
            self.phase = Phase::Live;
        }
        let mut frames = BytesMut::new();
        for stored in page {
            self.position = stored.cursor;
            if self.matcher.matches(&stored.room, &stored.kind) {
                put_event_frame(&mut frames, stored.cursor, &stored.payload);
            }
        }
        if !frames.is_empty() {
            self.pending.push_back(frames.freeze());
        }
        Ok(())
    }
}
