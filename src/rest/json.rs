//! The JSON the REST routes read and write: the NestJS app's shapes
//! (camelCase; 64-bit integers as strings, as livekit-server-sdk's
//! messages serialize), each type also the source of its OpenAPI schema.
//!
//! Requests are read in two steps, so that every broken rule is listed at
//! once: the body's structure here (a JSON object, known properties, the
//! right JSON types), then RoomControl's own rules in the RPC's handler.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::proto::v1::{
    Participant, ParticipantKind, ParticipantPermission, ParticipantState, Room, Track, TrackSource, TrackType,
};
use crate::validate::Violations;

/// `POST /livekit/rooms`: the NestJS app's CreateRoomDto, plus `metadata`
/// and `departureTimeout`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateRoomBody {
    /// The room's unique name, 1 to 256 bytes.
    #[schema(min_length = 1, max_length = 256, example = "my-meeting-room")]
    pub name: String,
    /// Seconds the room stays open before anyone joins; absent or 0: the
    /// LiveKit server's default (300 s on a default server).
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 300)]
    pub empty_timeout: Option<u32>,
    /// Seconds the room stays open after its last participant left; absent
    /// or 0: the server's default (20 s).
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 20)]
    pub departure_timeout: Option<u32>,
    /// Most participants at once; absent or 0: no limit.
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 10)]
    pub max_participants: Option<u32>,
    /// Initial room metadata, up to 512 KiB.
    #[schema(example = "{\"topic\":\"standup\"}")]
    pub metadata: Option<String>,
}

/// `PATCH /livekit/rooms/{name}`: either new metadata, or the NestJS app's
/// UpdateRoomDto. LiveKit cannot change a live room's timeouts or limit, so
/// the NestJS app wrote the DTO, as JSON, into the room's metadata; given
/// `emptyTimeout` or `maxParticipants` (or an empty body), RoomControl
/// does the same.
///
/// Only its schema is used: the route reads the variant the body's
/// properties name, to say precisely what is wrong with it.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum UpdateRoomBody {
    Metadata(RoomMetadataBody),
    Settings(RoomSettingsBody),
}

/// New room metadata.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoomMetadataBody {
    /// Replaces the room's metadata; up to 512 KiB, empty clears it.
    #[schema(example = "{\"topic\":\"retro\"}")]
    pub metadata: String,
}

/// The NestJS app's UpdateRoomDto, written into the room's metadata as
/// `{"emptyTimeout":...,"maxParticipants":...}`, as the NestJS app did.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoomSettingsBody {
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 600)]
    pub empty_timeout: Option<u32>,
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 20)]
    pub max_participants: Option<u32>,
}

/// `POST /livekit/token`: the NestJS app's CreateTokenDto.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTokenBody {
    /// The room the token joins, 1 to 256 bytes; it need not exist yet.
    #[schema(min_length = 1, max_length = 256, example = "my-meeting-room")]
    pub room_name: String,
    /// The participant's identity and display name, 1 to 256 bytes
    /// (a self-service caller: empty or its own identity).
    #[schema(min_length = 1, max_length = 256, example = "john-doe")]
    pub participant_name: String,
    /// Participant metadata, up to 512 KiB.
    #[schema(example = "{\"role\":\"moderator\"}")]
    pub metadata: Option<String>,
    /// May publish tracks; default true.
    pub can_publish: Option<bool>,
    /// May subscribe to others' tracks; default true.
    pub can_subscribe: Option<bool>,
    /// May send data packets; default true.
    pub can_publish_data: Option<bool>,
}

/// The room's metadata as the NestJS app's `updateRoom` wrote it:
/// `JSON.stringify(updateRoomDto)`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyRoomUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
}

/// A LiveKit room, as livekit-server-sdk's `Room` serializes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomJson {
    /// Server-assigned id.
    #[schema(example = "RM_5kPfcDzTxGsA")]
    pub sid: String,
    #[schema(example = "my-meeting-room")]
    pub name: String,
    /// Seconds the room stays open with nobody having joined yet.
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 300)]
    pub empty_timeout: u32,
    /// Seconds the room stays open after its last participant left.
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 20)]
    pub departure_timeout: u32,
    /// Most participants at once; 0: no limit.
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 10)]
    pub max_participants: u32,
    /// When the room was created: seconds since the Unix epoch, a 64-bit
    /// integer as a string ("0" when unknown).
    #[schema(pattern = "^[0-9]+$", example = "1764312000")]
    pub creation_time: String,
    /// The same in milliseconds, a 64-bit integer as a string.
    #[schema(pattern = "^[0-9]+$", example = "1764312000250")]
    pub creation_time_ms: String,
    pub metadata: String,
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 0)]
    pub num_participants: u32,
    #[schema(minimum = 0, maximum = 4294967295_u64, example = 0)]
    pub num_publishers: u32,
    pub active_recording: bool,
}

/// A participant, as livekit-server-sdk's `ParticipantInfo` serializes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantJson {
    #[schema(example = "PA_mRF9mvJzBBGY")]
    pub sid: String,
    #[schema(example = "john-doe")]
    pub identity: String,
    pub name: String,
    pub state: ParticipantStateJson,
    pub metadata: String,
    pub attributes: BTreeMap<String, String>,
    /// When the participant joined: seconds since the Unix epoch, as a string.
    #[schema(pattern = "^[0-9]+$", example = "1764312000")]
    pub joined_at: String,
    /// The same in milliseconds, as a string.
    #[schema(pattern = "^[0-9]+$", example = "1764312000250")]
    pub joined_at_ms: String,
    /// Absent when LiveKit sent none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<PermissionJson>,
    pub kind: ParticipantKindJson,
    /// Whether it publishes at least one track.
    pub is_publisher: bool,
    pub tracks: Vec<TrackJson>,
}

/// What a participant may do.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionJson {
    pub can_subscribe: bool,
    pub can_publish: bool,
    pub can_publish_data: bool,
    /// Empty: every source.
    pub can_publish_sources: Vec<TrackSourceJson>,
    pub hidden: bool,
    pub can_update_metadata: bool,
}

/// A published track, as livekit-server-sdk's `TrackInfo` serializes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackJson {
    #[schema(example = "TR_VCbXpRdsFbGz")]
    pub sid: String,
    #[serde(rename = "type")]
    pub kind: TrackTypeJson,
    pub name: String,
    pub muted: bool,
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    pub width: u32,
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    pub height: u32,
    pub simulcast: bool,
    pub source: TrackSourceJson,
    #[schema(example = "video/vp8")]
    pub mime_type: String,
}

/// LiveKit's participant states, by name.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParticipantStateJson {
    Joining,
    Joined,
    Active,
    Disconnected,
}

/// LiveKit's participant kinds, by name.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParticipantKindJson {
    Standard,
    Ingress,
    Egress,
    Sip,
    Agent,
    Connector,
    Bridge,
}

/// LiveKit's track types, by name.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrackTypeJson {
    Audio,
    Video,
    Data,
}

/// LiveKit's track sources, by name.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrackSourceJson {
    Unknown,
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
}

/// `POST /livekit/token`'s answer, exactly the NestJS controller's `{ token }`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenJson {
    /// The signed LiveKit join token (a JWT), for a LiveKit client SDK's
    /// `connect(url, token)`.
    #[schema(example = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...")]
    pub token: String,
}

/// The mute route's answer, exactly the NestJS controller's `{ message }`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MuteJson {
    #[schema(example = "Track muted successfully")]
    pub message: String,
}

/// Every error, in NestJS's shape.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorJson {
    /// The HTTP status code, repeated.
    #[schema(example = 404)]
    pub status_code: u16,
    pub message: ErrorMessage,
    /// The HTTP status's reason phrase.
    #[schema(example = "Not Found")]
    pub error: String,
}

/// For 400 with broken rules, every rule (as NestJS's ValidationPipe
/// answers); otherwise one sentence saying what went wrong.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorMessage {
    Rules(Vec<String>),
    Text(String),
}

impl From<Room> for RoomJson {
    fn from(room: Room) -> Self {
        let (seconds, millis) = epoch(room.creation_time);
        RoomJson {
            sid: room.sid,
            name: room.name,
            empty_timeout: room.empty_timeout,
            departure_timeout: room.departure_timeout,
            max_participants: room.max_participants,
            creation_time: seconds,
            creation_time_ms: millis,
            metadata: room.metadata,
            num_participants: room.num_participants,
            num_publishers: room.num_publishers,
            active_recording: room.active_recording,
        }
    }
}

impl From<Participant> for ParticipantJson {
    fn from(participant: Participant) -> Self {
        let (joined_at, joined_at_ms) = epoch(participant.joined_at);
        ParticipantJson {
            sid: participant.sid,
            identity: participant.identity,
            name: participant.name,
            state: participant_state(participant.state),
            metadata: participant.metadata,
            attributes: participant.attributes.into_iter().collect(),
            joined_at,
            joined_at_ms,
            permission: participant.permission.map(PermissionJson::from),
            kind: participant_kind(participant.kind),
            is_publisher: !participant.tracks.is_empty(),
            tracks: participant.tracks.into_iter().map(TrackJson::from).collect(),
        }
    }
}

impl From<ParticipantPermission> for PermissionJson {
    fn from(permission: ParticipantPermission) -> Self {
        PermissionJson {
            can_subscribe: permission.can_subscribe,
            can_publish: permission.can_publish,
            can_publish_data: permission.can_publish_data,
            can_publish_sources: permission.can_publish_sources.into_iter().map(track_source).collect(),
            hidden: permission.hidden,
            can_update_metadata: permission.can_update_metadata,
        }
    }
}

impl From<Track> for TrackJson {
    fn from(track: Track) -> Self {
        TrackJson {
            sid: track.sid,
            kind: track_type(track.r#type),
            name: track.name,
            muted: track.muted,
            width: track.width,
            height: track.height,
            simulcast: track.simulcast,
            source: track_source(track.source),
            mime_type: track.mime_type,
        }
    }
}

/// Seconds and milliseconds since the epoch, as strings; "0" when unset.
fn epoch(timestamp: Option<prost_types::Timestamp>) -> (String, String) {
    let Some(timestamp) = timestamp else {
        return ("0".to_owned(), "0".to_owned());
    };
    let seconds = timestamp.seconds.max(0);
    let millis =
        seconds.saturating_mul(1000).saturating_add(i64::from(timestamp.nanos.clamp(0, 999_999_999)) / 1_000_000);
    (seconds.to_string(), millis.to_string())
}

// RoomControl's UNSPECIFIED values (LiveKit sent a value RoomControl does
// not know) become LiveKit's zero value, as livekit-server-sdk would show it.

fn participant_state(state: i32) -> ParticipantStateJson {
    match ParticipantState::try_from(state) {
        Ok(ParticipantState::Joined) => ParticipantStateJson::Joined,
        Ok(ParticipantState::Active) => ParticipantStateJson::Active,
        Ok(ParticipantState::Disconnected) => ParticipantStateJson::Disconnected,
        _ => ParticipantStateJson::Joining,
    }
}

fn participant_kind(kind: i32) -> ParticipantKindJson {
    match ParticipantKind::try_from(kind) {
        Ok(ParticipantKind::Ingress) => ParticipantKindJson::Ingress,
        Ok(ParticipantKind::Egress) => ParticipantKindJson::Egress,
        Ok(ParticipantKind::Sip) => ParticipantKindJson::Sip,
        Ok(ParticipantKind::Agent) => ParticipantKindJson::Agent,
        Ok(ParticipantKind::Connector) => ParticipantKindJson::Connector,
        Ok(ParticipantKind::Bridge) => ParticipantKindJson::Bridge,
        _ => ParticipantKindJson::Standard,
    }
}

fn track_type(kind: i32) -> TrackTypeJson {
    match TrackType::try_from(kind) {
        Ok(TrackType::Video) => TrackTypeJson::Video,
        Ok(TrackType::Data) => TrackTypeJson::Data,
        _ => TrackTypeJson::Audio,
    }
}

fn track_source(source: i32) -> TrackSourceJson {
    match TrackSource::try_from(source) {
        Ok(TrackSource::Camera) => TrackSourceJson::Camera,
        Ok(TrackSource::Microphone) => TrackSourceJson::Microphone,
        Ok(TrackSource::ScreenShare) => TrackSourceJson::ScreenShare,
        Ok(TrackSource::ScreenShareAudio) => TrackSourceJson::ScreenShareAudio,
        _ => TrackSourceJson::Unknown,
    }
}

/// Reads a request body of type `T`: every structural problem at once, in
/// the words NestJS's ValidationPipe uses where it has them. An empty body
/// reads as `{}`, as NestJS's does.
pub fn parse_body<T: for<'de> Deserialize<'de> + PartialSchema>(body: &[u8]) -> Result<T, Violations> {
    let mut violations = Violations::new();
    let value: serde_json::Value = match serde_json::from_slice(body) {
        _ if body.iter().all(u8::is_ascii_whitespace) => serde_json::Value::Object(Default::default()),
        Ok(value) => value,
        Err(error) => {
            violations.add("", format!("the body is not valid JSON ({error}): send a JSON object"));
            return Err(violations);
        }
    };
    let serde_json::Value::Object(object) = value else {
        violations.add("", "the body must be a JSON object");
        return Err(violations);
    };
    let schema = T::schema();
    let properties = object_properties(&schema);
    for (key, value) in &object {
        match properties.and_then(|properties| properties.get(key)) {
            None => violations.add(key.as_str(), format!("property {key} should not exist")),
            Some(property) => {
                if !fits(property, value) {
                    violations.add(key.as_str(), expected(property));
                }
            }
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    // A missing required property reads as empty, so the RPC's own rules
    // say what to give (`name: must not be empty: give the room name`), and
    // an integer written as `5.0` reads as 5.
    let mut object = object;
    if let RefOr::T(Schema::Object(schema)) = &schema {
        for required in &schema.required {
            object.entry(required.clone()).or_insert_with(|| serde_json::Value::String(String::new()));
        }
    }
    for value in object.values_mut() {
        if let serde_json::Value::Number(number) = value
            && number.is_f64()
            && let Some(n) = integer(number).and_then(|n| u64::try_from(n).ok())
        {
            *value = serde_json::Value::from(n);
        }
    }
    // Every property is known and of its type: serde agrees.
    serde_json::from_value(serde_json::Value::Object(object)).map_err(|error| {
        let mut violations = Violations::new();
        violations.add("", format!("the body cannot be read: {error}"));
        violations
    })
}

fn object_properties(schema: &RefOr<Schema>) -> Option<&BTreeMap<String, RefOr<Schema>>> {
    match schema {
        RefOr::T(Schema::Object(object)) => Some(&object.properties),
        _ => None,
    }
}

/// The JSON type a property's schema names, and its bounds.
fn property_type(property: &RefOr<Schema>) -> Option<(Type, Option<f64>, Option<f64>)> {
    let RefOr::T(Schema::Object(object)) = property else {
        return None;
    };
    let kind = match &object.schema_type {
        SchemaType::Type(kind) => kind.clone(),
        // Option<T>: [T, null].
        SchemaType::Array(kinds) => kinds.iter().find(|kind| **kind != Type::Null)?.clone(),
        SchemaType::AnyValue => return None,
    };
    let number = |n: &Option<utoipa::Number>| {
        n.as_ref().map(|n| match n {
            utoipa::Number::Int(n) => *n as f64,
            utoipa::Number::UInt(n) => *n as f64,
            utoipa::Number::Float(n) => *n,
        })
    };
    Some((kind, number(&object.minimum), number(&object.maximum)))
}

/// Whether a JSON value has the type and bounds of the property (`null`
/// counts as absent for an optional property).
fn fits(property: &RefOr<Schema>, value: &serde_json::Value) -> bool {
    let Some((kind, minimum, maximum)) = property_type(property) else {
        return true;
    };
    let nullable = matches!(property, RefOr::T(Schema::Object(object)) if matches!(&object.schema_type, SchemaType::Array(kinds) if kinds.contains(&Type::Null)));
    match value {
        serde_json::Value::Null => nullable,
        serde_json::Value::String(_) => kind == Type::String,
        serde_json::Value::Bool(_) => kind == Type::Boolean,
        serde_json::Value::Number(number) => match kind {
            Type::Integer => integer(number).is_some_and(|n| {
                let n = n as f64;
                minimum.is_none_or(|minimum| n >= minimum) && maximum.is_none_or(|maximum| n <= maximum)
            }),
            Type::Number => true,
            _ => false,
        },
        _ => matches!(kind, Type::Object | Type::Array),
    }
}

/// A JSON number's integer value: JSON Schema's integers include `5.0`.
fn integer(number: &serde_json::Number) -> Option<i128> {
    if let Some(n) = number.as_i64() {
        return Some(i128::from(n));
    }
    if let Some(n) = number.as_u64() {
        return Some(i128::from(n));
    }
    let n = number.as_f64()?;
    (n.fract() == 0.0 && n.abs() < 1e18).then_some(n as i128)
}

/// What a property must be, as NestJS's class-validator words it.
fn expected(property: &RefOr<Schema>) -> String {
    match property_type(property) {
        Some((Type::String, ..)) => "must be a string".to_owned(),
        Some((Type::Boolean, ..)) => "must be a boolean value".to_owned(),
        Some((Type::Integer, minimum, maximum)) => format!(
            "must be an integer number from {} to {}",
            minimum.unwrap_or(f64::from(i32::MIN)),
            maximum.unwrap_or(f64::from(u32::MAX))
        ),
        _ => "has the wrong type".to_owned(),
    }
}

/// Whether the schema marks the property required (for the tests).
#[cfg(test)]
fn required(schema: &RefOr<Schema>) -> Vec<String> {
    match schema {
        RefOr::T(Schema::Object(object)) => object.required.clone(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(result: Result<CreateRoomBody, Violations>) -> Vec<String> {
        result.unwrap_err().iter().map(|v| format!("{}: {}", v.field, v.description)).collect()
    }

    #[test]
    fn a_body_of_known_properties_and_types_reads() {
        let body: CreateRoomBody =
            parse_body(br#"{"name":"a","emptyTimeout":300,"maxParticipants":10,"metadata":"m"}"#).unwrap();
        assert_eq!(body.name, "a");
        assert_eq!(body.empty_timeout, Some(300));
        assert_eq!(body.max_participants, Some(10));
        assert_eq!(body.metadata.as_deref(), Some("m"));
        let body: CreateRoomBody = parse_body(b"").unwrap();
        assert_eq!(body.name, "");
        let body: CreateRoomBody = parse_body(br#"{"name":"a","emptyTimeout":null}"#).unwrap();
        assert_eq!(body.empty_timeout, None);
    }

    #[test]
    fn every_structural_problem_is_listed_at_once() {
        let listed = rules(parse_body(br#"{"name":5,"emptyTimeout":-1,"maxParticipants":1.5,"extra":true}"#));
        assert_eq!(
            listed,
            [
                "emptyTimeout: must be an integer number from 0 to 4294967295",
                "extra: property extra should not exist",
                "maxParticipants: must be an integer number from 0 to 4294967295",
                "name: must be a string",
            ]
        );
        assert_eq!(rules(parse_body(b"[1]")), [": the body must be a JSON object"]);
        assert!(rules(parse_body(b"{nope")).join("").contains("not valid JSON"));
        assert_eq!(
            rules(parse_body(br#"{"emptyTimeout":4294967296}"#)),
            ["emptyTimeout: must be an integer number from 0 to 4294967295"]
        );
    }

    #[test]
    fn the_schemas_mark_what_is_required() {
        assert_eq!(required(&CreateRoomBody::schema()), ["name"]);
        assert_eq!(required(&CreateTokenBody::schema()), ["roomName", "participantName"]);
        assert_eq!(required(&RoomMetadataBody::schema()), ["metadata"]);
        assert!(required(&RoomSettingsBody::schema()).is_empty());
        let body: CreateRoomBody = parse_body(br#"{"name":"a","maxParticipants":20.0}"#).unwrap();
        assert_eq!(body.max_participants, Some(20));
    }

    #[test]
    fn rooms_carry_64_bit_times_as_strings() {
        let room = RoomJson::from(Room {
            name: "a".into(),
            creation_time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 250_000_000 }),
            ..Default::default()
        });
        let json = serde_json::to_value(&room).unwrap();
        assert_eq!(json["creationTime"], "1700000000");
        assert_eq!(json["creationTimeMs"], "1700000000250");
        assert_eq!(json["numParticipants"], 0);
        let unset = serde_json::to_value(RoomJson::from(Room::default())).unwrap();
        assert_eq!(unset["creationTime"], "0");
    }
}
