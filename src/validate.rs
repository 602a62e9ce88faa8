//! The input rules, in one place: the limits (LiveKit's own defaults, so a
//! request RoomControl accepts is one a default LiveKit server accepts
//! too), the checks on each kind of field, and each request's rules
//! ([`Validate`]).
//!
//! Every broken rule of a request is collected in [`Violations`] and
//! answered at once as INVALID_ARGUMENT, before LiveKit is called.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::TokenConfig;
use crate::proto::v1::*;
use crate::track_sources;

/// Longest room name, in bytes.
pub const ROOM_NAME_MAX_BYTES: usize = 256;
/// Longest participant identity, in bytes.
pub const IDENTITY_MAX_BYTES: usize = 256;
/// Longest participant display name, in bytes.
pub const NAME_MAX_BYTES: usize = 256;
/// Largest room or participant metadata, in bytes.
pub const METADATA_MAX_BYTES: usize = 512 * 1024;
/// Largest set of participant attributes, keys and values together, in bytes.
pub const ATTRIBUTES_MAX_BYTES: usize = 64 * 1024;
/// Most names in one ListRooms filter.
pub const LIST_ROOMS_MAX_NAMES: usize = 1000;
/// Longest SendData topic, in bytes.
pub const TOPIC_MAX_BYTES: usize = 256;
/// Most destination identities in one SendData.
pub const DESTINATIONS_MAX: usize = 1000;
/// Most track sids in one UpdateSubscriptions.
pub const TRACK_SIDS_MAX: usize = 1000;
/// A SendData nonce is empty or exactly this long.
pub const NONCE_BYTES: usize = 16;
/// Longest track sid, in bytes ("TR_" and LiveKit's id).
pub const TRACK_SID_MAX_BYTES: usize = 64;

/// One broken rule: the field and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Every rule a request breaks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a broken rule.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation { field: field.into(), description: description.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldViolation> {
        self.0.iter()
    }

    /// `Ok(())` when no rule was broken.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// A room name: 1 to 256 bytes.
    pub fn room_name(&mut self, field: &str, value: &str) {
        self.required_text(field, value, ROOM_NAME_MAX_BYTES, "room name");
    }

    /// A participant identity: 1 to 256 bytes.
    pub fn identity(&mut self, field: &str, value: &str) {
        self.required_text(field, value, IDENTITY_MAX_BYTES, "identity");
    }

    /// A display name: at most 256 bytes (empty allowed).
    pub fn display_name(&mut self, field: &str, value: &str) {
        if value.len() > NAME_MAX_BYTES {
            self.add(field, format!("must be at most {NAME_MAX_BYTES} bytes, got {}", value.len()));
        }
    }

    /// Room or participant metadata: at most 512 KiB.
    pub fn metadata(&mut self, field: &str, value: &str) {
        if value.len() > METADATA_MAX_BYTES {
            self.add(field, format!("must be at most {METADATA_MAX_BYTES} bytes (512 KiB), got {}", value.len()));
        }
    }

    /// Participant attributes: non-empty keys, 64 KiB keys and values together.
    pub fn attributes(&mut self, field: &str, attributes: &HashMap<String, String>) {
        if attributes.keys().any(String::is_empty) {
            self.add(field, "keys must not be empty");
        }
        let total: usize = attributes.iter().map(|(key, value)| key.len() + value.len()).sum();
        if total > ATTRIBUTES_MAX_BYTES {
            self.add(
                field,
                format!("keys and values together must be at most {ATTRIBUTES_MAX_BYTES} bytes (64 KiB), got {total}"),
            );
        }
    }

    /// A track sid: "TR_" followed by 1 or more ASCII letters and digits.
    pub fn track_sid(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(field, "must not be empty");
            return;
        }
        let well_formed = value.len() <= TRACK_SID_MAX_BYTES
            && value
                .strip_prefix("TR_")
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !well_formed {
            self.add(
                field,
                format!(
                    "must be a track sid: \"TR_\" followed by letters and digits, at most {TRACK_SID_MAX_BYTES} bytes"
                ),
            );
        }
    }

    /// A SendData nonce: empty or exactly 16 bytes.
    pub fn nonce(&mut self, field: &str, value: &[u8]) {
        if !value.is_empty() && value.len() != NONCE_BYTES {
            self.add(field, format!("must be empty or exactly {NONCE_BYTES} bytes, got {}", value.len()));
        }
    }

    /// A list with at least one entry and at most `max`.
    pub fn count(&mut self, field: &str, len: usize, min: usize, max: usize) {
        if len < min {
            self.add(field, format!("must have at least {min} entr{}", if min == 1 { "y" } else { "ies" }));
        } else if len > max {
            self.add(field, format!("must have at most {max} entries, got {len}"));
        }
    }

    /// Text of at most `max` bytes (empty allowed).
    pub fn max_bytes(&mut self, field: &str, value: &str, max: usize) {
        if value.len() > max {
            self.add(field, format!("must be at most {max} bytes, got {}", value.len()));
        }
    }

    /// A token lifetime: unset means `default`; otherwise positive, well
    /// formed and at most `max`. Returns the lifetime to use.
    pub fn ttl(
        &mut self,
        field: &str,
        value: Option<&prost_types::Duration>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(value) = value else {
            return default;
        };
        let max_text = crate::duration::display(max);
        if value.nanos.unsigned_abs() >= 1_000_000_000
            || (value.seconds > 0 && value.nanos < 0)
            || (value.seconds < 0 && value.nanos > 0)
        {
            self.add(
                field,
                "must be a well-formed duration (nanos within ±999,999,999 and of the same sign as seconds)",
            );
            return default;
        }
        if value.seconds < 0 || value.nanos < 0 || (value.seconds == 0 && value.nanos == 0) {
            self.add(field, format!("must be positive (and at most {max_text}); leave it unset for the default"));
            return default;
        }
        // Both are non-negative here.
        let ttl = Duration::new(value.seconds.unsigned_abs(), value.nanos.unsigned_abs());
        if ttl < Duration::from_secs(1) {
            self.add(field, "must be at least 1s: tokens carry whole seconds");
            return default;
        }
        if ttl > max {
            self.add(field, format!("must be at most {max_text} (tokens.max_ttl)"));
            return default;
        }
        ttl
    }

    /// Track sources must be named ones: not UNSPECIFIED, not unknown numbers.
    pub fn track_sources(&mut self, field: &str, sources: &[i32]) {
        for (index, source) in sources.iter().enumerate() {
            if track_sources::from_proto(*source).is_none() {
                self.add(
                    format!("{field}[{index}]"),
                    format!("must be {}, got {source}", track_sources::proto_names()),
                );
            }
        }
    }

    fn required_text(&mut self, field: &str, value: &str, max: usize, what: &str) {
        if value.is_empty() {
            self.add(field, format!("must not be empty: give the {what}"));
        } else if value.len() > max {
            self.add(field, format!("must be at most {max} bytes, got {}", value.len()));
        }
    }
}

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, violation) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", violation.field, violation.description)?;
        }
        Ok(())
    }
}

/// A request's own rules, checked by the admission helper (`api::admit`)
/// before anything else is done with it.
pub trait Validate {
    /// Every rule the request breaks.
    fn violations(&self) -> Violations;
}

/// The room a call is about, which the caller must be allowed to touch
/// (`api::admit` checks it); `None` for calls about no single room.
pub trait AboutRoom {
    fn room(&self) -> Option<&str>;
}

/// Which field of each request names its room.
macro_rules! room_field {
    ($($request:ty => $field:ident),* $(,)?) => {$(
        impl AboutRoom for $request {
            fn room(&self) -> Option<&str> {
                Some(&self.$field)
            }
        }
    )*};
}

room_field! {
    CreateRoomRequest => name,
    GetRoomRequest => name,
    DeleteRoomRequest => name,
    UpdateRoomMetadataRequest => room,
    ListParticipantsRequest => room,
    GetParticipantRequest => room,
    RemoveParticipantRequest => room,
    UpdateParticipantRequest => room,
    MutePublishedTrackRequest => room,
    UpdateSubscriptionsRequest => room,
    SendDataRequest => room,
    StartRoomRecordingRequest => room,
    StartTrackRecordingRequest => room,
    StartParticipantRecordingRequest => room,
    StartStreamRequest => room,
    DispatchAgentRequest => room,
    ListAgentDispatchesRequest => room,
    CancelAgentDispatchRequest => room,
}

/// ListRooms, ListEvents and WatchEvents answer only about the rooms the
/// caller may touch instead.
macro_rules! about_many_rooms {
    ($($request:ty),*) => {$(
        impl AboutRoom for $request {
            fn room(&self) -> Option<&str> {
                None
            }
        }
    )*};
}

about_many_rooms!(
    ListRoomsRequest,
    ListEventsRequest,
    WatchEventsRequest,
    ListBansRequest,
    UnbanParticipantRequest,
    ListRoomSessionsRequest,
    GetUsageRequest
);

/// A session's room is known once it is found: the handler authorizes it
/// (`api::history`).
impl AboutRoom for GetRoomSessionRequest {
    fn room(&self) -> Option<&str> {
        None
    }
}

// A recording's room is known once LiveKit is asked (StopRecording), or the
// list is filtered to the caller's rooms (ListRecordings): the handlers
// authorize them.
about_many_rooms!(ListRecordingsRequest, StopRecordingRequest);

/// A ban's room may be a pattern: the handler authorizes it
/// (`api::bans`), since a pattern is not a room a caller's patterns match.
impl AboutRoom for BanParticipantRequest {
    fn room(&self) -> Option<&str> {
        None
    }
}

/// The longest ban a duration may ask for: ten years.
pub const BAN_MAX: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The longest reason a ban may carry.
const BAN_REASON_MAX_BYTES: usize = 512;

impl Validate for BanParticipantRequest {
    fn violations(&self) -> Violations {
        let mut violations = room_and_identity(&self.room, &self.identity);
        if self.reason.len() > BAN_REASON_MAX_BYTES {
            violations
                .add("reason", format!("must be at most {BAN_REASON_MAX_BYTES} bytes, got {}", self.reason.len()));
        }
        if let Some(duration) = &self.duration {
            let whole = duration.nanos == 0 && duration.seconds >= 1;
            if !whole || duration.seconds.unsigned_abs() > BAN_MAX.as_secs() {
                violations.add(
                    "duration",
                    "must be whole seconds from 1s to 10 years (3650 days); leave it unset for a ban until lifted",
                );
            }
        }
        violations
    }
}

impl Validate for UnbanParticipantRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        if !self.ban_id.starts_with("BAN_") || self.ban_id.len() > 64 {
            violations.add("ban_id", "must be a ban's id as BanParticipant or ListBans gave it (\"BAN_...\")");
        }
        violations
    }
}

impl Validate for ListBansRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        if !self.room.is_empty() {
            violations.room_name("room", &self.room);
        }
        if !self.identity.is_empty() {
            violations.identity("identity", &self.identity);
        }
        violations
    }
}

/// Most rooms or types one ListEvents or WatchEvents may filter on.
pub const EVENT_FILTER_MAX: usize = 100;

/// Most events one ListEvents page holds.
pub const EVENTS_PAGE_MAX: i32 = 1000;

/// The longest event type name accepted in a filter.
const EVENT_TYPE_MAX_BYTES: usize = 64;

/// The rooms and types an events call filters on.
fn event_filters(violations: &mut Violations, rooms: &[String], types: &[String]) {
    violations.count("rooms", rooms.len(), 0, EVENT_FILTER_MAX);
    for (index, room) in rooms.iter().enumerate() {
        violations.room_name(&format!("rooms[{index}]"), room);
    }
    violations.count("types", types.len(), 0, EVENT_FILTER_MAX);
    for (index, kind) in types.iter().enumerate() {
        let field = format!("types[{index}]");
        if kind.is_empty() || kind.len() > EVENT_TYPE_MAX_BYTES {
            violations.add(
                field,
                format!("must be an event type of 1 to {EVENT_TYPE_MAX_BYTES} bytes, such as \"participant_joined\""),
            );
        } else if !kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            violations.add(
                field,
                "must be an event type in lower case letters, digits and _, such as \"participant_joined\"",
            );
        }
    }
}

/// Most room sessions one ListRoomSessions page holds.
pub const SESSIONS_PAGE_MAX: i32 = 1000;

/// The longest range one GetUsage covers.
pub const USAGE_RANGE_MAX: Duration = Duration::from_secs(400 * 86_400);

/// A timestamp protobuf can carry: years 1 to 9999, nanos 0 to 999999999.
fn timestamp(violations: &mut Violations, field: &str, at: &prost_types::Timestamp) {
    const MIN: i64 = -62_135_596_800;
    const MAX: i64 = 253_402_300_799;
    if !(MIN..=MAX).contains(&at.seconds) || !(0..1_000_000_000).contains(&at.nanos) {
        violations.add(field, "must be a time from year 1 to 9999, with nanos from 0 to 999999999");
    }
}

/// `from` strictly before `to`, when both are set.
fn time_range(violations: &mut Violations, from: Option<&prost_types::Timestamp>, to: Option<&prost_types::Timestamp>) {
    for (field, at) in [("from", from), ("to", to)] {
        if let Some(at) = at {
            timestamp(violations, field, at);
        }
    }
    if let (Some(from), Some(to)) = (from, to)
        && (from.seconds, from.nanos) >= (to.seconds, to.nanos)
    {
        violations.add("to", format!("must be after from ({from}), got {to}: the range is [from, to)"));
    }
}

impl Validate for ListRoomSessionsRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        event_filters(&mut violations, &self.rooms, &[]);
        time_range(&mut violations, self.from.as_ref(), self.to.as_ref());
        if !(0..=SESSIONS_PAGE_MAX).contains(&self.page_size) {
            violations.add("page_size", format!("must be 1 to {SESSIONS_PAGE_MAX}, or 0 for the default of 100"));
        }
        if !self.page_token.is_empty() && crate::api::history::parse_page_token(&self.page_token).is_none() {
            violations.add("page_token", "must be a next_page_token from an earlier ListRoomSessions reply");
        }
        violations
    }
}

impl Validate for GetRoomSessionRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        if self.session_id.is_empty() || self.session_id.len() > 256 {
            violations.add(
                "session_id",
                "must be a room session's id (LiveKit's room sid, \"RM_...\"), as ListRoomSessions gives it",
            );
        }
        violations
    }
}

impl Validate for GetUsageRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        event_filters(&mut violations, &self.rooms, &[]);
        if self.from.is_none() {
            violations.add("from", "is required: the start of the range [from, to)");
        }
        if self.to.is_none() {
            violations.add("to", "is required: the end of the range [from, to)");
        }
        time_range(&mut violations, self.from.as_ref(), self.to.as_ref());
        if let (Some(from), Some(to)) = (&self.from, &self.to)
            && to.seconds.saturating_sub(from.seconds) > USAGE_RANGE_MAX.as_secs() as i64
        {
            violations.add("to", "must be at most 400 days after from: ask for the range in parts");
        }
        if !matches!(
            UsageBucket::try_from(self.bucket),
            Ok(UsageBucket::Hour | UsageBucket::Day | UsageBucket::Month | UsageBucket::Room)
        ) {
            violations
                .add("bucket", "must be USAGE_BUCKET_HOUR, USAGE_BUCKET_DAY, USAGE_BUCKET_MONTH or USAGE_BUCKET_ROOM");
        }
        if let Err(why) = crate::history::usage::time_zone(&self.time_zone) {
            violations.add("time_zone", why);
        }
        violations
    }
}

impl Validate for ListEventsRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        event_filters(&mut violations, &self.rooms, &self.types);
        if !(0..=EVENTS_PAGE_MAX).contains(&self.page_size) {
            violations.add("page_size", format!("must be 1 to {EVENTS_PAGE_MAX}, or 0 for the default of 100"));
        }
        if !self.page_token.is_empty() && crate::events::watch::parse_page_token(&self.page_token).is_none() {
            violations.add("page_token", "must be a next_page_token from an earlier ListEvents reply");
        }
        violations
    }
}

impl Validate for WatchEventsRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        event_filters(&mut violations, &self.rooms, &self.types);
        if self.include_current_state && self.since_cursor.is_some() {
            violations.add(
                "since_cursor",
                "must be unset with include_current_state: the snapshot's end marker carries the cursor the events follow from",
            );
        }
        violations
    }
}

impl Validate for CreateRoomRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("name", &self.name);
        violations.metadata("metadata", &self.metadata);
        violations.count("agents", self.agents.len(), 0, AGENTS_MAX);
        for (index, agent) in self.agents.iter().enumerate() {
            let field = |name: &str| format!("agents[{index}].{name}");
            agent_fields(&mut violations, field, &agent.agent_name, &agent.metadata, &agent.attributes);
        }
        violations
    }
}

/// Most agents one CreateRoom may dispatch.
pub const AGENTS_MAX: usize = 16;

/// The longest agent name.
const AGENT_NAME_MAX_BYTES: usize = 128;

/// The most metadata an agent's job may carry.
const AGENT_METADATA_MAX_BYTES: usize = 64 * 1024;

fn agent_fields(
    violations: &mut Violations,
    field: impl Fn(&str) -> String,
    agent_name: &str,
    metadata: &str,
    attributes: &HashMap<String, String>,
) {
    if agent_name.trim().is_empty() || agent_name.len() > AGENT_NAME_MAX_BYTES {
        violations.add(
            field("agent_name"),
            format!(
                "must be the name an agent worker registered with, 1 to {AGENT_NAME_MAX_BYTES} bytes (LiveKit's default dispatch, with no name, cannot be made)"
            ),
        );
    }
    if metadata.len() > AGENT_METADATA_MAX_BYTES {
        violations.add(
            field("metadata"),
            format!("must be at most {AGENT_METADATA_MAX_BYTES} bytes (64 KiB), got {}", metadata.len()),
        );
    }
    violations.attributes(&field("attributes"), attributes);
}

/// LiveKit's built-in room-composite layouts.
pub const LAYOUTS: [&str; 6] =
    ["grid", "speaker", "single-speaker", "grid-light", "speaker-light", "single-speaker-light"];

/// The longest file name a recording request may give.
const FILE_NAME_MAX_BYTES: usize = 128;

/// Most RTMP outputs one stream may have.
pub const STREAM_URLS_MAX: usize = 8;

/// The longest RTMP URL.
const STREAM_URL_MAX_BYTES: usize = 2048;

fn file_name(violations: &mut Violations, value: &str) {
    if value.is_empty() {
        return;
    }
    let allowed = value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if value.len() > FILE_NAME_MAX_BYTES || !allowed || value.starts_with('.') {
        violations.add(
            "file_name",
            format!(
                "must be 1 to {FILE_NAME_MAX_BYTES} of A-Z a-z 0-9 . _ - not starting with a dot (the directory and storage are RoomControl's recordings.path_template), or empty"
            ),
        );
    }
}

fn composition(violations: &mut Violations, layout: &str, audio_only: bool, video_only: bool) {
    if !layout.is_empty() && !LAYOUTS.contains(&layout) {
        violations.add("layout", format!("must be one of {}, or empty for grid", LAYOUTS.join(", ")));
    }
    if audio_only && video_only {
        violations.add("video_only", "must not be set with audio_only: a recording needs audio or video");
    }
}

impl Validate for StartRoomRecordingRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("room", &self.room);
        composition(&mut violations, &self.layout, self.audio_only, self.video_only);
        file_name(&mut violations, &self.file_name);
        violations
    }
}

impl Validate for StartTrackRecordingRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("room", &self.room);
        violations.track_sid("track_sid", &self.track_sid);
        file_name(&mut violations, &self.file_name);
        violations
    }
}

impl Validate for StartParticipantRecordingRequest {
    fn violations(&self) -> Violations {
        let mut violations = room_and_identity(&self.room, &self.identity);
        file_name(&mut violations, &self.file_name);
        violations
    }
}

impl Validate for StartStreamRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("room", &self.room);
        composition(&mut violations, &self.layout, self.audio_only, self.video_only);
        violations.count("urls", self.urls.len(), 1, STREAM_URLS_MAX);
        for (index, url) in self.urls.iter().enumerate() {
            // The URL carries a stream key: never repeated in a message.
            let well_formed = url.len() <= STREAM_URL_MAX_BYTES
                && url::Url::parse(url).is_ok_and(|parsed| {
                    matches!(parsed.scheme(), "rtmp" | "rtmps")
                        && parsed.host_str().is_some_and(|host| !host.is_empty())
                });
            if !well_formed {
                violations.add(
                    format!("urls[{index}]"),
                    format!("must be an rtmp:// or rtmps:// URL with a host, at most {STREAM_URL_MAX_BYTES} bytes"),
                );
            }
        }
        violations
    }
}

impl Validate for ListRecordingsRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        if !self.room.is_empty() {
            violations.room_name("room", &self.room);
        }
        violations
    }
}

/// A LiveKit id: its prefix, then letters and digits.
fn livekit_id(violations: &mut Violations, field: &str, value: &str, prefix: &str, what: &str) {
    let well_formed = value.len() <= 64
        && value.strip_prefix(prefix).is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !well_formed {
        violations.add(field, format!("must be {what} (\"{prefix}...\")"));
    }
}

impl Validate for StopRecordingRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        livekit_id(
            &mut violations,
            "recording_id",
            &self.recording_id,
            "EG_",
            "a recording's id as a Start call or ListRecordings gave it",
        );
        violations
    }
}

impl Validate for DispatchAgentRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("room", &self.room);
        agent_fields(&mut violations, str::to_owned, &self.agent_name, &self.metadata, &self.attributes);
        violations
    }
}

impl Validate for ListAgentDispatchesRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("room", &self.room);
        violations
    }
}

impl Validate for CancelAgentDispatchRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("room", &self.room);
        livekit_id(
            &mut violations,
            "dispatch_id",
            &self.dispatch_id,
            "AD_",
            "a dispatch's id as DispatchAgent or ListAgentDispatches gave it",
        );
        violations
    }
}

impl Validate for ListRoomsRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.count("names", self.names.len(), 0, LIST_ROOMS_MAX_NAMES);
        for (index, name) in self.names.iter().enumerate() {
            violations.room_name(&format!("names[{index}]"), name);
        }
        violations
    }
}

impl Validate for GetRoomRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("name", &self.name);
        violations
    }
}

impl Validate for DeleteRoomRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("name", &self.name);
        violations
    }
}

impl Validate for UpdateRoomMetadataRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("room", &self.room);
        violations.metadata("metadata", &self.metadata);
        violations
    }
}

impl Validate for ListParticipantsRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("room", &self.room);
        violations
    }
}

/// The room and identity every call about one participant names.
fn room_and_identity(room: &str, identity: &str) -> Violations {
    let mut violations = Violations::new();
    violations.room_name("room", room);
    violations.identity("identity", identity);
    violations
}

impl Validate for GetParticipantRequest {
    fn violations(&self) -> Violations {
        room_and_identity(&self.room, &self.identity)
    }
}

impl Validate for RemoveParticipantRequest {
    fn violations(&self) -> Violations {
        room_and_identity(&self.room, &self.identity)
    }
}

impl Validate for UpdateParticipantRequest {
    fn violations(&self) -> Violations {
        let mut violations = room_and_identity(&self.room, &self.identity);
        if let Some(metadata) = &self.metadata {
            if metadata.is_empty() {
                violations.add(
                    "metadata",
                    "must not be empty: LiveKit reads empty as \"unchanged\"; leave it unset to keep the metadata, or set a placeholder such as \"{}\"",
                );
            }
            violations.metadata("metadata", metadata);
        }
        if let Some(name) = &self.name {
            if name.is_empty() {
                violations.add(
                    "name",
                    "must not be empty: LiveKit reads empty as \"unchanged\"; leave it unset to keep the name",
                );
            }
            violations.display_name("name", name);
        }
        violations.attributes("attributes", &self.attributes);
        if let Some(permission) = &self.permission {
            violations.track_sources("permission.can_publish_sources", &permission.can_publish_sources);
        }
        if self.metadata.is_none() && self.name.is_none() && self.attributes.is_empty() && self.permission.is_none() {
            violations.add("metadata, name, attributes, permission", "set at least one: there is nothing to update");
        }
        violations
    }
}

impl Validate for MutePublishedTrackRequest {
    fn violations(&self) -> Violations {
        let mut violations = room_and_identity(&self.room, &self.identity);
        violations.track_sid("track_sid", &self.track_sid);
        violations
    }
}

impl Validate for UpdateSubscriptionsRequest {
    fn violations(&self) -> Violations {
        let mut violations = room_and_identity(&self.room, &self.identity);
        violations.count("track_sids", self.track_sids.len(), 1, TRACK_SIDS_MAX);
        for (index, sid) in self.track_sids.iter().enumerate() {
            violations.track_sid(&format!("track_sids[{index}]"), sid);
        }
        violations
    }
}

impl Validate for SendDataRequest {
    fn violations(&self) -> Violations {
        let mut violations = Violations::new();
        violations.room_name("room", &self.room);
        violations.nonce("nonce", &self.nonce);
        violations.count("destination_identities", self.destination_identities.len(), 0, DESTINATIONS_MAX);
        for (index, identity) in self.destination_identities.iter().enumerate() {
            violations.identity(&format!("destination_identities[{index}]"), identity);
        }
        if let Some(topic) = &self.topic {
            violations.max_bytes("topic", topic, TOPIC_MAX_BYTES);
        }
        violations
    }
}

/// CreateToken's rules, which depend on the configured lifetimes: returns
/// the lifetime to give the token. (CreateToken is admitted by its own
/// policy; see `api::tokens`.)
pub fn create_token(limits: &TokenConfig, request: &CreateTokenRequest) -> Result<Duration, Violations> {
    let mut violations = Violations::new();
    violations.room_name("room", &request.room);
    violations.identity("identity", &request.identity);
    violations.display_name("name", &request.name);
    violations.metadata("metadata", &request.metadata);
    violations.attributes("attributes", &request.attributes);
    let ttl = violations.ttl("ttl", request.ttl.as_ref(), limits.default_ttl, limits.max_ttl);
    if let Some(permissions) = &request.permissions {
        violations.track_sources("permissions.can_publish_sources", &permissions.can_publish_sources);
    }
    violations.into_result()?;
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broken(check: impl FnOnce(&mut Violations)) -> Vec<String> {
        let mut violations = Violations::new();
        check(&mut violations);
        violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect()
    }

    #[test]
    fn room_names_must_be_one_to_256_bytes() {
        assert!(broken(|v| v.room_name("name", "a")).is_empty());
        assert!(broken(|v| v.room_name("name", &"a".repeat(256))).is_empty());
        assert_eq!(broken(|v| v.room_name("name", "")), ["name: must not be empty: give the room name"]);
        assert_eq!(broken(|v| v.room_name("name", &"é".repeat(129))), ["name: must be at most 256 bytes, got 258"]);
    }

    #[test]
    fn attributes_count_keys_and_values_together() {
        let fits = HashMap::from([("k".repeat(32 * 1024), "v".repeat(32 * 1024))]);
        assert!(broken(|v| v.attributes("attributes", &fits)).is_empty());
        let too_big = HashMap::from([("k".repeat(32 * 1024), "v".repeat(32 * 1024 + 1))]);
        assert_eq!(broken(|v| v.attributes("attributes", &too_big)).len(), 1);
        let empty_key = HashMap::from([(String::new(), "v".to_owned())]);
        assert_eq!(broken(|v| v.attributes("attributes", &empty_key)), ["attributes: keys must not be empty"]);
    }

    #[test]
    fn track_sids_start_with_tr_and_hold_letters_and_digits() {
        assert!(broken(|v| v.track_sid("track_sid", "TR_VCbXpRdsFbGz")).is_empty());
        for bad in ["", "TR_", "PA_abc", "tr_abc", "TR_ab-c", "TR_ab c"] {
            assert_eq!(broken(|v| v.track_sid("track_sid", bad)).len(), 1, "{bad:?}");
        }
    }

    #[test]
    fn nonces_are_empty_or_sixteen_bytes() {
        assert!(broken(|v| v.nonce("nonce", &[])).is_empty());
        assert!(broken(|v| v.nonce("nonce", &[7; 16])).is_empty());
        assert_eq!(broken(|v| v.nonce("nonce", &[7; 15])), ["nonce: must be empty or exactly 16 bytes, got 15"]);
    }

    #[test]
    fn ttl_defaults_when_unset_and_refuses_zero_negative_and_too_long() {
        let day = Duration::from_secs(86_400);
        let six_hours = Duration::from_secs(21_600);
        let mut v = Violations::new();
        assert_eq!(v.ttl("ttl", None, six_hours, day), six_hours);
        assert_eq!(
            v.ttl("ttl", Some(&prost_types::Duration { seconds: 60, nanos: 0 }), six_hours, day),
            Duration::from_secs(60)
        );
        assert!(v.is_empty());
        for (seconds, nanos) in [(0, 0), (-1, 0), (0, -5), (86_401, 0), (0, 500_000_000), (1, -1), (1, 2_000_000_000)] {
            let mut v = Violations::new();
            v.ttl("ttl", Some(&prost_types::Duration { seconds, nanos }), six_hours, day);
            assert_eq!(v.iter().count(), 1, "{seconds}s {nanos}ns");
        }
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let mut v = Violations::new();
        v.room_name("room", "");
        v.identity("identity", "");
        assert_eq!(
            v.to_string(),
            "room: must not be empty: give the room name; identity: must not be empty: give the identity"
        );
    }
}
