//! The SQLite timeline's writer: one thread with a connection of its own
//! that appends batches of events, each in one transaction.
//!
//! Why not sqlx for this: sqlx runs each SQLite connection on a worker
//! thread and hands it every statement, the transaction's BEGIN and
//! COMMIT, and the pool's liveness pings through channels: half a dozen
//! thread hand-offs per append, and a multi-row `INSERT ... RETURNING`
//! whose text (so whose prepared statement) changes with the batch's size.
//! Here an append is one hand-off each way. A batch is inserted by
//! multi-row INSERTs of up to [`ROWS_PER_INSERT`] rows, each size's
//! statement prepared once: one statement keeps SQLite's cursors on the
//! table and its indexes where its last row went, where a statement per
//! row seeks each of them again from its root (docs/benchmarks.md). The
//! cursors are read from `last_insert_rowid`; should a statement insert
//! fewer rows than it was given (an id stored before), the transaction is
//! rolled back and the batch inserted one row at a time, each duplicate
//! told by no row changed.
//! Same SQLite (rusqlite on the libsqlite3-sys sqlx uses), same file, same
//! settings (WAL, `synchronous = NORMAL`): a batch is acknowledged once its
//! COMMIT returned, so it survives a killed process as before.
//!
//! Batches come here that change nothing beside the timeline (every
//! RoomControl action but bans, recordings and dispatches) or change only
//! who is live (LiveKit's webhooks: rooms started and finished,
//! participants joined and gone, kept as `queries::apply_presence` keeps
//! them). Bans, recordings and dispatches go through sqlx's `append`. Both
//! write the same tables under SQLite's one write lock, one batch after
//! the other (the timeline's appender waits for each), so cursors still
//! commit in order.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::{NewEvent, Presence, StoreError, to_cursor};

/// One event, its id the only key: an id stored before is a duplicate,
/// and nothing is inserted.
const INSERT: &str =
    "INSERT INTO events (id, type, room, received_at, payload) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING";

/// Most rows in one INSERT (five parameters each).
const ROWS_PER_INSERT: usize = 64;

/// The INSERT of `rows` events (`rows` >= 1), as [`INSERT`].
fn insert_rows(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO events (id, type, room, received_at, payload) VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?)" });
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

type Reply = (Vec<NewEvent>, Result<Vec<Option<u64>>, StoreError>);

struct Job {
    batch: Vec<NewEvent>,
    done: oneshot::Sender<Reply>,
}

/// The writer thread's handle: cloned with the store; closed with it.
#[derive(Clone)]
pub struct SqliteWriter {
    inner: Arc<Mutex<Option<Running>>>,
}

struct Running {
    jobs: mpsc::Sender<Job>,
    /// Answered when the thread has closed its connection.
    stopped: oneshot::Receiver<()>,
}

impl SqliteWriter {
    /// Opens a connection to the database at `filename` (`memory`: the
    /// shared-cache in-memory database of that name) and starts its thread.
    pub fn open(filename: &str, memory: bool, busy_timeout: Duration) -> Result<SqliteWriter, StoreError> {
        let fail = |error: rusqlite::Error| StoreError::Writer(error.to_string());
        let connection = if memory {
            Connection::open_with_flags(
                format!("{filename}?mode=memory&cache=shared"),
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        } else {
            Connection::open_with_flags(filename, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        }
        .map_err(fail)?;
        connection.busy_timeout(busy_timeout).map_err(fail)?;
        // As sqlx's connections (`Store::open`): WAL is the database's own
        // (set there, and kept in the file); the rest is per connection.
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(fail)?;
        connection.pragma_update(None, "foreign_keys", true).map_err(fail)?;
        // Every size of multi-row INSERT, the one-row one and the presence
        // statements stay prepared.
        connection.set_prepared_statement_cache_capacity(ROWS_PER_INSERT + 16);
        connection.prepare_cached(INSERT).map_err(fail)?;
        // Index: a number of rows.
        let inserts: Vec<String> = (0..=ROWS_PER_INSERT).map(insert_rows).collect();
        // A file: IMMEDIATE takes the write lock at BEGIN, waiting up to the
        // busy timeout for another writer (the pruner). The in-memory
        // store is a shared cache, where locks are per table and a busy
        // timeout does not apply: there the INSERT takes the lock, waiting
        // for readers through unlock_notify.
        let behavior = if memory { TransactionBehavior::Deferred } else { TransactionBehavior::Immediate };
        let (jobs, queue) = mpsc::channel::<Job>();
        let (stop, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || {
                let mut connection = connection;
                for Job { batch, done } in queue {
                    let result = append(&mut connection, behavior, &inserts, &batch)
                        .map_err(|error| StoreError::Writer(error.to_string()));
                    let _ = done.send((batch, result));
                }
                drop(connection);
                let _ = stop.send(());
            })
            .map_err(|error| StoreError::Writer(format!("cannot start the writer thread: {error}")))?;
        Ok(SqliteWriter { inner: Arc::new(Mutex::new(Some(Running { jobs, stopped }))) })
    }

    /// Appends `batch` in one transaction; see `Store::append`. The batch
    /// is handed to the thread and back: `batch` is as it was after.
    pub async fn append(&self, batch: &mut Vec<NewEvent>) -> Result<Vec<Option<u64>>, StoreError> {
        let (done, answer) = oneshot::channel();
        {
            let running = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(running) = running.as_ref() else {
                return Err(StoreError::Writer("the store is closed".to_owned()));
            };
            running
                .jobs
                .send(Job { batch: std::mem::take(batch), done })
                .map_err(|_| StoreError::Writer("the writer thread is gone".to_owned()))?;
        }
        let (returned, result) =
            answer.await.map_err(|_| StoreError::Writer("the writer thread stopped during an append".to_owned()))?;
        *batch = returned;
        result
    }

    /// Stops the thread once the appends sent are done, and waits until
    /// it closed its connection.
    pub async fn close(&self) {
        let running = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(Running { jobs, stopped }) = running {
            drop(jobs);
            let _ = stopped.await;
        }
    }
}

fn append(
    connection: &mut Connection,
    behavior: TransactionBehavior,
    inserts: &[String],
    batch: &[NewEvent],
) -> rusqlite::Result<Vec<Option<u64>>> {
    match append_in_chunks(connection, behavior, inserts, batch)? {
        Some(cursors) => Ok(cursors),
        None => append_one_by_one(connection, behavior, batch),
    }
}

/// Appends `batch` by multi-row INSERTs in one transaction; `None`, with
/// nothing appended, if one of them met a duplicate.
fn append_in_chunks(
    connection: &mut Connection,
    behavior: TransactionBehavior,
    inserts: &[String],
    batch: &[NewEvent],
) -> rusqlite::Result<Option<Vec<Option<u64>>>> {
    let transaction = connection.transaction_with_behavior(behavior)?;
    let mut cursors = Vec::with_capacity(batch.len());
    for chunk in batch.chunks(ROWS_PER_INSERT) {
        let mut insert = transaction.prepare_cached(&inserts[chunk.len()])?;
        let parameters = chunk.iter().flat_map(|event| {
            [&event.id as &dyn rusqlite::ToSql, &event.kind, &event.room, &event.received_at, &event.payload]
        });
        let inserted = insert.execute(rusqlite::params_from_iter(parameters))?;
        if inserted != chunk.len() {
            // Dropped without a commit: rolled back.
            return Ok(None);
        }
        // `cursor` is the rowid, AUTOINCREMENT: the rows of one statement
        // that all went in got consecutive cursors, in their order, the
        // last one the last inserted.
        let last = transaction.last_insert_rowid();
        let first = last - (chunk.len() as i64 - 1);
        cursors.extend((first..=last).map(|cursor| Some(to_cursor(cursor))));
        for event in chunk {
            apply_presence(&transaction, &event.presence, event.received_at)?;
        }
    }
    transaction.commit()?;
    Ok(Some(cursors))
}

/// Appends `batch` one row at a time in one transaction: a duplicate is
/// an INSERT that changed no row.
fn append_one_by_one(
    connection: &mut Connection,
    behavior: TransactionBehavior,
    batch: &[NewEvent],
) -> rusqlite::Result<Vec<Option<u64>>> {
    let transaction = connection.transaction_with_behavior(behavior)?;
    let mut cursors = Vec::with_capacity(batch.len());
    {
        let mut insert = transaction.prepare_cached(INSERT)?;
        for event in batch {
            let inserted = insert.execute(rusqlite::params![
                event.id,
                event.kind,
                event.room,
                event.received_at,
                event.payload
            ])?;
            // `cursor` is the rowid: the row just inserted is the last.
            let cursor = (inserted == 1).then(|| to_cursor(transaction.last_insert_rowid()));
            if cursor.is_some() {
                apply_presence(&transaction, &event.presence, event.received_at)?;
            }
            cursors.push(cursor);
        }
    }
    // Dropped without a commit (an error above), the transaction rolls back.
    transaction.commit()?;
    Ok(cursors)
}

/// Whether the writer keeps this change (see the module's comment).
pub fn keeps(presence: &Presence) -> bool {
    matches!(
        presence,
        Presence::Unchanged
            | Presence::RoomStarted { .. }
            | Presence::RoomFinished { .. }
            | Presence::ParticipantJoined { .. }
            | Presence::ParticipantGone { .. }
    )
}

/// Keeps `live_rooms`, `live_participants` and `ended` in step with one
/// stored event, with the statements of `queries::apply_presence`: a start
/// whose end is known opens nothing, an end is remembered.
fn apply_presence(transaction: &rusqlite::Transaction<'_>, presence: &Presence, at: i64) -> rusqlite::Result<()> {
    const END: &str = "INSERT INTO ended (sid, ended_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING";
    match presence {
        Presence::Unchanged => {}
        Presence::RoomStarted { room_sid, room } => {
            transaction
                .prepare_cached(
                    "INSERT INTO live_rooms (room_sid, room, started_at) SELECT ?1, ?2, ?3 \
                     WHERE NOT EXISTS (SELECT 1 FROM ended WHERE sid = ?1) ON CONFLICT DO NOTHING",
                )?
                .execute(rusqlite::params![room_sid, room, at])?;
        }
        Presence::RoomFinished { room_sid } => {
            transaction.prepare_cached("DELETE FROM live_rooms WHERE room_sid = ?1")?.execute([room_sid])?;
            transaction.prepare_cached(END)?.execute(rusqlite::params![room_sid, at])?;
        }
        Presence::ParticipantJoined { participant_sid, room_sid, room, identity } => {
            transaction
                .prepare_cached(
                    "INSERT INTO live_participants (participant_sid, room_sid, room, identity, joined_at) \
                     SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM ended WHERE sid = ?1) \
                     ON CONFLICT DO NOTHING",
                )?
                .execute(rusqlite::params![participant_sid, room_sid, room, identity, at])?;
        }
        Presence::ParticipantGone { participant_sid } => {
            transaction
                .prepare_cached("DELETE FROM live_participants WHERE participant_sid = ?1")?
                .execute([participant_sid])?;
            transaction.prepare_cached(END)?.execute(rusqlite::params![participant_sid, at])?;
        }
        // Never sent here (`keeps`): refused rather than dropped.
        Presence::Banned(_)
        | Presence::Unbanned { .. }
        | Presence::Recording(_)
        | Presence::Dispatched(_)
        | Presence::DispatchClosed { .. } => {
            return Err(rusqlite::Error::InvalidParameterName(
                "bans, recordings and dispatches are appended through sqlx".to_owned(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Filter, Presence, Store};
    use crate::config::StoreConfig;

    fn event(id: &str) -> crate::store::NewEvent {
        crate::store::NewEvent {
            id: id.to_owned(),
            kind: "token_minted".to_owned(),
            room: "standup".to_owned(),
            received_at: 1,
            payload: id.as_bytes().to_vec(),
            presence: Presence::Unchanged,
        }
    }

    async fn appends_in_order_and_stores_a_duplicate_once(url: String) -> u64 {
        let config = StoreConfig { url, max_connections: 2, connect_timeout: std::time::Duration::from_secs(5) };
        let store = Store::open(&config).await.unwrap();
        let mut batch = vec![event("RC_a"), event("RC_b"), event("RC_a")];
        let first = store.append(&mut batch).await.unwrap();
        assert_eq!(batch.len(), 3, "the batch comes back");
        let mut batch = vec![event("RC_b"), event("RC_c")];
        let second = store.append(&mut batch).await.unwrap();
        // A duplicate, in the batch or before it, gets no cursor (it may
        // still use one up: cursors have gaps, never repeats).
        let [Some(a), Some(b), None] = first[..] else { panic!("{first:?}") };
        let [None, Some(c)] = second[..] else { panic!("{second:?}") };
        assert!(a < b && b < c, "{first:?} {second:?}");
        // Read back through sqlx's connections.
        let stored = store.read_after(0, 10, &Filter::default()).await.unwrap();
        let ids: Vec<_> = stored.iter().map(|stored| (stored.cursor, stored.payload.clone())).collect();
        assert_eq!(ids, vec![(a, b"RC_a".to_vec()), (b, b"RC_b".to_vec()), (c, b"RC_c".to_vec())]);
        assert_eq!(store.latest_cursor().await.unwrap(), c);
        store.close().await;
        let mut batch = vec![event("RC_d")];
        assert!(store.append(&mut batch).await.is_err(), "closed");
        c
    }

    #[tokio::test]
    async fn the_writer_appends_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("roomcontrol.db").display());
        let newest = appends_in_order_and_stores_a_duplicate_once(url.clone()).await;
        // Committed to the file: another store opened on it finds them.
        let config = StoreConfig { url, max_connections: 1, connect_timeout: std::time::Duration::from_secs(5) };
        let store = Store::open(&config).await.unwrap();
        assert_eq!(store.latest_cursor().await.unwrap(), newest);
        store.close().await;
    }

    /// LiveKit's webhooks keep who is live, through the multi-row INSERTs
    /// and through the one-row ones a duplicate falls back to; a join after
    /// its participant's end opens nothing.
    #[tokio::test]
    async fn webhook_batches_keep_who_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("roomcontrol.db").display());
        let config = StoreConfig { url, max_connections: 2, connect_timeout: std::time::Duration::from_secs(5) };
        let store = Store::open(&config).await.unwrap();
        let with = |id: &str, presence: Presence| crate::store::NewEvent { presence, ..event(id) };
        let joined = |sid: &str| Presence::ParticipantJoined {
            participant_sid: sid.to_owned(),
            room_sid: "RM_1".to_owned(),
            room: "standup".to_owned(),
            identity: format!("identity-{sid}"),
        };
        let gone = |sid: &str| Presence::ParticipantGone { participant_sid: sid.to_owned() };
        let started = Presence::RoomStarted { room_sid: "RM_1".to_owned(), room: "standup".to_owned() };
        // Multi-row: no duplicate.
        let mut batch = vec![with("EV_1", started), with("EV_2", joined("PA_a")), with("EV_3", joined("PA_b"))];
        store.append(&mut batch).await.unwrap();
        // One row at a time: EV_2 again (a retried webhook) changes nothing.
        let mut batch = vec![with("EV_4", gone("PA_a")), with("EV_2", joined("PA_a")), with("EV_5", joined("PA_c"))];
        let cursors = store.append(&mut batch).await.unwrap();
        assert_eq!(cursors[1], None, "{cursors:?}");
        // A late join of a participant already gone.
        let mut batch = vec![with("EV_6", gone("PA_d")), with("EV_7", joined("PA_d"))];
        store.append(&mut batch).await.unwrap();
        let live = store.live().await.unwrap();
        let rooms: Vec<&str> = live.rooms.iter().map(|room| room.room_sid.as_str()).collect();
        let mut participants: Vec<&str> = live.participants.iter().map(|p| p.participant_sid.as_str()).collect();
        participants.sort_unstable();
        assert_eq!((rooms, participants), (vec!["RM_1"], vec!["PA_b", "PA_c"]));
        let mut batch = vec![with("EV_8", Presence::RoomFinished { room_sid: "RM_1".to_owned() })];
        store.append(&mut batch).await.unwrap();
        assert!(store.live().await.unwrap().rooms.is_empty());
        store.close().await;
    }

    /// Batches longer than one INSERT, with and without a duplicate in a
    /// later statement: every event gets its own cursor, in order, and is
    /// read back as written.
    #[tokio::test]
    async fn long_batches_are_appended_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("roomcontrol.db").display());
        let config = StoreConfig { url, max_connections: 2, connect_timeout: std::time::Duration::from_secs(5) };
        let store = Store::open(&config).await.unwrap();
        let ids = |from: usize, to: usize| (from..to).map(|n| format!("RC_{n:04}")).collect::<Vec<_>>();
        let mut batch: Vec<_> = ids(0, 150).iter().map(|id| event(id)).collect();
        let first = store.append(&mut batch).await.unwrap();
        let first: Vec<u64> = first.into_iter().map(Option::unwrap).collect();
        assert!(first.windows(2).all(|pair| pair[0] < pair[1]), "{first:?}");
        // RC_0149 again, in the third statement of the batch.
        let mut batch: Vec<_> =
            ids(150, 280).iter().chain(&ids(149, 150)).chain(&ids(280, 290)).map(|id| event(id)).collect();
        let second = store.append(&mut batch).await.unwrap();
        assert_eq!(second.len(), 141);
        assert_eq!(second[130], None, "the duplicate");
        let second: Vec<u64> = second.into_iter().flatten().collect();
        assert_eq!(second.len(), 140);
        assert!(first.last() < second.first() && second.windows(2).all(|pair| pair[0] < pair[1]), "{second:?}");
        let stored = store.read_after(0, 1000, &Filter::default()).await.unwrap();
        let expected: Vec<_> =
            first.iter().chain(&second).zip(ids(0, 290)).map(|(cursor, id)| (*cursor, id.into_bytes())).collect();
        let stored: Vec<_> = stored.into_iter().map(|stored| (stored.cursor, stored.payload)).collect();
        assert_eq!(stored, expected);
        store.close().await;
    }

    #[tokio::test]
    async fn the_writer_appends_to_memory() {
        appends_in_order_and_stores_a_duplicate_once("sqlite::memory:".to_owned()).await;
    }
}
