//! `roomcontrol history export`: the room sessions that ran in a range,
//! with their participant sessions, as CSV or JSON, read from the store
//! the server uses. The figures are GetRoomSession's, computed by the same
//! functions.

use std::io::Write;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::api::history::{participant_session, room_session};
use crate::proto::v1::{EndReason, ParticipantSession, RoomSession};
use crate::store::Store;
use crate::store::history::SessionQuery;

/// CSV or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per participant session, its room session's figures
    /// repeated (a room session without participants: one line, the
    /// participant columns empty).
    Csv,
    /// An array of room sessions, each with its participant sessions.
    Json,
}

/// The sessions that ran in [from, to) (unix microseconds), of `rooms`
/// (empty: every room), written to `out`. Returns how many room sessions.
pub async fn export(
    store: &Store,
    from: i64,
    to: i64,
    rooms: Vec<String>,
    format: Format,
    out: &mut impl Write,
) -> Result<usize, String> {
    let failed = |error: crate::store::StoreError| error.to_string();
    let written = |error: std::io::Error| format!("cannot write the export: {error}");
    let now = crate::events::unix_micros(SystemTime::now());
    let mut query = SessionQuery { rooms, from: Some(from), to: Some(to), limit: 1000, ..SessionQuery::default() };
    let mut count = 0;
    if format == Format::Csv {
        writeln!(out, "{}", CSV_HEADER.join(",")).map_err(written)?;
    } else {
        write!(out, "[").map_err(written)?;
    }
    loop {
        let page = store.list_room_sessions(&query).await.map_err(failed)?;
        for row in &page {
            let (participants, tracks, actions) = store.room_session_details(&row.room_sid).await.map_err(failed)?;
            let open: i64 = participants
                .iter()
                .filter(|participant| participant.left_at.is_none())
                .filter_map(|participant| participant.joined_at)
                .map(|joined| (now - joined).max(0))
                .sum();
            let session = room_session(row, open, &actions, now);
            let participants: Vec<ParticipantSession> = participants
                .iter()
                .map(|participant| {
                    let tracks = tracks
                        .iter()
                        .filter(|track| track.participant_sid == participant.participant_sid)
                        .map(|track| crate::proto::v1::PublishedTrack {
                            sid: track.track_sid.clone(),
                            r#type: track.kind.clone(),
                            source: track.source.clone(),
                            name: track.name.clone(),
                            published_at: track.published_at.map(crate::api::history::timestamp),
                            unpublished_at: track.unpublished_at.map(crate::api::history::timestamp),
                        })
                        .collect();
                    participant_session(participant, tracks, now)
                })
                .collect();
            match format {
                Format::Csv => write_csv(out, &session, &participants).map_err(written)?,
                Format::Json => {
                    let separator = if count == 0 { "\n" } else { ",\n" };
                    write!(out, "{separator}{}", session_json(&session, &participants)).map_err(written)?;
                }
            }
            count += 1;
        }
        match page.last() {
            Some(last) if page.len() == query.limit as usize => {
                query.before = Some((last.started_at, last.room_sid.clone()));
            }
            _ => break,
        }
    }
    if format == Format::Json {
        writeln!(out, "{}]", if count == 0 { "" } else { "\n" }).map_err(written)?;
    }
    Ok(count)
}

const CSV_HEADER: [&str; 22] = [
    "session_id",
    "room",
    "started_at",
    "ended_at",
    "active",
    "duration_seconds",
    "participant_sessions",
    "peak_participants",
    "unique_identities",
    "participant_minutes",
    "session_inferred",
    "participant_sid",
    "identity",
    "name",
    "kind",
    "joined_at",
    "left_at",
    "participant_duration_seconds",
    "end_reason",
    "removed_by",
    "participant_inferred",
    "tracks",
];

fn time(at: &Option<prost_types::Timestamp>) -> String {
    at.map(|at| at.to_string()).unwrap_or_default()
}

fn seconds(duration: &Option<prost_types::Duration>) -> String {
    duration.map(|d| format!("{:.3}", d.seconds as f64 + f64::from(d.nanos) / 1e9)).unwrap_or_default()
}

/// A CSV field: quoted when it holds a comma, quote or line break (RFC
/// 4180); a leading `=`, `+`, `-` or `@` is prefixed with `'` so that a
/// spreadsheet never runs a name as a formula.
fn field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) { format!("'{value}") } else { value.to_owned() };
    if value.contains([',', '"', '\n', '\r']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

fn end_reason_name(reason: i32) -> &'static str {
    match EndReason::try_from(reason) {
        Ok(EndReason::Left) => "left",
        Ok(EndReason::Removed) => "removed",
        Ok(EndReason::ConnectionAborted) => "connection_aborted",
        Ok(EndReason::RoomDeleted) => "room_deleted",
        Ok(EndReason::Inferred) => "inferred",
        _ => "",
    }
}

fn write_csv(out: &mut impl Write, session: &RoomSession, participants: &[ParticipantSession]) -> std::io::Result<()> {
    let room = [
        field(&session.session_id),
        field(&session.room),
        time(&session.started_at),
        time(&session.ended_at),
        session.active.to_string(),
        seconds(&session.duration),
        session.participant_sessions.to_string(),
        session.peak_participants.to_string(),
        session.unique_identities.to_string(),
        format!("{:.3}", session.participant_minutes),
        session.inferred.to_string(),
    ]
    .join(",");
    if participants.is_empty() {
        return writeln!(out, "{room}{}", ",".repeat(CSV_HEADER.len() - 11));
    }
    for participant in participants {
        let tracks: Vec<String> =
            participant.tracks.iter().map(|track| format!("{}:{}", track.source, track.r#type)).collect();
        let columns = [
            field(&participant.participant_sid),
            field(&participant.identity),
            field(&participant.name),
            field(&participant.kind),
            time(&participant.joined_at),
            time(&participant.left_at),
            seconds(&participant.duration),
            end_reason_name(participant.end_reason).to_owned(),
            field(&participant.removed_by),
            participant.inferred.to_string(),
            field(&tracks.join(" ")),
        ];
        writeln!(out, "{room},{}", columns.join(","))?;
    }
    Ok(())
}

/// A room session in the proto3 JSON shape GetRoomSession answers with
/// (camelCase, RFC 3339 times, durations as seconds with "s").
fn session_json(session: &RoomSession, participants: &[ParticipantSession]) -> Value {
    let duration = |d: &Option<prost_types::Duration>| d.map(|d| d.to_string());
    json!({
        "sessionId": session.session_id,
        "room": session.room,
        "startedAt": session.started_at.map(|at| at.to_string()),
        "endedAt": session.ended_at.map(|at| at.to_string()),
        "active": session.active,
        "duration": duration(&session.duration),
        "participantSessions": session.participant_sessions,
        "peakParticipants": session.peak_participants,
        "uniqueIdentities": session.unique_identities,
        "participantMinutes": session.participant_minutes,
        "startInferred": session.start_inferred,
        "endInferred": session.end_inferred,
        "inferred": session.inferred,
        "actions": session.actions,
        "participants": participants.iter().map(|p| json!({
            "participantSid": p.participant_sid,
            "identity": p.identity,
            "name": p.name,
            "kind": p.kind,
            "joinedAt": p.joined_at.map(|at| at.to_string()),
            "leftAt": p.left_at.map(|at| at.to_string()),
            "active": p.active,
            "duration": duration(&p.duration),
            "endReason": EndReason::try_from(p.end_reason).unwrap_or(EndReason::Unspecified).as_str_name(),
            "removedBy": p.removed_by,
            "inferred": p.inferred,
            "tracks": p.tracks.iter().map(|t| json!({
                "sid": t.sid,
                "type": t.r#type,
                "source": t.source,
                "name": t.name,
                "publishedAt": t.published_at.map(|at| at.to_string()),
                "unpublishedAt": t.unpublished_at.map(|at| at.to_string()),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(field("alice"), "alice");
        assert_eq!(field("Smith, Jane"), "\"Smith, Jane\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(field("-1,2"), "\"'-1,2\"");
    }
}
