//! The queries on PostgreSQL, where several replicas append at once.
//!
//! Every append batch first takes one transaction-scoped advisory lock, and
//! only then draws its cursors from the identity column: batches commit one
//! after the other, in cursor order, so no reader ever sees cursor N+1
//! before N is committed. The lock is released at commit, after the rows
//! are visible. The batch's last statement is a NOTIFY, delivered at commit
//! to every replica listening (`WAKE_UP_CHANNEL`), which then reads the new
//! events by cursor.

/// The channel appends notify; its payload is empty.
pub const WAKE_UP_CHANNEL: &str = "roomcontrol_events";

super::queries::queries!(
    sqlx::Postgres,
    sqlx::PgPool,
    // An arbitrary constant of RoomControl's: "RCEVENTS" in ASCII, as 64 bits.
    before_append: ["SELECT pg_advisory_xact_lock(5927657771381970003)"],
    after_append: ["SELECT pg_notify('roomcontrol_events', '')"],
    // Every replica reloads its bans.
    after_ban: ["SELECT pg_notify('roomcontrol_bans', '')"]
);

/// The channel a change of the bans notifies; its payload is empty.
pub const BANS_CHANNEL: &str = "roomcontrol_bans";

/// A connection that hears every replica's changes of the bans.
pub async fn listen_bans(pool: &sqlx::PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(BANS_CHANNEL).await?;
    Ok(listener)
}

/// A connection that hears every replica's appends.
pub async fn listen(pool: &sqlx::PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(WAKE_UP_CHANNEL).await?;
    Ok(listener)
}
