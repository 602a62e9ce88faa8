//! The service tokens RoomControl signs for its own calls to LiveKit: the
//! `authorization` header LiveKit checks on every Twirp request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use livekit_api::access_token::{AccessToken, VideoGrants};
use secrecy::{ExposeSecret, SecretString};

use super::LiveKitError;

/// Lifetime of the service tokens RoomControl signs for its own direct
/// Twirp calls. The `room_list` token of ListRooms is reused for half of
/// it; the others are signed per call.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(600);

/// Signs service tokens with RoomControl's LiveKit API key.
pub(super) struct ServiceTokens {
    api_key: String,
    api_secret: SecretString,
    /// The `room_list` header and when it was signed: reused for half its
    /// lifetime, since ListRooms is the hot read.
    room_list: Mutex<Option<(http::HeaderValue, Instant)>>,
}

impl ServiceTokens {
    pub(super) fn new(api_key: &str, api_secret: SecretString) -> Self {
        Self { api_key: api_key.to_owned(), api_secret, room_list: Mutex::new(None) }
    }

    /// `room_list`: what ListRooms needs.
    pub(super) fn room_list(&self) -> Result<http::HeaderValue, LiveKitError> {
        // A poisoned lock only means another call panicked mid-update;
        // the cached value is still a whole header or none.
        let mut cached = self.room_list.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((header, signed)) = cached.as_ref()
            && signed.elapsed() < SERVICE_TOKEN_TTL / 2
        {
            return Ok(header.clone());
        }
        let header = self.sign(VideoGrants { room_list: true, ..Default::default() })?;
        *cached = Some((header.clone(), Instant::now()));
        Ok(header)
    }

    /// `room_admin` on one room, signed for this call.
    pub(super) fn room_admin(&self, room: &str) -> Result<http::HeaderValue, LiveKitError> {
        self.sign(VideoGrants { room_admin: true, room: room.to_owned(), ..Default::default() })
    }

    /// `room_record`: what every Egress call needs.
    pub(super) fn room_record(&self) -> Result<http::HeaderValue, LiveKitError> {
        self.sign(VideoGrants { room_record: true, ..Default::default() })
    }

    /// `room_create`: CreateRoom.
    pub(super) fn room_create(&self) -> Result<http::HeaderValue, LiveKitError> {
        self.sign(VideoGrants { room_create: true, ..Default::default() })
    }

    fn sign(&self, grants: VideoGrants) -> Result<http::HeaderValue, LiveKitError> {
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
}
