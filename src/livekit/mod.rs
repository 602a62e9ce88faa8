//! The LiveKit adapter: the only module that talks to the LiveKit server.
//! Handlers ask it domain questions and get typed answers; LiveKit's
//! protocol, quirks and errors stay in here.
//!
//! Calls go through `livekit-api`'s [`RoomClient`], which keeps one pooled
//! HTTP client and signs a short-lived service token per call. Three calls
//! are sent directly as Twirp with the `livekit-protocol` types instead
//! ([`twirp`]): MutePublishedTrack, because the crate unwraps the reply's
//! track and would panic on a reply without one; SendData, because the
//! crate always picks its own nonce and a caller's retry needs to send the
//! same one; and ListRooms (ListRooms and GetRoom), the hot read, with a
//! prepared URL and a service token reused for half its lifetime
//! ([`service_token`]).
//!
//! Where LiveKit answers slowly or vaguely for something that does not
//! exist (a mute for an absent participant, data for an absent room), the
//! adapter asks first or asks after, and answers [`Missing`].
//!
//! Every failure becomes a [`LiveKitError`] here, once ([`error`]), with
//! what the caller needs to know; `crate::error` turns it into a gRPC status.

mod egress;
mod error;
mod service_token;
mod twirp;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_api::services::room::{CreateRoomOptions, RoomClient, UpdateParticipantOptions};
use livekit_api::services::{ServerError, ServiceError};
use livekit_protocol as lk;
use secrecy::ExposeSecret;

pub use egress::EgressRequest;
pub use error::{LiveKitError, Missing, TimeoutCause, TwirpCode};
use error::{innermost, twirp_error};
pub use twirp::decode_reply;
use twirp::{DirectMethod, DirectTwirp};

use crate::config::{self, LiveKitConfig};
use crate::metrics::Metrics;

/// The room name the readiness probe lists. Listing by name is cheap for
/// LiveKit whatever the number of rooms, and the room need not exist.
const PROBE_ROOM: &str = "roomcontrol-readiness-probe";

/// The LiveKit server, as RoomControl uses it.
pub struct LiveKit {
    metrics: Arc<Metrics>,
    rooms: RoomClient,
    direct: DirectTwirp,
    display_url: String,
    timeout: Duration,
}

impl fmt::Debug for LiveKit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveKit")
            .field("url", &self.display_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The options of a new room; zero means LiveKit's default.
#[derive(Debug, Clone, Default)]
pub struct NewRoom {
    pub name: String,
    pub empty_timeout: u32,
    pub departure_timeout: u32,
    pub max_participants: u32,
    pub metadata: String,
}

/// What to change on a participant; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct ParticipantUpdate {
    pub metadata: Option<String>,
    pub name: Option<String>,
    pub attributes: HashMap<String, String>,
    pub permission: Option<lk::ParticipantPermission>,
}

/// A data packet to send to a room.
#[derive(Debug, Clone, Default)]
pub struct DataPacket {
    pub room: String,
    pub data: Vec<u8>,
    pub reliable: bool,
    pub destination_identities: Vec<String>,
    pub topic: Option<String>,
    /// Empty: a random one is picked.
    pub nonce: Vec<u8>,
}

impl LiveKit {
    /// Builds the clients. Nothing is sent until the first call.
    pub fn new(config: &LiveKitConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        crate::crypto::install_providers();
        let api_url = config::api_url(&config.url)?;
        let secret = config.api_secret.expose_secret();
        let rooms = RoomClient::with_api_key(api_url.as_str(), &config.api_key, secret)
            // A backstop only: every call is bounded by `timeout` below.
            .with_request_timeout(config.timeout + Duration::from_secs(1));
        Ok(Self {
            metrics,
            rooms,
            direct: DirectTwirp::new(api_url.clone(), &config.api_key, config.api_secret.clone(), config.timeout)?,
            display_url: api_url.as_str().trim_end_matches('/').to_owned(),
            timeout: config.timeout,
        })
    }

    /// Asks LiveKit for one room by name: succeeds when LiveKit answers and
    /// accepts RoomControl's credentials.
    pub async fn check(&self) -> Result<(), LiveKitError> {
        self.bounded("ListRooms", None, self.rooms.list_rooms(vec![PROBE_ROOM.to_owned()])).await.map(drop)
    }

    pub async fn create_room(&self, room: NewRoom, deadline: Option<Instant>) -> Result<lk::Room, LiveKitError> {
        let options = CreateRoomOptions {
            empty_timeout: room.empty_timeout,
            departure_timeout: room.departure_timeout,
            max_participants: room.max_participants,
            metadata: room.metadata,
            ..Default::default()
        };
        self.bounded("CreateRoom", deadline, self.rooms.create_room(&room.name, options)).await
    }

    pub async fn list_rooms(
        &self,
        names: Vec<String>,
        deadline: Option<Instant>,
    ) -> Result<Vec<lk::Room>, LiveKitError> {
        // Sent directly: the most frequent read (GetRoom is a ListRooms by
        // name), with a prepared URL and a reused service token, where the
        // crate would parse the URL and sign a token on every call.
        const METHOD: DirectMethod = DirectMethod::ListRooms;
        let reply: lk::ListRoomsResponse = self
            .bounded_direct(METHOD.name(), deadline, self.direct.call(METHOD, "", lk::ListRoomsRequest { names }))
            .await?;
        Ok(reply.rooms)
    }

    /// One room by name, or [`Missing::Room`].
    pub async fn get_room(&self, name: &str, deadline: Option<Instant>) -> Result<lk::Room, LiveKitError> {
        let rooms = self.list_rooms(vec![name.to_owned()], deadline).await?;
        // LiveKit filters by name; checking again guards against a server
        // that ignores the filter.
        rooms
            .into_iter()
            .find(|room| room.name == name)
            .ok_or_else(|| LiveKitError::NotFound(Missing::Room { room: name.to_owned() }))
    }

    pub async fn delete_room(&self, name: &str, deadline: Option<Instant>) -> Result<(), LiveKitError> {
        self.bounded("DeleteRoom", deadline, self.rooms.delete_room(name)).await
    }

    pub async fn update_room_metadata(
        &self,
        room: &str,
        metadata: &str,
        deadline: Option<Instant>,
    ) -> Result<lk::Room, LiveKitError> {
        self.bounded("UpdateRoomMetadata", deadline, self.rooms.update_room_metadata(room, metadata)).await
    }

    pub async fn list_participants(
        &self,
        room: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<lk::ParticipantInfo>, LiveKitError> {
        self.bounded("ListParticipants", deadline, self.rooms.list_participants(room)).await
    }

    pub async fn get_participant(
        &self,
        room: &str,
        identity: &str,
        deadline: Option<Instant>,
    ) -> Result<lk::ParticipantInfo, LiveKitError> {
        self.bounded("GetParticipant", deadline, self.rooms.get_participant(room, identity)).await
    }

    pub async fn remove_participant(
        &self,
        room: &str,
        identity: &str,
        deadline: Option<Instant>,
    ) -> Result<(), LiveKitError> {
        self.bounded("RemoveParticipant", deadline, self.rooms.remove_participant(room, identity)).await
    }

    pub async fn update_participant(
        &self,
        room: &str,
        identity: &str,
        update: ParticipantUpdate,
        deadline: Option<Instant>,
    ) -> Result<lk::ParticipantInfo, LiveKitError> {
        let options = UpdateParticipantOptions {
            // LiveKit treats empty as "unchanged"; the handler refuses an
            // explicit empty value before we get here.
            metadata: update.metadata.unwrap_or_default(),
            name: update.name.unwrap_or_default(),
            attributes: update.attributes,
            permission: update.permission,
        };
        self.bounded("UpdateParticipant", deadline, self.rooms.update_participant(room, identity, options)).await
    }

    /// Mutes or unmutes one published track; [`Missing::Track`] when the
    /// participant publishes no such track.
    ///
    /// LiveKit answers a mute for an absent participant only after its
    /// internal routing gives up (about 3 s, as UNAVAILABLE), so the
    /// participant is looked up first. The mute itself is sent directly:
    /// the crate's version panics on a reply without a track, which is how
    /// LiveKit answers for a track the participant does not publish.
    pub async fn mute_published_track(
        &self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
        deadline: Option<Instant>,
    ) -> Result<lk::TrackInfo, LiveKitError> {
        let no_such_track = || {
            LiveKitError::NotFound(Missing::Track {
                room: room.to_owned(),
                identity: identity.to_owned(),
                track_sid: track_sid.to_owned(),
            })
        };
        let participant = self.get_participant(room, identity, deadline).await?;
        if !participant.tracks.iter().any(|track| track.sid == track_sid) {
            return Err(no_such_track());
        }
        const METHOD: DirectMethod = DirectMethod::MutePublishedTrack;
        let request = lk::MuteRoomTrackRequest {
            room: room.to_owned(),
            identity: identity.to_owned(),
            track_sid: track_sid.to_owned(),
            muted,
        };
        let reply: lk::MuteRoomTrackResponse =
            self.bounded_direct(METHOD.name(), deadline, self.direct.call(METHOD, room, request)).await?;
        // `None`: the track went away between the two calls.
        reply.track.ok_or_else(no_such_track)
    }

    pub async fn update_subscriptions(
        &self,
        room: &str,
        identity: &str,
        track_sids: Vec<String>,
        subscribe: bool,
        deadline: Option<Instant>,
    ) -> Result<(), LiveKitError> {
        // As for a mute: LiveKit takes seconds to fail for an absent
        // participant, so it is looked up first.
        self.get_participant(room, identity, deadline).await?;
        self.bounded(
            "UpdateSubscriptions",
            deadline,
            self.rooms.update_subscriptions(room, identity, track_sids, subscribe),
        )
        .await
    }

    /// Sends a data packet to a room; [`Missing::Room`] when there is no
    /// such room.
    ///
    /// Sent directly: the crate cannot send a caller's nonce. LiveKit
    /// answers UNAVAILABLE (after seconds) when no server hosts the room;
    /// a lookup then tells whether that is because the room is absent.
    pub async fn send_data(&self, packet: DataPacket, deadline: Option<Instant>) -> Result<(), LiveKitError> {
        const METHOD: DirectMethod = DirectMethod::SendData;
        let room = packet.room;
        let nonce = if packet.nonce.is_empty() { rand::random::<[u8; 16]>().to_vec() } else { packet.nonce };
        let kind = if packet.reliable { lk::data_packet::Kind::Reliable } else { lk::data_packet::Kind::Lossy };
        #[allow(deprecated)] // destination_sids: LiveKit's deprecated field, left empty.
        let request = lk::SendDataRequest {
            room: room.clone(),
            data: packet.data,
            kind: kind as i32,
            destination_sids: Vec::new(),
            destination_identities: packet.destination_identities,
            topic: packet.topic,
            nonce,
        };
        let sent: Result<lk::SendDataResponse, _> =
            self.bounded_direct(METHOD.name(), deadline, self.direct.call(METHOD, &room, request)).await;
        match sent {
            Ok(_) => Ok(()),
            Err(error @ LiveKitError::Twirp { code: TwirpCode::Unavailable, .. }) => {
                self.get_room(&room, deadline).await?;
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Runs one crate call within `livekit.timeout` and the caller's deadline.
    async fn bounded<T>(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        call: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, LiveKitError> {
        let started = Instant::now();
        let result = match self.time_limited(method, deadline, async { Ok(call.await) }).await {
            Ok(result) => self.classified(method, deadline, result).await,
            Err(timeout) => Err(timeout),
        };
        self.count(method, &result, started);
        result
    }

    /// Runs one direct Twirp call within the same limits, and counts it.
    async fn bounded_direct<T>(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        call: impl Future<Output = Result<T, LiveKitError>>,
    ) -> Result<T, LiveKitError> {
        let started = Instant::now();
        let result = self.time_limited(method, deadline, call).await;
        self.count(method, &result, started);
        result
    }

    fn count<T>(&self, method: &'static str, result: &Result<T, LiveKitError>, started: Instant) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => error.outcome(),
        };
        self.metrics.livekit_request(method, outcome, started.elapsed());
    }

    async fn classified<T>(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        result: Result<T, ServiceError>,
    ) -> Result<T, LiveKitError> {
        match result {
            Ok(value) => Ok(value),
            Err(ServiceError::Twirp(ServerError::Request(error))) if error.is_decode() => {
                Err(self.explain_unreadable_error(method, deadline).await)
            }
            Err(error) => Err(self.classify(method, error)),
        }
    }

    /// The crate could not read an error reply as Twirp JSON and dropped its
    /// HTTP status. LiveKit answers a wrong key or secret that way (a
    /// plain-text 401), but so does a proxy's error page; one direct probe
    /// tells which.
    async fn explain_unreadable_error(&self, method: &'static str, deadline: Option<Instant>) -> LiveKitError {
        let request = lk::ListRoomsRequest { names: vec![PROBE_ROOM.to_owned()] };
        let probe = self.direct.call::<_, lk::ListRoomsResponse>(DirectMethod::ListRooms, "", request);
        match self.time_limited(method, deadline, probe).await {
            Err(LiveKitError::CredentialsRejected { .. }) => LiveKitError::CredentialsRejected { method },
            Err(LiveKitError::NotTwirp { status, .. }) => LiveKitError::NotTwirp { method, status },
            Err(other) => other,
            Ok(_) => LiveKitError::NotTwirp { method, status: None },
        }
    }

    /// `call`, ended at `livekit.timeout` or the caller's deadline,
    /// whichever comes first.
    async fn time_limited<T>(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        call: impl Future<Output = Result<T, LiveKitError>>,
    ) -> Result<T, LiveKitError> {
        let (limit, cause) = match deadline.map(|deadline| deadline.saturating_duration_since(Instant::now())) {
            Some(remaining) if remaining < self.timeout => (remaining, TimeoutCause::CallerDeadline),
            _ => (self.timeout, TimeoutCause::Configured),
        };
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_elapsed) => Err(LiveKitError::Timeout { method, after: limit, cause }),
        }
    }

    fn classify(&self, method: &'static str, error: ServiceError) -> LiveKitError {
        match error {
            ServiceError::Twirp(ServerError::Twirp(twirp)) => twirp_error(method, &twirp.code, twirp.msg),
            ServiceError::Twirp(ServerError::Request(error)) => self.transport_error(method, &error),
            ServiceError::Twirp(ServerError::Prost(error)) => {
                LiveKitError::BadReply { method, detail: format!("undecodable protobuf ({error})") }
            }
            ServiceError::Twirp(ServerError::Url(error)) => {
                LiveKitError::Unreachable { url: self.display_url.clone(), detail: format!("bad URL: {error}") }
            }
            ServiceError::AccessToken(error) => LiveKitError::Signing(error.to_string()),
            ServiceError::Env(error) => LiveKitError::Signing(error.to_string()),
        }
    }

    fn transport_error(&self, method: &'static str, error: &reqwest::Error) -> LiveKitError {
        transport_error(method, &self.display_url, self.timeout, error)
    }
}

fn transport_error(method: &'static str, url: &str, timeout: Duration, error: &reqwest::Error) -> LiveKitError {
    if error.is_timeout() {
        return LiveKitError::Timeout { method, after: timeout, cause: TimeoutCause::Configured };
    }
    LiveKitError::Unreachable { url: url.to_owned(), detail: innermost(error).to_string() }
}
