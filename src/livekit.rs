//! The LiveKit adapter: the only module that talks to the LiveKit server.
//!
//! Calls go through `livekit-api`'s [`RoomClient`], which keeps one pooled
//! HTTP client and signs a short-lived service token per call. Three calls
//! are sent directly as Twirp with the `livekit-protocol` types instead:
//! MutePublishedTrack, because the crate unwraps the reply's track and would
//! panic on a reply without one; SendData, because the crate always picks
//! its own nonce and a caller's retry needs to send the same one; and
//! ListRooms (ListRooms and GetRoom), the hot read, with a prepared URL and
//! a service token reused for half its lifetime.
//!
//! Every failure becomes a [`LiveKitError`] here, once, with what the caller
//! needs to know; `error.rs` turns it into a gRPC status.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_api::services::room::{CreateRoomOptions, RoomClient, UpdateParticipantOptions};
use livekit_api::services::{ServerError, ServiceError};
use livekit_protocol as lk;
use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;
use url::Url;

use crate::config::{self, LiveKitConfig};
use crate::metrics::Metrics;

/// The room name the readiness probe lists. Listing by name is cheap for
/// LiveKit whatever the number of rooms, and the room need not exist.
const PROBE_ROOM: &str = "roomcontrol-readiness-probe";

/// Lifetime of the service tokens RoomControl signs for its own direct
/// Twirp calls. The `room_list` token of ListRooms is reused for half of
/// it; the others are signed per call.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(600);

/// Why a LiveKit call failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveKitError {
    /// LiveKit answered with a Twirp error.
    #[error("LiveKit {method}: {msg} ({code})")]
    Twirp { method: &'static str, code: String, msg: String },
    /// No connection to LiveKit could be made, or it broke.
    #[error("LiveKit at {url} is unreachable ({detail}); is livekit.url right and the server running?")]
    Unreachable { url: String, detail: String },
    /// LiveKit did not answer in time.
    #[error("{}", describe_timeout(.method, .after, *.cause))]
    Timeout { method: &'static str, after: Duration, cause: TimeoutCause },
    /// LiveKit refused RoomControl's own credentials. Not the caller's fault.
    #[error(
        "LiveKit rejected RoomControl's API key: its {method} reply was a plain-text error, which is how LiveKit answers a wrong key or secret; check livekit.api_key and livekit.api_secret"
    )]
    CredentialsRejected { method: &'static str },
    /// LiveKit refused a grant RoomControl's service token carries.
    #[error("LiveKit refused RoomControl's service token for {method}: {msg}")]
    GrantRefused { method: &'static str, msg: String },
    /// An error reply that is not Twirp: a proxy between RoomControl and
    /// LiveKit, most likely. `status` is unknown when the crate dropped it.
    #[error("LiveKit {method} failed with {} that is not a Twirp error; is a proxy in front of LiveKit failing?", .status.map_or("a reply".to_owned(), |status| format!("HTTP {status}")))]
    NotTwirp { method: &'static str, status: Option<u16> },
    /// LiveKit answered something RoomControl cannot use.
    #[error("LiveKit {method} answered something RoomControl cannot use: {detail}")]
    BadReply { method: &'static str, detail: String },
    /// Signing a token failed.
    #[error("could not sign a LiveKit token: {0}")]
    Signing(String),
}

/// The error codes of the Twirp protocol.
const TWIRP_CODES: [&str; 18] = [
    "canceled",
    "unknown",
    "invalid_argument",
    "malformed",
    "deadline_exceeded",
    "not_found",
    "bad_route",
    "already_exists",
    "permission_denied",
    "unauthenticated",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "dataloss",
];

/// Which limit ended a LiveKit call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutCause {
    /// RoomControl's `livekit.timeout`.
    Configured,
    /// The caller's own deadline (grpc-timeout).
    CallerDeadline,
}

fn describe_timeout(method: &str, after: &Duration, cause: TimeoutCause) -> String {
    let after = humantime::format_duration(Duration::from_millis(after.as_millis() as u64));
    match cause {
        TimeoutCause::Configured => {
            format!("LiveKit did not answer {method} within {after} (livekit.timeout)")
        }
        TimeoutCause::CallerDeadline => {
            format!("the call's deadline passed while waiting {after} for LiveKit's {method} reply")
        }
    }
}

impl LiveKitError {
    /// A short, bounded label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            // Twirp's own codes; anything else LiveKit might send shares one
            // label, so a reply cannot grow the label set.
            LiveKitError::Twirp { code, .. } => {
                TWIRP_CODES.iter().find(|known| **known == code).copied().unwrap_or("twirp_other")
            }
            LiveKitError::Unreachable { .. } => "unreachable",
            LiveKitError::Timeout { .. } => "timeout",
            LiveKitError::CredentialsRejected { .. } | LiveKitError::GrantRefused { .. } => "credentials_rejected",
            LiveKitError::NotTwirp { .. } => "not_twirp",
            LiveKitError::BadReply { .. } | LiveKitError::Signing(_) => "bad_reply",
        }
    }
}

/// The LiveKit server, as RoomControl uses it.
pub struct LiveKit {
    metrics: Arc<Metrics>,
    rooms: RoomClient,
    direct: DirectTwirp,
    display_url: String,
    timeout: Duration,
    signer: TokenSigner,
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
            signer: TokenSigner::new(config)?,
        })
    }

    /// The signer for join tokens.
    pub fn signer(&self) -> &TokenSigner {
        &self.signer
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

    /// Sent directly: the crate's version panics on a reply without a
    /// track, which is how LiveKit answers for a track the participant does
    /// not publish. `None` means exactly that.
    pub async fn mute_published_track(
        &self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
        deadline: Option<Instant>,
    ) -> Result<Option<lk::TrackInfo>, LiveKitError> {
        const METHOD: DirectMethod = DirectMethod::MutePublishedTrack;
        let request = lk::MuteRoomTrackRequest {
            room: room.to_owned(),
            identity: identity.to_owned(),
            track_sid: track_sid.to_owned(),
            muted,
        };
        let reply: lk::MuteRoomTrackResponse =
            self.bounded_direct(METHOD.name(), deadline, self.direct.call(METHOD, room, request)).await?;
        Ok(reply.track)
    }

    pub async fn update_subscriptions(
        &self,
        room: &str,
        identity: &str,
        track_sids: Vec<String>,
        subscribe: bool,
        deadline: Option<Instant>,
    ) -> Result<(), LiveKitError> {
        self.bounded(
            "UpdateSubscriptions",
            deadline,
            self.rooms.update_subscriptions(room, identity, track_sids, subscribe),
        )
        .await
    }

    /// Sent directly: the crate cannot send a caller's nonce.
    pub async fn send_data(&self, packet: DataPacket, deadline: Option<Instant>) -> Result<(), LiveKitError> {
        const METHOD: DirectMethod = DirectMethod::SendData;
        let nonce = if packet.nonce.is_empty() { rand::random::<[u8; 16]>().to_vec() } else { packet.nonce };
        let kind = if packet.reliable { lk::data_packet::Kind::Reliable } else { lk::data_packet::Kind::Lossy };
        #[allow(deprecated)] // destination_sids: LiveKit's deprecated field, left empty.
        let request = lk::SendDataRequest {
            room: packet.room.clone(),
            data: packet.data,
            kind: kind as i32,
            destination_sids: Vec::new(),
            destination_identities: packet.destination_identities,
            topic: packet.topic,
            nonce,
        };
        let _: lk::SendDataResponse =
            self.bounded_direct(METHOD.name(), deadline, self.direct.call(METHOD, &packet.room, request)).await?;
        Ok(())
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
            ServiceError::Twirp(ServerError::Twirp(twirp)) => twirp_error(method, twirp.code, twirp.msg),
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

fn twirp_error(method: &'static str, code: String, msg: String) -> LiveKitError {
    // LiveKit re-wraps errors from its internal RPC layer, so many messages
    // read "twirp error unknown: requested room does not exist"; the prefix
    // says nothing to the caller.
    let msg = match msg.strip_prefix("twirp error ").and_then(|rest| rest.split_once(": ")) {
        Some((_code, rest)) => rest.to_owned(),
        None => msg,
    };
    // With an API key and secret, a grant error means LiveKit refused the
    // service token RoomControl signed, never the caller's credential.
    if code == "unauthenticated" || code == "permission_denied" {
        return LiveKitError::GrantRefused { method, msg };
    }
    LiveKitError::Twirp { method, code, msg }
}

/// The LiveKit methods RoomControl sends as Twirp itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirectMethod {
    /// The hot read: its `room_list` service token is reused.
    ListRooms,
    MutePublishedTrack,
    SendData,
}

impl DirectMethod {
    fn name(self) -> &'static str {
        match self {
            DirectMethod::ListRooms => "ListRooms",
            DirectMethod::MutePublishedTrack => "MutePublishedTrack",
            DirectMethod::SendData => "SendData",
        }
    }
}

/// Twirp over HTTP for the calls the crate cannot make safely, and for
/// ListRooms, the hot read.
struct DirectTwirp {
    http: crate::crypto::LiveKitHttp,
    /// LiveKit's URL, for messages.
    display_url: String,
    /// Each method's URI, prepared once, indexed by `DirectMethod as usize`.
    uris: [http::Uri; 3],
    api_key: String,
    api_secret: SecretString,
    /// The `authorization` header ListRooms sends (a `room_list` service
    /// token), and when it was signed: reused for half its lifetime.
    list_authorization: std::sync::Mutex<Option<(http::HeaderValue, Instant)>>,
}

#[derive(serde::Deserialize)]
struct TwirpErrorBody {
    code: String,
    #[serde(default)]
    msg: String,
}

impl DirectTwirp {
    fn new(base: Url, api_key: &str, api_secret: SecretString, timeout: Duration) -> Result<Self, String> {
        let http = crate::crypto::livekit_http(timeout)?;
        let uri = |method: DirectMethod| {
            let mut url = base.clone();
            url.set_path(&format!("/twirp/livekit.RoomService/{}", method.name()));
            url.as_str().parse::<http::Uri>().map_err(|error| format!("livekit.url {base} cannot be used: {error}"))
        };
        Ok(Self {
            http,
            display_url: base.as_str().trim_end_matches('/').to_owned(),
            uris: [uri(DirectMethod::ListRooms)?, uri(DirectMethod::MutePublishedTrack)?, uri(DirectMethod::SendData)?],
            api_key: api_key.to_owned(),
            api_secret,
            list_authorization: std::sync::Mutex::new(None),
        })
    }

    /// The `authorization` header for `method`: a `room_list` service token
    /// for ListRooms (signed once and reused for half its lifetime),
    /// otherwise `room_admin` on the room, signed for this call.
    fn authorization(&self, method: DirectMethod, room: &str) -> Result<http::HeaderValue, LiveKitError> {
        if method != DirectMethod::ListRooms {
            let grants = VideoGrants { room_admin: true, room: room.to_owned(), ..Default::default() };
            return self.sign_authorization(grants);
        }
        // A poisoned lock only means another call panicked mid-update;
        // the cached value is still a whole header or none.
        let mut cached = self.list_authorization.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((header, signed)) = cached.as_ref()
            && signed.elapsed() < SERVICE_TOKEN_TTL / 2
        {
            return Ok(header.clone());
        }
        let header = self.sign_authorization(VideoGrants { room_list: true, ..Default::default() })?;
        *cached = Some((header.clone(), Instant::now()));
        Ok(header)
    }

    fn sign_authorization(&self, grants: VideoGrants) -> Result<http::HeaderValue, LiveKitError> {
        let token = AccessToken::with_api_key(&self.api_key, self.api_secret.expose_secret())
            .with_grants(grants)
            .with_ttl(SERVICE_TOKEN_TTL)
            .to_jwt()
            .map_err(|error| LiveKitError::Signing(error.to_string()))?;
        let mut header = http::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|error| LiveKitError::Signing(error.to_string()))?;
        header.set_sensitive(true);
        Ok(header)
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: DirectMethod,
        room: &str,
        request: Req,
    ) -> Result<Resp, LiveKitError> {
        use http_body_util::BodyExt;

        let display_url = self.display_url.as_str();
        let authorization = self.authorization(method, room)?;
        let uri = self.uris[method as usize].clone();
        let method = method.name();
        let request = http::Request::post(uri)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::CONTENT_TYPE, "application/protobuf")
            .body(http_body_util::Full::new(bytes::Bytes::from(request.encode_to_vec())))
            .map_err(|error| LiveKitError::Unreachable { url: display_url.to_owned(), detail: error.to_string() })?;
        let unreachable = |error: &(dyn std::error::Error + 'static)| LiveKitError::Unreachable {
            url: display_url.to_owned(),
            detail: innermost(error).to_string(),
        };
        let response = self.http.request(request).await.map_err(|error| unreachable(&error))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|error| unreachable(&error))?.to_bytes();
        if status == http::StatusCode::OK {
            return Resp::decode(body)
                .map_err(|error| LiveKitError::BadReply { method, detail: format!("undecodable protobuf ({error})") });
        }
        if let Ok(twirp) = serde_json::from_slice::<TwirpErrorBody>(&body) {
            return Err(twirp_error(method, twirp.code, twirp.msg));
        }
        if status == http::StatusCode::UNAUTHORIZED {
            return Err(LiveKitError::CredentialsRejected { method });
        }
        Err(LiveKitError::NotTwirp { method, status: Some(status.as_u16()) })
    }
}

/// The innermost cause of an error, which says what happened ("Connection
/// refused"); the outer layers only repeat the URL or the client's name.
fn innermost<'a>(error: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    let mut innermost = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    innermost
}

/// Signs LiveKit join tokens with RoomControl's API key. Never leaves the
/// process.
pub struct TokenSigner {
    api_key: String,
    /// HMAC-SHA256 keyed with the API secret once; each token signs with a
    /// copy, skipping the key schedule (the same crate jsonwebtoken uses).
    mac: Hmac<Sha256>,
    /// The JWS header, `{"typ":"JWT","alg":"HS256"}`, serialized and
    /// base64url-encoded once: it is the same for every token.
    encoded_header: String,
    server_url: String,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("api_key", &self.api_key)
            .field("server_url", &self.server_url)
            .finish_non_exhaustive()
    }
}

/// What a join token grants; `None` leaves LiveKit's default.
#[derive(Debug, Clone, Default)]
pub struct JoinGrant {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub ttl: Duration,
    pub can_publish: Option<bool>,
    pub can_subscribe: Option<bool>,
    pub can_publish_data: Option<bool>,
    /// LiveKit's source names: camera, microphone, screen_share,
    /// screen_share_audio.
    pub can_publish_sources: Vec<&'static str>,
    pub can_update_own_metadata: Option<bool>,
    pub hidden: bool,
}

/// A signed join token.
#[derive(Clone)]
pub struct SignedToken {
    pub token: String,
    pub server_url: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl fmt::Debug for SignedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedToken")
            .field("token", &"[redacted]")
            .field("server_url", &self.server_url)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl TokenSigner {
    pub fn new(config: &LiveKitConfig) -> Result<Self, String> {
        crate::crypto::install_providers();
        let server_url = match &config.public_url {
            Some(public_url) => config::client_url(public_url)?,
            None => config::client_url(&config.url)?,
        };
        let header = serde_json::to_vec(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256))
            .map_err(|error| format!("cannot encode the token header: {error}"))?;
        let mac = Hmac::<Sha256>::new_from_slice(config.api_secret.expose_secret().as_bytes())
            .map_err(|error| format!("cannot key HMAC-SHA256 with livekit.api_secret: {error}"))?;
        Ok(Self { api_key: config.api_key.clone(), mac, encoded_header: URL_SAFE_NO_PAD.encode(header), server_url })
    }

    /// The URL clients connect to.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Signs a join token: HS256, `iss` the API key, `sub` the identity,
    /// `nbf` now, `exp` now + ttl (whole seconds), LiveKit's `video` grant.
    pub fn sign(&self, grant: &JoinGrant) -> Result<SignedToken, LiveKitError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expires_at = now.saturating_add(grant.ttl.as_secs());
        let token = self.encode(grant, now, expires_at).map_err(|error| LiveKitError::Signing(error.to_string()))?;
        Ok(SignedToken { token, server_url: self.server_url.clone(), expires_at })
    }

    /// What `jsonwebtoken::encode` makes, byte for byte, with the header
    /// encoded once and one buffer instead of four: the JWS compact form
    /// `header.claims.signature`, signed with a copy of the pre-keyed HMAC.
    fn encode(&self, grant: &JoinGrant, now: u64, expires_at: u64) -> Result<String, serde_json::Error> {
        let claims = self.claims_json(grant, now, expires_at)?;
        let mut token = String::with_capacity(self.encoded_header.len() + claims.len() * 4 / 3 + 48);
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut token);
        Ok(token)
    }

    /// The claims of a token for `grant` issued at `now`, expiring at
    /// `expires_at` (seconds since the Unix epoch), as JSON: byte for byte
    /// what serde_json makes of livekit-api's `Claims` (the same names,
    /// order and omissions: empty strings, maps and lists, `None` and
    /// `false` left out; the tests compare the bytes).
    /// Written field by field: with serde's derived serializer a grpc-web
    /// CreateToken took 0.2-0.3 us (about 3%) more CPU. Every value still
    /// goes through serde_json, which escapes the strings.
    fn claims_json(&self, grant: &JoinGrant, now: u64, expires_at: u64) -> Result<Vec<u8>, serde_json::Error> {
        fn field<T: Serialize + ?Sized>(out: &mut Vec<u8>, key: &str, value: &T) -> Result<(), serde_json::Error> {
            out.extend_from_slice(key.as_bytes());
            serde_json::to_writer(out, value)
        }
        let mut out = Vec::with_capacity(256);
        field(&mut out, "{\"exp\":", &expires_at)?;
        field(&mut out, ",\"iss\":", &self.api_key)?;
        field(&mut out, ",\"nbf\":", &now)?;
        if !grant.identity.is_empty() {
            field(&mut out, ",\"sub\":", &grant.identity)?;
        }
        if !grant.name.is_empty() {
            field(&mut out, ",\"name\":", &grant.name)?;
        }
        out.extend_from_slice(b",\"video\":{\"roomJoin\":true");
        if !grant.room.is_empty() {
            field(&mut out, ",\"room\":", &grant.room)?;
        }
        if let Some(value) = grant.can_publish {
            field(&mut out, ",\"canPublish\":", &value)?;
        }
        if let Some(value) = grant.can_subscribe {
            field(&mut out, ",\"canSubscribe\":", &value)?;
        }
        if let Some(value) = grant.can_publish_data {
            field(&mut out, ",\"canPublishData\":", &value)?;
        }
        if !grant.can_publish_sources.is_empty() {
            field(&mut out, ",\"canPublishSources\":", &grant.can_publish_sources)?;
        }
        if let Some(value) = grant.can_update_own_metadata {
            field(&mut out, ",\"canUpdateOwnMetadata\":", &value)?;
        }
        if grant.hidden {
            out.extend_from_slice(b",\"hidden\":true");
        }
        out.push(b'}');
        if !grant.metadata.is_empty() {
            field(&mut out, ",\"metadata\":", &grant.metadata)?;
        }
        if !grant.attributes.is_empty() {
            field(&mut out, ",\"attributes\":", &grant.attributes)?;
        }
        out.push(b'}');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_api::access_token::Claims;

    /// The claims livekit-api's `AccessToken` would sign for `grant`.
    fn livekit_claims(api_key: &str, grant: &JoinGrant, now: u64) -> Claims {
        Claims {
            exp: (now + grant.ttl.as_secs()) as usize,
            iss: api_key.to_owned(),
            nbf: now as usize,
            sub: grant.identity.clone(),
            name: grant.name.clone(),
            video: VideoGrants {
                room_join: true,
                room: grant.room.clone(),
                can_publish: grant.can_publish,
                can_subscribe: grant.can_subscribe,
                can_publish_data: grant.can_publish_data,
                can_publish_sources: grant.can_publish_sources.iter().map(|s| (*s).to_owned()).collect(),
                can_update_own_metadata: grant.can_update_own_metadata,
                hidden: grant.hidden,
                ..Default::default()
            },
            metadata: grant.metadata.clone(),
            // A clone iterates in the same order: the JSON objects match.
            attributes: grant.attributes.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn join_tokens_are_what_jsonwebtoken_encodes_from_livekit_claims() {
        let config = crate::config::Config::default().livekit;
        let signer = TokenSigner::new(&config).unwrap();
        let key = jsonwebtoken::EncodingKey::from_secret(config.api_secret.expose_secret().as_bytes());
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let minimal = JoinGrant {
            room: "math-101".to_owned(),
            identity: "ada".to_owned(),
            name: "ada".to_owned(),
            ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        let grants = [
            minimal.clone(),
            JoinGrant {
                name: "Ada \"the first\" Lovelace ✓ </script>\n\u{1}\u{7f}".to_owned(),
                metadata: "{\"seat\":3}".to_owned(),
                attributes: HashMap::from([
                    ("team".to_owned(), "blue".to_owned()),
                    ("role".to_owned(), "tab\there".to_owned()),
                    ("seat".to_owned(), String::new()),
                ]),
                can_publish: Some(false),
                can_subscribe: Some(true),
                can_publish_data: Some(false),
                can_publish_sources: vec!["camera", "microphone", "screen_share", "screen_share_audio"],
                can_update_own_metadata: Some(true),
                hidden: true,
                ..minimal.clone()
            },
            JoinGrant {
                can_publish: Some(true),
                can_subscribe: Some(false),
                can_publish_data: Some(true),
                can_publish_sources: vec!["screen_share"],
                can_update_own_metadata: Some(false),
                ..minimal.clone()
            },
            JoinGrant { name: String::new(), identity: "\u{1F600}".to_owned(), ttl: Duration::ZERO, ..minimal.clone() },
            JoinGrant { room: String::new(), identity: String::new(), name: String::new(), ..minimal },
        ];
        for grant in &grants {
            let now = 1_800_000_000;
            let expected = jsonwebtoken::encode(&header, &livekit_claims(&config.api_key, grant, now), &key).unwrap();
            assert_eq!(signer.encode(grant, now, now + grant.ttl.as_secs()).unwrap(), expected, "{grant:?}");
        }
    }

    #[test]
    fn a_signed_token_says_when_it_expires_and_decodes_to_its_grant() {
        let config = crate::config::Config::default().livekit;
        let signer = TokenSigner::new(&config).unwrap();
        let grant = JoinGrant {
            room: "math-101".to_owned(),
            identity: "ada".to_owned(),
            name: "Ada".to_owned(),
            ttl: Duration::from_secs(600),
            can_publish: Some(false),
            ..Default::default()
        };
        let signed = signer.sign(&grant).unwrap();
        let claims =
            livekit_api::access_token::TokenVerifier::with_api_key(&config.api_key, config.api_secret.expose_secret())
                .verify(&signed.token)
                .unwrap();
        assert_eq!(claims.exp as u64, signed.expires_at);
        assert_eq!(claims.exp - claims.nbf, 600);
        assert_eq!((claims.sub.as_str(), claims.name.as_str()), ("ada", "Ada"));
        assert_eq!((claims.video.room.as_str(), claims.video.room_join), ("math-101", true));
        assert_eq!(claims.video.can_publish, Some(false));
    }
}
