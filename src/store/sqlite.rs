//! The queries on SQLite: one process writes (the timeline's appender), so
//! appends are ordered by the database's own write lock.

super::queries::queries!(sqlx::Sqlite, sqlx::SqlitePool, before_append: [], after_append: [], after_ban: []);
