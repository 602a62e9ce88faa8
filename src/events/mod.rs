//! The timeline: LiveKit's webhooks and RoomControl's own actions, stored
//! in one order that every replica shares, and followed live.
//!
//! - [`intake`]: `POST /livekit/webhook`: verify, decode, append, answer;
//! - [`timeline`]: the appender (group commit) and the tailer (the one
//!   reader that turns the store's new events into the live feed);
//! - [`watch`]: ListEvents and WatchEvents;
//! - [`reconcile`]: the webhooks LiveKit never sent, inferred;
//! - [`detail`]: an event's `detail` written straight to its bytes;
//! - this file: what an event says, built from a webhook or an action.

pub mod detail;
pub mod intake;
pub mod reconcile;
pub mod timeline;
pub mod watch;

use std::time::{SystemTime, UNIX_EPOCH};

use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
use rand::Rng;
use serde_json::{Map, Value as Json};

use crate::auth::Caller;
use crate::proto::v1::{Actor, Event, EventParticipant, EventRoom, EventSource, EventTrack};
use crate::rpc::Rpc;
use crate::store::Presence;

pub use detail::EncodedStruct;
pub use timeline::{Appended, Timeline, TimelineError};

/// The timeline type of RoomControl's action for each RPC that changes
/// something.
pub fn action_type(rpc: Rpc, detail: &Json) -> &'static str {
    match rpc {
        Rpc::CreateRoom => "room_created",
        Rpc::DeleteRoom => "room_deleted",
        Rpc::UpdateRoomMetadata => "room_metadata_updated",
        Rpc::RemoveParticipant => "participant_removed",
        Rpc::UpdateParticipant => "participant_updated",
        Rpc::MutePublishedTrack if detail.get("muted") == Some(&Json::Bool(false)) => "track_unmuted",
        Rpc::MutePublishedTrack => "track_muted",
        Rpc::UpdateSubscriptions => "subscriptions_updated",
        Rpc::SendData => "data_sent",
        Rpc::CreateToken => "token_minted",
        Rpc::BanParticipant => "participant_banned",
        Rpc::UnbanParticipant => "participant_unbanned",
        Rpc::StartRoomRecording | Rpc::StartTrackRecording | Rpc::StartParticipantRecording => "recording_started",
        Rpc::StartStream => "stream_started",
        Rpc::StopRecording => "recording_stopped",
        Rpc::DispatchAgent => "agent_dispatched",
        Rpc::CancelAgentDispatch => "agent_dispatch_cancelled",
        Rpc::ListRooms
        | Rpc::GetRoom
        | Rpc::ListParticipants
        | Rpc::GetParticipant
        | Rpc::ListEvents
        | Rpc::WatchEvents
        | Rpc::ListBans
        | Rpc::ListRecordings
        | Rpc::ListAgentDispatches
        | Rpc::ListRoomSessions
        | Rpc::GetRoomSession
        | Rpc::GetUsage => "read",
    }
}

/// An action RoomControl took for a caller, as a timeline event.
pub fn action(caller: &Caller, rpc: Rpc, room: &str, identity: &str, detail: Json) -> (Event, Presence) {
    let now = SystemTime::now();
    let event = Event {
        cursor: 0,
        id: new_id(),
        r#type: action_type(rpc, &detail).to_owned(),
        source: EventSource::Roomcontrol as i32,
        occurred_at: Some(Timestamp::from(now)),
        received_at: Some(Timestamp::from(now)),
        room: Some(EventRoom { name: room.to_owned(), sid: String::new() }),
        participant: (!identity.is_empty())
            .then(|| EventParticipant { identity: identity.to_owned(), ..Default::default() }),
        track: detail
            .get("trackSid")
            .and_then(Json::as_str)
            .map(|sid| EventTrack { sid: sid.to_owned(), ..Default::default() }),
        actor: Some(Actor { caller: caller.to_string(), rpc: rpc.name().to_owned() }),
        inferred: false,
        detail: match detail {
            Json::Object(map) => Some(to_struct(map)),
            _ => None,
        },
    };
    (event, Presence::Unchanged)
}

/// A banned identity removed from a room by its ban: when it was banned
/// (BanParticipant), or when it joined anyway (the webhook intake). The
/// actor is the ban's author.
pub fn ban_enforced(ban: &crate::proto::v1::Ban, room: &str) -> Event {
    let now = SystemTime::now();
    let mut detail = serde_json::Map::new();
    detail.insert("banId".to_owned(), Json::String(ban.id.clone()));
    detail.insert("banRoom".to_owned(), Json::String(ban.room.clone()));
    detail.insert("reason".to_owned(), Json::String(ban.reason.clone()));
    Event {
        cursor: 0,
        id: new_id(),
        r#type: "ban_enforced".to_owned(),
        source: EventSource::Roomcontrol as i32,
        occurred_at: Some(Timestamp::from(now)),
        received_at: Some(Timestamp::from(now)),
        room: Some(EventRoom { name: room.to_owned(), sid: String::new() }),
        participant: Some(EventParticipant { identity: ban.identity.clone(), ..Default::default() }),
        track: None,
        actor: ban.created_by.clone(),
        inferred: false,
        detail: Some(to_struct(detail)),
    }
}

/// Something RoomControl did on its own (not for a caller): its actor is
/// RoomControl itself.
pub fn system_event(kind: &str, room: &str, identity: &str, detail: Json) -> Event {
    let now = SystemTime::now();
    Event {
        cursor: 0,
        id: new_id(),
        r#type: kind.to_owned(),
        source: EventSource::Roomcontrol as i32,
        occurred_at: Some(Timestamp::from(now)),
        received_at: Some(Timestamp::from(now)),
        room: Some(EventRoom { name: room.to_owned(), sid: String::new() }),
        participant: (!identity.is_empty())
            .then(|| EventParticipant { identity: identity.to_owned(), ..Default::default() }),
        track: None,
        actor: Some(Actor { caller: "roomcontrol".to_owned(), rpc: String::new() }),
        inferred: false,
        detail: match detail {
            Json::Object(map) => Some(to_struct(map)),
            _ => None,
        },
    }
}

/// A fresh id for RoomControl's own events: `RC_` and 20 base62
/// characters, the first 9 the time in microseconds and the other 11
/// random (62^11, about 5 * 10^19, per microsecond). Ids in time order
/// keep the store's unique index on `id` appending at its end, as the
/// cursors do: random ids would write a page of that index anywhere for
/// every event of a batch.
pub fn new_id() -> String {
    id_at(u64::try_from(unix_micros(SystemTime::now())).unwrap_or(0))
}

fn id_at(mut micros: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let mut id = String::with_capacity(23);
    id.push_str("RC_");
    // 62^9 microseconds: beyond the year 2400. The alphabet is in ASCII
    // order, so the ids sort as the times do.
    let mut time = [0u8; 9];
    for digit in time.iter_mut().rev() {
        *digit = ALPHABET[(micros % 62) as usize];
        micros /= 62;
    }
    id.extend(time.iter().map(|&digit| char::from(digit)));
    for _ in 0..11 {
        id.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    id
}

/// Why a webhook body is not a LiveKit event.
#[derive(Debug, thiserror::Error)]
pub enum WebhookBodyError {
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("the body has no \"event\" name")]
    NoEventName,
}

/// A LiveKit webhook as a timeline event. Unknown event names, fields and
/// enum values are kept (in `detail`); only a body without an event name
/// is refused.
pub fn from_webhook(body: &[u8], received_at: SystemTime) -> Result<(Event, Presence), WebhookBodyError> {
    let json: Json = serde_json::from_slice(body).map_err(WebhookBodyError::NotJson)?;
    let Json::Object(mut map) = json else {
        return Err(WebhookBodyError::NotAnObject);
    };
    // An egress's request echoes its stream keys and storage credentials:
    // they are not kept.
    if let Some(egress) = map.get_mut("egressInfo") {
        crate::recordings::redact_json(egress);
    }
    // Nor are the room's TURN password (LiveKit puts it in every webhook's
    // room) and an ingress's stream key: anyone who may read the timeline
    // would otherwise hold them.
    for (object, key) in [("room", "turnPassword"), ("ingressInfo", "streamKey")] {
        if let Some(Json::Object(object)) = map.get_mut(object)
            && let Some(Json::String(text)) = object.get_mut(key)
            && !text.is_empty()
        {
            crate::recordings::REDACTED.clone_into(text);
        }
    }
    let name = text(map.get("event"));
    if name.is_empty() {
        return Err(WebhookBodyError::NoEventName);
    }
    let id = match text(map.get("id")) {
        id if !id.is_empty() => id.to_owned(),
        // LiveKit always sends one; a body without one is deduplicated by
        // its content.
        _ => webhook_id_of(body),
    };
    let occurred_at = integer(map.get("createdAt"))
        .filter(|seconds| *seconds > 0)
        .map(|seconds| Timestamp { seconds, nanos: 0 })
        .unwrap_or_else(|| Timestamp::from(received_at));

    let room_json = map.get("room");
    let egress = map.get("egressInfo");
    let ingress = map.get("ingressInfo");
    let room = EventRoom {
        name: first_text(&[field(room_json, "name"), field(egress, "roomName"), field(ingress, "roomName")]),
        sid: first_text(&[field(room_json, "sid"), field(egress, "roomId"), field(ingress, "roomId")]),
    };
    let participant = map.get("participant").filter(|p| p.is_object()).map(|p| EventParticipant {
        identity: text(p.get("identity")).to_owned(),
        sid: text(p.get("sid")).to_owned(),
        name: text(p.get("name")).to_owned(),
        // protojson omits the zero value: STANDARD. Track events carry only
        // sid and identity, so the kind is unknown there.
        kind: match p.get("kind") {
            Some(kind) => enum_name(kind),
            None if p.get("state").is_some() || p.get("joinedAt").is_some() => "standard".to_owned(),
            None => String::new(),
        },
    });
    let track = map.get("track").filter(|t| t.is_object()).map(|t| EventTrack {
        sid: text(t.get("sid")).to_owned(),
        // Zero values omitted: AUDIO and UNKNOWN.
        r#type: t.get("type").map_or_else(|| "audio".to_owned(), enum_name),
        source: t.get("source").map_or_else(|| "unknown".to_owned(), enum_name),
        name: text(t.get("name")).to_owned(),
    });
    let presence = match egress.and_then(crate::recordings::egress_from_json) {
        Some(info) if name.starts_with("egress_") => {
            let recording = crate::recordings::from_egress(&info);
            Presence::Recording(crate::recordings::row(&recording, info.updated_at))
        }
        _ => presence_of(name, &room, participant.as_ref()),
    };
    let event = Event {
        cursor: 0,
        id,
        r#type: name.to_owned(),
        source: EventSource::Livekit as i32,
        occurred_at: Some(occurred_at),
        received_at: Some(Timestamp::from(received_at)),
        room: Some(room),
        participant,
        track,
        actor: None,
        inferred: false,
        detail: Some(to_struct(map)),
    };
    Ok((event, presence))
}

/// What a LiveKit event changes in who is live.
pub fn presence_of(name: &str, room: &EventRoom, participant: Option<&EventParticipant>) -> Presence {
    match (name, participant) {
        ("room_started", _) if !room.sid.is_empty() => {
            Presence::RoomStarted { room_sid: room.sid.clone(), room: room.name.clone() }
        }
        ("room_finished", _) if !room.sid.is_empty() => Presence::RoomFinished { room_sid: room.sid.clone() },
        ("participant_joined", Some(participant)) if !participant.sid.is_empty() => Presence::ParticipantJoined {
            participant_sid: participant.sid.clone(),
            room_sid: room.sid.clone(),
            room: room.name.clone(),
            identity: participant.identity.clone(),
        },
        ("participant_left" | "participant_connection_aborted", Some(participant)) if !participant.sid.is_empty() => {
            Presence::ParticipantGone { participant_sid: participant.sid.clone() }
        }
        _ => Presence::Unchanged,
    }
}

/// An enum as protojson writes it (`"CAMERA"`, or a number LiveKit's
/// sender did not know), lower-cased.
fn enum_name(value: &Json) -> String {
    match value {
        Json::String(name) => name.to_ascii_lowercase(),
        other => other.to_string(),
    }
}

fn field<'a>(object: Option<&'a Json>, name: &str) -> &'a str {
    text(object.and_then(|object| object.get(name)))
}

fn first_text(candidates: &[&str]) -> String {
    candidates.iter().find(|text| !text.is_empty()).map_or_else(String::new, |text| (*text).to_owned())
}

fn text(value: Option<&Json>) -> &str {
    value.and_then(Json::as_str).unwrap_or_default()
}

/// protojson writes 64-bit integers as strings; accept numbers too.
fn integer(value: Option<&Json>) -> Option<i64> {
    match value? {
        Json::String(text) => text.parse().ok(),
        Json::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn to_struct(map: Map<String, Json>) -> Struct {
    Struct { fields: map.into_iter().map(|(key, value)| (key, to_value(value))).collect() }
}

fn to_value(json: Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(flag) => Kind::BoolValue(flag),
        Json::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        Json::String(text) => Kind::StringValue(text),
        Json::Array(items) => Kind::ListValue(ListValue { values: items.into_iter().map(to_value).collect() }),
        Json::Object(map) => Kind::StructValue(to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// Unix microseconds of a time (0 before 1970).
pub fn unix_micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
}

/// The id of a webhook that carries none: `WH_` and the first 16 bytes of
/// its body's SHA-256, in hex.
fn webhook_id_of(body: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let mut id = String::from("WH_");
    for byte in &digest[..16] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_keep_no_turn_password_or_stream_key() {
        let body = br#"{"event":"ingress_started","id":"EV_1","createdAt":"1795924520",
            "room":{"name":"r","sid":"RM_1","turnPassword":"hunter2"},
            "ingressInfo":{"ingressId":"IN_1","roomName":"r","streamKey":"sk-live-123","url":"rtmp://in/x"}}"#;
        let (event, _) = from_webhook(body, SystemTime::now()).unwrap();
        let encoded = format!("{:?}", event.detail);
        assert!(!encoded.contains("hunter2") && !encoded.contains("sk-live-123"), "{encoded}");
        assert_eq!(encoded.matches(crate::recordings::REDACTED).count(), 2, "{encoded}");
        assert_eq!(event.room.unwrap().sid, "RM_1");
    }

    #[test]
    fn ids_sort_as_they_were_made() {
        let now = u64::try_from(unix_micros(SystemTime::now())).unwrap();
        let ids: Vec<String> = [0, 61, 62, now, now + 1, 62u64.pow(9) - 1].into_iter().map(id_at).collect();
        for id in &ids {
            assert_eq!(id.len(), 23, "{id}");
            assert!(id.starts_with("RC_") && id.bytes().skip(3).all(|byte| byte.is_ascii_alphanumeric()), "{id}");
        }
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        assert_ne!(id_at(now), id_at(now), "the random part");
        assert!(new_id() > ids[3]);
    }
}
