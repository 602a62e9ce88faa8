//! LiveKit's messages into RoomControl's, and RoomControl's enums into
//! LiveKit's. Unknown LiveKit enum values become UNSPECIFIED, never a panic.

use livekit_protocol as lk;
use prost_types::Timestamp;

use crate::proto::v1::{
    Participant, ParticipantKind, ParticipantPermission, ParticipantState, Room, Track, TrackSource, TrackType,
};
use crate::track_sources;

pub fn room(room: lk::Room) -> Room {
    Room {
        sid: room.sid,
        name: room.name,
        empty_timeout: room.empty_timeout,
        departure_timeout: room.departure_timeout,
        max_participants: room.max_participants,
        metadata: room.metadata,
        num_participants: room.num_participants,
        num_publishers: room.num_publishers,
        creation_time: timestamp(room.creation_time, room.creation_time_ms),
        active_recording: room.active_recording,
    }
}

pub fn participant(participant: lk::ParticipantInfo) -> Participant {
    Participant {
        sid: participant.sid,
        identity: participant.identity,
        name: participant.name,
        state: participant_state(participant.state) as i32,
        metadata: participant.metadata,
        attributes: participant.attributes,
        joined_at: timestamp(participant.joined_at, participant.joined_at_ms),
        permission: participant.permission.map(permission),
        kind: participant_kind(participant.kind) as i32,
        tracks: participant.tracks.into_iter().map(track).collect(),
    }
}

pub fn track(track: lk::TrackInfo) -> Track {
    // Deprecated in favour of per-codec layer modes, yet still the one flag
    // LiveKit fills for every video track.
    #[allow(deprecated)]
    let simulcast = track.simulcast;
    Track {
        sid: track.sid,
        name: track.name,
        r#type: track_type(track.r#type) as i32,
        source: track_source(track.source) as i32,
        muted: track.muted,
        simulcast,
        width: track.width,
        height: track.height,
        mime_type: track.mime_type,
    }
}

fn permission(permission: lk::ParticipantPermission) -> ParticipantPermission {
    ParticipantPermission {
        can_subscribe: permission.can_subscribe,
        can_publish: permission.can_publish,
        can_publish_data: permission.can_publish_data,
        can_publish_sources: permission.can_publish_sources.into_iter().map(|s| track_source(s) as i32).collect(),
        hidden: permission.hidden,
        can_update_metadata: permission.can_update_metadata,
    }
}

/// RoomControl's permission in LiveKit's form. Sources must be valid (the
/// handler checks them first).
pub fn permission_to_livekit(permission: &ParticipantPermission) -> lk::ParticipantPermission {
    lk::ParticipantPermission {
        can_subscribe: permission.can_subscribe,
        can_publish: permission.can_publish,
        can_publish_data: permission.can_publish_data,
        can_publish_sources: permission
            .can_publish_sources
            .iter()
            .filter_map(|source| track_sources::from_proto(*source))
            .map(|source| source.livekit as i32)
            .collect(),
        hidden: permission.hidden,
        can_update_metadata: permission.can_update_metadata,
        ..Default::default()
    }
}

/// Seconds (and, when LiveKit sends them, milliseconds) since the epoch.
/// Zero means unknown and maps to an unset timestamp.
fn timestamp(seconds: i64, millis: i64) -> Option<Timestamp> {
    if millis > 0 {
        return Some(Timestamp {
            seconds: millis.div_euclid(1000),
            nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
        });
    }
    (seconds > 0).then_some(Timestamp { seconds, nanos: 0 })
}

fn participant_state(state: i32) -> ParticipantState {
    use lk::participant_info::State;
    match State::try_from(state) {
        Ok(State::Joining) => ParticipantState::Joining,
        Ok(State::Joined) => ParticipantState::Joined,
        Ok(State::Active) => ParticipantState::Active,
        Ok(State::Disconnected) => ParticipantState::Disconnected,
        Err(_) => ParticipantState::Unspecified,
    }
}

fn participant_kind(kind: i32) -> ParticipantKind {
    use lk::participant_info::Kind;
    match Kind::try_from(kind) {
        Ok(Kind::Standard) => ParticipantKind::Standard,
        Ok(Kind::Ingress) => ParticipantKind::Ingress,
        Ok(Kind::Egress) => ParticipantKind::Egress,
        Ok(Kind::Sip) => ParticipantKind::Sip,
        Ok(Kind::Agent) => ParticipantKind::Agent,
        Ok(Kind::Connector) => ParticipantKind::Connector,
        Ok(Kind::Bridge) => ParticipantKind::Bridge,
        Err(_) => ParticipantKind::Unspecified,
    }
}

fn track_type(kind: i32) -> TrackType {
    match lk::TrackType::try_from(kind) {
        Ok(lk::TrackType::Audio) => TrackType::Audio,
        Ok(lk::TrackType::Video) => TrackType::Video,
        Ok(lk::TrackType::Data) => TrackType::Data,
        Err(_) => TrackType::Unspecified,
    }
}

fn track_source(source: i32) -> TrackSource {
    track_sources::from_livekit(source).map_or(TrackSource::Unspecified, |source| source.proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_livekit_enum_values_map_to_unspecified() {
        let track = track(lk::TrackInfo { r#type: 99, source: -3, ..Default::default() });
        assert_eq!(track.r#type, TrackType::Unspecified as i32);
        assert_eq!(track.source, TrackSource::Unspecified as i32);
        let participant = participant(lk::ParticipantInfo { state: 42, kind: 5, ..Default::default() });
        assert_eq!(participant.state, ParticipantState::Unspecified as i32);
        assert_eq!(participant.kind, ParticipantKind::Unspecified as i32);
    }

    #[test]
    fn timestamps_prefer_milliseconds_and_treat_zero_as_unset() {
        assert_eq!(timestamp(0, 0), None);
        assert_eq!(timestamp(-5, 0), None);
        assert_eq!(timestamp(1_700_000_000, 0), Some(Timestamp { seconds: 1_700_000_000, nanos: 0 }));
        assert_eq!(
            timestamp(1_700_000_000, 1_700_000_000_250),
            Some(Timestamp { seconds: 1_700_000_000, nanos: 250_000_000 })
        );
    }
}
