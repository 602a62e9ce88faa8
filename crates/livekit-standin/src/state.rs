//! The rooms, participants and tracks a single-node livekit-server would hold,
//! and the webhook events their changes raise.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use livekit_protocol as proto;
use rand::Rng;
use rand::seq::SliceRandom;

/// `pkg/config/config.go` defaults of `room.empty_timeout` and
/// `room.departure_timeout`.
pub(crate) const DEFAULT_EMPTY_TIMEOUT: u32 = 5 * 60;
pub(crate) const DEFAULT_DEPARTURE_TIMEOUT: u32 = 20;

/// `protocol/webhook/consts.go`.
pub(crate) mod event {
    pub const ROOM_STARTED: &str = "room_started";
    pub const ROOM_FINISHED: &str = "room_finished";
    pub const PARTICIPANT_JOINED: &str = "participant_joined";
    pub const PARTICIPANT_LEFT: &str = "participant_left";
    pub const PARTICIPANT_CONNECTION_ABORTED: &str = "participant_connection_aborted";
    pub const TRACK_PUBLISHED: &str = "track_published";
    pub const TRACK_UNPUBLISHED: &str = "track_unpublished";
    pub const EGRESS_STARTED: &str = "egress_started";
    pub const EGRESS_UPDATED: &str = "egress_updated";
    pub const EGRESS_ENDED: &str = "egress_ended";
}

/// `RoomConfig.EnabledCodecs` defaults, in order, as `Room.enabled_codecs`
/// reports them (pion's mime type strings).
const DEFAULT_CODECS: &[&str] = &[
    "audio/PCMU",
    "audio/PCMA",
    "audio/opus",
    "audio/red",
    "video/VP8",
    "video/H264",
    "video/VP9",
    "video/AV1",
    "video/H265",
    "video/rtx",
];

/// `shortuuid.DefaultAlphabet`, which protocol `utils/guid` draws ids from:
/// base57, no 0, 1, I, O, l.
const GUID_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `guid.New(prefix)`: the prefix and 12 base57 characters.
pub(crate) fn guid(prefix: &str) -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(prefix.len() + 12);
    id.push_str(prefix);
    for _ in 0..12 {
        id.push(GUID_ALPHABET[rng.random_range(0..GUID_ALPHABET.len())] as char);
    }
    id
}

/// `utils.RandomSecret()`: 256 random bits in base62 (43 characters).
fn random_secret() -> String {
    let mut rng = rand::rng();
    (0..43).map(|_| BASE62[rng.random_range(0..BASE62.len())] as char).collect()
}

pub(crate) fn unix_now(now: SystemTime) -> (i64, i64) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() as i64, d.as_millis() as i64)
}

#[derive(Debug, Clone)]
pub(crate) struct RoomState {
    /// The stored room, without the participant counts (computed on read).
    pub(crate) room: proto::Room,
    pub(crate) participants: Vec<proto::ParticipantInfo>,
    /// The room's agent dispatches (`Room.agentDispatches`), jobs included.
    pub(crate) dispatches: Vec<proto::AgentDispatch>,
    /// Unix seconds of the first join and of the last departure (0: never),
    /// which decide between the empty and the departure timeout.
    first_joined_at: i64,
    last_left_at: i64,
}

impl RoomState {
    fn new(name: &str, timeouts: Timeouts, now: SystemTime) -> Self {
        let (secs, millis) = unix_now(now);
        RoomState {
            room: proto::Room {
                sid: guid("RM_"),
                name: name.to_owned(),
                empty_timeout: timeouts.empty,
                departure_timeout: timeouts.departure,
                max_participants: 0,
                creation_time: secs,
                creation_time_ms: millis,
                turn_password: random_secret(),
                enabled_codecs: DEFAULT_CODECS
                    .iter()
                    .map(|m| proto::Codec { mime: (*m).to_owned(), fmtp_line: String::new() })
                    .collect(),
                ..Default::default()
            },
            participants: Vec::new(),
            dispatches: Vec::new(),
            first_joined_at: 0,
            last_left_at: 0,
        }
    }

    /// `rtc.Room.updateProto`: the counts are computed from the participants.
    pub(crate) fn to_proto(&self) -> proto::Room {
        let mut room = self.room.clone();
        room.num_participants = self.participants.len() as u32;
        room.num_publishers = self.participants.iter().filter(|p| p.is_publisher).count() as u32;
        room
    }

    /// `rtc.Room.CloseIfEmpty`: a room where only dependent participants
    /// (agents, egresses) are left closes `departure_timeout` seconds after
    /// the last participant left, or `empty_timeout` seconds after its
    /// creation if nobody ever left.
    fn is_expired(&self, now_secs: i64) -> bool {
        if !self.participants.iter().all(is_dependent) {
            return false;
        }
        let (elapsed, timeout) = if self.first_joined_at > 0 && self.last_left_at > 0 {
            (now_secs - self.last_left_at, self.room.departure_timeout)
        } else {
            (now_secs - self.room.creation_time, self.room.empty_timeout)
        };
        elapsed >= i64::from(timeout)
    }

    fn participant_mut(&mut self, identity: &str) -> Option<&mut proto::ParticipantInfo> {
        self.participants.iter_mut().find(|p| p.identity == identity)
    }

    /// `toMinimalRoomProto`: what track events carry of the room.
    fn minimal(&self) -> proto::Room {
        proto::Room { sid: self.room.sid.clone(), name: self.room.name.clone(), ..Default::default() }
    }
}

/// `ParticipantImpl.IsDependent`: agents and egresses do not keep a room
/// open.
pub(crate) fn is_dependent(p: &proto::ParticipantInfo) -> bool {
    p.kind == proto::participant_info::Kind::Agent as i32 || p.kind == proto::participant_info::Kind::Egress as i32
}

/// A track event's participant: sid and identity only (`TrackPublished`,
/// `TrackUnpublished` in `pkg/telemetry/events.go`).
fn minimal_participant(p: &proto::ParticipantInfo) -> proto::ParticipantInfo {
    proto::ParticipantInfo { sid: p.sid.clone(), identity: p.identity.clone(), ..Default::default() }
}

/// The server's `room.empty_timeout` and `room.departure_timeout` (seconds),
/// which a room gets unless its CreateRoom asks for non-zero values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) empty: u32,
    pub(crate) departure: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { empty: DEFAULT_EMPTY_TIMEOUT, departure: DEFAULT_DEPARTURE_TIMEOUT }
    }
}

/// How a participant's session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Departure {
    /// The client left (`ParticipantCloseReasonClientRequestLeave`).
    ClientLeft,
    /// The connection dropped: before ACTIVE a join failure, after it a
    /// timed-out peer connection.
    ConnectionLost,
    /// RemoveParticipant.
    Removed,
    /// DeleteRoom.
    RoomDeleted,
    /// The room closed (its timeout) with dependent participants in it.
    RoomClosed,
    /// A new session with the same identity replaced it.
    DuplicateIdentity,
}

impl Departure {
    /// `ParticipantCloseReason.ToDisconnectReason`.
    fn reason(self, was_active: bool) -> proto::DisconnectReason {
        match self {
            Departure::ClientLeft => proto::DisconnectReason::ClientInitiated,
            Departure::ConnectionLost if was_active => proto::DisconnectReason::ConnectionTimeout,
            Departure::ConnectionLost => proto::DisconnectReason::JoinFailure,
            Departure::Removed => proto::DisconnectReason::ParticipantRemoved,
            Departure::RoomDeleted => proto::DisconnectReason::RoomDeleted,
            Departure::RoomClosed => proto::DisconnectReason::RoomClosed,
            Departure::DuplicateIdentity => proto::DisconnectReason::DuplicateIdentity,
        }
    }
}

/// What a test publishes for a participant with [`crate::StandIn::add_track`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrackSpec {
    pub name: String,
    pub kind: proto::TrackType,
    pub source: proto::TrackSource,
    pub muted: bool,
    pub simulcast: bool,
    pub width: u32,
    pub height: u32,
    /// Empty: "audio/opus" for audio, "video/VP8" for video.
    pub mime_type: String,
}

impl Default for TrackSpec {
    fn default() -> Self {
        TrackSpec {
            name: String::new(),
            kind: proto::TrackType::Audio,
            source: proto::TrackSource::Microphone,
            muted: false,
            simulcast: false,
            width: 0,
            height: 0,
            mime_type: String::new(),
        }
    }
}

impl TrackSpec {
    /// A microphone audio track.
    pub fn microphone(name: &str) -> Self {
        TrackSpec { name: name.to_owned(), ..Default::default() }
    }

    /// A simulcast 1280x720 camera video track.
    pub fn camera(name: &str) -> Self {
        TrackSpec {
            name: name.to_owned(),
            kind: proto::TrackType::Video,
            source: proto::TrackSource::Camera,
            simulcast: true,
            width: 1280,
            height: 720,
            ..Default::default()
        }
    }

    /// A 1920x1080 screen-share video track.
    pub fn screen_share(name: &str) -> Self {
        TrackSpec {
            name: name.to_owned(),
            kind: proto::TrackType::Video,
            source: proto::TrackSource::ScreenShare,
            width: 1920,
            height: 1080,
            ..Default::default()
        }
    }

    // The server still fills the deprecated `simulcast` and `layers` fields.
    #[allow(deprecated)]
    fn to_track_info(&self, mid: usize) -> proto::TrackInfo {
        let video = self.kind == proto::TrackType::Video;
        let mime_type = if !self.mime_type.is_empty() {
            self.mime_type.clone()
        } else if video {
            "video/VP8".to_owned()
        } else {
            "audio/opus".to_owned()
        };
        let layers: Vec<proto::VideoLayer> = if !video {
            Vec::new()
        } else if self.simulcast {
            [
                (proto::VideoQuality::Low, 4, "q"),
                (proto::VideoQuality::Medium, 2, "h"),
                (proto::VideoQuality::High, 1, "f"),
            ]
            .iter()
            .enumerate()
            .map(|(i, (q, div, rid))| proto::VideoLayer {
                quality: *q as i32,
                width: self.width / div,
                height: self.height / div,
                spatial_layer: i as i32,
                rid: (*rid).to_owned(),
                ..Default::default()
            })
            .collect()
        } else {
            vec![proto::VideoLayer {
                quality: proto::VideoQuality::High as i32,
                width: self.width,
                height: self.height,
                ..Default::default()
            }]
        };
        let sid = guid("TR_");
        proto::TrackInfo {
            sid: sid.clone(),
            r#type: self.kind as i32,
            name: self.name.clone(),
            muted: self.muted,
            width: if video { self.width } else { 0 },
            height: if video { self.height } else { 0 },
            simulcast: video && self.simulcast,
            source: self.source as i32,
            layers: layers.clone(),
            mime_type: mime_type.clone(),
            mid: mid.to_string(),
            codecs: vec![proto::SimulcastCodecInfo {
                mime_type,
                mid: mid.to_string(),
                cid: sid,
                layers,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// Everything the server stores, keyed by room name, and the webhook events
/// raised by the changes not yet handed to the notifier.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) rooms: HashMap<String, RoomState>,
    timeouts: Timeouts,
    pub(crate) events: Vec<proto::WebhookEvent>,
    /// Every egress ever started, oldest first (the IO service's store).
    pub(crate) egresses: Vec<crate::egress::EgressRecord>,
    /// An egress worker is connected (Redis and `livekit/egress` running).
    pub(crate) egress_worker: bool,
    /// The agent names agent workers are registered for.
    pub(crate) agent_workers: Vec<String>,
    /// Work the changes scheduled for later (see [`Timer`]).
    pub(crate) timers: Vec<Timer>,
}

/// Something that happens a little later, in a task of its own (the egress
/// worker's and the agent worker's steps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The egress takes its next step: STARTING -> ACTIVE (or FAILED),
    /// ENDING -> COMPLETE.
    Egress(String),
    /// An agent worker accepts a dispatch's job: a job, and its agent joins.
    AgentJoin { room: String, room_sid: String, dispatch_id: String },
    /// A terminated job's agent leaves the room.
    AgentLeave { room: String, room_sid: String, identity: String },
}

impl State {
    pub(crate) fn new(timeouts: Timeouts) -> Self {
        State { timeouts, egress_worker: true, ..Default::default() }
    }

    pub(crate) fn take_timers(&mut self) -> Vec<Timer> {
        std::mem::take(&mut self.timers)
    }

    /// A timer's time has come.
    pub(crate) fn fire(&mut self, timer: Timer, now: SystemTime) {
        match timer {
            Timer::Egress(id) => self.egress_step(&id, now),
            Timer::AgentJoin { room, room_sid, dispatch_id } => self.agent_join(&room, &room_sid, &dispatch_id, now),
            Timer::AgentLeave { room, room_sid, identity } => {
                if self.rooms.get(&room).is_some_and(|r| r.room.sid == room_sid) {
                    self.close_participant(&room, &identity, Departure::ClientLeft, now);
                }
            }
        }
    }

    /// The webhook events raised since the last call, in the order the
    /// server raises them (without `id` and `createdAt`, which are stamped
    /// when an event is queued).
    pub(crate) fn take_events(&mut self) -> Vec<proto::WebhookEvent> {
        std::mem::take(&mut self.events)
    }

    pub(crate) fn raise(&mut self, event: &str, room: proto::Room, participant: Option<proto::ParticipantInfo>) {
        self.events.push(proto::WebhookEvent {
            event: event.to_owned(),
            room: Some(room),
            participant,
            ..Default::default()
        });
    }

    fn raise_track(
        &mut self,
        event: &str,
        room: proto::Room,
        participant: proto::ParticipantInfo,
        track: proto::TrackInfo,
    ) {
        self.events.push(proto::WebhookEvent {
            event: event.to_owned(),
            room: Some(room),
            participant: Some(participant),
            track: Some(track),
            ..Default::default()
        });
    }

    /// Closes idle rooms, as the server's background worker does every
    /// second: their dependent participants (agents) are closed, their
    /// egresses end, then room_finished.
    pub(crate) fn expire(&mut self, now: SystemTime) {
        let (secs, _) = unix_now(now);
        let mut expired: Vec<&String> = self.rooms.iter().filter(|(_, r)| r.is_expired(secs)).map(|(k, _)| k).collect();
        if expired.is_empty() {
            return;
        }
        // rooms close one by one in Go map order
        expired.shuffle(&mut rand::rng());
        let expired: Vec<String> = expired.into_iter().cloned().collect();
        for name in expired {
            self.close_room(&name, Departure::RoomClosed, now);
        }
    }

    /// `Room.Close`: every participant is closed (in Go map order), the
    /// room's egresses see their source close, then room_finished.
    fn close_room(&mut self, name: &str, departure: Departure, now: SystemTime) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let sid = room.room.sid.clone();
        let mut identities: Vec<String> = room.participants.iter().map(|p| p.identity.clone()).collect();
        identities.shuffle(&mut rand::rng());
        for identity in identities {
            self.close_participant(name, &identity, departure, now);
        }
        self.room_closed_for_egress(name, &sid, now);
        if let Some(room) = self.rooms.remove(name) {
            self.raise(event::ROOM_FINISHED, room.to_proto(), None);
        }
    }

    /// The room, created (room_started) if missing, as a join creates it.
    fn room_for_join(&mut self, room: &str, now: SystemTime) -> &mut RoomState {
        if !self.rooms.contains_key(room) {
            let state = RoomState::new(room, self.timeouts, now);
            self.raise(event::ROOM_STARTED, state.to_proto(), None);
            self.rooms.insert(room.to_owned(), state);
            self.init_dispatches(room, &[], now);
        }
        // just inserted if it was missing
        self.rooms.get_mut(room).expect("the room exists")
    }

    /// `ParticipantImpl.Close` and its close callback: each published track
    /// is unpublished (track_unpublished, in Go map order), the participant
    /// turns DISCONNECTED without tracks, and participant_left (or
    /// participant_connection_aborted if it never became ACTIVE) carries it
    /// with the room as it is without it. `None` if there is no such
    /// participant.
    pub(crate) fn close_participant(
        &mut self,
        room: &str,
        identity: &str,
        departure: Departure,
        now: SystemTime,
    ) -> Option<proto::ParticipantInfo> {
        let r = self.rooms.get_mut(room)?;
        let index = r.participants.iter().position(|p| p.identity == identity)?;
        let mut p = r.participants.remove(index);
        r.last_left_at = unix_now(now).0;
        let minimal_room = r.minimal();
        let room_after = r.to_proto();
        let mut tracks = std::mem::take(&mut p.tracks);
        tracks.shuffle(&mut rand::rng());
        let track_sids: Vec<String> = tracks.iter().map(|t| t.sid.clone()).collect();
        for track in tracks {
            self.raise_track(event::TRACK_UNPUBLISHED, minimal_room.clone(), minimal_participant(&p), track);
        }
        let was_active = p.state == proto::participant_info::State::Active as i32;
        p.state = proto::participant_info::State::Disconnected as i32;
        p.disconnect_reason = departure.reason(was_active) as i32;
        p.version += 1;
        let event = if was_active { event::PARTICIPANT_LEFT } else { event::PARTICIPANT_CONNECTION_ABORTED };
        self.raise(event, room_after, Some(p.clone()));
        self.participant_gone_for_egress(room, identity, &track_sids, now);
        Some(p)
    }

    pub(crate) fn room_exists(&self, name: &str) -> bool {
        self.rooms.contains_key(name)
    }

    /// `CreateRoom`: a running room is returned as it is (`getOrCreateRoom`
    /// holds the live room and skips the allocator); a new one gets the
    /// request's non-zero options over the defaults (`roomallocator.go`).
    /// A new room raises room_started.
    pub(crate) fn create_room(&mut self, req: &proto::CreateRoomRequest, now: SystemTime) -> proto::Room {
        if let Some(existing) = self.rooms.get(&req.name) {
            return existing.to_proto();
        }
        let mut state = RoomState::new(&req.name, self.timeouts, now);
        if req.empty_timeout > 0 {
            state.room.empty_timeout = req.empty_timeout;
        }
        if req.departure_timeout > 0 {
            state.room.departure_timeout = req.departure_timeout;
        }
        if req.max_participants > 0 {
            state.room.max_participants = req.max_participants;
        }
        if !req.metadata.is_empty() {
            state.room.metadata = req.metadata.clone();
        }
        let room = state.to_proto();
        self.rooms.insert(req.name.clone(), state);
        self.raise(event::ROOM_STARTED, room.clone(), None);
        self.init_dispatches(&req.name, &req.agents, now);
        room
    }

    /// `LocalStore.ListRooms`: Go map order, i.e. none (shuffled here too).
    pub(crate) fn list_rooms(&self, names: &[String]) -> Vec<proto::Room> {
        let mut rooms: Vec<proto::Room> = self
            .rooms
            .values()
            .filter(|r| names.is_empty() || names.contains(&r.room.name))
            .map(RoomState::to_proto)
            .collect();
        rooms.shuffle(&mut rand::rng());
        rooms
    }

    pub(crate) fn rooms_in_creation_order(&self) -> Vec<proto::Room> {
        let mut rooms: Vec<proto::Room> = self.rooms.values().map(RoomState::to_proto).collect();
        rooms.sort_by_key(|r| (r.creation_time_ms, r.name.clone()));
        rooms
    }

    /// DeleteRoom: `Room.Close` with every participant closed as
    /// ROOM_DELETED. False if there is no such room.
    pub(crate) fn delete_room(&mut self, name: &str, now: SystemTime) -> bool {
        if !self.rooms.contains_key(name) {
            return false;
        }
        self.close_room(name, Departure::RoomDeleted, now);
        true
    }

    pub(crate) fn update_room_metadata(&mut self, name: &str, metadata: &str) -> Option<proto::Room> {
        let room = self.rooms.get_mut(name)?;
        room.room.metadata = metadata.to_owned();
        Some(room.to_proto())
    }

    /// `LocalStore.ListParticipants`: a missing room lists nobody; Go map
    /// order (shuffled).
    pub(crate) fn list_participants(&self, room: &str) -> Vec<proto::ParticipantInfo> {
        let mut list = self.rooms.get(room).map(|r| r.participants.clone()).unwrap_or_default();
        list.shuffle(&mut rand::rng());
        list
    }

    pub(crate) fn participant(&self, room: &str, identity: &str) -> Option<proto::ParticipantInfo> {
        self.rooms.get(room)?.participants.iter().find(|p| p.identity == identity).cloned()
    }

    pub(crate) fn has_participant(&self, room: &str, identity: &str) -> bool {
        self.participant(room, identity).is_some()
    }

    /// The participant's session ends; `None` if it is not in the room.
    pub(crate) fn remove_participant(
        &mut self,
        room: &str,
        identity: &str,
        departure: Departure,
        now: SystemTime,
    ) -> Option<proto::ParticipantInfo> {
        self.close_participant(room, identity, departure, now)
    }

    /// `ParticipantImpl.setTrackMuted`: the updated track, or `None` when
    /// the participant publishes no such track (the server then answers 200
    /// with no track).
    pub(crate) fn mute_track(
        &mut self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Option<proto::TrackInfo> {
        let p = self.rooms.get_mut(room)?.participant_mut(identity)?;
        let track = p.tracks.iter_mut().find(|t| t.sid == track_sid)?;
        track.muted = muted;
        let track = track.clone();
        p.version += 1;
        Some(track)
    }

    /// `RoomManager.UpdateParticipant`: name and metadata only when
    /// non-empty, attributes merged (an empty value deletes the key), the
    /// permission replaced when present, removing tracks whose source it no
    /// longer allows.
    pub(crate) fn update_participant(
        &mut self,
        req: &proto::UpdateParticipantRequest,
        now: SystemTime,
    ) -> Option<proto::ParticipantInfo> {
        let p = self.rooms.get_mut(&req.room)?.participant_mut(&req.identity)?;
        let mut changed = false;
        if !req.name.is_empty() && p.name != req.name {
            p.name = req.name.clone();
            changed = true;
        }
        if !req.metadata.is_empty() && p.metadata != req.metadata {
            p.metadata = req.metadata.clone();
            changed = true;
        }
        if !req.attributes.is_empty() {
            for (k, v) in &req.attributes {
                if v.is_empty() {
                    p.attributes.remove(k);
                } else {
                    p.attributes.insert(k.clone(), v.clone());
                }
            }
            changed = true;
        }
        let mut unpublished = Vec::new();
        if let Some(permission) = &req.permission
            && p.permission.as_ref() != Some(permission)
        {
            p.permission = Some(permission.clone());
            let (kept, dropped) =
                std::mem::take(&mut p.tracks).into_iter().partition(|t| can_publish_source(permission, t.source));
            p.tracks = kept;
            unpublished = dropped;
            p.is_publisher = permission.can_publish && !p.tracks.is_empty();
            changed = true;
        }
        if changed {
            p.version += 1;
        }
        let p = p.clone();
        let minimal_room = self.rooms.get(&req.room).map(RoomState::minimal).unwrap_or_default();
        let track_sids: Vec<String> = unpublished.iter().map(|t| t.sid.clone()).collect();
        for track in unpublished {
            self.raise_track(event::TRACK_UNPUBLISHED, minimal_room.clone(), minimal_participant(&p), track);
        }
        if !track_sids.is_empty() {
            self.participant_gone_for_egress(&req.room, "", &track_sids, now);
        }
        Some(p)
    }

    /// A participant that joins (the room is created first if needed) and,
    /// if `active`, connects its media: state ACTIVE, participant_joined.
    /// Otherwise it stays JOINED, and no participant_joined is sent. Default
    /// token permissions. A participant with the same identity is closed
    /// first, as a new session replaces the previous one.
    pub(crate) fn add_participant(
        &mut self,
        room: &str,
        identity: &str,
        active: bool,
        now: SystemTime,
    ) -> proto::ParticipantInfo {
        self.join(room, identity, active, proto::participant_info::Kind::Standard, now, |_| {})
    }

    /// [`State::add_participant`] for a participant of `kind`, `customize`d
    /// before it is stored and announced.
    pub(crate) fn join(
        &mut self,
        room: &str,
        identity: &str,
        active: bool,
        kind: proto::participant_info::Kind,
        now: SystemTime,
        customize: impl FnOnce(&mut proto::ParticipantInfo),
    ) -> proto::ParticipantInfo {
        self.room_for_join(room, now);
        self.close_participant(room, identity, Departure::DuplicateIdentity, now);
        let r = self.room_for_join(room, now);
        let (secs, millis) = unix_now(now);
        if r.first_joined_at == 0 {
            r.first_joined_at = secs;
        }
        let state =
            if active { proto::participant_info::State::Active } else { proto::participant_info::State::Joined };
        let info = proto::ParticipantInfo {
            sid: guid("PA_"),
            identity: identity.to_owned(),
            state: state as i32,
            joined_at: secs,
            joined_at_ms: millis,
            version: 1,
            permission: Some(proto::ParticipantPermission {
                can_subscribe: true,
                can_publish: true,
                can_publish_data: true,
                ..Default::default()
            }),
            kind: kind as i32,
            ..Default::default()
        };
        let mut info = info;
        customize(&mut info);
        r.participants.push(info.clone());
        if active {
            let room_now = r.to_proto();
            self.raise(event::PARTICIPANT_JOINED, room_now, Some(info.clone()));
        }
        info
    }

    /// A JOINED participant's media connects: ACTIVE, participant_joined.
    /// `None` if it is not in the room; an ACTIVE one is returned unchanged.
    pub(crate) fn activate_participant(&mut self, room: &str, identity: &str) -> Option<proto::ParticipantInfo> {
        let r = self.rooms.get_mut(room)?;
        let p = r.participant_mut(identity)?;
        if p.state == proto::participant_info::State::Active as i32 {
            return Some(p.clone());
        }
        p.state = proto::participant_info::State::Active as i32;
        p.version += 1;
        let info = p.clone();
        let room_now = r.to_proto();
        self.raise(event::PARTICIPANT_JOINED, room_now, Some(info.clone()));
        Some(info)
    }

    /// A published track: track_published.
    pub(crate) fn add_track(&mut self, room: &str, identity: &str, spec: &TrackSpec) -> Option<proto::TrackInfo> {
        let r = self.rooms.get_mut(room)?;
        let minimal_room = r.minimal();
        let p = r.participant_mut(identity)?;
        let track = spec.to_track_info(p.tracks.len());
        p.tracks.push(track.clone());
        p.is_publisher = true;
        p.version += 1;
        let participant = minimal_participant(p);
        self.raise_track(event::TRACK_PUBLISHED, minimal_room, participant, track.clone());
        Some(track)
    }
}

/// `VideoGrant.GetCanPublishSource`.
fn can_publish_source(permission: &proto::ParticipantPermission, source: i32) -> bool {
    permission.can_publish
        && (permission.can_publish_sources.is_empty() || permission.can_publish_sources.contains(&source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_look_like_livekit_ids() {
        let id = guid("RM_");
        assert_eq!(id.len(), 15);
        assert!(id[3..].bytes().all(|b| GUID_ALPHABET.contains(&b)));
    }

    #[test]
    fn an_empty_room_closes_after_its_empty_timeout() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = State::default();
        s.create_room(&proto::CreateRoomRequest { name: "r".into(), empty_timeout: 10, ..Default::default() }, t0);
        s.expire(t0 + Duration::from_secs(9));
        assert!(s.room_exists("r"));
        s.expire(t0 + Duration::from_secs(10));
        assert!(!s.room_exists("r"));
    }

    #[test]
    fn a_room_closes_departure_timeout_after_the_last_one_left() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = State::default();
        s.add_participant("r", "a", true, t0);
        s.remove_participant("r", "a", Departure::ClientLeft, t0 + Duration::from_secs(400));
        s.expire(t0 + Duration::from_secs(419));
        assert!(s.room_exists("r"));
        s.expire(t0 + Duration::from_secs(420));
        assert!(!s.room_exists("r"));
    }

    fn names(events: &[proto::WebhookEvent]) -> Vec<&str> {
        events.iter().map(|e| e.event.as_str()).collect()
    }

    #[test]
    fn a_participant_life_raises_livekits_events_in_order() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = State::new(Timeouts { empty: 300, departure: 0 });
        s.add_participant("r", "a", true, t0);
        s.add_track("r", "a", &TrackSpec::microphone("mic"));
        s.add_track("r", "a", &TrackSpec::camera("cam"));
        s.remove_participant("r", "a", Departure::ClientLeft, t0);
        s.expire(t0);
        let events = s.take_events();
        assert_eq!(
            names(&events),
            [
                "room_started",
                "participant_joined",
                "track_published",
                "track_published",
                "track_unpublished",
                "track_unpublished",
                "participant_left",
                "room_finished"
            ]
        );
        let left = events[6].participant.as_ref().unwrap();
        assert_eq!(left.state, proto::participant_info::State::Disconnected as i32);
        assert_eq!(left.disconnect_reason, proto::DisconnectReason::ClientInitiated as i32);
        assert!(left.tracks.is_empty());
        assert_eq!(events[6].room.as_ref().unwrap().num_participants, 0);
        // track events carry only the room's and the participant's ids
        let track_event = &events[2];
        let room = track_event.room.as_ref().unwrap();
        assert_eq!((room.name.as_str(), room.sid.len(), room.creation_time), ("r", 15, 0));
        let p = track_event.participant.as_ref().unwrap();
        assert_eq!(p, &proto::ParticipantInfo { sid: left.sid.clone(), identity: "a".into(), ..Default::default() });
        assert!(s.take_events().is_empty());
    }

    #[test]
    fn a_participant_that_never_became_active_is_a_connection_aborted() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = State::default();
        s.add_participant("r", "a", false, t0);
        let p = s.remove_participant("r", "a", Departure::ConnectionLost, t0).unwrap();
        assert_eq!(names(&s.take_events()), ["room_started", "participant_connection_aborted"]);
        assert_eq!(p.disconnect_reason, proto::DisconnectReason::JoinFailure as i32);
    }

    #[test]
    fn a_rejoin_closes_the_previous_session_first() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = State::default();
        let first = s.add_participant("r", "a", true, t0);
        let second = s.add_participant("r", "a", true, t0);
        let events = s.take_events();
        assert_eq!(names(&events), ["room_started", "participant_joined", "participant_left", "participant_joined"]);
        assert_eq!(events[2].participant.as_ref().unwrap().sid, first.sid);
        assert_eq!(
            events[2].participant.as_ref().unwrap().disconnect_reason,
            proto::DisconnectReason::DuplicateIdentity as i32
        );
        assert_eq!(events[3].participant.as_ref().unwrap().sid, second.sid);
    }

    #[test]
    fn deleting_a_room_closes_each_participant_then_finishes_it() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = State::default();
        s.create_room(&proto::CreateRoomRequest { name: "r".into(), ..Default::default() }, t0);
        s.add_participant("r", "a", true, t0);
        s.add_track("r", "a", &TrackSpec::microphone("mic"));
        s.add_participant("r", "b", true, t0);
        s.take_events();
        assert!(s.delete_room("r", t0));
        let events = s.take_events();
        assert_eq!(events.len(), 4);
        assert_eq!(events[3].event, "room_finished");
        let order: Vec<(&str, &str)> =
            events[..3].iter().map(|e| (e.event.as_str(), e.participant.as_ref().unwrap().identity.as_str())).collect();
        let a_first = [("track_unpublished", "a"), ("participant_left", "a"), ("participant_left", "b")];
        let b_first = [("participant_left", "b"), ("track_unpublished", "a"), ("participant_left", "a")];
        assert!(order == a_first || order == b_first, "{order:?}");
        assert!(!s.delete_room("r", t0));
    }

    #[test]
    fn revoking_a_source_unpublishes_its_tracks() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = State::default();
        s.add_participant("r", "a", true, t0);
        s.add_track("r", "a", &TrackSpec::microphone("mic"));
        s.add_track("r", "a", &TrackSpec::camera("cam"));
        s.take_events();
        let permission = proto::ParticipantPermission {
            can_publish: true,
            can_subscribe: true,
            can_publish_sources: vec![proto::TrackSource::Microphone as i32],
            ..Default::default()
        };
        s.update_participant(
            &proto::UpdateParticipantRequest {
                room: "r".into(),
                identity: "a".into(),
                permission: Some(permission),
                ..Default::default()
            },
            t0,
        );
        let events = s.take_events();
        assert_eq!(names(&events), ["track_unpublished"]);
        assert_eq!(events[0].track.as_ref().unwrap().name, "cam");
    }
}
