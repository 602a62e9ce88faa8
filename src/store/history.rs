//! The history's tables (`migrations/*/0004_history.sql`): room sessions and
//! participant sessions, projected from the timeline.
//!
//! [`project`](Store::project_history) applies the events after the
//! history's checkpoint in one transaction that also moves the checkpoint:
//! an event is applied exactly once, whichever replica applies it (on
//! PostgreSQL the checkpoint row is locked `FOR UPDATE`, so replicas take
//! turns; on SQLite one process writes). Each event records what it said
//! (a start, an end, a track, an action) keyed by LiveKit's sids, so a
//! repeated or late event changes nothing or fills in what was missing;
//! then every room session it touched has its figures recomputed from its
//! participant sessions ([`crate::history::figures`]), which makes the
//! figures independent of the order the events came in.

use super::{Store, StoreError, to_cursor};
use crate::history::figures::{self, ParticipantFacts, RemovalAction};
use crate::proto::v1::{Event, EventSource};

/// An action this long before a room session's start still belongs to it
/// (a token minted, or the room created, before the join that started it).
pub const ACTION_GRACE_MICROS: i64 = 10 * 60 * 1_000_000;

/// A room session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSessionRow {
    pub room_sid: String,
    pub room: String,
    pub started_at: i64,
    pub start_inferred: bool,
    pub end_at: Option<i64>,
    pub end_inferred: bool,
    pub participant_sessions: i64,
    pub peak_participants: i64,
    pub unique_identities: i64,
    /// Of the participant sessions that ended.
    pub participant_micros: i64,
    pub open_participants: i64,
    pub inferred: bool,
    pub first_cursor: i64,
    pub last_cursor: i64,
}

/// A participant session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantSessionRow {
    pub participant_sid: String,
    pub room_sid: String,
    pub room: String,
    pub identity: String,
    pub name: String,
    pub kind: String,
    pub joined_at: Option<i64>,
    pub left_at: Option<i64>,
    pub end_reason: String,
    pub removed_by: String,
    pub inferred: bool,
}

/// A published track as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRow {
    pub participant_sid: String,
    pub track_sid: String,
    pub kind: String,
    pub source: String,
    pub name: String,
    pub published_at: Option<i64>,
    pub unpublished_at: Option<i64>,
}

/// Which room sessions a list returns, newest start first.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Exact room names; empty: every room.
    pub rooms: Vec<String>,
    /// SQL LIKE patterns the room must match one of (the caller's room
    /// patterns); empty: no restriction. A superset: the caller re-checks.
    pub like: Vec<String>,
    /// Sessions that ran at some time in [from, to): unix microseconds.
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub active_only: bool,
    /// Keyset: only sessions before (started_at, room_sid) in the order.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// One participant session's part in usage figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageParticipant {
    pub room: String,
    pub identity: String,
    pub joined_at: i64,
    /// `None`: still connected.
    pub left_at: Option<i64>,
    pub inferred: bool,
    /// The timeline's order of the join and the end within their seconds.
    pub joined_cursor: i64,
    pub left_cursor: i64,
}

/// One room session's start, for usage figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSession {
    pub room: String,
    pub started_at: i64,
    pub inferred: bool,
}

/// One GetUsage bucket's figures, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBucket {
    pub start: i64,
    pub end: i64,
    pub sessions: i64,
    pub participant_micros: i64,
    pub peak_concurrency: i64,
    pub unique_identities: i64,
    pub inferred: bool,
    /// The bucket's profile (`history::profile`), kept for buckets a range
    /// has cut; read only by [`Store::usage_profile`].
    pub profile: Option<Vec<u8>>,
}

/// A caller's room pattern (`*` any run of characters) as a SQL LIKE
/// pattern with `\` as its escape character.
pub fn like_pattern(pattern: &str) -> String {
    let mut like = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '*' => like.push('%'),
            '%' | '_' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            c => like.push(c),
        }
    }
    like
}

impl Store {
    /// Applies up to `limit` events after the history's checkpoint; returns
    /// how many it applied (0: the history is up to date).
    pub async fn project_history(&self, limit: u32) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(pool, _) => {
                let _turn = super::SQLITE_WRITERS.lock().await;
                sqlite::project(pool, limit).await
            }
            Store::Postgres(pool) => postgres::project(pool, limit).await,
        }
    }

    /// The history's checkpoint: every event up to it is applied.
    pub async fn history_checkpoint(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::checkpoint(pool).await,
            Store::Postgres(pool) => postgres::checkpoint(pool).await,
        }
    }

    pub async fn list_room_sessions(&self, query: &SessionQuery) -> Result<Vec<RoomSessionRow>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::list_room_sessions(pool, query).await,
            Store::Postgres(pool) => postgres::list_room_sessions(pool, query).await,
        }
    }

    pub async fn room_session(&self, room_sid: &str) -> Result<Option<RoomSessionRow>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::room_session(pool, room_sid).await,
            Store::Postgres(pool) => postgres::room_session(pool, room_sid).await,
        }
    }

    /// A room session's participant sessions (by join), their tracks, and
    /// RoomControl's actions in it counted by type.
    pub async fn room_session_details(
        &self,
        room_sid: &str,
    ) -> Result<(Vec<ParticipantSessionRow>, Vec<TrackRow>, Vec<(String, i64)>), StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::room_session_details(pool, room_sid).await,
            Store::Postgres(pool) => postgres::room_session_details(pool, room_sid).await,
        }
    }

    /// The open participant sessions of these room sessions: (room sid,
    /// joined_at) each.
    pub async fn open_participants(&self, room_sids: &[String]) -> Result<Vec<(String, i64)>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::open_participants(pool, room_sids).await,
            Store::Postgres(pool) => postgres::open_participants(pool, room_sids).await,
        }
    }

    /// Up to `limit` events of a room between two cursors, oldest first.
    pub async fn room_events(
        &self,
        room: &str,
        first: i64,
        last: i64,
        limit: u32,
    ) -> Result<Vec<super::StoredEvent>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::room_events(pool, room, first, last, limit).await,
            Store::Postgres(pool) => postgres::room_events(pool, room, first, last, limit).await,
        }
    }

    /// The participant sessions that overlap [from, to), and the room
    /// sessions that started in it, of the rooms `rooms` names (empty:
    /// all) matching one of `like` (empty: all). Without `with_room`, the
    /// participant sessions' `room` is left empty (one string fewer to
    /// read per row).
    pub async fn usage_rows(
        &self,
        from: i64,
        to: i64,
        rooms: &[String],
        like: &[String],
        with_room: bool,
    ) -> Result<(Vec<UsageParticipant>, Vec<UsageSession>), StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::usage_rows(pool, from, to, rooms, like, with_room).await,
            Store::Postgres(pool) => postgres::usage_rows(pool, from, to, rooms, like, with_room).await,
        }
    }

    /// The cached figures of `rooms_key`'s buckets within [from, to).
    pub async fn usage_cache(&self, rooms_key: &str, from: i64, to: i64) -> Result<Vec<CachedBucket>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::usage_cache_get(pool, rooms_key, from, to).await,
            Store::Postgres(pool) => postgres::usage_cache_get(pool, rooms_key, from, to).await,
        }
    }

    /// The profile cached for `rooms_key`'s bucket [start, end), if any.
    pub async fn usage_profile(&self, rooms_key: &str, start: i64, end: i64) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::usage_profile_get(pool, rooms_key, start, end).await,
            Store::Postgres(pool) => postgres::usage_profile_get(pool, rooms_key, start, end).await,
        }
    }

    /// Caches buckets computed from rows read at history checkpoint
    /// `checkpoint`, unless a projection has committed since (it may have
    /// changed them); returns whether they were stored.
    pub async fn cache_usage(
        &self,
        rooms_key: &str,
        checkpoint: u64,
        buckets: &[CachedBucket],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::usage_cache_put(pool, rooms_key, checkpoint, buckets).await,
            Store::Postgres(pool) => postgres::usage_cache_put(pool, rooms_key, checkpoint, buckets).await,
        }
    }

    /// Deletes the room sessions that ended before `before` (unix
    /// microseconds), with their participant sessions, tracks and actions,
    /// at most `limit` room sessions at a time. Returns how many went.
    pub async fn prune_history(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::prune(pool, before, limit).await,
            Store::Postgres(pool) => postgres::prune(pool, before, limit).await,
        }
    }
}

/// How far around an action's time the room sessions read for it reach,
/// so that the pass's next actions in that room (moments later) find them
/// read already.
const ACTION_SLACK_MICROS: i64 = 60 * 60 * 1_000_000;

/// Most actions in one INSERT (eight parameters each).
const ACTION_ROWS_PER_INSERT: usize = 256;

/// RoomControl's actions in one projection pass: stored together at its
/// end ([`Store::project_history`]), and the room sessions read for them.
#[derive(Debug, Default)]
struct Actions {
    rows: Vec<ActionRow>,
    /// By room name: the window of action times read for, and the
    /// sessions that may hold an action in it (sid, started_at, end_at).
    #[allow(clippy::type_complexity)]
    sessions: std::collections::HashMap<String, (i64, i64, Vec<(String, i64, Option<i64>)>)>,
}

/// A row of `history_actions`.
#[derive(Debug)]
struct ActionRow {
    event_id: String,
    room: String,
    identity: String,
    kind: String,
    actor: String,
    at: i64,
    cursor: i64,
    room_sid: Option<String>,
}

/// The session an action at `at` belongs to, of those its room had near
/// that time: the one live at the time first; then one that ended moments
/// before (LiveKit's seconds against RoomControl's microseconds), then
/// one that started soon after; the latest start first. (Chosen here, not
/// by an ORDER BY with a LIMIT, for which SQLite builds a temporary
/// B-tree: docs/benchmarks.md.)
fn choose_session(sessions: &[(String, i64, Option<i64>)], at: i64) -> Option<String> {
    sessions
        .iter()
        .filter(|(_, started_at, end_at)| {
            *started_at <= at.saturating_add(ACTION_GRACE_MICROS)
                && end_at.is_none_or(|end| end >= at.saturating_sub(figures::REMOVAL_WINDOW_MICROS))
        })
        .min_by_key(|(_, started_at, end_at)| {
            let rank = match (*started_at <= at, end_at.is_none_or(|end| end >= at)) {
                (true, true) => 0,
                (true, false) => 1,
                (false, _) => 2,
            };
            (rank, std::cmp::Reverse(*started_at))
        })
        .map(|(sid, ..)| sid.clone())
}

/// An event's fields but its `detail`: all that the history reads of
/// RoomControl's own actions. Decoding a `token_minted` in full built its
/// detail's `Struct` for nothing (docs/benchmarks.md); [`decode_event`]
/// decodes this first and the whole event only when it is LiveKit's or
/// inferred.
#[derive(Clone, PartialEq, prost::Message)]
struct EventHead {
    #[prost(string, tag = "2")]
    id: String,
    #[prost(string, tag = "3")]
    r#type: String,
    #[prost(int32, tag = "4")]
    source: i32,
    #[prost(message, optional, tag = "5")]
    occurred_at: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "6")]
    received_at: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "7")]
    room: Option<crate::proto::v1::EventRoom>,
    #[prost(message, optional, tag = "8")]
    participant: Option<crate::proto::v1::EventParticipant>,
    #[prost(message, optional, tag = "9")]
    track: Option<crate::proto::v1::EventTrack>,
    #[prost(message, optional, tag = "10")]
    actor: Option<crate::proto::v1::Actor>,
    #[prost(bool, tag = "11")]
    inferred: bool,
}

/// The `span_end` the projector stores when an event names a room session
/// that had no name (no span ends before 0): its start is counted under
/// its name from now on.
const RENAMED: i64 = -1;

/// A room session's inferred mark: any figure or either end inferred, or
/// no room_started yet.
fn totals_inferred(totals: &figures::Totals, start_inferred: bool, end_inferred: bool, start_at: Option<i64>) -> bool {
    totals.inferred || start_inferred || end_inferred || start_at.is_none()
}

/// A stored event as the history reads it: without its `detail` when it
/// is one of RoomControl's own actions (which `apply` reads no detail of).
fn decode_event(payload: &[u8]) -> Result<Event, prost::DecodeError> {
    use prost::Message as _;
    let head = EventHead::decode(payload)?;
    if head.source != EventSource::Roomcontrol as i32 || head.inferred {
        return Event::decode(payload);
    }
    Ok(Event {
        cursor: 0,
        id: head.id,
        r#type: head.r#type,
        source: head.source,
        occurred_at: head.occurred_at,
        received_at: head.received_at,
        room: head.room,
        participant: head.participant,
        track: head.track,
        actor: head.actor,
        inferred: head.inferred,
        detail: None,
    })
}

/// Unix microseconds of an event's time (LiveKit's createdAt, or when
/// RoomControl acted), else when it was received.
fn event_time(event: &Event) -> i64 {
    let at = event.occurred_at.or(event.received_at).unwrap_or_default();
    at.seconds.saturating_mul(1_000_000).saturating_add(i64::from(at.nanos / 1000))
}

/// A string field of the event's webhook body (`detail`), nested by path.
fn detail_text<'a>(event: &'a Event, path: &[&str]) -> Option<&'a str> {
    use prost_types::value::Kind;
    let mut fields = &event.detail.as_ref()?.fields;
    let (last, parents) = path.split_last()?;
    for parent in parents {
        match &fields.get(*parent)?.kind {
            Some(Kind::StructValue(inner)) => fields = &inner.fields,
            _ => return None,
        }
    }
    match &fields.get(*last)?.kind {
        Some(Kind::StringValue(text)) => Some(text.as_str()),
        _ => None,
    }
}

/// LiveKit's `participant.joinedAt` (unix seconds, as a string).
fn joined_hint(event: &Event) -> Option<i64> {
    detail_text(event, &["participant", "joinedAt"])
        .and_then(|seconds| seconds.parse::<i64>().ok())
        .filter(|seconds| *seconds > 0)
        .map(|seconds| seconds.saturating_mul(1_000_000))
}

macro_rules! history_queries {
    ($Db:ty, $Pool:ty, begin: $begin:expr, lock: $lock:expr, least: $least:expr, greatest: $greatest:expr) => {
        use std::collections::{BTreeSet, HashMap};

        use sqlx::QueryBuilder;

        use super::*;

        type Tx<'a> = sqlx::Transaction<'a, $Db>;

        pub async fn checkpoint(pool: &$Pool) -> Result<u64, StoreError> {
            let (through,): (i64,) = sqlx::query_as("SELECT projected_through FROM history_state WHERE singleton = 1")
                .fetch_one(pool)
                .await?;
            Ok(to_cursor(through))
        }

        pub async fn project(pool: &$Pool, limit: u32) -> Result<usize, StoreError> {
            let mut tx = pool.begin_with($begin).await?;
            let (through,): (i64,) =
                sqlx::query_as(concat!("SELECT projected_through FROM history_state WHERE singleton = 1", $lock))
                    .fetch_one(&mut *tx)
                    .await?;
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT cursor, payload FROM events WHERE cursor > ");
            query.push_bind(through).push(" ORDER BY cursor LIMIT ").push_bind(i64::from(limit));
            let rows: Vec<(i64, Vec<u8>)> = query.build_query_as().fetch_all(&mut *tx).await?;
            let Some(&(last, _)) = rows.last() else {
                // Ended now, not when the pool next uses the connection: on
                // SQLite an open BEGIN IMMEDIATE holds the write lock.
                tx.rollback().await?;
                return Ok(0);
            };
            let mut touched = BTreeSet::new();
            // The room sessions participant and track events name, upserted
            // once per batch: (name, earliest time, first and last cursor).
            let mut rooms: HashMap<String, (String, i64, i64, i64)> = HashMap::new();
            let mut actions = Actions::default();
            for (cursor, payload) in &rows {
                match decode_event(payload.as_slice()) {
                    Ok(event) => apply(&mut tx, *cursor, &event, &mut touched, &mut rooms, &mut actions).await?,
                    // Skipped, not retried forever: the timeline itself
                    // reports it to its readers.
                    Err(error) => tracing::error!(%error, cursor, "the history skips an event it cannot decode"),
                }
            }
            // Read only by `recompute`, below.
            insert_actions(&mut tx, &actions.rows).await?;
            for (sid, (name, at, first, last)) in &rooms {
                upsert_room(&mut tx, sid, name, *at, *first, *last).await?;
            }
            for room_sid in &touched {
                recompute(&mut tx, room_sid).await?;
            }
            let mut state: QueryBuilder<'_, $Db> =
                QueryBuilder::new("UPDATE history_state SET projected_through = ");
            state.push_bind(last).push(" WHERE singleton = 1");
            state.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(rows.len())
        }

        /// Records what one event says.
        async fn apply(
            tx: &mut Tx<'_>,
            cursor: i64,
            event: &Event,
            touched: &mut BTreeSet<String>,
            rooms: &mut HashMap<String, (String, i64, i64, i64)>,
            actions: &mut Actions,
        ) -> Result<(), StoreError> {
            let at = event_time(event);
            let room = event.room.clone().unwrap_or_default();
            if event.source == EventSource::Roomcontrol as i32 && !event.inferred {
                if event.actor.is_some() || event.r#type == "ban_enforced" {
                    if let Some(room_sid) = record_action(tx, event, &room.name, at, cursor, actions).await? {
                        touched.insert(room_sid);
                    }
                }
                return Ok(());
            }
            if matches!(event.r#type.as_str(), "room_started" | "room_finished") {
                // They change the room's sessions: looked up again.
                actions.sessions.remove(&room.name);
            }
            if room.sid.is_empty() {
                return Ok(());
            }
            let kind = event.r#type.as_str();
            let participant = event.participant.clone().unwrap_or_default();
            let about_participant = matches!(
                kind,
                "participant_joined"
                    | "participant_left"
                    | "participant_connection_aborted"
                    | "track_published"
                    | "track_unpublished"
            );
            if !matches!(kind, "room_started" | "room_finished") && !(about_participant && !participant.sid.is_empty())
            {
                return Ok(());
            }
            if matches!(kind, "room_started" | "room_finished") {
                upsert_room(tx, &room.sid, &room.name, at, cursor, cursor).await?;
            } else {
                let entry = rooms.entry(room.sid.clone()).or_insert_with(|| (room.name.clone(), at, cursor, cursor));
                entry.1 = entry.1.min(at);
                entry.2 = entry.2.min(cursor);
                entry.3 = entry.3.max(cursor);
            }
            touched.insert(room.sid.clone());
            let inferred = event.inferred;
            match kind {
                "room_started" => {
                    let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new("UPDATE room_sessions SET start_at = ");
                    query.push_bind(at).push(", start_inferred = ").push_bind(inferred);
                    query.push(" WHERE room_sid = ").push_bind(room.sid.as_str());
                    query.push(" AND (start_at IS NULL OR (start_inferred AND NOT ").push_bind(inferred).push("))");
                    query.build().execute(&mut **tx).await?;
                }
                "room_finished" => {
                    let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new("UPDATE room_sessions SET end_at = ");
                    query.push_bind(at).push(", end_inferred = ").push_bind(inferred);
                    query.push(" WHERE room_sid = ").push_bind(room.sid.as_str());
                    query.push(" AND (end_at IS NULL OR (end_inferred AND NOT ").push_bind(inferred).push("))");
                    query.build().execute(&mut **tx).await?;
                }
                _ => {
                    upsert_participant(tx, event, &room.sid, &room.name, &participant).await?;
                    let sid = participant.sid.as_str();
                    match kind {
                        "participant_joined" => {
                            let mut query: QueryBuilder<'_, $Db> =
                                QueryBuilder::new("UPDATE participant_sessions SET join_at = ");
                            query.push_bind(at).push(", join_inferred = ").push_bind(inferred);
                            query.push(", join_cursor = ").push_bind(cursor);
                            query.push(" WHERE participant_sid = ").push_bind(sid);
                            query.push(" AND (join_at IS NULL OR (join_inferred AND NOT ").push_bind(inferred).push("))");
                            query.build().execute(&mut **tx).await?;
                        }
                        "participant_left" | "participant_connection_aborted" => {
                            let reason = detail_text(event, &["participant", "disconnectReason"])
                                .unwrap_or_default()
                                .to_ascii_lowercase();
                            let mut query: QueryBuilder<'_, $Db> =
                                QueryBuilder::new("UPDATE participant_sessions SET leave_at = ");
                            query.push_bind(at).push(", leave_type = ").push_bind(kind);
                            query.push(", leave_inferred = ").push_bind(inferred);
                            query.push(", leave_cursor = ").push_bind(cursor);
                            query.push(", disconnect_reason = ").push_bind(reason);
                            query.push(" WHERE participant_sid = ").push_bind(sid);
                            query.push(" AND (leave_at IS NULL OR (leave_inferred AND NOT ").push_bind(inferred).push("))");
                            query.build().execute(&mut **tx).await?;
                        }
                        _ => {
                            let track = event.track.clone().unwrap_or_default();
                            if track.sid.is_empty() {
                                return Ok(());
                            }
                            let column = if kind == "track_published" { "published_at" } else { "unpublished_at" };
                            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(format!(
                                "INSERT INTO participant_tracks (participant_sid, track_sid, type, source, name, {column}) VALUES ("
                            ));
                            let mut values = query.separated(", ");
                            values.push_bind(sid);
                            values.push_bind(track.sid.as_str());
                            values.push_bind(track.r#type.as_str());
                            values.push_bind(track.source.as_str());
                            values.push_bind(track.name.as_str());
                            values.push_bind(at);
                            query.push(format!(
                                ") ON CONFLICT (participant_sid, track_sid) DO UPDATE SET {column} = COALESCE(participant_tracks.{column}, excluded.{column})"
                            ));
                            query.build().execute(&mut **tx).await?;
                        }
                    }
                }
            }
            Ok(())
        }

        async fn upsert_room(
            tx: &mut Tx<'_>,
            sid: &str,
            room: &str,
            at: i64,
            first_cursor: i64,
            last_cursor: i64,
        ) -> Result<(), StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "INSERT INTO room_sessions (room_sid, room, first_seen_at, started_at, first_cursor, last_cursor) VALUES (",
            );
            let mut values = query.separated(", ");
            values.push_bind(sid);
            values.push_bind(room);
            values.push_bind(at);
            values.push_bind(at);
            values.push_bind(first_cursor);
            values.push_bind(last_cursor);
            query.push(concat!(
                ") ON CONFLICT (room_sid) DO UPDATE SET first_seen_at = ",
                $least,
                "(room_sessions.first_seen_at, excluded.first_seen_at), first_cursor = ",
                $least,
                "(room_sessions.first_cursor, excluded.first_cursor), last_cursor = ",
                $greatest,
                "(room_sessions.last_cursor, excluded.last_cursor), room = CASE WHEN room_sessions.room = '' THEN excluded.room ELSE room_sessions.room END, ",
                // (Every SET reads the row as it was.)
                "span_end = CASE WHEN room_sessions.room = '' AND excluded.room <> '' AND room_sessions.span_start IS NOT NULL THEN -1 ELSE room_sessions.span_end END"
            ));
            query.build().execute(&mut **tx).await?;
            Ok(())
        }

        async fn upsert_participant(
            tx: &mut Tx<'_>,
            event: &Event,
            room_sid: &str,
            room: &str,
            participant: &crate::proto::v1::EventParticipant,
        ) -> Result<(), StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "INSERT INTO participant_sessions (participant_sid, room_sid, room, identity, name, kind, joined_hint) VALUES (",
            );
            let mut values = query.separated(", ");
            values.push_bind(participant.sid.as_str());
            values.push_bind(room_sid);
            values.push_bind(room);
            values.push_bind(participant.identity.as_str());
            values.push_bind(participant.name.as_str());
            values.push_bind(participant.kind.as_str());
            values.push_bind(joined_hint(event));
            query.push(
                ") ON CONFLICT (participant_sid) DO UPDATE SET \
                 identity = CASE WHEN excluded.identity = '' THEN participant_sessions.identity ELSE excluded.identity END, \
                 joined_cursor = CASE WHEN excluded.identity <> '' AND excluded.identity <> participant_sessions.identity \
                 THEN -1 ELSE participant_sessions.joined_cursor END, \
                 name = CASE WHEN excluded.name = '' THEN participant_sessions.name ELSE excluded.name END, \
                 kind = CASE WHEN excluded.kind = '' THEN participant_sessions.kind ELSE excluded.kind END, \
                 joined_hint = COALESCE(participant_sessions.joined_hint, excluded.joined_hint)",
            );
            query.build().execute(&mut **tx).await?;
            Ok(())
        }

        /// Stores the actions of a pass: a few multi-row INSERTs instead of
        /// one statement (one round trip to sqlx's SQLite thread) each.
        async fn insert_actions(tx: &mut Tx<'_>, rows: &[ActionRow]) -> Result<(), StoreError> {
            for chunk in rows.chunks(ACTION_ROWS_PER_INSERT) {
                let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                    "INSERT INTO history_actions (event_id, room, identity, type, actor, at, cursor, room_sid) ",
                );
                query.push_values(chunk, |mut values, row| {
                    values.push_bind(row.event_id.as_str());
                    values.push_bind(row.room.as_str());
                    values.push_bind(row.identity.as_str());
                    values.push_bind(row.kind.as_str());
                    values.push_bind(row.actor.as_str());
                    values.push_bind(row.at);
                    values.push_bind(row.cursor);
                    values.push_bind(row.room_sid.as_deref());
                });
                query.push(" ON CONFLICT (event_id) DO NOTHING");
                query.build().execute(&mut **tx).await?;
            }
            Ok(())
        }

        /// Records one of RoomControl's actions, attached to the room
        /// session live when it happened (or the next to start within the
        /// grace), for [`insert_actions`]; returns that session's sid.
        async fn record_action(
            tx: &mut Tx<'_>,
            event: &Event,
            room: &str,
            at: i64,
            cursor: i64,
            actions: &mut Actions,
        ) -> Result<Option<String>, StoreError> {
            if room.is_empty() {
                return Ok(None);
            }
            // The room's sessions near the action, read once per room and
            // pass (the window widened by ACTION_SLACK_MICROS on each side)
            // and read again only for an action beyond that window, or once
            // a room_started or room_finished changed them.
            let cached = actions.sessions.get(room).is_some_and(|(from, to, _)| *from <= at && at <= *to);
            if !cached {
                let (from, to) = (at.saturating_sub(ACTION_SLACK_MICROS), at.saturating_add(ACTION_SLACK_MICROS));
                let mut find: QueryBuilder<'_, $Db> =
                    QueryBuilder::new("SELECT room_sid, started_at, end_at FROM room_sessions WHERE room = ");
                find.push_bind(room).push(" AND started_at <= ").push_bind(to.saturating_add(ACTION_GRACE_MICROS));
                find.push(" AND (end_at IS NULL OR end_at >= ");
                find.push_bind(from.saturating_sub(figures::REMOVAL_WINDOW_MICROS)).push(")");
                let sessions: Vec<(String, i64, Option<i64>)> = find.build_query_as().fetch_all(&mut **tx).await?;
                actions.sessions.insert(room.to_owned(), (from, to, sessions));
            }
            let sessions = actions.sessions.get(room).map(|(_, _, sessions)| sessions.as_slice()).unwrap_or_default();
            let room_sid = choose_session(sessions, at);
            let identity = event.participant.as_ref().map(|p| p.identity.as_str()).unwrap_or_default();
            let actor = event.actor.as_ref().map(|actor| actor.caller.as_str()).unwrap_or_default();
            actions.rows.push(ActionRow {
                event_id: event.id.clone(),
                room: room.to_owned(),
                identity: identity.to_owned(),
                kind: event.r#type.clone(),
                actor: actor.to_owned(),
                at,
                cursor,
                room_sid: room_sid.clone(),
            });
            Ok(room_sid)
        }

        /// Recomputes a room session's derived columns and figures, and its
        /// participant sessions' derived columns, from what is recorded.
        async fn recompute(tx: &mut Tx<'_>, room_sid: &str) -> Result<(), StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "SELECT room, start_at, first_seen_at, end_at, start_inferred, end_inferred, span_start, span_end, started_at, inferred FROM room_sessions WHERE room_sid = ",
            );
            query.push_bind(room_sid);
            #[allow(clippy::type_complexity)]
            let Some((
                room,
                start_at,
                first_seen_at,
                end_at,
                start_inferred,
                end_inferred,
                old_start,
                old_end,
                old_started_at,
                old_inferred,
            )): Option<(String, Option<i64>, i64, Option<i64>, bool, bool, Option<i64>, Option<i64>, i64, bool)> =
                query.build_query_as().fetch_optional(&mut **tx).await?
            else {
                return Ok(());
            };
            let started_at = start_at.unwrap_or(first_seen_at);
            // Actions stored before the session was known.
            let mut attach: QueryBuilder<'_, $Db> = QueryBuilder::new("UPDATE history_actions SET room_sid = ");
            attach.push_bind(room_sid).push(" WHERE room_sid IS NULL AND room = ").push_bind(room.as_str());
            attach.push(" AND at >= ").push_bind(started_at.saturating_sub(ACTION_GRACE_MICROS));
            if let Some(end) = end_at {
                attach.push(" AND at <= ").push_bind(end.saturating_add(figures::REMOVAL_WINDOW_MICROS));
            }
            attach.build().execute(&mut **tx).await?;

            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "SELECT participant_sid, identity, join_at, join_inferred, joined_hint, leave_at, leave_type, leave_inferred, disconnect_reason, joined_at, left_at, end_reason, removed_by, inferred, join_cursor, leave_cursor, joined_cursor, left_cursor FROM participant_sessions WHERE room_sid = ",
            );
            query.push_bind(room_sid);
            // More columns than sqlx's tuples decode: read by index.
            let rows = query.build().fetch_all(&mut **tx).await?;
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT identity, type, actor, at FROM history_actions WHERE room_sid = ");
            query.push_bind(room_sid).push(" AND type IN ('participant_removed', 'ban_enforced', 'room_deleted')");
            let actions: Vec<(String, String, String, i64)> = query.build_query_as().fetch_all(&mut **tx).await?;
            let actions: Vec<RemovalAction> = actions
                .into_iter()
                .map(|(identity, kind, actor, at)| RemovalAction { identity, kind, actor, at })
                .collect();
            let mut facts = Vec::with_capacity(rows.len());
            let mut stored = HashMap::with_capacity(rows.len());
            for row in rows {
                use sqlx::Row as _;
                let sid: String = row.try_get(0)?;
                stored.insert(
                    sid.clone(),
                    (
                        row.try_get::<Option<i64>, _>(9)?,
                        row.try_get::<Option<i64>, _>(10)?,
                        row.try_get::<String, _>(11)?,
                        row.try_get::<String, _>(12)?,
                        row.try_get::<bool, _>(13)?,
                        row.try_get::<i64, _>(16)?,
                        row.try_get::<i64, _>(17)?,
                    ),
                );
                facts.push(ParticipantFacts {
                    sid,
                    identity: row.try_get(1)?,
                    join_at: row.try_get(2)?,
                    join_inferred: row.try_get(3)?,
                    join_cursor: row.try_get(14)?,
                    joined_hint: row.try_get(4)?,
                    leave_at: row.try_get(5)?,
                    leave_type: row.try_get::<Option<String>, _>(6)?.unwrap_or_default(),
                    leave_inferred: row.try_get(7)?,
                    leave_cursor: row.try_get(15)?,
                    disconnect_reason: row.try_get(8)?,
                });
            }
            let derived = figures::derive(&facts, end_at, &actions);
            // Where usage figures may have changed: around what moved.
            let mut changed = Vec::new();
            for session in &derived.participants {
                let old = stored.get(&session.sid).map(|old| figures::Counted {
                    joined_at: old.0,
                    left_at: old.1,
                    inferred: old.4,
                    joined_cursor: old.5,
                    left_cursor: old.6,
                });
                changed.extend(figures::changed_times(old, session));
            }
            for session in &derived.participants {
                let now = (
                    session.joined_at,
                    session.left_at,
                    session.end_reason.clone(),
                    session.removed_by.clone(),
                    session.inferred,
                    session.joined_cursor,
                    session.left_cursor,
                );
                if stored.get(&session.sid) == Some(&now) {
                    continue;
                }
                let mut update: QueryBuilder<'_, $Db> = QueryBuilder::new("UPDATE participant_sessions SET joined_at = ");
                update.push_bind(session.joined_at).push(", left_at = ").push_bind(session.left_at);
                update.push(", end_reason = ").push_bind(session.end_reason.as_str());
                update.push(", removed_by = ").push_bind(session.removed_by.as_str());
                update.push(", inferred = ").push_bind(session.inferred);
                update.push(", joined_cursor = ").push_bind(session.joined_cursor);
                update.push(", left_cursor = ").push_bind(session.left_cursor);
                update.push(" WHERE participant_sid = ").push_bind(session.sid.as_str());
                update.build().execute(&mut **tx).await?;
            }
            // The session's timeline spans its actions too.
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT MIN(cursor), MAX(cursor) FROM history_actions WHERE room_sid = ");
            query.push_bind(room_sid);
            let (first_action, last_action): (Option<i64>, Option<i64>) =
                query.build_query_as().fetch_one(&mut **tx).await?;
            // The time the session's figures cover, before and after: the
            // cached usage of any bucket in either goes.
            let joined = derived.participants.iter().filter_map(|p| p.joined_at);
            let span_start = joined.clone().min().map_or(started_at, |first| first.min(started_at));
            let open = end_at.is_none() || derived.participants.iter().any(|p| p.joined_at.is_some() && p.left_at.is_none());
            let span_end = if open {
                None
            } else {
                Some(derived.participants.iter().filter_map(|p| p.left_at).chain(end_at).max().unwrap_or(started_at))
            };
            let inferred = totals_inferred(&derived.totals, start_inferred, end_inferred, start_at);
            if old_start.is_none() {
                // First computed: nothing cached counted it; its span.
                changed.push((span_start.min(old_started_at), span_end));
            } else if old_started_at != started_at || old_inferred != inferred || old_end == Some(RENAMED) {
                // Its start counts in one bucket, with its inferred mark;
                // and under its name, for callers asking for its room.
                changed.push((old_started_at, Some(old_started_at)));
                changed.push((started_at, Some(started_at)));
            }
            // The cached buckets those times touch go: one that ends at a
            // time is not touched by it, one that starts at it is.
            for times in figures::merge_times(changed).chunks(64) {
                let mut invalidate: QueryBuilder<'_, $Db> = QueryBuilder::new("DELETE FROM usage_cache WHERE ");
                for (index, (low, high)) in times.iter().enumerate() {
                    invalidate.push(if index == 0 { "(bucket_end > " } else { " OR (bucket_end > " }).push_bind(*low);
                    if let Some(high) = high {
                        invalidate.push(" AND bucket_start <= ").push_bind(*high);
                    }
                    invalidate.push(")");
                }
                invalidate.build().execute(&mut **tx).await?;
            }
            let longest = derived
                .participants
                .iter()
                .filter_map(|p| Some(p.left_at? - p.joined_at?))
                .max()
                .unwrap_or(0);
            if longest > 0 {
                let mut state: QueryBuilder<'_, $Db> = QueryBuilder::new("UPDATE history_state SET longest_micros = ");
                state.push_bind(longest).push(" WHERE singleton = 1 AND longest_micros < ").push_bind(longest);
                state.build().execute(&mut **tx).await?;
            }
            let totals = derived.totals;
            let mut update: QueryBuilder<'_, $Db> = QueryBuilder::new("UPDATE room_sessions SET started_at = ");
            update.push_bind(started_at);
            update.push(", span_start = ").push_bind(span_start);
            update.push(", span_end = ").push_bind(span_end);
            update.push(", participant_sessions = ").push_bind(totals.participant_sessions);
            update.push(", peak_participants = ").push_bind(totals.peak);
            update.push(", unique_identities = ").push_bind(totals.unique_identities);
            update.push(", participant_micros = ").push_bind(totals.closed_micros);
            update.push(", open_participants = ").push_bind(totals.open);
            update.push(", inferred = ").push_bind(inferred);
            // No room_started yet: the start shown is the earliest event's,
            // inferred (a real room_started later replaces it, see above).
            update.push(", start_inferred = ").push_bind(start_inferred || start_at.is_none());
            if let Some(first) = first_action {
                update.push(concat!(", first_cursor = ", $least, "(first_cursor, ")).push_bind(first).push(")");
            }
            if let Some(last) = last_action {
                update.push(concat!(", last_cursor = ", $greatest, "(last_cursor, ")).push_bind(last).push(")");
            }
            update.push(" WHERE room_sid = ").push_bind(room_sid);
            update.build().execute(&mut **tx).await?;
            Ok(())
        }

        const ROOM_COLUMNS: &str = "room_sid, room, started_at, start_inferred, end_at, end_inferred, participant_sessions, peak_participants, unique_identities, participant_micros, open_participants, inferred, first_cursor, last_cursor";

        #[allow(clippy::type_complexity)]
        type RoomTuple = (String, String, i64, bool, Option<i64>, bool, i64, i64, i64, i64, i64, bool, i64, i64);

        fn room_row(row: RoomTuple) -> RoomSessionRow {
            RoomSessionRow {
                room_sid: row.0,
                room: row.1,
                started_at: row.2,
                start_inferred: row.3,
                end_at: row.4,
                end_inferred: row.5,
                participant_sessions: row.6,
                peak_participants: row.7,
                unique_identities: row.8,
                participant_micros: row.9,
                open_participants: row.10,
                inferred: row.11,
                first_cursor: row.12,
                last_cursor: row.13,
            }
        }

        /// `AND (room IN (...)) AND (room LIKE ... OR ...)`.
        fn push_rooms<'a>(query: &mut QueryBuilder<'a, $Db>, rooms: &'a [String], like: &'a [String]) {
            if !rooms.is_empty() {
                query.push(" AND room IN (");
                let mut list = query.separated(", ");
                for room in rooms {
                    list.push_bind(room.as_str());
                }
                query.push(")");
            }
            if !like.is_empty() {
                query.push(" AND (");
                for (index, pattern) in like.iter().enumerate() {
                    if index > 0 {
                        query.push(" OR ");
                    }
                    query.push("room LIKE ").push_bind(pattern.as_str()).push(" ESCAPE '\\'");
                }
                query.push(")");
            }
        }

        pub async fn list_room_sessions(pool: &$Pool, filter: &SessionQuery) -> Result<Vec<RoomSessionRow>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(format!("SELECT {ROOM_COLUMNS} FROM room_sessions WHERE 1 = 1"));
            push_rooms(&mut query, &filter.rooms, &filter.like);
            if let Some(to) = filter.to {
                query.push(" AND started_at < ").push_bind(to);
            }
            if let Some(from) = filter.from {
                query.push(" AND (end_at IS NULL OR end_at >= ").push_bind(from).push(")");
            }
            if filter.active_only {
                query.push(" AND end_at IS NULL");
            }
            if let Some((started_at, room_sid)) = &filter.before {
                query.push(" AND (started_at < ").push_bind(*started_at);
                query.push(" OR (started_at = ").push_bind(*started_at).push(" AND room_sid < ").push_bind(room_sid.as_str());
                query.push("))");
            }
            query.push(" ORDER BY started_at DESC, room_sid DESC LIMIT ").push_bind(i64::from(filter.limit));
            let rows: Vec<RoomTuple> = query.build_query_as().fetch_all(pool).await?;
            Ok(rows.into_iter().map(room_row).collect())
        }

        pub async fn room_session(pool: &$Pool, room_sid: &str) -> Result<Option<RoomSessionRow>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new(format!("SELECT {ROOM_COLUMNS} FROM room_sessions WHERE room_sid = "));
            query.push_bind(room_sid);
            let row: Option<RoomTuple> = query.build_query_as().fetch_optional(pool).await?;
            Ok(row.map(room_row))
        }

        #[allow(clippy::type_complexity)]
        pub async fn room_session_details(
            pool: &$Pool,
            room_sid: &str,
        ) -> Result<(Vec<ParticipantSessionRow>, Vec<TrackRow>, Vec<(String, i64)>), StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "SELECT participant_sid, room_sid, room, identity, name, kind, joined_at, left_at, end_reason, removed_by, inferred FROM participant_sessions WHERE room_sid = ",
            );
            query.push_bind(room_sid).push(" ORDER BY joined_at, participant_sid");
            let rows: Vec<(String, String, String, String, String, String, Option<i64>, Option<i64>, String, String, bool)> =
                query.build_query_as().fetch_all(pool).await?;
            let participants = rows
                .into_iter()
                .map(|row| ParticipantSessionRow {
                    participant_sid: row.0,
                    room_sid: row.1,
                    room: row.2,
                    identity: row.3,
                    name: row.4,
                    kind: row.5,
                    joined_at: row.6,
                    left_at: row.7,
                    end_reason: row.8,
                    removed_by: row.9,
                    inferred: row.10,
                })
                .collect();
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "SELECT t.participant_sid, t.track_sid, t.type, t.source, t.name, t.published_at, t.unpublished_at FROM participant_tracks t JOIN participant_sessions p ON p.participant_sid = t.participant_sid WHERE p.room_sid = ",
            );
            query.push_bind(room_sid).push(" ORDER BY t.published_at, t.track_sid");
            let rows: Vec<(String, String, String, String, String, Option<i64>, Option<i64>)> =
                query.build_query_as().fetch_all(pool).await?;
            let tracks = rows
                .into_iter()
                .map(|row| TrackRow {
                    participant_sid: row.0,
                    track_sid: row.1,
                    kind: row.2,
                    source: row.3,
                    name: row.4,
                    published_at: row.5,
                    unpublished_at: row.6,
                })
                .collect();
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT type, COUNT(*) FROM history_actions WHERE room_sid = ");
            query.push_bind(room_sid).push(" GROUP BY type ORDER BY type");
            let actions: Vec<(String, i64)> = query.build_query_as().fetch_all(pool).await?;
            Ok((participants, tracks, actions))
        }

        pub async fn open_participants(pool: &$Pool, room_sids: &[String]) -> Result<Vec<(String, i64)>, StoreError> {
            if room_sids.is_empty() {
                return Ok(Vec::new());
            }
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "SELECT room_sid, joined_at FROM participant_sessions WHERE left_at IS NULL AND joined_at IS NOT NULL AND room_sid IN (",
            );
            let mut list = query.separated(", ");
            for sid in room_sids {
                list.push_bind(sid.as_str());
            }
            query.push(")");
            Ok(query.build_query_as().fetch_all(pool).await?)
        }

        pub async fn room_events(
            pool: &$Pool,
            room: &str,
            first: i64,
            last: i64,
            limit: u32,
        ) -> Result<Vec<super::super::StoredEvent>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT cursor, type, room, payload FROM events WHERE room = ");
            query.push_bind(room).push(" AND cursor >= ").push_bind(first).push(" AND cursor <= ").push_bind(last);
            query.push(" ORDER BY cursor LIMIT ").push_bind(i64::from(limit));
            let rows: Vec<(i64, String, String, Vec<u8>)> = query.build_query_as().fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(cursor, kind, room, payload)| super::super::StoredEvent {
                    cursor: to_cursor(cursor),
                    kind,
                    room,
                    payload,
                })
                .collect())
        }

        pub async fn usage_rows(
            pool: &$Pool,
            from: i64,
            to: i64,
            rooms: &[String],
            like: &[String],
            with_room: bool,
        ) -> Result<(Vec<UsageParticipant>, Vec<UsageSession>), StoreError> {
            // Every participant session that joined before `to` and had not
            // left by `from`: those that ended started at most the longest
            // session before `from` (the index walked from there), and the
            // open ones (a partial index of their own).
            let (longest,): (i64,) =
                sqlx::query_as("SELECT longest_micros FROM history_state WHERE singleton = 1").fetch_one(pool).await?;
            let room = if with_room { "room" } else { "''" };
            let columns = format!(
                "SELECT {room}, identity, joined_at, left_at, inferred, joined_cursor, left_cursor FROM participant_sessions WHERE "
            );
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(&columns);
            query.push("joined_at >= ").push_bind(from.saturating_sub(longest).saturating_sub(1));
            // `>=`: a session of no length at `from` counts from there.
            query.push(" AND joined_at < ").push_bind(to).push(" AND left_at >= ").push_bind(from);
            push_rooms(&mut query, rooms, like);
            query.push(" UNION ALL ").push(&columns).push("left_at IS NULL AND joined_at < ").push_bind(to);
            push_rooms(&mut query, rooms, like);
            #[allow(clippy::type_complexity)]
            let rows: Vec<(String, String, i64, Option<i64>, bool, i64, i64)> =
                query.build_query_as().fetch_all(pool).await?;
            let participants = rows
                .into_iter()
                .map(|(room, identity, joined_at, left_at, inferred, joined_cursor, left_cursor)| UsageParticipant {
                    room,
                    identity,
                    joined_at,
                    left_at,
                    inferred,
                    joined_cursor,
                    // Still connected: after everything so far.
                    left_cursor: if left_at.is_none() { i64::MAX } else { left_cursor },
                })
                .collect();
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT room, started_at, inferred FROM room_sessions WHERE started_at >= ");
            query.push_bind(from).push(" AND started_at < ").push_bind(to);
            push_rooms(&mut query, rooms, like);
            let rows: Vec<(String, i64, bool)> = query.build_query_as().fetch_all(pool).await?;
            let sessions = rows
                .into_iter()
                .map(|(room, started_at, inferred)| UsageSession { room, started_at, inferred })
                .collect();
            Ok((participants, sessions))
        }

        pub async fn usage_cache_get(
            pool: &$Pool,
            rooms_key: &str,
            from: i64,
            to: i64,
        ) -> Result<Vec<CachedBucket>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "SELECT bucket_start, bucket_end, sessions, participant_micros, peak_concurrency, unique_identities, inferred FROM usage_cache WHERE rooms_key = ",
            );
            query.push_bind(rooms_key).push(" AND bucket_start >= ").push_bind(from);
            query.push(" AND bucket_end <= ").push_bind(to).push(" ORDER BY bucket_start");
            let rows: Vec<(i64, i64, i64, i64, i64, i64, bool)> = query.build_query_as().fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|row| CachedBucket {
                    start: row.0,
                    end: row.1,
                    sessions: row.2,
                    participant_micros: row.3,
                    peak_concurrency: row.4,
                    unique_identities: row.5,
                    inferred: row.6,
                    profile: None,
                })
                .collect())
        }

        pub async fn usage_profile_get(
            pool: &$Pool,
            rooms_key: &str,
            start: i64,
            end: i64,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new("SELECT profile FROM usage_cache WHERE rooms_key = ");
            query.push_bind(rooms_key).push(" AND bucket_start = ").push_bind(start);
            query.push(" AND bucket_end = ").push_bind(end);
            let row: Option<(Option<Vec<u8>>,)> = query.build_query_as().fetch_optional(pool).await?;
            Ok(row.and_then(|(profile,)| profile))
        }

        pub async fn usage_cache_put(
            pool: &$Pool,
            rooms_key: &str,
            checkpoint: u64,
            buckets: &[CachedBucket],
        ) -> Result<bool, StoreError> {
            if buckets.is_empty() {
                return Ok(true);
            }
            // The checkpoint row locked: a projection in flight finishes
            // first, and then the checkpoint has moved.
            let mut tx = pool.begin_with($begin).await?;
            let (through,): (i64,) =
                sqlx::query_as(concat!("SELECT projected_through FROM history_state WHERE singleton = 1", $lock))
                    .fetch_one(&mut *tx)
                    .await?;
            if to_cursor(through) != checkpoint {
                tx.rollback().await?;
                return Ok(false);
            }
            for chunk in buckets.chunks(500) {
                let mut insert: QueryBuilder<'_, $Db> = QueryBuilder::new(
                    "INSERT INTO usage_cache (rooms_key, bucket_start, bucket_end, sessions, participant_micros, peak_concurrency, unique_identities, inferred, profile) ",
                );
                insert.push_values(chunk, |mut row, bucket| {
                    row.push_bind(rooms_key)
                        .push_bind(bucket.start)
                        .push_bind(bucket.end)
                        .push_bind(bucket.sessions)
                        .push_bind(bucket.participant_micros)
                        .push_bind(bucket.peak_concurrency)
                        .push_bind(bucket.unique_identities)
                        .push_bind(bucket.inferred)
                        .push_bind(bucket.profile.as_deref());
                });
                // A bucket cached without its profile (or with one this
                // version cannot read) gains it; the figures are the same
                // (no projection committed since).
                insert.push(
                    " ON CONFLICT (rooms_key, bucket_start, bucket_end) DO UPDATE SET profile = excluded.profile \
                     WHERE excluded.profile IS NOT NULL",
                );
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        }

        pub async fn prune(pool: &$Pool, before: i64, limit: u32) -> Result<u64, StoreError> {
            let mut tx = pool.begin_with($begin).await?;
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT room_sid FROM room_sessions WHERE end_at IS NOT NULL AND end_at < ");
            query.push_bind(before).push(" ORDER BY end_at LIMIT ").push_bind(i64::from(limit));
            let sids: Vec<(String,)> = query.build_query_as().fetch_all(&mut *tx).await?;
            if sids.is_empty() {
                // Actions never attached to a session, older than the cutoff.
                let mut actions: QueryBuilder<'_, $Db> =
                    QueryBuilder::new("DELETE FROM history_actions WHERE room_sid IS NULL AND at < ");
                actions.push_bind(before);
                actions.build().execute(&mut *tx).await?;
                tx.commit().await?;
                return Ok(0);
            }
            for (table, column) in [
                ("participant_tracks", "participant_sid IN (SELECT participant_sid FROM participant_sessions WHERE room_sid"),
                ("participant_sessions", "(room_sid"),
                ("history_actions", "(room_sid"),
                ("room_sessions", "(room_sid"),
            ] {
                let mut delete: QueryBuilder<'_, $Db> = QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
                let mut list = delete.separated(", ");
                for (sid,) in &sids {
                    list.push_bind(sid.as_str());
                }
                delete.push("))");
                delete.build().execute(&mut *tx).await?;
            }
            let mut cache: QueryBuilder<'_, $Db> = QueryBuilder::new("DELETE FROM usage_cache WHERE bucket_start < ");
            cache.push_bind(before);
            cache.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(sids.len() as u64)
        }
    };
}

pub(super) mod sqlite {
    // BEGIN IMMEDIATE: the write lock from the start, so the appender's
    // commits never invalidate the projection's snapshot (SQLITE_BUSY).
    history_queries!(sqlx::Sqlite, sqlx::SqlitePool, begin: "BEGIN IMMEDIATE", lock: "", least: "MIN", greatest: "MAX");
}

pub(super) mod postgres {
    history_queries!(sqlx::Postgres, sqlx::PgPool, begin: "BEGIN", lock: " FOR UPDATE", least: "LEAST", greatest: "GREATEST");
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::proto::v1::{Actor, EventParticipant, EventRoom};

    /// As the `ORDER BY CASE ... LIMIT 1` it replaces: live at the time,
    /// then ended moments before, then started soon after; the latest
    /// start first; nothing outside the grace and the removal window.
    #[test]
    fn an_action_belongs_to_the_session_live_then_else_the_nearest() {
        let minute = 60 * 1_000_000;
        let at = 1_000 * minute;
        let session = |sid: &str, start: i64, end: Option<i64>| (sid.to_owned(), start, end);
        let ended_before = session("RM_ended", at - 30 * minute, Some(at - 1));
        let starts_after = session("RM_later", at + minute, None);
        let live_old = session("RM_live_old", at - 20 * minute, None);
        let live_new = session("RM_live_new", at - 10 * minute, Some(at + minute));
        let too_late = session("RM_too_late", at + ACTION_GRACE_MICROS + 1, None);
        let too_old = session("RM_too_old", at - 90 * minute, Some(at - figures::REMOVAL_WINDOW_MICROS - 1));
        let all = [&ended_before, &starts_after, &live_old, &live_new, &too_late, &too_old];
        let choose = |sessions: &[&(String, i64, Option<i64>)]| {
            let sessions: Vec<_> = sessions.iter().map(|session| (*session).clone()).collect();
            choose_session(&sessions, at)
        };
        assert_eq!(choose(&all).as_deref(), Some("RM_live_new"));
        assert_eq!(choose(&[&ended_before, &starts_after, &too_late]).as_deref(), Some("RM_ended"));
        assert_eq!(choose(&[&starts_after, &too_late, &too_old]).as_deref(), Some("RM_later"));
        assert_eq!(choose(&[&too_late, &too_old]), None);
    }

    #[test]
    fn an_action_is_read_without_its_detail_and_the_rest_in_full() {
        let mut detail = crate::events::EncodedStruct::default();
        detail.string("ttl", "6h");
        let detail = prost_types::Struct::decode(detail.as_bytes()).unwrap();
        let action = Event {
            id: "RC_1".into(),
            r#type: "token_minted".into(),
            source: EventSource::Roomcontrol as i32,
            occurred_at: Some(prost_types::Timestamp { seconds: 5, nanos: 6000 }),
            received_at: Some(prost_types::Timestamp { seconds: 5, nanos: 6000 }),
            room: Some(EventRoom { name: "standup".into(), sid: String::new() }),
            participant: Some(EventParticipant { identity: "alice".into(), ..Default::default() }),
            actor: Some(Actor { caller: "API key \"ops\"".into(), rpc: "CreateToken".into() }),
            detail: Some(detail),
            ..Default::default()
        };
        let read = decode_event(&action.encode_to_vec()).unwrap();
        assert_eq!(read, Event { detail: None, ..action.clone() });
        for other in [
            Event { inferred: true, ..action.clone() },
            Event { source: EventSource::Livekit as i32, actor: None, ..action.clone() },
        ] {
            assert_eq!(decode_event(&other.encode_to_vec()).unwrap(), other);
        }
    }
}
