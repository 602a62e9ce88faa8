//! The queries, written once for both databases: `queries!` expands them
//! for one sqlx driver (`sqlite.rs`, `postgres.rs`). Every value is bound
//! through sqlx's `QueryBuilder`, which writes each driver's placeholders.
//! What differs between the databases is passed in: the statements an
//! append runs first (PostgreSQL's ordering lock) and last (its wake-up).

macro_rules! queries {
    (
        $Db:ty,
        $Pool:ty,
        before_append: [$($before:expr),*],
        after_append: [$($after:expr),*],
        after_ban: [$($after_ban:expr),*]
    ) => {
        use std::collections::HashMap;

        use sqlx::QueryBuilder;

        use super::{
            Filter, Live, LiveParticipant, LiveRoom, NewEvent, Presence, StoreError, StoredDispatch, StoredRecording, StoredEvent,
            to_column, to_cursor,
        };

        /// Appends in one transaction; see `Store::append`.
        pub async fn append(pool: &$Pool, batch: &[NewEvent]) -> Result<Vec<Option<u64>>, StoreError> {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let mut tx = pool.begin().await?;
            $( sqlx::query($before).execute(&mut *tx).await?; )*
            let mut insert: QueryBuilder<'_, $Db> =
                QueryBuilder::new("INSERT INTO events (id, type, room, received_at, payload) ");
            insert.push_values(batch, |mut row, event| {
                row.push_bind(event.id.as_str())
                    .push_bind(event.kind.as_str())
                    .push_bind(event.room.as_str())
                    .push_bind(event.received_at)
                    .push_bind(event.payload.as_slice());
            });
            insert.push(" ON CONFLICT (id) DO NOTHING RETURNING cursor, id");
            let stored: Vec<(i64, String)> = insert.build_query_as().fetch_all(&mut *tx).await?;
            let mut cursors: HashMap<String, u64> =
                stored.into_iter().map(|(cursor, id)| (id, to_cursor(cursor))).collect();
            let mut result = Vec::with_capacity(batch.len());
            for event in batch {
                // A second event with the same id in one batch is a duplicate too.
                let cursor = cursors.remove(&event.id);
                if cursor.is_some() {
                    apply_presence(&mut tx, &event.presence, event.received_at).await?;
                }
                result.push(cursor);
            }
            $( sqlx::query($after).execute(&mut *tx).await?; )*
            tx.commit().await?;
            Ok(result)
        }

        /// Keeps `live_rooms`, `live_participants` and `ended` in step with
        /// one stored event.
        async fn apply_presence(
            tx: &mut sqlx::Transaction<'_, $Db>,
            presence: &Presence,
            at: i64,
        ) -> Result<(), StoreError> {
            let mut query: QueryBuilder<'_, $Db>;
            match presence {
                Presence::Unchanged => return Ok(()),
                Presence::Banned(ban) => {
                    query = QueryBuilder::new(
                        "INSERT INTO bans (id, room, identity, created_at, expires_at, payload) VALUES (",
                    );
                    let mut values = query.separated(", ");
                    values.push_bind(ban.id.as_str());
                    values.push_bind(ban.room.as_str());
                    values.push_bind(ban.identity.as_str());
                    values.push_bind(ban.created_at);
                    values.push_bind(ban.expires_at);
                    values.push_bind(ban.payload.as_slice());
                    query.push(")");
                    query.build().execute(&mut **tx).await?;
                    $( sqlx::query($after_ban).execute(&mut **tx).await?; )*
                }
                Presence::Unbanned { ban_id } => {
                    query = QueryBuilder::new("UPDATE bans SET lifted_at = ");
                    query.push_bind(at).push(" WHERE lifted_at IS NULL AND id = ").push_bind(ban_id.as_str());
                    query.build().execute(&mut **tx).await?;
                    $( sqlx::query($after_ban).execute(&mut **tx).await?; )*
                }
                Presence::Recording(recording) => {
                    query = QueryBuilder::new(
                        "INSERT INTO recordings (id, room, status, ended, end_inferred, updated_at, started_at, started_by, payload) VALUES (",
                    );
                    let mut values = query.separated(", ");
                    values.push_bind(recording.id.as_str());
                    values.push_bind(recording.room.as_str());
                    values.push_bind(recording.status);
                    values.push_bind(recording.ended);
                    values.push_bind(recording.end_inferred);
                    values.push_bind(recording.updated_at);
                    values.push_bind(recording.started_at);
                    values.push_bind(recording.started_by.as_deref());
                    values.push_bind(recording.payload.as_slice());
                    // A report replaces the stored one unless it is older, or
                    // the stored one has ended (only LiveKit's own end may
                    // replace an end RoomControl inferred).
                    const NEWER: &str = "(NOT recordings.ended AND (excluded.ended OR excluded.updated_at >= recordings.updated_at)) OR (recordings.end_inferred AND excluded.ended AND NOT excluded.end_inferred)";
                    query.push(") ON CONFLICT (id) DO UPDATE SET started_by = COALESCE(recordings.started_by, excluded.started_by)");
                    for column in ["room", "status", "ended", "end_inferred", "updated_at", "payload"] {
                        query.push(format!(", {column} = CASE WHEN {NEWER} THEN excluded.{column} ELSE recordings.{column} END"));
                    }
                    query.push(", started_at = CASE WHEN recordings.started_at = 0 THEN excluded.started_at ELSE recordings.started_at END");
                    query.build().execute(&mut **tx).await?;
                }
                Presence::Dispatched(dispatch) => {
                    query = QueryBuilder::new(
                        "INSERT INTO agent_dispatches (id, room, redispatch, generation, closed, created_at, payload) VALUES (",
                    );
                    let mut values = query.separated(", ");
                    values.push_bind(dispatch.id.as_str());
                    values.push_bind(dispatch.room.as_str());
                    values.push_bind(dispatch.redispatch);
                    values.push_bind(dispatch.generation);
                    values.push_bind(false);
                    values.push_bind(at);
                    values.push_bind(dispatch.payload.as_slice());
                    query.push(") ON CONFLICT (id) DO NOTHING");
                    query.build().execute(&mut **tx).await?;
                    if let Some(replaced) = &dispatch.replaces {
                        close_dispatch(tx, replaced).await?;
                    }
                }
                Presence::DispatchClosed { dispatch_id } => close_dispatch(tx, dispatch_id).await?,
                Presence::RoomStarted { room_sid, room } => {
                    query = QueryBuilder::new("INSERT INTO live_rooms (room_sid, room, started_at) SELECT ");
                    query.push_bind(room_sid.as_str()).push(", ").push_bind(room.as_str()).push(", ").push_bind(at);
                    query.push(" WHERE NOT EXISTS (SELECT 1 FROM ended WHERE sid = ").push_bind(room_sid.as_str());
                    query.push(") ON CONFLICT DO NOTHING");
                    query.build().execute(&mut **tx).await?;
                }
                Presence::RoomFinished { room_sid } => {
                    query = QueryBuilder::new("DELETE FROM live_rooms WHERE room_sid = ");
                    query.push_bind(room_sid.as_str());
                    query.build().execute(&mut **tx).await?;
                    end(tx, room_sid, at).await?;
                }
                Presence::ParticipantJoined { participant_sid, room_sid, room, identity } => {
                    query = QueryBuilder::new(
                        "INSERT INTO live_participants (participant_sid, room_sid, room, identity, joined_at) SELECT ",
                    );
                    let mut values = query.separated(", ");
                    values.push_bind(participant_sid.as_str());
                    values.push_bind(room_sid.as_str());
                    values.push_bind(room.as_str());
                    values.push_bind(identity.as_str());
                    values.push_bind(at);
                    query.push(" WHERE NOT EXISTS (SELECT 1 FROM ended WHERE sid = ").push_bind(participant_sid.as_str());
                    query.push(") ON CONFLICT DO NOTHING");
                    query.build().execute(&mut **tx).await?;
                }
                Presence::ParticipantGone { participant_sid } => {
                    query = QueryBuilder::new("DELETE FROM live_participants WHERE participant_sid = ");
                    query.push_bind(participant_sid.as_str());
                    query.build().execute(&mut **tx).await?;
                    end(tx, participant_sid, at).await?;
                }
            }
            Ok(())
        }

        async fn close_dispatch(tx: &mut sqlx::Transaction<'_, $Db>, id: &str) -> Result<(), StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new("UPDATE agent_dispatches SET closed = ");
            query.push_bind(true).push(" WHERE id = ").push_bind(id);
            query.build().execute(&mut **tx).await?;
            Ok(())
        }

        /// Remembers that a room or participant ended, so a late start
        /// does not open it again.
        async fn end(tx: &mut sqlx::Transaction<'_, $Db>, sid: &str, at: i64) -> Result<(), StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new("INSERT INTO ended (sid, ended_at) VALUES (");
            query.push_bind(sid).push(", ").push_bind(at).push(") ON CONFLICT DO NOTHING");
            query.build().execute(&mut **tx).await?;
            Ok(())
        }

        /// See `Store::read_after`.
        pub async fn read_after(
            pool: &$Pool,
            after: u64,
            limit: u32,
            filter: &Filter,
        ) -> Result<Vec<StoredEvent>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new("SELECT cursor, type, room, payload FROM events WHERE cursor > ");
            query.push_bind(to_column(after));
            for (column, values) in [(" AND room IN (", &filter.rooms), (" AND type IN (", &filter.kinds)] {
                if !values.is_empty() {
                    query.push(column);
                    let mut list = query.separated(", ");
                    for value in values {
                        list.push_bind(value.as_str());
                    }
                    query.push(")");
                }
            }
            query.push(" ORDER BY cursor LIMIT ").push_bind(i64::from(limit));
            let rows: Vec<(i64, String, String, Vec<u8>)> = query.build_query_as().fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(cursor, kind, room, payload)| StoredEvent { cursor: to_cursor(cursor), kind, room, payload })
                .collect())
        }

        /// See `Store::latest_cursor`.
        pub async fn latest_cursor(pool: &$Pool) -> Result<u64, StoreError> {
            let (newest,): (i64,) = sqlx::query_as(
                "SELECT COALESCE(MAX(newest), 0) FROM (SELECT MAX(cursor) AS newest FROM events UNION ALL SELECT pruned_through FROM timeline_state) AS both_ends",
            )
            .fetch_one(pool)
            .await?;
            Ok(to_cursor(newest))
        }

        /// See `Store::pruned_through`.
        pub async fn pruned_through(pool: &$Pool) -> Result<u64, StoreError> {
            let (pruned,): (i64,) = sqlx::query_as("SELECT pruned_through FROM timeline_state").fetch_one(pool).await?;
            Ok(to_cursor(pruned))
        }

        /// See `Store::prune`.
        pub async fn prune(pool: &$Pool, before: i64, limit: u32) -> Result<u64, StoreError> {
            let mut tx = pool.begin().await?;
            // Recordings that ended, and dispatches, older than the timeline
            // kept: their events are gone with them.
            let mut recordings: QueryBuilder<'_, $Db> = QueryBuilder::new("DELETE FROM recordings WHERE ended = ");
            recordings.push_bind(true).push(" AND updated_at < ").push_bind(before.saturating_mul(1000));
            recordings.build().execute(&mut *tx).await?;
            let mut dispatches: QueryBuilder<'_, $Db> =
                QueryBuilder::new("DELETE FROM agent_dispatches WHERE created_at < ");
            dispatches.push_bind(before);
            dispatches.build().execute(&mut *tx).await?;
            // The newest of the oldest `limit` events received before the
            // cutoff: everything up to it goes, so what is left is always
            // one unbroken run of cursors.
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "SELECT MAX(cursor) FROM (SELECT cursor FROM events WHERE cursor <= (SELECT MAX(cursor) FROM events WHERE received_at < ",
            );
            query.push_bind(before).push(") ORDER BY cursor LIMIT ").push_bind(i64::from(limit)).push(") AS oldest");
            let (through,): (Option<i64>,) = query.build_query_as().fetch_one(&mut *tx).await?;
            let Some(through) = through else {
                tx.commit().await?;
                return Ok(0);
            };
            let mut delete: QueryBuilder<'_, $Db> = QueryBuilder::new("DELETE FROM events WHERE cursor <= ");
            delete.push_bind(through);
            let deleted = delete.build().execute(&mut *tx).await?.rows_affected();
            let mut state: QueryBuilder<'_, $Db> = QueryBuilder::new("UPDATE timeline_state SET pruned_through = ");
            state.push_bind(through).push(" WHERE pruned_through < ").push_bind(through);
            state.build().execute(&mut *tx).await?;
            // Ends older than the kept timeline can no longer meet their start.
            let mut ended: QueryBuilder<'_, $Db> = QueryBuilder::new("DELETE FROM ended WHERE ended_at < ");
            ended.push_bind(before);
            ended.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(deleted)
        }

        /// See `Store::bans_in_force`.
        pub async fn bans_in_force(pool: &$Pool, now: i64) -> Result<Vec<Vec<u8>>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> = QueryBuilder::new(
                "SELECT payload FROM bans WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ",
            );
            query.push_bind(now).push(") ORDER BY created_at DESC, id");
            let rows: Vec<(Vec<u8>,)> = query.build_query_as().fetch_all(pool).await?;
            Ok(rows.into_iter().map(|(payload,)| payload).collect())
        }

        /// See `Store::recordings`.
        pub async fn recordings(
            pool: &$Pool,
            room: Option<&str>,
            id: Option<&str>,
            open_only: bool,
            limit: u32,
        ) -> Result<Vec<StoredRecording>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT started_by, payload FROM recordings WHERE 1 = 1");
            if let Some(room) = room {
                query.push(" AND room = ").push_bind(room);
            }
            if let Some(id) = id {
                query.push(" AND id = ").push_bind(id);
            }
            if open_only {
                query.push(" AND ended = ").push_bind(false);
            }
            query.push(" ORDER BY started_at DESC, id LIMIT ").push_bind(i64::from(limit));
            let rows: Vec<(Option<Vec<u8>>, Vec<u8>)> = query.build_query_as().fetch_all(pool).await?;
            Ok(rows.into_iter().map(|(started_by, payload)| StoredRecording { started_by, payload }).collect())
        }

        /// See `Store::redispatchable`.
        pub async fn redispatchable(pool: &$Pool, room: &str) -> Result<Vec<StoredDispatch>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT generation, payload FROM agent_dispatches WHERE room = ");
            query.push_bind(room).push(" AND redispatch = ").push_bind(true);
            query.push(" AND closed = ").push_bind(false).push(" ORDER BY created_at, id");
            let rows: Vec<(i32, Vec<u8>)> = query.build_query_as().fetch_all(pool).await?;
            Ok(rows.into_iter().map(|(generation, payload)| StoredDispatch { generation, payload }).collect())
        }

        /// See `Store::dispatch_flags`.
        pub async fn dispatch_flags(pool: &$Pool, room: &str) -> Result<Vec<StoredDispatch>, StoreError> {
            let mut query: QueryBuilder<'_, $Db> =
                QueryBuilder::new("SELECT generation, payload FROM agent_dispatches WHERE room = ");
            query.push_bind(room).push(" ORDER BY created_at, id");
            let rows: Vec<(i32, Vec<u8>)> = query.build_query_as().fetch_all(pool).await?;
            Ok(rows.into_iter().map(|(generation, payload)| StoredDispatch { generation, payload }).collect())
        }

        /// See `Store::live`.
        pub async fn live(pool: &$Pool) -> Result<Live, StoreError> {
            let rooms: Vec<(String, String)> =
                sqlx::query_as("SELECT room_sid, room FROM live_rooms ORDER BY room_sid").fetch_all(pool).await?;
            let participants: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT participant_sid, room_sid, room, identity FROM live_participants ORDER BY participant_sid",
            )
            .fetch_all(pool)
            .await?;
            Ok(Live {
                rooms: rooms.into_iter().map(|(room_sid, room)| LiveRoom { room_sid, room }).collect(),
                participants: participants
                    .into_iter()
                    .map(|(participant_sid, room_sid, room, identity)| LiveParticipant {
                        participant_sid,
                        room_sid,
                        room,
                        identity,
                    })
                    .collect(),
            })
        }
    };
}

pub(super) use queries;
