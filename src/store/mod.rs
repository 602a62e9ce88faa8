//! The store every replica shares: the timeline of events, and the
//! timeline's account of who is live.
//!
//! SQLite is the embedded default (a file in the working directory, so
//! `cargo run` needs nothing else); PostgreSQL is for production and for
//! more than one replica. Both speak the same schema, created by versioned
//! migrations embedded in the binary (`migrations/<database>/NNNN_*.sql`,
//! the same versions for both) and applied at start-up. A database migrated
//! by a newer RoomControl is refused, not touched.
//!
//! The store's order is the truth: an event's `cursor` is its position, and
//! appends become visible in cursor order. On SQLite one process writes; on
//! PostgreSQL every append batch takes one transaction-scoped advisory lock
//! before it draws its cursors, so a batch with smaller cursors always
//! commits before one with larger cursors, and a reader that has seen
//! cursor N can never later find a cursor below N appear (the trap of
//! sequence numbers with concurrent writers).

pub mod history;
pub mod postgres;
mod queries;
mod sqlite;
mod sqlite_writer;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::config::StoreConfig;

pub use sqlite_writer::SqliteWriter;

/// Why the store could not be opened or answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Config(String),
    #[error("cannot open the store at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error(
        "the store at {url} was migrated by a newer RoomControl (it has schema version {version}, which this binary does not know; it knows up to {known}): run the newer binary, or point store.url at another database"
    )]
    TooNew { url: String, version: i64, known: i64 },
    #[error("cannot read the embedded migrations: {0}")]
    Embedded(#[from] MigrateError),
    #[error("cannot migrate the store at {url}: {source}")]
    Migrate { url: String, source: MigrateError },
    #[error("the store failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("the store holds an event it cannot decode (cursor {cursor}): {source}")]
    Corrupt { cursor: u64, source: prost::DecodeError },
    #[error("the store's writer failed: {0}")]
    Writer(String),
}

/// One event to append: its payload and the columns it is found by.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub kind: String,
    pub room: String,
    /// Unix microseconds.
    pub received_at: i64,
    /// The encoded `roomcontrol.v1.Event`.
    pub payload: Vec<u8>,
    /// What the event changes in the timeline's account of who is live.
    pub presence: Presence,
}

/// What an event changes beside the timeline, in the same transaction:
/// who is live, or the bans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Unchanged,
    /// A ban comes into force.
    Banned(NewBan),
    /// A ban is lifted.
    Unbanned {
        ban_id: String,
    },
    RoomStarted {
        room_sid: String,
        room: String,
    },
    RoomFinished {
        room_sid: String,
    },
    ParticipantJoined {
        participant_sid: String,
        room_sid: String,
        room: String,
        identity: String,
    },
    ParticipantGone {
        participant_sid: String,
    },
    /// What a recording (an egress) is now: started through RoomControl,
    /// reported by LiveKit, or closed by reconciliation.
    Recording(RecordingRow),
    /// An agent dispatch made through RoomControl.
    Dispatched(DispatchRow),
    /// A dispatch cancelled: it is never redispatched.
    DispatchClosed {
        dispatch_id: String,
    },
}

/// A recording to store, or to update if this report is newer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRow {
    pub id: String,
    pub room: String,
    /// `roomcontrol.v1.recording::Status`.
    pub status: i32,
    pub ended: bool,
    pub end_inferred: bool,
    /// LiveKit's `updated_at`, Unix nanoseconds.
    pub updated_at: i64,
    /// Unix nanoseconds; 0 if unknown.
    pub started_at: i64,
    /// The encoded `roomcontrol.v1.Actor` who started it, if RoomControl did.
    pub started_by: Option<Vec<u8>>,
    /// The encoded `roomcontrol.v1.Recording`, without `started_by`.
    pub payload: Vec<u8>,
}

/// An agent dispatch to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchRow {
    pub id: String,
    pub room: String,
    pub redispatch: bool,
    /// How many redispatches led to this one.
    pub generation: i32,
    /// The dispatch this one redispatches, closed in the same transaction.
    pub replaces: Option<String>,
    /// The encoded `roomcontrol.v1.AgentDispatch`.
    pub payload: Vec<u8>,
}

/// A stored recording.
#[derive(Debug, Clone)]
pub struct StoredRecording {
    pub started_by: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A stored agent dispatch.
#[derive(Debug, Clone)]
pub struct StoredDispatch {
    pub generation: i32,
    pub payload: Vec<u8>,
}

/// A ban to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBan {
    pub id: String,
    pub room: String,
    pub identity: String,
    /// Unix microseconds.
    pub created_at: i64,
    /// Unix microseconds; `None`: until lifted.
    pub expires_at: Option<i64>,
    /// The encoded `roomcontrol.v1.Ban`.
    pub payload: Vec<u8>,
}

/// An event as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub cursor: u64,
    pub kind: String,
    pub room: String,
    /// The encoded `roomcontrol.v1.Event`, without its cursor.
    pub payload: Vec<u8>,
}

/// Which events a read returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact room names; empty: every room.
    pub rooms: Vec<String>,
    /// Exact types; empty: every type.
    pub kinds: Vec<String>,
}

/// Who the timeline says is live.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub rooms: Vec<LiveRoom>,
    pub participants: Vec<LiveParticipant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRoom {
    pub room_sid: String,
    pub room: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveParticipant {
    pub participant_sid: String,
    pub room_sid: String,
    pub room: String,
    pub identity: String,
}

/// The store: one pool, SQLite or PostgreSQL; on SQLite, the timeline's
/// writer thread beside it (see `sqlite_writer`).
#[derive(Clone)]
pub enum Store {
    Sqlite(SqlitePool, Option<SqliteWriter>),
    Postgres(PgPool),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only the kind is shown.
        f.write_str(match self {
            Store::Sqlite(..) => "Store::Sqlite",
            Store::Postgres(_) => "Store::Postgres",
        })
    }
}

/// The migrations, embedded: (version, description, SQLite, PostgreSQL).
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "timeline",
        include_str!("migrations/sqlite/0001_timeline.sql"),
        include_str!("migrations/postgres/0001_timeline.sql"),
    ),
    (2, "bans", include_str!("migrations/sqlite/0002_bans.sql"), include_str!("migrations/postgres/0002_bans.sql")),
    (
        3,
        "recordings_agents",
        include_str!("migrations/sqlite/0003_recordings_agents.sql"),
        include_str!("migrations/postgres/0003_recordings_agents.sql"),
    ),
    (
        4,
        "history",
        include_str!("migrations/sqlite/0004_history.sql"),
        include_str!("migrations/postgres/0004_history.sql"),
    ),
    (
        5,
        "usage_profiles",
        include_str!("migrations/sqlite/0005_usage_profiles.sql"),
        include_str!("migrations/postgres/0005_usage_profiles.sql"),
    ),
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The embedded migrations for one database, as sqlx's migrator reads them.
#[derive(Debug)]
struct Embedded {
    postgres: bool,
}

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> futures_util::future::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sqlite, pg)| {
                let sql = if self.postgres { pg } else { sqlite };
                Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, Cow::Borrowed(*sql), false)
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// The URL with any password hidden, for messages.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Connects and applies the migrations this binary carries.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let url = config.url.as_str();
        let shown = redacted_url(url);
        let connect = |source| StoreError::Connect { url: shown.clone(), source };
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(connect)?;
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.connect_timeout)
                .connect_with(options)
                .await
                .map_err(connect)?;
            Store::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect)?
                .create_if_missing(true)
                // Write-ahead log: readers never wait for the writer, and a
                // commit is durable against a killed process without an
                // fsync per commit (NORMAL syncs at checkpoints).
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            // An in-memory database lives as long as its one connection.
            let (max, idle) = if memory { (1, None) } else { (config.max_connections, Some(Duration::from_secs(600))) };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(u32::from(memory))
                .idle_timeout(idle)
                .max_lifetime(if memory { None } else { Some(Duration::from_secs(1800)) })
                .acquire_timeout(config.connect_timeout)
                .connect_with(options.clone())
                .await
                .map_err(connect)?;
            // Migrated first, so the writer finds the tables (below).
            Store::migrate_sqlite(&pool, &shown).await?;
            let filename = options.get_filename().to_string_lossy().into_owned();
            // sqlx names an in-memory database `file:sqlx-in-memory-N`, a
            // shared cache the writer joins; one it cannot name (an empty
            // `sqlite://?mode=memory`) is left to sqlx alone.
            let writer = if memory && !filename.starts_with("file:") {
                None
            } else {
                Some(SqliteWriter::open(&filename, memory, Duration::from_secs(5))?)
            };
            return Ok(Store::Sqlite(pool, writer));
        } else {
            return Err(StoreError::Config(format!(
                "store.url = {shown:?}: expected sqlite:<file> (sqlite://roomcontrol.db, sqlite::memory:) or postgres://user@host/database"
            )));
        };
        store.migrate(&shown).await?;
        Ok(store)
    }

    async fn migrate(&self, url: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool, _) => Store::migrate_sqlite(pool, url).await,
            Store::Postgres(pool) => {
                let result = Migrator::new(Embedded { postgres: true }).await?.run(pool).await;
                Store::migrated(result, url)
            }
        }
    }

    async fn migrate_sqlite(pool: &SqlitePool, url: &str) -> Result<(), StoreError> {
        let result = Migrator::new(Embedded { postgres: false }).await?.run(pool).await;
        Store::migrated(result, url)
    }

    /// Refuses a database holding a version this binary does not know.
    fn migrated(result: Result<(), MigrateError>, url: &str) -> Result<(), StoreError> {
        result.map_err(|source| match source {
            MigrateError::VersionMissing(version) => {
                StoreError::TooNew { url: url.to_owned(), version, known: SCHEMA_VERSION }
            }
            source => StoreError::Migrate { url: url.to_owned(), source },
        })
    }

    /// Whether several processes may share this store.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Appends a batch in one transaction, in order, and returns once it
    /// is committed. Returns, for each event, its cursor, or `None` when an
    /// event with its id was already stored (a replayed webhook: stored
    /// once). `batch` is as it was after (its events may travel to the
    /// SQLite writer's thread and back).
    pub async fn append(&self, batch: &mut Vec<NewEvent>) -> Result<Vec<Option<u64>>, StoreError> {
        match self {
            // A batch that changes only the timeline (CreateToken's, and
            // most actions') or who is live (LiveKit's webhooks) goes to
            // the writer thread; one with a ban, a recording or a dispatch
            // goes through sqlx, whose queries PostgreSQL shares. Either way
            // it takes its turn with the history's projector
            // (SQLITE_WRITERS).
            Store::Sqlite(_, Some(writer)) if batch.iter().all(|event| sqlite_writer::keeps(&event.presence)) => {
                let _turn = SQLITE_WRITERS.lock().await;
                writer.append(batch).await
            }
            Store::Sqlite(pool, _) => {
                let _turn = SQLITE_WRITERS.lock().await;
                sqlite::append(pool, batch).await
            }
            Store::Postgres(pool) => postgres::append(pool, batch).await,
        }
    }

    /// Up to `limit` events after `after`, oldest first.
    pub async fn read_after(&self, after: u64, limit: u32, filter: &Filter) -> Result<Vec<StoredEvent>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::read_after(pool, after, limit, filter).await,
            Store::Postgres(pool) => postgres::read_after(pool, after, limit, filter).await,
        }
    }

    /// The newest cursor given so far (0: none).
    pub async fn latest_cursor(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::latest_cursor(pool).await,
            Store::Postgres(pool) => postgres::latest_cursor(pool).await,
        }
    }

    /// Every event up to this cursor was pruned (0: none).
    pub async fn pruned_through(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::pruned_through(pool).await,
            Store::Postgres(pool) => postgres::pruned_through(pool).await,
        }
    }

    /// Deletes the events received before `before` (unix microseconds), and
    /// every event before them in cursor order, at most `limit` at a time.
    /// Returns how many were deleted.
    pub async fn prune(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::prune(pool, before, limit).await,
            Store::Postgres(pool) => postgres::prune(pool, before, limit).await,
        }
    }

    /// Who the timeline says is live.
    pub async fn live(&self) -> Result<Live, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::live(pool).await,
            Store::Postgres(pool) => postgres::live(pool).await,
        }
    }

    /// The encoded `roomcontrol.v1.Ban` of every ban in force at `now`
    /// (unix microseconds): not lifted, not expired.
    pub async fn bans_in_force(&self, now: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::bans_in_force(pool, now).await,
            Store::Postgres(pool) => postgres::bans_in_force(pool, now).await,
        }
    }

    /// Recordings, newest first: of one room or every room, one by id, or
    /// only those not ended; at most `limit`.
    pub async fn recordings(
        &self,
        room: Option<&str>,
        id: Option<&str>,
        open_only: bool,
        limit: u32,
    ) -> Result<Vec<StoredRecording>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::recordings(pool, room, id, open_only, limit).await,
            Store::Postgres(pool) => postgres::recordings(pool, room, id, open_only, limit).await,
        }
    }

    /// A room's dispatches that ask for redispatch and are still open,
    /// oldest first.
    pub async fn redispatchable(&self, room: &str) -> Result<Vec<StoredDispatch>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::redispatchable(pool, room).await,
            Store::Postgres(pool) => postgres::redispatchable(pool, room).await,
        }
    }

    /// Every dispatch RoomControl made in a room (to tell which asked for
    /// redispatch), oldest first.
    pub async fn dispatches(&self, room: &str) -> Result<Vec<StoredDispatch>, StoreError> {
        match self {
            Store::Sqlite(pool, _) => sqlite::dispatch_flags(pool, room).await,
            Store::Postgres(pool) => postgres::dispatch_flags(pool, room).await,
        }
    }

    /// Closes the pool, waiting for queries in flight.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool, writer) => {
                if let Some(writer) = writer {
                    writer.close().await;
                }
                pool.close().await;
            }
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

/// SQLite has one writer at a time; a writer that finds the lock taken
/// retries after sleeps (its busy handler) and can lose to the same other
/// writer many times in a row. The process's writers (the appender, the
/// history's projector) take turns here instead, first come first served,
/// so the appender waits for at most one projection transaction.
pub(crate) static SQLITE_WRITERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Clamps a cursor read from the database (a signed 64-bit column) to u64.
fn to_cursor(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Clamps a cursor for a query (a signed 64-bit column).
fn to_column(cursor: u64) -> i64 {
    i64::try_from(cursor).unwrap_or(i64::MAX)
}
