//! ListRoomSessions, GetRoomSession, GetUsage: the history the projector
//! derives from the timeline (`crate::history`), read from the store. A
//! caller limited to room patterns sees only the sessions of its rooms: the
//! patterns narrow the query (SQL LIKE), and every row is checked again
//! with the patterns' own rule before it is returned.

use std::collections::HashMap;
use std::time::SystemTime;

use prost_types::{Duration as ProtoDuration, Timestamp};

use super::Admitted;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::events::Timeline;
use crate::history::profile::Profile;
use crate::history::usage::{self, BucketKind};
use crate::proto::v1::*;
use crate::store::history::{
    CachedBucket, ParticipantSessionRow, RoomSessionRow, SessionQuery, TrackRow, UsageParticipant, UsageSession,
    like_pattern,
};

/// The default ListRoomSessions page.
const DEFAULT_PAGE_SIZE: u32 = 100;

/// Most timeline events GetRoomSession returns.
const TIMELINE_MAX: u32 = 1000;

const PAGE_TOKEN_PREFIX: &str = "before:";

/// The (started_at, session id) a page token resumes before; `None` for a
/// token this server never gave.
pub fn parse_page_token(token: &str) -> Option<(i64, String)> {
    let (micros, sid) = token.strip_prefix(PAGE_TOKEN_PREFIX)?.split_once(':')?;
    (!sid.is_empty() && sid.len() <= 256).then(|| Some((micros.parse().ok()?, sid.to_owned())))?
}

fn page_token(row: &RoomSessionRow) -> String {
    format!("{PAGE_TOKEN_PREFIX}{}:{}", row.started_at, row.room_sid)
}

/// Unix microseconds of a timestamp (validated: within years 1 to 9999).
pub fn micros(at: &Timestamp) -> i64 {
    at.seconds.saturating_mul(1_000_000).saturating_add(i64::from(at.nanos / 1000))
}

pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp { seconds: micros.div_euclid(1_000_000), nanos: (micros.rem_euclid(1_000_000) * 1000) as i32 }
}

fn duration(micros: i64) -> ProtoDuration {
    let micros = micros.max(0);
    ProtoDuration { seconds: micros / 1_000_000, nanos: ((micros % 1_000_000) * 1000) as i32 }
}

fn minutes(micros: i64) -> f64 {
    micros as f64 / 60_000_000.0
}

fn now_micros() -> i64 {
    crate::events::unix_micros(SystemTime::now())
}

/// The caller's room patterns as SQL LIKE patterns; empty when it may touch
/// every room.
fn like_patterns(caller: &Caller) -> Vec<String> {
    if caller.may_touch_every_room() {
        return Vec::new();
    }
    caller.room_patterns().iter().map(|pattern| like_pattern(pattern)).collect()
}

/// A room session as the API shows it; `open_micros` is the time its open
/// participant sessions have run so far.
pub fn room_session(row: &RoomSessionRow, open_micros: i64, actions: &[(String, i64)], now: i64) -> RoomSession {
    let end = row.end_at.unwrap_or(now).max(row.started_at);
    RoomSession {
        session_id: row.room_sid.clone(),
        room: row.room.clone(),
        started_at: Some(timestamp(row.started_at)),
        ended_at: row.end_at.map(timestamp),
        active: row.end_at.is_none(),
        duration: Some(duration(end - row.started_at)),
        participant_sessions: u32::try_from(row.participant_sessions).unwrap_or(u32::MAX),
        peak_participants: u32::try_from(row.peak_participants).unwrap_or(u32::MAX),
        unique_identities: u32::try_from(row.unique_identities).unwrap_or(u32::MAX),
        participant_minutes: minutes(row.participant_micros.saturating_add(open_micros)),
        start_inferred: row.start_inferred,
        end_inferred: row.end_inferred,
        inferred: row.inferred,
        actions: actions
            .iter()
            .map(|(kind, count)| (kind.clone(), u32::try_from(*count).unwrap_or(u32::MAX)))
            .collect(),
    }
}

pub fn end_reason(reason: &str) -> EndReason {
    match reason {
        "left" => EndReason::Left,
        "removed" => EndReason::Removed,
        "connection_aborted" => EndReason::ConnectionAborted,
        "room_deleted" => EndReason::RoomDeleted,
        "inferred" => EndReason::Inferred,
        _ => EndReason::Unspecified,
    }
}

pub fn participant_session(row: &ParticipantSessionRow, tracks: Vec<PublishedTrack>, now: i64) -> ParticipantSession {
    ParticipantSession {
        participant_sid: row.participant_sid.clone(),
        identity: row.identity.clone(),
        name: row.name.clone(),
        kind: row.kind.clone(),
        joined_at: row.joined_at.map(timestamp),
        left_at: row.left_at.map(timestamp),
        active: row.left_at.is_none(),
        duration: row.joined_at.map(|joined| duration(row.left_at.unwrap_or(now) - joined)),
        end_reason: end_reason(&row.end_reason) as i32,
        removed_by: row.removed_by.clone(),
        inferred: row.inferred,
        tracks,
    }
}

fn published_track(row: TrackRow) -> PublishedTrack {
    PublishedTrack {
        sid: row.track_sid,
        r#type: row.kind,
        source: row.source,
        name: row.name,
        published_at: row.published_at.map(timestamp),
        unpublished_at: row.unpublished_at.map(timestamp),
    }
}

/// The time the open participant sessions of these room sessions have run
/// up to `now`, by room session.
async fn open_micros(timeline: &Timeline, rows: &[RoomSessionRow], now: i64) -> Result<HashMap<String, i64>, ApiError> {
    let active: Vec<String> =
        rows.iter().filter(|row| row.open_participants > 0).map(|row| row.room_sid.clone()).collect();
    let mut open = HashMap::new();
    for (room_sid, joined_at) in timeline.store().open_participants(&active).await? {
        *open.entry(room_sid).or_insert(0) += (now - joined_at).max(0);
    }
    Ok(open)
}

pub(crate) async fn list_room_sessions(
    timeline: &Timeline,
    call: Admitted<ListRoomSessionsRequest>,
) -> Result<ListRoomSessionsResponse, ApiError> {
    let Admitted { caller, request, .. } = call;
    let size = u32::try_from(request.page_size).ok().filter(|size| *size > 0).unwrap_or(DEFAULT_PAGE_SIZE);
    let history_cursor = timeline.store().history_checkpoint().await?;
    let query = SessionQuery {
        rooms: request.rooms,
        like: like_patterns(&caller),
        from: request.from.as_ref().map(micros),
        to: request.to.as_ref().map(micros),
        active_only: request.active_only,
        before: parse_page_token(&request.page_token),
        limit: size,
    };
    let rows = timeline.store().list_room_sessions(&query).await?;
    let next_page_token =
        if rows.len() == size as usize { rows.last().map(page_token).unwrap_or_default() } else { String::new() };
    let rows: Vec<RoomSessionRow> = rows.into_iter().filter(|row| caller.may_touch(&row.room)).collect();
    let now = now_micros();
    let open = open_micros(timeline, &rows, now).await?;
    let sessions =
        rows.iter().map(|row| room_session(row, open.get(&row.room_sid).copied().unwrap_or(0), &[], now)).collect();
    Ok(ListRoomSessionsResponse { sessions, next_page_token, history_cursor })
}

pub(crate) async fn get_room_session(
    timeline: &Timeline,
    call: Admitted<GetRoomSessionRequest>,
) -> Result<GetRoomSessionResponse, ApiError> {
    let Admitted { caller, request, .. } = call;
    let store = timeline.store();
    let row = store
        .room_session(&request.session_id)
        .await?
        .ok_or_else(|| ApiError::NoSuchSession(request.session_id.clone()))?;
    super::record_room(&row.room);
    caller.authorize_room(&row.room)?;
    let (participants, tracks, actions) = store.room_session_details(&row.room_sid).await?;
    let now = now_micros();
    let mut by_participant: HashMap<String, Vec<PublishedTrack>> = HashMap::new();
    for track in tracks {
        by_participant.entry(track.participant_sid.clone()).or_default().push(published_track(track));
    }
    let open: i64 = participants
        .iter()
        .filter(|participant| participant.left_at.is_none())
        .filter_map(|participant| participant.joined_at)
        .map(|joined| (now - joined).max(0))
        .sum();
    let participants = participants
        .iter()
        .map(|participant| {
            let tracks = by_participant.remove(&participant.participant_sid).unwrap_or_default();
            participant_session(participant, tracks, now)
        })
        .collect();
    let stored = store.room_events(&row.room, row.first_cursor, row.last_cursor, TIMELINE_MAX + 1).await?;
    let timeline_truncated = stored.len() > TIMELINE_MAX as usize;
    let mut events = Vec::with_capacity(stored.len());
    for stored in stored.into_iter().take(TIMELINE_MAX as usize) {
        let event = crate::events::timeline::decode(stored.cursor, &stored.payload)?;
        // Another session of a room with the same name, in between.
        let sid = event.room.as_ref().map(|room| room.sid.as_str()).unwrap_or_default();
        if sid.is_empty() || sid == row.room_sid {
            events.push(event);
        }
    }
    Ok(GetRoomSessionResponse {
        session: Some(room_session(&row, open, &actions, now)),
        participants,
        timeline: events,
        timeline_truncated,
    })
}

/// What a usage cache entry is for: the rooms asked for and the caller's
/// patterns, hashed (bounded, whatever their length).
fn rooms_key(rooms: &[String], patterns: &[String]) -> String {
    use sha2::Digest;
    let (mut rooms, mut patterns) = (rooms.to_vec(), patterns.to_vec());
    rooms.sort();
    rooms.dedup();
    patterns.sort();
    patterns.dedup();
    let mut hasher = sha2::Sha256::new();
    for list in [&rooms, &patterns] {
        for item in list {
            hasher.update(item.as_bytes());
            hasher.update([0]);
        }
        hasher.update([1]);
    }
    hasher.finalize().iter().take(16).map(|byte| format!("{byte:02x}")).collect()
}

fn usage_figures(bucket: &CachedBucket) -> usage::Figures {
    usage::Figures {
        sessions: u32::try_from(bucket.sessions).unwrap_or(u32::MAX),
        participant_micros: bucket.participant_micros,
        peak_concurrency: u32::try_from(bucket.peak_concurrency).unwrap_or(u32::MAX),
        unique_identities: u32::try_from(bucket.unique_identities).unwrap_or(u32::MAX),
        inferred: bucket.inferred,
    }
}

/// Where GetUsage's rows come from: the rooms asked for, as the caller
/// may see them.
struct UsageRows<'a> {
    store: &'a crate::store::Store,
    rooms: &'a [String],
    like: &'a [String],
    caller: &'a Caller,
}

impl UsageRows<'_> {
    /// The participant sessions overlapping [start, end) and the room
    /// sessions started in it, of the rooms the caller may touch. The
    /// participant sessions' rooms are read only when wanted, or to check
    /// them against the caller's patterns.
    async fn read(
        &self,
        start: i64,
        end: i64,
        with_room: bool,
    ) -> Result<(Vec<UsageParticipant>, Vec<UsageSession>), ApiError> {
        let restricted = !self.caller.may_touch_every_room();
        if restricted && self.like.is_empty() {
            // No room patterns (a token without its rooms claim under the
            // default `jwt.default_rooms`): no room's usage.
            return Ok((Vec::new(), Vec::new()));
        }
        let (participants, sessions) =
            self.store.usage_rows(start, end, self.rooms, self.like, with_room || restricted).await?;
        let participants =
            participants.into_iter().filter(|row| !restricted || self.caller.may_touch(&row.room)).collect();
        let sessions = sessions.into_iter().filter(|row| self.caller.may_touch(&row.room)).collect();
        Ok((participants, sessions))
    }
}

fn cached_bucket(start: i64, end: i64, figures: &usage::Figures) -> CachedBucket {
    CachedBucket {
        start,
        end,
        sessions: i64::from(figures.sessions),
        participant_micros: figures.participant_micros,
        peak_concurrency: i64::from(figures.peak_concurrency),
        unique_identities: i64::from(figures.unique_identities),
        inferred: figures.inferred,
        profile: None,
    }
}

pub(crate) async fn get_usage(
    timeline: &Timeline,
    call: Admitted<GetUsageRequest>,
) -> Result<GetUsageResponse, ApiError> {
    let Admitted { caller, request, .. } = call;
    let invalid = |field: &str, why: String| {
        let mut violations = crate::validate::Violations::new();
        violations.add(field, why);
        ApiError::InvalidArgument(violations)
    };
    let zone = usage::time_zone(&request.time_zone).map_err(|why| invalid("time_zone", why))?;
    let (Some(from), Some(to)) = (request.from.as_ref().map(micros), request.to.as_ref().map(micros)) else {
        return Err(invalid("from", "is required".to_owned()));
    };
    let kind = match UsageBucket::try_from(request.bucket) {
        Ok(UsageBucket::Hour) => BucketKind::Hour,
        Ok(UsageBucket::Day) => BucketKind::Day,
        Ok(UsageBucket::Month) => BucketKind::Month,
        _ => BucketKind::Room,
    };
    let buckets = match kind {
        BucketKind::Room => Vec::new(),
        kind => usage::time_buckets(from, to, kind, &zone).map_err(|why| invalid("bucket", why))?,
    };
    let like = like_patterns(&caller);
    let store = timeline.store();
    // Read before any row: the cache takes figures only from rows no
    // projection has changed since.
    let history_cursor = store.history_checkpoint().await?;
    let now = now_micros();
    let figures = |start: i64, end: i64, label: String, figures: usage::Figures| UsageFigures {
        start: Some(timestamp(start)),
        end: Some(timestamp(end)),
        label,
        sessions: figures.sessions,
        participant_minutes: minutes(figures.participant_micros),
        peak_concurrency: figures.peak_concurrency,
        unique_identities: figures.unique_identities,
        inferred: figures.inferred,
    };
    let rows = UsageRows { store, rooms: &request.rooms, like: &like, caller: &caller };
    let buckets = match kind {
        BucketKind::Room => {
            let (participants, sessions) = rows.read(from, to, true).await?;
            usage::room_figures(from, to, &participants, &sessions, now)
                .into_iter()
                .map(|(room, counted)| figures(from, to, room, counted))
                .collect()
        }
        _ => {
            let key = rooms_key(&request.rooms, caller.room_patterns());
            let cached: HashMap<(i64, i64), CachedBucket> = store
                .usage_cache(&key, from, to)
                .await?
                .into_iter()
                .map(|bucket| ((bucket.start, bucket.end), bucket))
                .collect();
            let mut counted: Vec<Option<usage::Figures>> =
                buckets.iter().map(|bucket| cached.get(&(bucket.start, bucket.end)).map(usage_figures)).collect();
            let mut fresh = Vec::new();
            // A bucket the range cuts at one end (the first day of "the last
            // 30 days"), of an hour or a day that has ended: answered from
            // the whole bucket's profile, made from the whole bucket's rows
            // by the first range that cuts it and kept with its figures.
            // (A month's profile would be as large as its rows.)
            if matches!(kind, BucketKind::Hour | BucketKind::Day) {
                for (index, bucket) in buckets.iter().enumerate() {
                    let (start, end) = bucket.calendar;
                    let one_end_cut = bucket.start == start || bucket.end == end;
                    if bucket.whole() || !one_end_cut || end > now || counted[index].is_some() {
                        continue;
                    }
                    let kept = store.usage_profile(&key, start, end).await?;
                    let profile = match kept.as_deref().and_then(Profile::decode).filter(|p| p.bounds() == (start, end))
                    {
                        Some(profile) => profile,
                        None => {
                            let (participants, sessions) = rows.read(start, end, false).await?;
                            let profile = Profile::build(start, end, &participants, &sessions, now);
                            // The whole bucket's figures are the profile's.
                            let figures = profile.figures(start, end).unwrap_or_default();
                            fresh.push(CachedBucket {
                                profile: Some(profile.encode()),
                                ..cached_bucket(start, end, &figures)
                            });
                            profile
                        }
                    };
                    counted[index] = profile.figures(bucket.start, bucket.end);
                }
            }
            // Each run of buckets not counted yet: its rows, its figures.
            let mut index = 0;
            while index < buckets.len() {
                if counted[index].is_some() {
                    index += 1;
                    continue;
                }
                let first = index;
                while index < buckets.len() && counted[index].is_none() {
                    index += 1;
                }
                let run = &buckets[first..index];
                let (participants, sessions) = rows.read(run[0].start, run[run.len() - 1].end, false).await?;
                for (offset, figures) in usage::figures(run, &participants, &sessions, now).into_iter().enumerate() {
                    let bucket = &run[offset];
                    // A bucket that ended no longer depends on the clock;
                    // one the range cuts is kept as its whole bucket's
                    // profile (above), never under the range's bounds: the
                    // cache holds whole buckets, shared by every range
                    // that covers them.
                    if bucket.end <= now && bucket.whole() {
                        fresh.push(cached_bucket(bucket.start, bucket.end, &figures));
                    }
                    counted[first + offset] = Some(figures);
                }
            }
            // The answer stands whether or not it could be kept.
            if !fresh.is_empty() {
                match store.cache_usage(&key, history_cursor, &fresh).await {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!("usage not cached: the history moved while it was computed"),
                    Err(error) => tracing::warn!(%error, "usage not cached"),
                }
            }
            buckets
                .into_iter()
                .zip(counted)
                .map(|(bucket, counted)| figures(bucket.start, bucket.end, bucket.label, counted.unwrap_or_default()))
                .collect()
        }
    };
    let time_zone = if request.time_zone.is_empty() { "UTC".to_owned() } else { request.time_zone };
    Ok(GetUsageResponse { buckets, time_zone, history_cursor })
}
