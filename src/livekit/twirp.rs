//! Twirp over HTTP, sent by RoomControl itself with the `livekit-protocol`
//! types, for the calls `livekit-api` cannot make safely and for ListRooms,
//! the hot read (see the adapter's module comment for why each).

use std::time::Duration;

use prost::Message;
use secrecy::SecretString;
use url::Url;

use super::LiveKitError;
use super::error::{innermost, twirp_error};
use super::service_token::ServiceTokens;

/// The LiveKit methods RoomControl sends as Twirp itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirectMethod {
    /// The hot read: its `room_list` service token is reused.
    ListRooms,
    MutePublishedTrack,
    SendData,
}

impl DirectMethod {
    pub(super) fn name(self) -> &'static str {
        match self {
            DirectMethod::ListRooms => "ListRooms",
            DirectMethod::MutePublishedTrack => "MutePublishedTrack",
            DirectMethod::SendData => "SendData",
        }
    }
}

/// The grant a direct call of another service is signed with.
#[derive(Debug, Clone, Copy)]
pub(super) enum Grant<'a> {
    /// `roomRecord`: every Egress call.
    Record,
    /// `roomAdmin` on this room: the AgentDispatchService.
    Admin(&'a str),
    /// `roomCreate`: CreateRoom.
    Create,
}

/// The direct Twirp client.
pub(super) struct DirectTwirp {
    http: crate::crypto::LiveKitHttp,
    /// LiveKit's URL, for building the other services' URIs.
    base: Url,
    /// LiveKit's URL, for messages.
    display_url: String,
    /// Each method's URI, prepared once, indexed by `DirectMethod as usize`.
    uris: [http::Uri; 3],
    tokens: ServiceTokens,
}

/// A Twirp error reply's body.
#[derive(serde::Deserialize)]
struct TwirpErrorBody {
    code: String,
    #[serde(default)]
    msg: String,
}

impl DirectTwirp {
    pub(super) fn new(base: Url, api_key: &str, api_secret: SecretString, timeout: Duration) -> Result<Self, String> {
        let http = crate::crypto::livekit_http(timeout)?;
        let uri = |method: DirectMethod| {
            let mut url = base.clone();
            url.set_path(&format!("/twirp/livekit.RoomService/{}", method.name()));
            url.as_str().parse::<http::Uri>().map_err(|error| format!("livekit.url {base} cannot be used: {error}"))
        };
        Ok(Self {
            http,
            base: base.clone(),
            display_url: base.as_str().trim_end_matches('/').to_owned(),
            uris: [uri(DirectMethod::ListRooms)?, uri(DirectMethod::MutePublishedTrack)?, uri(DirectMethod::SendData)?],
            tokens: ServiceTokens::new(api_key, api_secret),
        })
    }

    /// Sends one call of any LiveKit service (`livekit.Egress`,
    /// `livekit.AgentDispatchService`, ...) and decodes the reply.
    pub(super) async fn call_service<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &'static str,
        grant: Grant<'_>,
        request: Req,
    ) -> Result<Resp, LiveKitError> {
        let authorization = match grant {
            Grant::Record => self.tokens.room_record()?,
            Grant::Admin(room) => self.tokens.room_admin(room)?,
            Grant::Create => self.tokens.room_create()?,
        };
        let mut url = self.base.clone();
        url.set_path(&format!("/twirp/{service}/{method}"));
        let uri = url
            .as_str()
            .parse::<http::Uri>()
            .map_err(|error| LiveKitError::Unreachable { url: self.display_url.clone(), detail: error.to_string() })?;
        self.send(uri, method, authorization, request).await
    }

    /// Sends one call about `room` (empty for ListRooms) and decodes the
    /// reply, or LiveKit's error.
    pub(super) async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: DirectMethod,
        room: &str,
        request: Req,
    ) -> Result<Resp, LiveKitError> {
        let authorization = match method {
            DirectMethod::ListRooms => self.tokens.room_list()?,
            DirectMethod::MutePublishedTrack | DirectMethod::SendData => self.tokens.room_admin(room)?,
        };
        let uri = self.uris[method as usize].clone();
        self.send(uri, method.name(), authorization, request).await
    }

    async fn send<Req: Message, Resp: Message + Default>(
        &self,
        uri: http::Uri,
        method: &'static str,
        authorization: http::HeaderValue,
        request: Req,
    ) -> Result<Resp, LiveKitError> {
        use http_body_util::BodyExt;

        let display_url = self.display_url.as_str();
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
        decode_reply(method, status, body)
    }
}

/// A Twirp reply as RoomControl reads it: the message on 200, LiveKit's
/// error otherwise. Any status and any bytes give an answer, never a panic.
pub fn decode_reply<Resp: Message + Default>(
    method: &'static str,
    status: http::StatusCode,
    body: bytes::Bytes,
) -> Result<Resp, LiveKitError> {
    if status == http::StatusCode::OK {
        return Resp::decode(body)
            .map_err(|error| LiveKitError::BadReply { method, detail: format!("undecodable protobuf ({error})") });
    }
    if let Ok(twirp) = serde_json::from_slice::<TwirpErrorBody>(&body) {
        return Err(twirp_error(method, &twirp.code, twirp.msg));
    }
    if status == http::StatusCode::UNAUTHORIZED {
        return Err(LiveKitError::CredentialsRejected { method });
    }
    Err(LiveKitError::NotTwirp { method, status: Some(status.as_u16()) })
}
