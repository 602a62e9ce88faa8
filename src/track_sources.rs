//! The track sources a caller may name, in every spelling RoomControl
//! meets: the proto's enum, LiveKit's enum, and the lowercase name join
//! tokens and the configuration use. One table; every conversion and every
//! message that lists the sources reads it.

use livekit_protocol as lk;

use crate::proto::v1::TrackSource;

/// One nameable track source.
#[derive(Debug)]
pub struct Source {
    pub proto: TrackSource,
    pub livekit: lk::TrackSource,
    /// As join tokens and `auth.self_service.can_publish_sources` name it.
    pub name: &'static str,
}

/// Every source a caller may name (not UNSPECIFIED).
pub const SOURCES: [Source; 4] = [
    Source { proto: TrackSource::Camera, livekit: lk::TrackSource::Camera, name: "camera" },
    Source { proto: TrackSource::Microphone, livekit: lk::TrackSource::Microphone, name: "microphone" },
    Source { proto: TrackSource::ScreenShare, livekit: lk::TrackSource::ScreenShare, name: "screen_share" },
    Source {
        proto: TrackSource::ScreenShareAudio,
        livekit: lk::TrackSource::ScreenShareAudio,
        name: "screen_share_audio",
    },
];

/// The source a proto enum value names; `None` for UNSPECIFIED or an
/// unknown number.
pub fn from_proto(value: i32) -> Option<&'static Source> {
    SOURCES.iter().find(|source| source.proto as i32 == value)
}

/// The source LiveKit's enum value names; `None` for UNKNOWN or a number
/// newer than this build.
pub fn from_livekit(value: i32) -> Option<&'static Source> {
    SOURCES.iter().find(|source| source.livekit as i32 == value)
}

/// The source a lowercase name names.
pub fn from_name(name: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|source| source.name == name)
}

/// "camera, microphone, screen_share or screen_share_audio".
pub fn names() -> String {
    listed(SOURCES.iter().map(|source| source.name))
}

/// "CAMERA, MICROPHONE, SCREEN_SHARE or SCREEN_SHARE_AUDIO".
pub fn proto_names() -> String {
    listed(SOURCES.iter().map(|source| source.proto.as_str_name().trim_start_matches("TRACK_SOURCE_")))
}

fn listed<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_source_converts_both_ways() {
        for source in &SOURCES {
            assert_eq!(from_proto(source.proto as i32).unwrap().name, source.name);
            assert_eq!(from_livekit(source.livekit as i32).unwrap().name, source.name);
            assert_eq!(from_name(source.name).unwrap().proto, source.proto);
        }
        assert!(from_proto(TrackSource::Unspecified as i32).is_none());
        assert!(from_proto(99).is_none());
        assert!(from_livekit(lk::TrackSource::Unknown as i32).is_none());
        assert!(from_name("CAMERA").is_none());
    }

    #[test]
    fn the_lists_read_as_messages_say_them() {
        assert_eq!(names(), "camera, microphone, screen_share or screen_share_audio");
        assert_eq!(proto_names(), "CAMERA, MICROPHONE, SCREEN_SHARE or SCREEN_SHARE_AUDIO");
    }
}
