//! Caller authentication and authorization.
//!
//! Credentials arrive as `authorization: Bearer ...` (gRPC and grpc-web
//! alike). A credential with two dots is a JWT from a configured identity
//! provider ([`jwt`]); anything else is an API key ([`api_keys`]). The
//! [`AuthLayer`] turns a good credential into a [`Caller`] in the request's
//! extensions, or answers UNAUTHENTICATED itself; handlers then ask the
//! caller for a [`Scope`] and a room ([`Caller::authorize`]), which answers
//! PERMISSION_DENIED. Health and reflection need no credential.
//!
//! With no issuer and no API key configured every caller is anonymous and
//! may do everything: RoomControl then only serves on loopback, unless
//! `auth.allow_unauthenticated` says otherwise (see `server.rs`).

mod api_keys;
mod jwt;
pub mod policy;

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::config::AuthConfig;
use crate::error::ApiError;

pub use api_keys::{hash_api_key, new_api_key};

/// What a caller may do, per group of RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// ListRooms, GetRoom, ListParticipants, GetParticipant.
    RoomsRead,
    /// CreateRoom, UpdateRoomMetadata, DeleteRoom.
    RoomsWrite,
    /// RemoveParticipant, UpdateParticipant, MutePublishedTrack,
    /// UpdateSubscriptions, SendData.
    ParticipantsModerate,
    /// CreateToken for any identity.
    TokensCreate,
    /// CreateToken for the caller's own identity, within the self-service
    /// policy.
    TokensCreateSelf,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::RoomsRead,
        Scope::RoomsWrite,
        Scope::ParticipantsModerate,
        Scope::TokensCreate,
        Scope::TokensCreateSelf,
    ];

    /// The scope's name in credentials and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Scope::RoomsRead => "rooms:read",
            Scope::RoomsWrite => "rooms:write",
            Scope::ParticipantsModerate => "participants:moderate",
            Scope::TokensCreate => "tokens:create",
            Scope::TokensCreateSelf => "tokens:create:self",
        }
    }

    pub fn from_name(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Room name patterns: `*` matches any run of characters, everything else
/// itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPatterns(Vec<String>);

impl RoomPatterns {
    pub fn new(patterns: Vec<String>) -> Self {
        Self(patterns)
    }

    /// Every room.
    pub fn any() -> Self {
        Self(vec!["*".to_owned()])
    }

    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|pattern| wildcard_match(pattern, room))
    }

    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

/// `*` matches any run of characters (including none).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(index) => rest = &rest[index + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Who is calling, and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    kind: CallerKind,
    /// The identity a self-service token gets: the JWT's `sub`, or the API
    /// key's name.
    subject: String,
    /// A display name from the credential (the JWT's `name` claim).
    display_name: Option<String>,
    scopes: BTreeSet<Scope>,
    rooms: RoomPatterns,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallerKind {
    /// Authentication is off.
    Anonymous,
    ApiKey {
        name: String,
    },
    Jwt {
        issuer: String,
    },
}

impl Caller {
    /// The caller when authentication is off: every scope, every room.
    pub fn anonymous() -> Self {
        Self {
            kind: CallerKind::Anonymous,
            subject: "anonymous".to_owned(),
            display_name: None,
            scopes: Scope::ALL.into_iter().collect(),
            rooms: RoomPatterns::any(),
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn may_touch(&self, room: &str) -> bool {
        self.rooms.allows(room)
    }

    /// PERMISSION_DENIED unless the caller holds `scope` (and, when given,
    /// may touch `room`). The message names the rule that failed.
    pub fn authorize(&self, rpc: &str, scope: Scope, room: Option<&str>) -> Result<(), ApiError> {
        if !self.has(scope) {
            return Err(ApiError::PermissionDenied(format!(
                "{rpc} needs scope {scope}; {self} has {}",
                self.scope_list()
            )));
        }
        if let Some(room) = room {
            self.authorize_room(room)?;
        }
        Ok(())
    }

    /// PERMISSION_DENIED unless the caller may touch `room`.
    pub fn authorize_room(&self, room: &str) -> Result<(), ApiError> {
        if self.may_touch(room) {
            return Ok(());
        }
        Err(ApiError::PermissionDenied(format!(
            "room {room:?} is not among the rooms {self} may touch ({})",
            self.rooms.patterns().join(", ")
        )))
    }

    /// The caller's scopes, for messages: "rooms:read tokens:create" or "no scope".
    pub fn scope_list(&self) -> String {
        if self.scopes.is_empty() {
            return "no scope".to_owned();
        }
        self.scopes.iter().map(|scope| scope.name()).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CallerKind::Anonymous => f.write_str("the anonymous caller"),
            CallerKind::ApiKey { name } => write!(f, "API key {name:?}"),
            CallerKind::Jwt { issuer } => write!(f, "{:?} (issuer {issuer})", self.subject),
        }
    }
}

/// Why a credential was not accepted. The message never repeats it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unauthenticated(pub String);

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The credential is missing or bad: UNAUTHENTICATED.
    #[error(transparent)]
    Unauthenticated(#[from] Unauthenticated),
    /// The credential could not be checked (an identity provider's keys
    /// could not be loaded): UNAVAILABLE, so clients retry rather than
    /// sign their user out.
    #[error("{0}")]
    Unavailable(String),
}

/// Checks credentials. Built once at start-up, shared by every connection.
#[derive(Debug)]
pub struct Authenticator {
    enabled: bool,
    /// Authentication off on loopback: only requests addressed to a
    /// loopback name are served, so a web page cannot reach RoomControl
    /// through DNS rebinding.
    local_only: bool,
    max_credential_bytes: usize,
    api_keys: api_keys::ApiKeys,
    issuers: Vec<jwt::Issuer>,
    /// The caller of every call when authentication is off, built once.
    anonymous: Arc<Caller>,
}

impl Authenticator {
    /// Loads keys and key files; JWKS URLs are fetched in the background.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let issuers =
            config.issuers.iter().map(|issuer| jwt::Issuer::new(issuer, config.leeway)).collect::<Result<_, _>>()?;
        Ok(Self {
            enabled: config.is_enabled(),
            local_only: !config.is_enabled() && !config.allow_unauthenticated,
            max_credential_bytes: config.max_credential_bytes,
            api_keys: api_keys::ApiKeys::new(&config.api_keys)?,
            issuers,
            anonymous: Arc::new(Caller::anonymous()),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Fetches every JWKS URL once, so the first caller does not wait.
    pub async fn prefetch(&self) {
        for issuer in &self.issuers {
            issuer.prefetch().await;
        }
    }

    /// The caller behind an `authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Caller>, AuthFailure> {
        if !self.enabled {
            return Ok(self.anonymous.clone());
        }
        self.check_credential(authorization).await.map(Arc::new)
    }

    async fn check_credential(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthFailure> {
        let Some(header) = authorization else {
            return Err(Unauthenticated(
                "missing credentials: send the metadata \"authorization: Bearer <token or API key>\"".to_owned(),
            )
            .into());
        };
        if header.len() > self.max_credential_bytes + "Bearer ".len() {
            return Err(Unauthenticated(format!(
                "the credential is larger than {} bytes (auth.max_credential_bytes)",
                self.max_credential_bytes
            ))
            .into());
        }
        let header = std::str::from_utf8(header)
            .map_err(|_| Unauthenticated("the authorization header is not valid text".to_owned()))?;
        let Some((scheme, credential)) = header.split_once(' ') else {
            return Err(
                Unauthenticated("the authorization header must be \"Bearer <token or API key>\"".to_owned()).into()
            );
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Unauthenticated(format!(
                "unsupported authorization scheme {:?}: use \"Bearer <token or API key>\"",
                truncate(scheme, 16)
            ))
            .into());
        }
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(Unauthenticated("empty bearer credential".to_owned()).into());
        }
        if credential.bytes().filter(|&b| b == b'.').count() == 2 {
            self.authenticate_jwt(credential).await
        } else {
            Ok(self.api_keys.authenticate(credential)?)
        }
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Caller, AuthFailure> {
        let unverified = jwt::peek(token)?;
        let Some(issuer) = self.issuers.iter().find(|issuer| issuer.accepts_issuer(&unverified.iss)) else {
            return Err(Unauthenticated(match unverified.iss.as_deref() {
                Some(iss) => format!("tokens from issuer {:?} are not accepted", truncate(iss, 200)),
                None => "the token has no iss claim".to_owned(),
            })
            .into());
        };
        issuer.verify(token, unverified).await
    }
}

/// At most `max` characters of something a caller sent, for messages.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((index, _)) => format!("{}…", &text[..index]),
        None => text.to_owned(),
    }
}

/// Checks the `[auth]` section: (key, value shown, what was expected).
pub fn check_config(config: &AuthConfig) -> Result<(), (String, String, String)> {
    api_keys::check_config(&config.api_keys)?;
    for (index, issuer) in config.issuers.iter().enumerate() {
        jwt::check_config(index, issuer)?;
        if config.issuers[..index].iter().any(|earlier| earlier.issuer == issuer.issuer) {
            return Err((
                format!("auth.issuers[{index}].issuer"),
                format!("{:?}", issuer.issuer),
                "expected each issuer once (list several keys in one JWKS to rotate keys)".to_owned(),
            ));
        }
    }
    if config.self_service.max_ttl.is_zero() {
        return Err((
            "auth.self_service.max_ttl".to_owned(),
            "0s".to_owned(),
            "expected a positive duration such as \"1h\"".to_owned(),
        ));
    }
    for source in &config.self_service.can_publish_sources {
        if policy::source_from_name(source).is_none() {
            return Err((
                "auth.self_service.can_publish_sources".to_owned(),
                format!("{source:?}"),
                "expected camera, microphone, screen_share or screen_share_audio".to_owned(),
            ));
        }
    }
    if config.max_credential_bytes == 0 {
        return Err(("auth.max_credential_bytes".to_owned(), "0".to_owned(), "expected at least 1".to_owned()));
    }
    Ok(())
}

/// Whether the request names a loopback host (`Host`, or `:authority` in
/// HTTP/2); a request naming none is allowed.
fn addressed_to_loopback<B>(request: &Request<B>) -> bool {
    let loopback = |host: &str| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    if let Some(authority) = request.uri().authority() {
        return loopback(authority.host());
    }
    match request.headers().get(http::header::HOST).map(|host| http::uri::Authority::try_from(host.as_bytes())) {
        Some(Ok(authority)) => loopback(authority.host()),
        // No Host, or one that is not a host name at all.
        None | Some(Err(_)) => true,
    }
}

/// Paths that need no credential: health checks and reflection.
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Authenticates every call but health and reflection.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, authenticator: self.authenticator.clone() }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S> Service<Request<Body>> for Authenticate<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    /// Calls that need no check pass straight through, unboxed.
    type Future = Either<S::Future, Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if is_public(request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        let authenticator = &self.authenticator;
        if !authenticator.enabled {
            if authenticator.local_only && !addressed_to_loopback(&request) {
                return Either::Right(Box::pin(async {
                    Ok(tonic::Status::permission_denied(
                        "RoomControl runs without authentication and answers only requests addressed to localhost, 127.0.0.1 or [::1]; configure authentication (auth.issuers or auth.api_keys) to serve other names",
                    )
                    .into_http())
                }));
            }
            // Nothing to wait for: the shared anonymous caller, at once. Not
            // recorded in the call's span: recording re-serializes the span's
            // JSON fields, and "anonymous" tells a log reader nothing.
            request.extensions_mut().insert(authenticator.anonymous.clone());
            return Either::Left(self.inner.call(request));
        }
        // The clone is not ready; the one `poll_ready` prepared serves this
        // call once the credential is checked.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        Either::Right(Box::pin(async move {
            let header = request.headers().get(http::header::AUTHORIZATION).cloned();
            match authenticator.authenticate(header.as_ref().map(http::HeaderValue::as_bytes)).await {
                Ok(caller) => {
                    tracing::Span::current().record("caller", tracing::field::display(&caller));
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(AuthFailure::Unauthenticated(Unauthenticated(message))) => {
                    Ok(tonic::Status::unauthenticated(message).into_http())
                }
                Err(AuthFailure::Unavailable(message)) => Ok(tonic::Status::unavailable(message).into_http()),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_any_run_of_characters() {
        let cases = [
            ("*", "anything", true),
            ("*", "", true),
            ("standup", "standup", true),
            ("standup", "standup-2", false),
            ("team-a-*", "team-a-standup", true),
            ("team-a-*", "team-b-standup", false),
            ("*-standup", "team-a-standup", true),
            ("*-standup", "team-a-standup-2", false),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "a-x-c-y-b", false),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
        ];
        for (pattern, room, expected) in cases {
            assert_eq!(wildcard_match(pattern, room), expected, "{pattern:?} vs {room:?}");
        }
    }

    #[test]
    fn scope_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(Scope::from_name(scope.name()), Some(scope));
        }
        assert_eq!(Scope::from_name("rooms:admin"), None);
    }

    #[test]
    fn messages_name_the_missing_scope_and_the_room_rule() {
        let caller = Caller {
            kind: CallerKind::ApiKey { name: "backend".into() },
            subject: "backend".into(),
            display_name: None,
            scopes: [Scope::RoomsRead].into_iter().collect(),
            rooms: RoomPatterns::new(vec!["team-a-*".into()]),
        };
        let denied = caller.authorize("DeleteRoom", Scope::RoomsWrite, Some("team-a-x")).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "permission denied: DeleteRoom needs scope rooms:write; API key \"backend\" has rooms:read"
        );
        let denied = caller.authorize("GetRoom", Scope::RoomsRead, Some("team-b-x")).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "permission denied: room \"team-b-x\" is not among the rooms API key \"backend\" may touch (team-a-*)"
        );
        assert!(caller.authorize("GetRoom", Scope::RoomsRead, Some("team-a-x")).is_ok());
    }
}
