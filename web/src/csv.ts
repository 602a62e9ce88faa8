// The sessions export as CSV, byte for byte what `roomcontrol history export
// --format csv` writes (src/history/export.rs): one line per participant
// session with its room session's figures repeated, a room session without
// participants on one line with the participant columns empty.

import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { EndReason, type ParticipantSession, type RoomSession } from "./gen/roomcontrol/v1/room_control_pb";

export const CSV_HEADER = [
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
] as const;

/** The room session's columns: the first 11. */
const SESSION_COLUMNS = 11;

/**
 * A timestamp as prost's Display writes it: RFC 3339 in UTC, with no
 * fraction, or millis, micros or nanos, whichever is the shortest exact one.
 */
export function rfc3339(at: Timestamp | undefined): string {
  if (!at) return "";
  let seconds = at.seconds;
  let nanos = at.nanos;
  if (nanos < 0) {
    seconds -= 1n;
    nanos += 1_000_000_000;
  }
  const base = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  if (nanos === 0) return `${base}Z`;
  if (nanos % 1_000_000 === 0) return `${base}.${String(nanos / 1_000_000).padStart(3, "0")}Z`;
  if (nanos % 1_000 === 0) return `${base}.${String(nanos / 1_000).padStart(6, "0")}Z`;
  return `${base}.${String(nanos).padStart(9, "0")}Z`;
}

/**
 * `{:.3}` as Rust formats an f64: the exact value rounded to 3 decimals,
 * a tie to even. JavaScript's toFixed rounds a tie up; a tie at the third
 * decimal is an odd multiple of 1/16 (exact in binary), so only those differ.
 */
export function fixed3(x: number): string {
  const sixteenths = x * 16; // exact: a power of two
  if (Number.isInteger(sixteenths) && Math.abs(sixteenths) % 2 === 1) {
    const down = Math.trunc(x * 1000); // exact: x * 1000 ends in .5
    const even = down % 2 === 0 ? down : down + Math.sign(x);
    return (even / 1000).toFixed(3);
  }
  return x.toFixed(3);
}

function seconds(duration: Duration | undefined): string {
  // As export.rs: seconds as f64 + nanos as f64 / 1e9, then {:.3}.
  return duration ? fixed3(Number(duration.seconds) + duration.nanos / 1e9) : "";
}

/** A field as export.rs quotes it (RFC 4180), never a spreadsheet formula. */
export function field(value: string): string {
  const safe = /^[=+\-@]/.test(value) ? `'${value}` : value;
  return /[,"\n\r]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

export function endReasonName(reason: EndReason): string {
  switch (reason) {
    case EndReason.LEFT:
      return "left";
    case EndReason.REMOVED:
      return "removed";
    case EndReason.CONNECTION_ABORTED:
      return "connection_aborted";
    case EndReason.ROOM_DELETED:
      return "room_deleted";
    case EndReason.INFERRED:
      return "inferred";
    default:
      return "";
  }
}

export function csvHeader(): string {
  return `${CSV_HEADER.join(",")}\n`;
}

/** A room session's lines. */
export function csvLines(session: RoomSession, participants: ParticipantSession[]): string {
  const room = [
    field(session.sessionId),
    field(session.room),
    rfc3339(session.startedAt),
    rfc3339(session.endedAt),
    String(session.active),
    seconds(session.duration),
    String(session.participantSessions),
    String(session.peakParticipants),
    String(session.uniqueIdentities),
    fixed3(session.participantMinutes),
    String(session.inferred),
  ].join(",");
  if (participants.length === 0) return `${room}${",".repeat(CSV_HEADER.length - SESSION_COLUMNS)}\n`;
  return participants
    .map((p) => {
      const tracks = p.tracks.map((t) => `${t.source}:${t.type}`).join(" ");
      const columns = [
        field(p.participantSid),
        field(p.identity),
        field(p.name),
        field(p.kind),
        rfc3339(p.joinedAt),
        rfc3339(p.leftAt),
        seconds(p.duration),
        endReasonName(p.endReason),
        field(p.removedBy),
        String(p.inferred),
        field(tracks),
      ];
      return `${room},${columns.join(",")}\n`;
    })
    .join("");
}
