//! The REST routes: one table ([`ROUTES`]) that the dispatcher, the
//! request and reply mapping and the OpenAPI document all read.

use bytes::Bytes;
use http::{Method, StatusCode};
use prost::Message;

use super::json::{
    CreateRoomBody, CreateTokenBody, LegacyRoomUpdate, MuteJson, ParticipantJson, RoomJson, RoomMetadataBody,
    RoomSettingsBody, TokenJson, parse_body,
};
use crate::proto::v1::*;
use crate::rpc::Rpc;
use crate::validate::Violations;

/// What every REST route's path starts with.
pub const PREFIX: &str = "/livekit/";

/// Paths under [`PREFIX`] that belong to other parts of RoomControl (the
/// LiveKit webhook intake), never to the REST routes.
const NOT_OURS: [&str; 1] = ["/livekit/webhook"];

/// The OpenAPI document's path.
pub const DOCUMENT: &str = "/livekit/openapi.json";

/// One REST operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    CreateRoom,
    ListRooms,
    GetRoom,
    UpdateRoom,
    DeleteRoom,
    ListParticipants,
    RemoveParticipant,
    MuteTrack,
    CreateToken,
}

/// What RoomControl knows about one REST operation.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    pub endpoint: Endpoint,
    pub method: Method,
    /// The path in OpenAPI's template form: `/livekit/rooms/{name}`.
    pub template: &'static str,
    /// The RPC it is served by.
    pub rpc: Rpc,
    /// The status of a success.
    pub success: StatusCode,
    /// The OpenAPI operation id (the NestJS service function's name).
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
}

impl Route {
    /// Whether the route reads a JSON body.
    pub fn has_body(&self) -> bool {
        matches!(self.endpoint, Endpoint::CreateRoom | Endpoint::UpdateRoom | Endpoint::CreateToken)
    }

    /// Whether it names a room or participant that may not exist.
    pub fn may_be_missing(&self) -> bool {
        self.template.contains('{')
    }
}

/// Every route, in the NestJS controller's order.
pub const ROUTES: [Route; 9] = [
    Route {
        endpoint: Endpoint::CreateRoom,
        method: Method::POST,
        template: "/livekit/rooms",
        rpc: Rpc::CreateRoom,
        success: StatusCode::CREATED,
        operation_id: "createRoom",
        summary: "Create a room",
        description: "Creates a LiveKit room, or returns the existing room of that name unchanged (LiveKit's CreateRoom is an upsert). RPC: CreateRoom; scope rooms:write.",
    },
    Route {
        endpoint: Endpoint::ListRooms,
        method: Method::GET,
        template: "/livekit/rooms",
        rpc: Rpc::ListRooms,
        success: StatusCode::OK,
        operation_id: "listRooms",
        summary: "List the active rooms",
        description: "Every active room the caller may touch. RPC: ListRooms; scope rooms:read.",
    },
    Route {
        endpoint: Endpoint::GetRoom,
        method: Method::GET,
        template: "/livekit/rooms/{name}",
        rpc: Rpc::GetRoom,
        success: StatusCode::OK,
        operation_id: "getRoom",
        summary: "Get one room",
        description: "404 when no active room has that name. RPC: GetRoom; scope rooms:read.",
    },
    Route {
        endpoint: Endpoint::UpdateRoom,
        method: Method::PATCH,
        template: "/livekit/rooms/{name}",
        rpc: Rpc::UpdateRoomMetadata,
        success: StatusCode::OK,
        operation_id: "updateRoom",
        summary: "Update a room's metadata",
        description: "With `metadata`: replaces the room's metadata. With `emptyTimeout` or `maxParticipants` (or an empty body): writes them into the metadata as JSON, as the NestJS app did (LiveKit cannot change them on a live room). 404 when the room does not exist. RPC: UpdateRoomMetadata; scope rooms:write.",
    },
    Route {
        endpoint: Endpoint::DeleteRoom,
        method: Method::DELETE,
        template: "/livekit/rooms/{name}",
        rpc: Rpc::DeleteRoom,
        success: StatusCode::NO_CONTENT,
        operation_id: "deleteRoom",
        summary: "Delete a room",
        description: "Deletes the room and disconnects everyone in it; 404 when no active room has that name. RPC: DeleteRoom; scope rooms:write.",
    },
    Route {
        endpoint: Endpoint::ListParticipants,
        method: Method::GET,
        template: "/livekit/rooms/{name}/participants",
        rpc: Rpc::ListParticipants,
        success: StatusCode::OK,
        operation_id: "listParticipants",
        summary: "List a room's participants",
        description: "The room's participants with their published tracks; LiveKit answers an empty list for a room that does not exist. RPC: ListParticipants; scope rooms:read.",
    },
    Route {
        endpoint: Endpoint::RemoveParticipant,
        method: Method::DELETE,
        template: "/livekit/rooms/{name}/participants/{identity}",
        rpc: Rpc::RemoveParticipant,
        success: StatusCode::NO_CONTENT,
        operation_id: "removeParticipant",
        summary: "Remove a participant",
        description: "Disconnects the participant (not a ban: a valid token can rejoin). RPC: RemoveParticipant; scope participants:moderate.",
    },
    Route {
        endpoint: Endpoint::MuteTrack,
        method: Method::POST,
        template: "/livekit/rooms/{name}/participants/{identity}/mute",
        rpc: Rpc::MutePublishedTrack,
        success: StatusCode::OK,
        operation_id: "muteParticipant",
        summary: "Mute or unmute a participant's track",
        description: "Mutes (`muted=true`) or unmutes (`muted=false`, refused unless LiveKit allows remote unmute) the track `trackSid`; 404 when the participant or track does not exist. RPC: MutePublishedTrack; scope participants:moderate.",
    },
    Route {
        endpoint: Endpoint::CreateToken,
        method: Method::POST,
        template: "/livekit/token",
        rpc: Rpc::CreateToken,
        success: StatusCode::CREATED,
        operation_id: "createToken",
        summary: "Mint a join token",
        description: "Signs a LiveKit join token for `participantName` (its identity and display name) in `roomName`, in-process. RPC: CreateToken; scope tokens:create, or tokens:create:self for the caller's own identity.",
    },
];

/// The values a route's path carried, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams {
    pub name: String,
    pub identity: String,
}

/// What a request under [`PREFIX`] asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Route(&'static Route, PathParams),
    Document,
    /// A known path, another method: the methods it has.
    WrongMethod(Vec<Method>),
    NotFound,
    /// A path segment that is not UTF-8 once percent-decoded.
    BadPath,
}

/// Whether a path is one of the REST routes' (anything under `/livekit/`
/// but the paths of other parts of RoomControl).
pub fn is_rest_path(path: &str) -> bool {
    path.starts_with(PREFIX)
        && !NOT_OURS.iter().any(|other| {
            path.strip_prefix(other)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
        })
}

/// The route a method and path name. A trailing slash is ignored, as
/// NestJS (Express) ignores it.
pub fn find(method: &Method, path: &str) -> Target {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Target::NotFound;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return Target::NotFound;
    }
    if path == DOCUMENT || path == "/livekit/openapi.json/" {
        return if method == Method::GET || method == Method::HEAD {
            Target::Document
        } else {
            Target::WrongMethod(vec![Method::GET, Method::HEAD])
        };
    }
    // The template with `{...}` for each parameter, and the parameters.
    let mut shape = Vec::with_capacity(segments.len());
    let mut values = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        // Parameters are the odd segments after "rooms" and "participants".
        let is_parameter = matches!((index, segments.first()), (1 | 3, Some(&"rooms")));
        if is_parameter {
            match percent_encoding::percent_decode_str(segment).decode_utf8() {
                Ok(value) => values.push(value.into_owned()),
                Err(_) => return Target::BadPath,
            }
            shape.push(if index == 1 { "{name}" } else { "{identity}" });
        } else {
            shape.push(segment);
        }
    }
    let template = format!("{PREFIX}{}", shape.join("/"));
    let mut methods = Vec::new();
    for route in &ROUTES {
        if route.template != template {
            continue;
        }
        if route.method == method {
            let mut values = values.into_iter();
            let params =
                PathParams { name: values.next().unwrap_or_default(), identity: values.next().unwrap_or_default() };
            return Target::Route(route, params);
        }
        methods.push(route.method.clone());
    }
    if methods.is_empty() { Target::NotFound } else { Target::WrongMethod(methods) }
}

impl Endpoint {
    /// The RPC's request message, encoded, from the path, the query string
    /// and the body: every structural problem at once, in REST's names.
    pub fn request(self, params: &PathParams, query: Option<&str>, body: &[u8]) -> Result<Vec<u8>, Violations> {
        let PathParams { name, identity } = params.clone();
        Ok(match self {
            Endpoint::CreateRoom => {
                let body: CreateRoomBody = parse_body(body)?;
                CreateRoomRequest {
                    name: body.name,
                    empty_timeout: body.empty_timeout.unwrap_or(0),
                    departure_timeout: body.departure_timeout.unwrap_or(0),
                    max_participants: body.max_participants.unwrap_or(0),
                    metadata: body.metadata.unwrap_or_default(),
                    agents: Vec::new(),
                }
                .encode_to_vec()
            }
            Endpoint::ListRooms => ListRoomsRequest { names: Vec::new() }.encode_to_vec(),
            Endpoint::GetRoom => GetRoomRequest { name }.encode_to_vec(),
            Endpoint::UpdateRoom => {
                let metadata = match body_keys(body) {
                    keys if keys.iter().any(|key| key == "metadata") => {
                        if keys.iter().any(|key| key == "emptyTimeout" || key == "maxParticipants") {
                            let mut violations = Violations::new();
                            violations.add(
                                "metadata",
                                "give either metadata, or emptyTimeout and maxParticipants (written into the metadata), not both",
                            );
                            return Err(violations);
                        }
                        parse_body::<RoomMetadataBody>(body)?.metadata
                    }
                    _ => {
                        let RoomSettingsBody { empty_timeout, max_participants } = parse_body(body)?;
                        serde_json::to_string(&LegacyRoomUpdate { empty_timeout, max_participants })
                            .expect("two numbers serialize")
                    }
                };
                UpdateRoomMetadataRequest { room: name, metadata }.encode_to_vec()
            }
            Endpoint::DeleteRoom => DeleteRoomRequest { name }.encode_to_vec(),
            Endpoint::ListParticipants => ListParticipantsRequest { room: name }.encode_to_vec(),
            Endpoint::RemoveParticipant => RemoveParticipantRequest { room: name, identity }.encode_to_vec(),
            Endpoint::MuteTrack => {
                let (track_sid, muted) = mute_query(query)?;
                MutePublishedTrackRequest { room: name, identity, track_sid, muted }.encode_to_vec()
            }
            Endpoint::CreateToken => {
                let body: CreateTokenBody = parse_body(body)?;
                // The NestJS app granted each unless it was false;
                // `canPublishData` did not follow `canPublish` as LiveKit's
                // default does, so it is written in when `canPublish` is.
                let can_publish_data = body.can_publish_data.or(body.can_publish.map(|_| true));
                let permissions = (body.can_publish.is_some()
                    || body.can_subscribe.is_some()
                    || can_publish_data.is_some())
                .then(|| TokenPermissions {
                    can_publish: body.can_publish,
                    can_subscribe: body.can_subscribe,
                    can_publish_data,
                    ..Default::default()
                });
                CreateTokenRequest {
                    room: body.room_name,
                    identity: body.participant_name,
                    metadata: body.metadata.unwrap_or_default(),
                    permissions,
                    ..Default::default()
                }
                .encode_to_vec()
            }
        })
    }

    /// The REST name of a field of the RPC's request, for messages.
    pub fn field_name(self, field: &str) -> String {
        let renamed = match (self, field) {
            (Endpoint::CreateToken, "room") => "roomName",
            (Endpoint::CreateToken, "identity" | "name") => "participantName",
            (_, "room") => "name",
            (Endpoint::MuteTrack, "track_sid") => "trackSid",
            _ => return camel_case(field),
        };
        renamed.to_owned()
    }

    /// The answer to a success, from the RPC's reply message: its JSON,
    /// in the fields' order, or nothing (204).
    pub fn reply(self, message: &[u8]) -> Result<Option<Vec<u8>>, prost::DecodeError> {
        let json = match self {
            Endpoint::CreateRoom | Endpoint::GetRoom | Endpoint::UpdateRoom => {
                serde_json::to_vec(&RoomJson::from(Room::decode(message)?))
            }
            Endpoint::ListRooms => serde_json::to_vec(
                &ListRoomsResponse::decode(message)?.rooms.into_iter().map(RoomJson::from).collect::<Vec<_>>(),
            ),
            Endpoint::ListParticipants => serde_json::to_vec(
                &ListParticipantsResponse::decode(message)?
                    .participants
                    .into_iter()
                    .map(ParticipantJson::from)
                    .collect::<Vec<_>>(),
            ),
            Endpoint::DeleteRoom | Endpoint::RemoveParticipant => return Ok(None),
            Endpoint::MuteTrack => {
                let track = Track::decode(message)?;
                let verb = if track.muted { "muted" } else { "unmuted" };
                serde_json::to_vec(&MuteJson { message: format!("Track {verb} successfully") })
            }
            Endpoint::CreateToken => {
                serde_json::to_vec(&TokenJson { token: CreateTokenResponse::decode(message)?.token })
            }
        };
        Ok(Some(json.expect("the reply types serialize")))
    }
}

/// The property names of a JSON object body (none for anything else).
fn body_keys(body: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(object)) => object.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The mute route's query: `trackSid` and `muted` (`true` or `false`).
fn mute_query(query: Option<&str>) -> Result<(String, bool), Violations> {
    let mut track_sid = String::new();
    let mut muted = None;
    let mut violations = Violations::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "trackSid" => track_sid = value.into_owned(),
            "muted" => match &*value {
                "true" => muted = Some(true),
                "false" => muted = Some(false),
                _ => violations.add("muted", "must be true or false"),
            },
            _ => {}
        }
    }
    if muted.is_none() && violations.is_empty() {
        violations.add("muted", "is required: true mutes, false unmutes");
    }
    match muted {
        Some(muted) if violations.is_empty() => Ok((track_sid, muted)),
        _ => Err(violations),
    }
}

/// `track_sid` -> `trackSid`; dotted paths keep their dots.
fn camel_case(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A gRPC message in its frame: no compression, 4-byte length.
pub fn frame(message: Vec<u8>) -> Bytes {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(method: Method, path: &str) -> Option<(Endpoint, PathParams)> {
        match find(&method, path) {
            Target::Route(route, params) => Some((route.endpoint, params)),
            _ => None,
        }
    }

    fn params(name: &str, identity: &str) -> PathParams {
        PathParams { name: name.to_owned(), identity: identity.to_owned() }
    }

    #[test]
    fn every_route_is_found_by_its_method_and_path() {
        assert_eq!(found(Method::POST, "/livekit/rooms"), Some((Endpoint::CreateRoom, params("", ""))));
        assert_eq!(found(Method::GET, "/livekit/rooms/"), Some((Endpoint::ListRooms, params("", ""))));
        assert_eq!(found(Method::GET, "/livekit/rooms/a%20b"), Some((Endpoint::GetRoom, params("a b", ""))));
        assert_eq!(found(Method::PATCH, "/livekit/rooms/a"), Some((Endpoint::UpdateRoom, params("a", ""))));
        assert_eq!(found(Method::DELETE, "/livekit/rooms/a%2Fb"), Some((Endpoint::DeleteRoom, params("a/b", ""))));
        assert_eq!(
            found(Method::GET, "/livekit/rooms/a/participants"),
            Some((Endpoint::ListParticipants, params("a", "")))
        );
        assert_eq!(
            found(Method::DELETE, "/livekit/rooms/a/participants/bob"),
            Some((Endpoint::RemoveParticipant, params("a", "bob")))
        );
        assert_eq!(
            found(Method::POST, "/livekit/rooms/a/participants/bob/mute"),
            Some((Endpoint::MuteTrack, params("a", "bob")))
        );
        assert_eq!(found(Method::POST, "/livekit/token"), Some((Endpoint::CreateToken, params("", ""))));
        // Room names that look like the fixed segments are still names.
        assert_eq!(
            found(Method::GET, "/livekit/rooms/participants/participants"),
            Some((Endpoint::ListParticipants, params("participants", "")))
        );
        for route in &ROUTES {
            let path = route.template.replace("{name}", "n").replace("{identity}", "i");
            assert_eq!(found(route.method.clone(), &path).map(|(e, _)| e), Some(route.endpoint), "{path}");
        }
    }

    #[test]
    fn other_paths_and_methods_are_told_apart() {
        assert_eq!(find(&Method::GET, "/livekit/openapi.json"), Target::Document);
        assert_eq!(find(&Method::PUT, "/livekit/rooms"), Target::WrongMethod(vec![Method::POST, Method::GET]));
        assert_eq!(find(&Method::GET, "/livekit/nope"), Target::NotFound);
        assert_eq!(find(&Method::GET, "/livekit/rooms//participants"), Target::NotFound);
        assert_eq!(find(&Method::GET, "/livekit/rooms/a/b"), Target::NotFound);
        assert_eq!(find(&Method::GET, "/livekit/rooms/%FF"), Target::BadPath);
    }

    #[test]
    fn the_webhook_path_is_not_ours() {
        assert!(is_rest_path("/livekit/rooms"));
        assert!(is_rest_path("/livekit/webhooks"));
        assert!(!is_rest_path("/livekit/webhook"));
        assert!(!is_rest_path("/livekit/webhook/x"));
        assert!(!is_rest_path("/livekit"));
        assert!(!is_rest_path("/roomcontrol.v1.RoomControl/ListRooms"));
    }

    #[test]
    fn the_mute_query_needs_a_boolean() {
        assert_eq!(mute_query(Some("trackSid=TR_a&muted=true")).unwrap(), ("TR_a".to_owned(), true));
        assert_eq!(mute_query(Some("muted=false&trackSid=TR_a")).unwrap(), ("TR_a".to_owned(), false));
        assert!(mute_query(Some("trackSid=TR_a")).is_err());
        assert!(mute_query(Some("trackSid=TR_a&muted=yes")).is_err());
        assert!(mute_query(None).is_err());
    }

    #[test]
    fn fields_are_named_as_the_rest_routes_name_them() {
        assert_eq!(Endpoint::CreateToken.field_name("room"), "roomName");
        assert_eq!(Endpoint::CreateToken.field_name("identity"), "participantName");
        assert_eq!(Endpoint::CreateRoom.field_name("empty_timeout"), "emptyTimeout");
        assert_eq!(Endpoint::MuteTrack.field_name("track_sid"), "trackSid");
        assert_eq!(Endpoint::MuteTrack.field_name("room"), "name");
        assert_eq!(Endpoint::CreateToken.field_name("permissions.can_publish"), "permissions.canPublish");
    }

    #[test]
    fn update_room_writes_the_old_fields_into_the_metadata_as_the_nestjs_app_did() {
        let encoded = Endpoint::UpdateRoom
            .request(&params("a", ""), None, br#"{"emptyTimeout":600,"maxParticipants":20}"#)
            .unwrap();
        let request = UpdateRoomMetadataRequest::decode(&encoded[..]).unwrap();
        assert_eq!(request.metadata, r#"{"emptyTimeout":600,"maxParticipants":20}"#);
        let encoded = Endpoint::UpdateRoom.request(&params("a", ""), None, b"").unwrap();
        assert_eq!(UpdateRoomMetadataRequest::decode(&encoded[..]).unwrap().metadata, "{}");
        let encoded = Endpoint::UpdateRoom.request(&params("a", ""), None, br#"{"metadata":"x"}"#).unwrap();
        assert_eq!(UpdateRoomMetadataRequest::decode(&encoded[..]).unwrap().metadata, "x");
        assert!(Endpoint::UpdateRoom.request(&params("a", ""), None, br#"{"metadata":"x","emptyTimeout":1}"#).is_err());
    }

    #[test]
    fn tokens_grant_what_the_nestjs_app_granted() {
        let token = |body: &[u8]| {
            CreateTokenRequest::decode(&Endpoint::CreateToken.request(&PathParams::default(), None, body).unwrap()[..])
                .unwrap()
        };
        let plain = token(br#"{"roomName":"r","participantName":"p"}"#);
        assert_eq!((plain.room.as_str(), plain.identity.as_str(), plain.permissions), ("r", "p", None));
        let silent = token(br#"{"roomName":"r","participantName":"p","canPublish":false}"#);
        let permissions = silent.permissions.unwrap();
        assert_eq!(
            (permissions.can_publish, permissions.can_subscribe, permissions.can_publish_data),
            (Some(false), None, Some(true))
        );
    }
}
