//! The rooms, participants and tracks a single-node livekit-server would hold.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use livekit_protocol as proto;
use rand::Rng;
use rand::seq::SliceRandom;

/// `pkg/config/config.go` defaults.
pub(crate) const DEFAULT_EMPTY_TIMEOUT: u32 = 5 * 60;
pub(crate) const DEFAULT_DEPARTURE_TIMEOUT: u32 = 20;

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
    room: proto::Room,
    participants: Vec<proto::ParticipantInfo>,
    /// Unix seconds of the first join and of the last departure (0: never),
    /// which decide between the empty and the departure timeout.
    first_joined_at: i64,
    last_left_at: i64,
}

impl RoomState {
    fn new(name: &str, now: SystemTime) -> Self {
        let (secs, millis) = unix_now(now);
        RoomState {
            room: proto::Room {
                sid: guid("RM_"),
                name: name.to_owned(),
                empty_timeout: DEFAULT_EMPTY_TIMEOUT,
                departure_timeout: DEFAULT_DEPARTURE_TIMEOUT,
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
            first_joined_at: 0,
            last_left_at: 0,
        }
    }

    /// `rtc.Room.updateProto`: the counts are computed from the participants.
    fn to_proto(&self) -> proto::Room {
        let mut room = self.room.clone();
        room.num_participants = self.participants.len() as u32;
        room.num_publishers = self.participants.iter().filter(|p| p.is_publisher).count() as u32;
        room
    }

    /// `rtc.Room.CloseIfEmpty`: an empty room closes `departure_timeout`
    /// seconds after the last participant left, or `empty_timeout` seconds
    /// after its creation if nobody ever joined.
    fn is_expired(&self, now_secs: i64) -> bool {
        if !self.participants.is_empty() {
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

/// Everything the server stores, keyed by room name.
#[derive(Debug, Default)]
pub(crate) struct State {
    rooms: HashMap<String, RoomState>,
}

impl State {
    /// Closes idle rooms, as the server's background worker does every second.
    pub(crate) fn expire(&mut self, now: SystemTime) {
        let (secs, _) = unix_now(now);
        self.rooms.retain(|_, r| !r.is_expired(secs));
    }

    pub(crate) fn room_exists(&self, name: &str) -> bool {
        self.rooms.contains_key(name)
    }

    /// `CreateRoom`: a running room is returned as it is (`getOrCreateRoom`
    /// holds the live room and skips the allocator); a new one gets the
    /// request's non-zero options over the defaults (`roomallocator.go`).
    pub(crate) fn create_room(&mut self, req: &proto::CreateRoomRequest, now: SystemTime) -> proto::Room {
        if let Some(existing) = self.rooms.get(&req.name) {
            return existing.to_proto();
        }
        let mut state = RoomState::new(&req.name, now);
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

    pub(crate) fn delete_room(&mut self, name: &str) -> bool {
        self.rooms.remove(name).is_some()
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

    pub(crate) fn remove_participant(&mut self, room: &str, identity: &str, now: SystemTime) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        let before = r.participants.len();
        r.participants.retain(|p| p.identity != identity);
        let removed = r.participants.len() != before;
        if removed {
            r.last_left_at = unix_now(now).0;
        }
        removed
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
        if let Some(permission) = &req.permission
            && p.permission.as_ref() != Some(permission)
        {
            p.permission = Some(permission.clone());
            p.tracks.retain(|t| can_publish_source(permission, t.source));
            p.is_publisher = permission.can_publish && !p.tracks.is_empty();
            changed = true;
        }
        if changed {
            p.version += 1;
        }
        Some(p.clone())
    }

    /// A participant as it looks once connected (state ACTIVE, default
    /// token permissions); the room is created first if needed.
    pub(crate) fn add_participant(&mut self, room: &str, identity: &str, now: SystemTime) -> proto::ParticipantInfo {
        let r = self.rooms.entry(room.to_owned()).or_insert_with(|| RoomState::new(room, now));
        let (secs, millis) = unix_now(now);
        if r.first_joined_at == 0 {
            r.first_joined_at = secs;
        }
        r.participants.retain(|p| p.identity != identity);
        let info = proto::ParticipantInfo {
            sid: guid("PA_"),
            identity: identity.to_owned(),
            state: proto::participant_info::State::Active as i32,
            joined_at: secs,
            joined_at_ms: millis,
            version: 1,
            permission: Some(proto::ParticipantPermission {
                can_subscribe: true,
                can_publish: true,
                can_publish_data: true,
                ..Default::default()
            }),
            kind: proto::participant_info::Kind::Standard as i32,
            ..Default::default()
        };
        r.participants.push(info.clone());
        info
    }

    pub(crate) fn add_track(&mut self, room: &str, identity: &str, spec: &TrackSpec) -> Option<proto::TrackInfo> {
        let p = self.rooms.get_mut(room)?.participant_mut(identity)?;
        let track = spec.to_track_info(p.tracks.len());
        p.tracks.push(track.clone());
        p.is_publisher = true;
        p.version += 1;
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
        s.add_participant("r", "a", t0);
        s.remove_participant("r", "a", t0 + Duration::from_secs(400));
        s.expire(t0 + Duration::from_secs(419));
        assert!(s.room_exists("r"));
        s.expire(t0 + Duration::from_secs(420));
        assert!(!s.room_exists("r"));
    }
}
