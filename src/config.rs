//! Configuration: built-in defaults < `roomcontrol.toml` < environment.
//!
//! The environment has two layers: the seed app's names (`LIVEKIT_URL`,
//! `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`, `PORT`), then `ROOMCONTROL_*`
//! keys with `__` between sections (`ROOMCONTROL_LIVEKIT__TIMEOUT=3s`), which
//! win. `main` loads a `.env` file from the working directory into the
//! environment first, without overriding variables already set.
//!
//! Every key is documented in the README's configuration reference; keep the
//! two in step.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::limits::{Per, Rate, RateSetting};

/// The file read when `--config` / `ROOMCONTROL_CONFIG` is not given. It is
/// optional: a missing default file is not an error.
pub const DEFAULT_CONFIG_FILE: &str = "roomcontrol.toml";

/// The seed app's environment names, and the conventional `DATABASE_URL`
/// and `REDIS_URL`, with the keys they set.
const SEED_ENV_NAMES: [(&str, &str); 6] = [
    ("LIVEKIT_URL", "livekit.url"),
    ("LIVEKIT_API_KEY", "livekit.api_key"),
    ("LIVEKIT_API_SECRET", "livekit.api_secret"),
    ("PORT", "server.port"),
    ("DATABASE_URL", "store.url"),
    ("REDIS_URL", "redis.url"),
];

/// The prefix of RoomControl's own environment variables.
const ENV_PREFIX: &str = "ROOMCONTROL_";

/// Keys whose environment values are taken verbatim: a secret such as
/// `0123` must not turn into the number 123.
const STRING_KEYS: [&str; 16] = [
    "store.url",
    "redis.url",
    "redis.key_prefix",
    "limits.self_service_tokens",
    "limits.tokens",
    "limits.writes",
    "limits.reads",
    "limits.on_redis_error",
    "events.webhook_path",
    "livekit.url",
    "livekit.api_key",
    "livekit.api_secret",
    "livekit.public_url",
    "server.host",
    "log.level",
    "log.format",
];

/// One environment variable as a figment provider, named after the variable
/// so errors say where a bad value came from.
struct EnvVar {
    name: String,
    key: String,
    value: String,
}

impl EnvVar {
    fn new(name: String, key: String, value: String) -> Self {
        Self { name, key, value }
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{} environment variable", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let value = if STRING_KEYS.contains(&self.key.as_str()) {
            Value::from(self.value.clone())
        } else {
            // Numbers, booleans and arrays such as ["a", "b"], as figment
            // reads them; anything else stays a string.
            self.value.parse::<Value>().unwrap_or_else(|never| match never {})
        };
        let dict = match figment::util::nest(&self.key, value) {
            Value::Dict(_, dict) => dict,
            _ => unreachable!("nest always returns a dictionary"),
        };
        Ok(Profile::Default.collect(dict))
    }
}

/// `ROOMCONTROL_*` names that are not settings (settings always have a
/// section: `ROOMCONTROL_SECTION__KEY`): the ones Kubernetes injects into
/// every pod of a namespace with a Service named `roomcontrol`
/// (`ROOMCONTROL_SERVICE_HOST`, `ROOMCONTROL_PORT`...), and the test suite's
/// own switches (`ROOMCONTROL_TEST_*`).
fn is_not_a_setting(name: &str) -> bool {
    let rest = &name[ENV_PREFIX.len()..];
    !rest.contains("__")
        && (rest == "SERVICE_HOST"
            || rest == "PORT"
            || rest.starts_with("SERVICE_PORT")
            || rest.starts_with("PORT_")
            || rest.starts_with("TEST_"))
}

/// `livekit-server --dev`'s secret for the key `devkey`.
const DEFAULT_API_SECRET: &str = "secret";

/// RoomControl's whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub livekit: LiveKitConfig,
    pub tokens: TokenConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub console: ConsoleConfig,
    pub store: StoreConfig,
    pub events: EventsConfig,
    #[serde(default)]
    pub rest: RestConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub recordings: RecordingsConfig,
    #[serde(default)]
    pub agents: AgentsConfig,
    #[serde(default)]
    pub history: HistoryConfig,
}

/// Where LiveKit's egress writes recordings (`crate::api::recordings`):
/// decided here, never by a caller, who may only name the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingsConfig {
    /// `local`: a path on the egress worker's disk; `s3`: an object in an
    /// S3-compatible bucket (`recordings.s3`).
    pub storage: RecordingStorage,
    /// The file's path (or object key), with LiveKit egress's placeholders
    /// (`{room_name}`, `{room_id}`, `{time}`, `{utc}`,
    /// `{publisher_identity}`, `{track_id}`, `{track_type}`,
    /// `{track_source}`) and RoomControl's `{file_name}`: the request's
    /// file name, or the kind of recording. Egress adds the extension.
    pub path_template: String,
    pub s3: S3Config,
    /// The hosts StartStream may send to (`a.rtmp.youtube.com`); empty:
    /// any host.
    pub stream_hosts: Vec<String>,
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        Self {
            storage: RecordingStorage::Local,
            path_template: "recordings/{room_name}/{time}-{file_name}".to_owned(),
            s3: S3Config::default(),
            stream_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingStorage {
    Local,
    S3,
}

/// An S3-compatible bucket. The credentials come from the environment
/// (`ROOMCONTROL_RECORDINGS__S3__ACCESS_KEY` and `..._SECRET`, or
/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`) or from
/// `credentials_file`; none at all: the egress worker's own (an instance
/// role). Never from a request, never logged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// For a store other than AWS (MinIO, R2...): its URL.
    pub endpoint: String,
    /// Path-style URLs (`endpoint/bucket/key`), as MinIO wants.
    pub force_path_style: bool,
    pub access_key: Option<String>,
    #[serde(serialize_with = "redact_option")]
    pub secret: Option<SecretString>,
    #[serde(serialize_with = "redact_option")]
    pub session_token: Option<SecretString>,
    /// An AWS shared-credentials file (`aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_session_token` under `[default]`),
    /// read at start-up.
    pub credentials_file: Option<PathBuf>,
}

/// Agent dispatch (`crate::api::agents`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Most redispatches of one dispatch with `redispatch_on_failure`
    /// (an agent that fails at every start is not restarted forever).
    pub max_redispatches: u32,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self { max_redispatches: 3 }
    }
}

/// Room and participant sessions derived from the timeline
/// (`crate::history`), kept apart from the raw timeline's retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Project the timeline into the history on this replica. Off: this
    /// replica still answers the history RPCs from the store, which other
    /// replicas keep up to date (or which stays as it was).
    pub enabled: bool,
    /// At most one projection pass per this interval: the events of a busy
    /// moment are applied together, each room session's figures recomputed
    /// once for all of them, which keeps the projector's share of the CPU
    /// and of SQLite's write lock small. The history lags the timeline by
    /// about this much.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub project_interval: Duration,
    /// How long a room session is kept after it ended, with its participant
    /// sessions (the timeline's own events go after `events.retention`).
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub retention: Duration,
    /// How often the pruner deletes the sessions older than `retention`.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub prune_interval: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            project_interval: Duration::from_millis(250),
            retention: Duration::from_secs(400 * 24 * 3600),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// Rate limits per caller and kind of call (`crate::limits`). Each is a
/// rate such as `"100/s"` or `"10/min"`, optionally with a burst
/// (`"100/s burst 200"`), or `"off"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// CreateToken by a caller that may mint only for itself (a browser
    /// with `tokens:create:self`).
    pub self_service_tokens: RateSetting,
    /// CreateToken by any other caller (`tokens:create`: a backend).
    pub tokens: RateSetting,
    /// Every other call that changes something (the registry's
    /// `changes_state`).
    pub writes: RateSetting,
    /// Calls that change nothing.
    pub reads: RateSetting,
    /// With `redis.url` set, what a call gets while Redis cannot be asked.
    pub on_redis_error: OnRedisError,
}

impl Default for LimitsConfig {
    /// Browsers minting in a loop are stopped; nothing a newcomer or a
    /// backend does in normal use is (backends' limits are opt-in: a
    /// backend minting for a class of 3,000 at nine o'clock is normal).
    fn default() -> Self {
        Self {
            self_service_tokens: RateSetting(Some(Rate { count: 10, per: Per::Minute, burst: 10 })),
            tokens: RateSetting::OFF,
            writes: RateSetting::OFF,
            reads: RateSetting::OFF,
            on_redis_error: OnRedisError::Allow,
        }
    }
}

/// What a call gets while Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    /// It passes unlimited (fail open).
    Allow,
    /// It is refused with UNAVAILABLE.
    Deny,
    /// It counts against this process's own limits, as without Redis.
    Local,
}

impl OnRedisError {
    /// As the configuration writes it.
    pub fn name(self) -> &'static str {
        match self {
            OnRedisError::Allow => "allow",
            OnRedisError::Deny => "deny",
            OnRedisError::Local => "local",
        }
    }
}

/// Redis, where rate limits are kept when several replicas share them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host[:port][/db]` or `rediss://...` (TLS).
    /// Unset: limits are kept per process. Printed with any password
    /// hidden. An empty value (an empty `REDIS_URL`) means unset.
    #[serde(deserialize_with = "non_empty_redis_url")]
    pub url: Option<RedisUrl>,
    /// With `rediss://`: PEM certificates of the CAs that sign Redis's
    /// certificate (a private CA). Unset: the webpki roots (public CAs).
    pub ca_file: Option<PathBuf>,
    /// Prepended to every key RoomControl writes.
    pub key_prefix: String,
    /// Longest wait for Redis's answer on a call; then the call goes on as
    /// `limits.on_redis_error` says.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, ca_file: None, key_prefix: "roomcontrol:".to_owned(), timeout: Duration::from_millis(100) }
    }
}

/// A Redis URL, which may carry a password: `Debug` and `roomcontrol
/// config` show it with the password hidden.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, password included: for the Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password hidden.
    pub fn redacted(&self) -> String {
        crate::store::redacted_url(&self.0)
    }
}

fn non_empty_redis_url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<RedisUrl>, D::Error> {
    let url = Option::<String>::deserialize(deserializer)?;
    Ok(url.filter(|url| !url.trim().is_empty()).map(RedisUrl))
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Where RoomControl keeps its timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://roomcontrol.db` (a file, created on first start),
    /// `sqlite::memory:` (gone at exit), or `postgres://user@host/database`
    /// (several replicas share it). Printed with any password hidden.
    #[serde(serialize_with = "redact_url")]
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// Longest wait for a connection.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub connect_timeout: Duration,
}

/// The timeline: LiveKit's webhooks in, ListEvents and WatchEvents out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Where LiveKit posts its webhooks, on the main port.
    pub webhook_path: String,
    /// Largest webhook body accepted; larger ones answer 413.
    pub webhook_max_body_bytes: usize,
    /// LiveKit API keys besides `livekit.api_key` whose signatures webhooks
    /// may carry (during a key rotation).
    pub webhook_keys: Vec<WebhookKeyConfig>,
    /// How long events are kept.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub retention: Duration,
    /// How often the pruner deletes what is older than `retention`.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub prune_interval: Duration,
    /// How often the timeline's idea of who is live is compared with
    /// LiveKit's, to infer the webhooks LiveKit never delivered; 0s: never.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub reconcile_interval: Duration,
    /// How often a WatchEvents stream sends a heartbeat.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub heartbeat_interval: Duration,
    /// Events a watcher may fall behind the newest before it is cut off
    /// (ABORTED, resume from its last cursor). A publication of the live
    /// feed holds at most this many (and at most 1,000), so a burst never
    /// cuts off a watcher that had taken everything before it.
    pub watch_buffer: usize,
    /// With PostgreSQL, how often the store is read for other replicas'
    /// events and bans should a wake-up (LISTEN/NOTIFY) be missed.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub poll_interval: Duration,
    /// Least time between two publications of the live feed: the events
    /// stored in between reach each watcher together, in one write per
    /// stream instead of one per commit; 0s publishes every commit at once.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub publish_interval: Duration,
}

/// A LiveKit API key that may sign webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookKeyConfig {
    pub api_key: String,
    /// Never logged, never printed.
    #[serde(serialize_with = "redact")]
    pub api_secret: SecretString,
}

/// The NestJS app's REST routes under `/livekit/` on the main port
/// (`crate::rest`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestConfig {
    /// Serve them. On by default: they go through the same authentication
    /// as the RPCs, so they open nothing the RPCs do not.
    pub enabled: bool,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The browser console (`web/`), served at `/console/` on the main port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The built console (`npm run build` in web/). When the directory does
    /// not exist the console is off.
    pub dir: PathBuf,
}

/// Who may call RoomControl. See the README's Authentication section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Serve without authentication on an address other than loopback.
    /// Without issuers or API keys RoomControl otherwise refuses to start
    /// there.
    pub allow_unauthenticated: bool,
    /// Clock skew tolerated when checking `exp` and `nbf`.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub leeway: Duration,
    /// Longest credential accepted, in bytes.
    pub max_credential_bytes: usize,
    /// Identity providers whose JWTs are accepted.
    pub issuers: Vec<IssuerConfig>,
    /// API keys for backend services, stored as hashes.
    pub api_keys: Vec<ApiKeyConfig>,
    /// What a caller with only `tokens:create:self` may get.
    pub self_service: SelfServiceConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_unauthenticated: false,
            leeway: Duration::from_secs(30),
            max_credential_bytes: 8 * 1024,
            issuers: Vec::new(),
            api_keys: Vec::new(),
            self_service: SelfServiceConfig::default(),
        }
    }
}

impl AuthConfig {
    /// Whether any credential is configured at all.
    pub fn is_enabled(&self) -> bool {
        !self.issuers.is_empty() || !self.api_keys.is_empty()
    }

    /// Without authentication, RoomControl serves only on loopback and
    /// answers only requests addressed to a loopback name, unless
    /// `allow_unauthenticated` says otherwise.
    pub fn loopback_only(&self) -> bool {
        !self.is_enabled() && !self.allow_unauthenticated
    }
}

/// One identity provider. Exactly one key source: `secret`, `secret_file`,
/// `public_key_pem`, `public_key_file`, `jwks_file` or `jwks_url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` its tokens carry, e.g. `https://login.example.com/`.
    pub issuer: String,
    /// Accepted `aud` values; a token must name one of them. Required,
    /// unless `allow_any_audience` is set.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted algorithms. Empty: every algorithm of the key's kind.
    #[serde(default)]
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// HS256/384/512 shared secret.
    #[serde(default, serialize_with = "redact_option")]
    pub secret: Option<SecretString>,
    /// A file holding the shared secret (a mounted Kubernetes Secret).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An RSA, EC (P-256/P-384) or Ed25519 public key in PEM.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// A file holding such a PEM key.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file, read again when a token names an unknown `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (https, or http on loopback), fetched again when a token
    /// names an unknown `kid`, at most once per `jwks_min_refresh_interval`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Shortest time between two JWKS fetches.
    #[serde(
        default = "default_jwks_min_refresh_interval",
        deserialize_with = "humantime_serde::deserialize",
        serialize_with = "show_duration"
    )]
    pub jwks_min_refresh_interval: Duration,
    /// The claim holding scopes: a space-separated string (`scope`, `scp`)
    /// or an array (`permissions`, `roles`); dots reach into objects
    /// (`realm_access.roles`).
    #[serde(default = "default_scopes_claim")]
    pub scopes_claim: String,
    /// Provider values (roles, groups) to RoomControl scopes. Values that
    /// are scope names themselves always count.
    #[serde(default)]
    pub scope_map: std::collections::BTreeMap<String, Vec<String>>,
    /// The claim listing room name patterns the caller may touch.
    #[serde(default = "default_rooms_claim")]
    pub rooms_claim: String,
    /// Room patterns for a token without the rooms claim. Empty (the
    /// default): such a token may touch no room; `["*"]` allows every room.
    #[serde(default)]
    pub default_rooms: Vec<String>,
    /// Accept tokens whatever their `aud` (not recommended: any token the
    /// provider issued for another application would be accepted).
    #[serde(default)]
    pub allow_any_audience: bool,
    /// Prepended to `sub` to make the caller's identity, so two providers'
    /// users cannot share a LiveKit identity (e.g. "google:").
    #[serde(default)]
    pub identity_prefix: String,
}

fn default_jwks_min_refresh_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_scopes_claim() -> String {
    "scope".to_owned()
}

fn default_rooms_claim() -> String {
    "rooms".to_owned()
}

fn default_rooms() -> Vec<String> {
    vec!["*".to_owned()]
}

/// A backend service's API key, stored as its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and audit lines, e.g. `billing-backend`.
    pub name: String,
    /// `sha256:` and the hex SHA-256 of the key (`roomcontrol api-key` makes both).
    pub hash: String,
    /// What the key may do: `rooms:read`, `rooms:write`,
    /// `participants:moderate`, `participants:ban`, `tokens:create`,
    /// `tokens:create:self`, `events:read`, `recordings:write`,
    /// `recordings:read`, `agents:dispatch`, `history:read`.
    pub scopes: Vec<String>,
    /// Room name patterns the key may touch; `*` is any run of characters.
    #[serde(default = "default_rooms")]
    pub rooms: Vec<String>,
    /// A revoked key is refused with a message saying so.
    #[serde(default)]
    pub revoked: bool,
}

/// Limits on self-service join tokens (`tokens:create:self`). A request
/// asking for more is refused, never trimmed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfServiceConfig {
    /// Longest lifetime.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub max_ttl: Duration,
    /// Whether the token may publish, subscribe and send data.
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    /// Sources it may publish from (camera, microphone, screen_share,
    /// screen_share_audio); empty allows every source.
    pub can_publish_sources: Vec<String>,
    /// Whether the participant may update its own metadata.
    pub can_update_own_metadata: bool,
    /// Whether the request may ask for a hidden participant.
    pub allow_hidden: bool,
    /// Whether the request may set a display name (else the token's `name`
    /// claim, or the identity).
    pub allow_name: bool,
    /// Whether the request may set participant metadata or attributes.
    pub allow_metadata: bool,
}

impl Default for SelfServiceConfig {
    fn default() -> Self {
        Self {
            max_ttl: Duration::from_secs(3600),
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            can_publish_sources: Vec::new(),
            can_update_own_metadata: false,
            allow_hidden: false,
            allow_name: true,
            allow_metadata: false,
        }
    }
}

/// The listening socket and how calls are served.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. The loopback default keeps a newcomer's service
    /// private; use `0.0.0.0` or `::` in a container.
    pub host: IpAddr,
    /// Port for gRPC, grpc-web and health. 0 picks a free port.
    pub port: u16,
    /// After SIGTERM/SIGINT: how long to keep serving, with health already
    /// NOT_SERVING, so load balancers stop sending before connections close.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub drain_delay: Duration,
    /// Then: how long in-flight calls may take to finish.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub grace_period: Duration,
    /// Close each connection gracefully (GOAWAY) after this long, so
    /// long-lived HTTP/2 clients spread over new replicas. Unset: never.
    #[serde(default, deserialize_with = "humantime_serde::deserialize", serialize_with = "show_optional_duration")]
    pub max_connection_age: Option<Duration>,
    /// Calls that wait on LiveKit served at once; more wait for a slot.
    pub max_concurrent_calls: usize,
    /// Calls that never wait on LiveKit (CreateToken) served at once, in a
    /// budget of their own, so a slow or hung LiveKit cannot starve them.
    pub max_concurrent_local_calls: usize,
    /// Calls that may wait for a slot, in each budget; one more is refused
    /// at once with RESOURCE_EXHAUSTED.
    pub max_queued_calls: usize,
    /// Longest wait for a slot; then RESOURCE_EXHAUSTED.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub max_queue_wait: Duration,
    /// How long a call's request message may take to arrive in full. A call
    /// takes its slot only once it has; a stalled one is answered
    /// DEADLINE_EXCEEDED and holds nothing.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub request_body_timeout: Duration,
    /// Largest request message, in bytes; a larger one is answered
    /// RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// How long a new connection has to send its first request: the TLS
    /// handshake, the HTTP/2 preface and the request's headers together.
    /// Connections that never get there (connect-only sockets, slow
    /// prefaces) are closed.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub handshake_timeout: Duration,
    /// A connection with no call in flight for this long is closed
    /// gracefully (GOAWAY for HTTP/2).
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub idle_timeout: Duration,
    /// HTTP/2 pings on connections that are otherwise quiet, so a peer that
    /// vanished (a half-open connection) is noticed.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub http2_keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub http2_keepalive_timeout: Duration,
    /// Connections the main port holds at once; beyond it new connections
    /// wait in the listen backlog. Lowered at start-up to what the
    /// open-file limit allows, with room kept for the admin port, LiveKit
    /// and files.
    pub max_connections: usize,
    /// Threads that serve calls. 0: one per CPU the process may use (its
    /// CPU affinity and cgroup CPU quota honoured). With one, the runtime is
    /// single-threaded, which on one core serves far more calls per second
    /// than a work-stealing runtime with one worker.
    pub worker_threads: usize,
    pub cors: CorsConfig,
    /// Serve TLS instead of plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// TLS for the main port, from PEM files; reloaded when they change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for changes.
    #[serde(
        default = "default_tls_reload_interval",
        deserialize_with = "humantime_serde::deserialize",
        serialize_with = "show_duration"
    )]
    pub reload_interval: Duration,
}

fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// The admin port: Prometheus metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin port at all.
    pub enabled: bool,
    /// Address for the admin port; `0.0.0.0` for a scraper in another pod.
    pub host: IpAddr,
    /// Port for `GET /metrics`; 0 picks a free one.
    pub port: u16,
}

/// Which browser origins may call RoomControl through grpc-web.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins such as `https://app.example.com`; `"*"` allows any origin.
    /// Empty: no cross-origin browser calls.
    pub allowed_origins: Vec<String>,
}

/// The LiveKit server RoomControl manages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveKitConfig {
    /// LiveKit's URL: http(s):// or ws(s)://, as LiveKit's own tools accept.
    pub url: String,
    /// API key RoomControl signs its LiveKit calls and join tokens with.
    pub api_key: String,
    /// The key's secret. Never logged, never printed.
    #[serde(serialize_with = "redact")]
    pub api_secret: SecretString,
    /// The URL clients connect to, returned by CreateToken. Unset: `url` in
    /// ws:// or wss:// form.
    pub public_url: Option<String>,
    /// Longest wait for one LiveKit call.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub timeout: Duration,
    /// How often readiness asks LiveKit whether it accepts RoomControl's key.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub health_check_interval: Duration,
}

/// Join token lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Lifetime of a token whose request sets no ttl.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub default_ttl: Duration,
    /// Longest lifetime a request may ask for.
    #[serde(deserialize_with = "humantime_serde::deserialize", serialize_with = "show_duration")]
    pub max_ttl: Duration,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `auto` (pretty on a terminal, JSON otherwise), `pretty` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `roomcontrol=debug,info`.
    /// `RUST_LOG`, when set, wins.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
}

/// More serving threads than this is a typo, not a plan.
const MAX_WORKER_THREADS: usize = 1024;

impl ServerConfig {
    /// The serving threads to start: `worker_threads`, or one per CPU the
    /// process may use.
    pub fn worker_threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            threads => threads,
        }
    }
}

impl Default for Config {
    /// Defaults that work next to a local `livekit-server --dev`.
    fn default() -> Self {
        Self {
            server: ServerConfig {
                host: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 50051,
                drain_delay: Duration::ZERO,
                grace_period: Duration::from_secs(10),
                max_connection_age: None,
                max_concurrent_calls: 1024,
                max_concurrent_local_calls: 1024,
                max_queued_calls: 1024,
                max_queue_wait: Duration::from_secs(1),
                request_body_timeout: Duration::from_secs(5),
                max_message_bytes: 4 * 1024 * 1024,
                handshake_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(300),
                http2_keepalive_interval: Duration::from_secs(30),
                http2_keepalive_timeout: Duration::from_secs(10),
                max_connections: 10_000,
                worker_threads: 0,
                cors: CorsConfig::default(),
                tls: None,
            },
            livekit: LiveKitConfig {
                url: "http://localhost:7880".to_owned(),
                api_key: "devkey".to_owned(),
                api_secret: SecretString::from(DEFAULT_API_SECRET),
                public_url: None,
                timeout: Duration::from_secs(5),
                health_check_interval: Duration::from_secs(5),
            },
            tokens: TokenConfig { default_ttl: Duration::from_secs(6 * 3600), max_ttl: Duration::from_secs(24 * 3600) },
            log: LogConfig { format: LogFormat::Auto, level: "info".to_owned() },
            auth: AuthConfig::default(),
            admin: AdminConfig { enabled: true, host: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 9464 },
            console: ConsoleConfig { dir: PathBuf::from("web/dist") },
            store: StoreConfig {
                url: "sqlite://roomcontrol.db".to_owned(),
                max_connections: 8,
                connect_timeout: Duration::from_secs(5),
            },
            events: EventsConfig {
                webhook_path: "/livekit/webhook".to_owned(),
                webhook_max_body_bytes: 1024 * 1024,
                webhook_keys: Vec::new(),
                retention: Duration::from_secs(30 * 24 * 3600),
                prune_interval: Duration::from_secs(600),
                reconcile_interval: Duration::from_secs(60),
                heartbeat_interval: Duration::from_secs(5),
                watch_buffer: 4096,
                poll_interval: Duration::from_secs(1),
                publish_interval: Duration::from_millis(10),
            },
            rest: RestConfig::default(),
            limits: LimitsConfig::default(),
            redis: RedisConfig::default(),
            recordings: RecordingsConfig::default(),
            agents: AgentsConfig::default(),
            history: HistoryConfig::default(),
        }
    }
}

/// Durations are written as the configuration reads them (`24h`, not
/// humantime's `1day`): `roomcontrol config` prints them, and the built-in
/// defaults go through this form on their way into figment.
fn show_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::duration::display(*duration))
}

fn show_optional_duration<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => show_duration(duration, serializer),
        None => serializer.serialize_none(),
    }
}

fn redact<S: Serializer>(_: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("[redacted]")
}

fn redact_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::store::redacted_url(url))
}

fn redact_option<S: Serializer>(secret: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_str("[redacted]"),
        None => serializer.serialize_none(),
    }
}

/// The recordings' settings that serde cannot check.
fn check_recordings(config: &RecordingsConfig) -> Result<(), (&'static str, String, String)> {
    let template = config.path_template.as_str();
    if !template.contains("{file_name}") {
        return Err((
            "recordings.path_template",
            format!("{template:?}"),
            "expected a path holding {file_name}, such as \"recordings/{room_name}/{time}-{file_name}\"".to_owned(),
        ));
    }
    if template.split('/').any(|segment| segment == "..") || template.chars().any(char::is_control) {
        return Err((
            "recordings.path_template",
            format!("{template:?}"),
            "expected a path without \"..\" segments or control characters".to_owned(),
        ));
    }
    if config.storage == RecordingStorage::S3 {
        if config.s3.bucket.trim().is_empty() {
            return Err((
                "recordings.s3.bucket",
                "\"\"".to_owned(),
                "expected the bucket's name (recordings.storage is \"s3\")".to_owned(),
            ));
        }
        if !config.s3.endpoint.is_empty() && url::Url::parse(&config.s3.endpoint).is_err() {
            return Err((
                "recordings.s3.endpoint",
                format!("{:?}", config.s3.endpoint),
                "expected a URL such as \"https://minio.example.com:9000\"".to_owned(),
            ));
        }
        if let Some(path) = &config.s3.credentials_file
            && let Err(why) = crate::api::recordings::read_credentials_file(path)
        {
            return Err(("recordings.s3.credentials_file", format!("{:?}", path.display().to_string()), why));
        }
        if config.s3.access_key.is_some() != config.s3.secret.is_some() {
            return Err((
                "recordings.s3.access_key",
                "(one of two)".to_owned(),
                "expected both recordings.s3.access_key and recordings.s3.secret, or neither".to_owned(),
            ));
        }
    }
    for host in &config.stream_hosts {
        if host.is_empty() || host.contains(['/', ':', ' ']) {
            return Err((
                "recordings.stream_hosts",
                format!("{host:?}"),
                "expected host names such as \"a.rtmp.youtube.com\"".to_owned(),
            ));
        }
    }
    Ok(())
}

/// Configuration that cannot be used. The message is one line naming the
/// key, where its value came from and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Where the configuration file is, and whether it must exist.
#[derive(Debug, Clone)]
pub enum ConfigFile {
    /// The default `roomcontrol.toml`, read only if present.
    Default,
    /// A path the user named; it must exist.
    Explicit(PathBuf),
}

impl Config {
    /// Reads the configuration from the layers described in the module
    /// docs, then checks it.
    pub fn load(file: &ConfigFile) -> Result<Config, ConfigError> {
        let figment = Self::figment(file)?;
        let config: Config = figment.extract().map_err(describe_figment_error)?;
        config.validate(&figment)?;
        Ok(config)
    }

    fn figment(file: &ConfigFile) -> Result<Figment, ConfigError> {
        let path: &Path = match file {
            ConfigFile::Default => Path::new(DEFAULT_CONFIG_FILE),
            ConfigFile::Explicit(path) => {
                if !path.is_file() {
                    return Err(ConfigError(format!(
                        "config file {} does not exist (named by --config or ROOMCONTROL_CONFIG)",
                        path.display()
                    )));
                }
                path
            }
        };
        // Serializing redacts the secret, so its default is layered back in.
        let mut figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Serialized::default("livekit.api_secret", DEFAULT_API_SECRET))
            .merge(Toml::file(path));
        for (name, key) in SEED_ENV_NAMES {
            if let Ok(value) = std::env::var(name) {
                figment = figment.merge(EnvVar::new(name.to_string(), key.to_string(), value));
            }
        }
        let mut roomcontrol_vars: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != "ROOMCONTROL_CONFIG")
            .filter(|(name, _)| !is_not_a_setting(name))
            .collect();
        roomcontrol_vars.sort();
        for (name, value) in roomcontrol_vars {
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase().replace("__", ".");
            figment = figment.merge(EnvVar::new(name, key, value));
        }
        Ok(figment)
    }

    /// The checks serde cannot express, each naming the key and its source.
    fn validate(&self, figment: &Figment) -> Result<(), ConfigError> {
        let fail = |key: &str, shown: &str, expected: &str| {
            Err(ConfigError(format!("{key} = {shown}{}: {expected}", source_of(figment, key))))
        };
        if let Err(why) = api_url(&self.livekit.url) {
            return fail("livekit.url", &format!("{:?}", self.livekit.url), &why);
        }
        if let Some(public_url) = &self.livekit.public_url
            && let Err(why) = client_url(public_url)
        {
            return fail("livekit.public_url", &format!("{public_url:?}"), &why);
        }
        if self.livekit.api_key.trim().is_empty() {
            return fail("livekit.api_key", "\"\"", "expected the LiveKit API key, not an empty string");
        }
        if self.livekit.api_secret.expose_secret().is_empty() {
            return fail("livekit.api_secret", "(empty)", "expected the LiveKit API secret, not an empty string");
        }
        let positive = [
            ("livekit.timeout", self.livekit.timeout),
            ("livekit.health_check_interval", self.livekit.health_check_interval),
            ("tokens.default_ttl", self.tokens.default_ttl),
            ("tokens.max_ttl", self.tokens.max_ttl),
            ("events.retention", self.events.retention),
            ("events.prune_interval", self.events.prune_interval),
            ("events.heartbeat_interval", self.events.heartbeat_interval),
            ("events.poll_interval", self.events.poll_interval),
            ("history.retention", self.history.retention),
            ("history.prune_interval", self.history.prune_interval),
            ("store.connect_timeout", self.store.connect_timeout),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return fail(key, "0s", "expected a positive duration such as \"5s\"");
            }
        }
        if self.tokens.default_ttl > self.tokens.max_ttl {
            return fail(
                "tokens.default_ttl",
                &format!("{:?}", crate::duration::display(self.tokens.default_ttl)),
                &format!("expected at most tokens.max_ttl ({})", crate::duration::display(self.tokens.max_ttl)),
            );
        }
        if self.server.max_connection_age.is_some_and(|age| age.is_zero()) {
            return fail(
                "server.max_connection_age",
                "0s",
                "expected a positive duration such as \"30m\", or leave it unset",
            );
        }
        if let Some(tls) = &self.server.tls {
            for (key, path) in [
                ("server.tls.cert_file", Some(&tls.cert_file)),
                ("server.tls.key_file", Some(&tls.key_file)),
                ("server.tls.client_ca_file", tls.client_ca_file.as_ref()),
            ] {
                if let Some(path) = path
                    && !path.is_file()
                {
                    return fail(key, &format!("{:?}", path.display().to_string()), "expected a readable PEM file");
                }
            }
        }
        if self.admin.enabled
            && self.admin.port != 0
            && self.admin.host == self.server.host
            && self.admin.port == self.server.port
        {
            return fail("admin.port", &self.admin.port.to_string(), "expected a port other than server.port");
        }
        for (key, value) in [
            ("server.max_concurrent_calls", self.server.max_concurrent_calls),
            ("server.max_concurrent_local_calls", self.server.max_concurrent_local_calls),
            ("server.max_message_bytes", self.server.max_message_bytes),
            ("server.max_connections", self.server.max_connections),
            ("events.webhook_max_body_bytes", self.events.webhook_max_body_bytes),
            ("events.watch_buffer", self.events.watch_buffer),
            ("store.max_connections", self.store.max_connections as usize),
        ] {
            if value == 0 {
                return fail(key, "0", "expected at least 1");
            }
        }
        for (key, value) in [
            ("server.max_queue_wait", self.server.max_queue_wait),
            ("server.request_body_timeout", self.server.request_body_timeout),
            ("server.handshake_timeout", self.server.handshake_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.http2_keepalive_interval", self.server.http2_keepalive_interval),
            ("server.http2_keepalive_timeout", self.server.http2_keepalive_timeout),
        ] {
            if value.is_zero() {
                return fail(key, "0s", "expected a positive duration such as \"5s\"");
            }
        }
        if self.server.worker_threads > MAX_WORKER_THREADS {
            return fail(
                "server.worker_threads",
                &self.server.worker_threads.to_string(),
                &format!("expected 0 (one per CPU) to {MAX_WORKER_THREADS}"),
            );
        }
        for origin in &self.server.cors.allowed_origins {
            if let Err(why) = cors_origin(origin) {
                return fail("server.cors.allowed_origins", &format!("{origin:?}"), &why);
            }
        }
        let url = self.store.url.as_str();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return fail(
                "store.url",
                &format!("{:?}", crate::store::redacted_url(url)),
                "expected sqlite://<file> (sqlite://roomcontrol.db), sqlite::memory: or postgres://user@host/database",
            );
        }
        if let Some(url) = &self.redis.url
            && let Err(why) = redis_url(url.expose())
        {
            return fail("redis.url", &format!("{:?}", url.redacted()), &why);
        }
        if let Some(path) = &self.redis.ca_file {
            if !path.is_file() {
                return fail(
                    "redis.ca_file",
                    &format!("{:?}", path.display().to_string()),
                    "expected a readable PEM file",
                );
            }
            if !self.redis.url.as_ref().is_some_and(|url| url.expose().starts_with("rediss://")) {
                return fail(
                    "redis.ca_file",
                    &format!("{:?}", path.display().to_string()),
                    "expected only with a rediss:// redis.url (TLS)",
                );
            }
        }
        if self.redis.timeout.is_zero() {
            return fail("redis.timeout", "0s", "expected a positive duration such as \"100ms\"");
        }
        let path = self.events.webhook_path.as_str();
        if !path.starts_with('/') || path.starts_with("/roomcontrol.") || path.starts_with("/grpc.") || path == "/" {
            return fail(
                "events.webhook_path",
                &format!("{path:?}"),
                "expected an absolute path such as \"/livekit/webhook\", apart from the gRPC services' paths",
            );
        }
        for (index, key) in self.events.webhook_keys.iter().enumerate() {
            if key.api_key.trim().is_empty() || key.api_secret.expose_secret().is_empty() {
                return fail(
                    &format!("events.webhook_keys[{index}]"),
                    "(empty)",
                    "expected both api_key and api_secret of a LiveKit key",
                );
            }
        }
        if let Err((key, shown, expected)) = check_recordings(&self.recordings) {
            return fail(key, &shown, &expected);
        }
        if let Err((key, shown, expected)) = crate::auth::check_config(&self.auth) {
            return fail(&key, &shown, &expected);
        }
        if let Err(why) = self.check_unauthenticated_reach() {
            return fail("server.host", &self.server.host.to_string(), &why);
        }
        if let Err(error) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            return fail(
                "log.level",
                &format!("{:?}", self.log.level),
                &format!("expected a tracing filter such as \"info\" ({error})"),
            );
        }
        Ok(())
    }

    /// The rule for serving without authentication: on a loopback address
    /// only, unless `auth.allow_unauthenticated` says otherwise. Checked by
    /// [`Config::load`] (so `roomcontrol config` reports it) and again when
    /// a server is built from a configuration made in code.
    pub fn check_unauthenticated_reach(&self) -> Result<(), String> {
        if self.auth.loopback_only() && !self.server.host.is_loopback() {
            return Err(format!(
                "refusing to serve on {} without authentication: configure auth.issuers or auth.api_keys (see the README's Authentication section), listen on a loopback address, or set auth.allow_unauthenticated = true to accept calls from anyone who can reach the port",
                self.server.host
            ));
        }
        Ok(())
    }

    /// The address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server.host, self.server.port)
    }

    /// The admin (metrics) address.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(self.admin.host, self.admin.port)
    }

    /// The configuration as JSON, secrets redacted (`roomcontrol config`).
    /// The `log` section also says which filter the process logs with: a
    /// set `RUST_LOG` overrides `log.level` (see telemetry::effective_filter).
    pub fn to_redacted_json(&self) -> String {
        // Every field, so that a new section cannot be left out.
        let Config {
            server,
            livekit,
            tokens,
            log,
            auth,
            admin,
            console,
            store,
            events,
            rest,
            limits,
            redis,
            recordings,
            agents,
            history,
        } = self;
        let effective = crate::telemetry::effective_filter(log);
        let printed = PrintedConfig {
            server,
            livekit,
            tokens,
            log: PrintedLog {
                config: log,
                effective_filter: effective.filter,
                effective_filter_source: effective.source,
                note: effective.note,
            },
            auth,
            admin,
            console,
            store,
            events,
            rest,
            limits,
            redis,
            recordings,
            agents,
            history,
        };
        serde_json::to_string_pretty(&printed).expect("the configuration always serializes")
    }
}

/// What `roomcontrol config` prints: the configuration, in its own order,
/// with the log filter in force added to `log`.
#[derive(Serialize)]
struct PrintedConfig<'a> {
    server: &'a ServerConfig,
    livekit: &'a LiveKitConfig,
    tokens: &'a TokenConfig,
    log: PrintedLog<'a>,
    auth: &'a AuthConfig,
    admin: &'a AdminConfig,
    console: &'a ConsoleConfig,
    store: &'a StoreConfig,
    events: &'a EventsConfig,
    rest: &'a RestConfig,
    limits: &'a LimitsConfig,
    redis: &'a RedisConfig,
    recordings: &'a RecordingsConfig,
    agents: &'a AgentsConfig,
    history: &'a HistoryConfig,
}

#[derive(Serialize)]
struct PrintedLog<'a> {
    #[serde(flatten)]
    config: &'a LogConfig,
    effective_filter: String,
    effective_filter_source: crate::telemetry::FilterSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// " (from X environment variable)" or " (from /path/roomcontrol.toml)".
/// An entry of a list (`auth.api_keys["backend"].hash`) has its list's source.
fn source_of(figment: &Figment, key: &str) -> String {
    let list = key.split_once('[').map(|(list, _)| list);
    figment.find_metadata(key).or_else(|| figment.find_metadata(list?)).map(describe_source).unwrap_or_default()
}

fn describe_source(metadata: &Metadata) -> String {
    match &metadata.source {
        Some(figment::Source::File(path)) => format!(" (from {})", path.display()),
        _ if metadata.name.contains("environment variable") => format!(" (from {})", metadata.name),
        _ => " (built-in default)".to_owned(),
    }
}

/// One line per figment error: key, problem, source. Values of secret keys
/// are never shown.
fn describe_figment_error(error: figment::Error) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|error| {
            let key = error.path.join(".");
            // Unknown-field errors name the key, never the value.
            let secret = key.ends_with("secret") && !matches!(error.kind, figment::error::Kind::UnknownField(..));
            let problem = if secret {
                "invalid value (not shown: it is a secret); expected a string".to_owned()
            } else {
                error.kind.to_string()
            };
            let source = error.metadata.as_ref().map(describe_source).unwrap_or_default();
            if key.is_empty() { format!("{problem}{source}") } else { format!("{key}: {problem}{source}") }
        })
        .collect();
    ConfigError(lines.join("; "))
}

/// LiveKit's API URL: ws(s):// is accepted and means http(s)://.
pub fn api_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|error| format!("expected a URL such as http://localhost:7880 ({error})"))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        _ => return Err("expected an http://, https://, ws:// or wss:// URL".to_owned()),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err("expected a URL with a host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("expected a URL without a query or fragment".to_owned());
    }
    let mut api = url;
    api.set_scheme(scheme).map_err(|()| "expected a URL whose scheme can be changed".to_owned())?;
    Ok(api)
}

/// The URL clients connect to: http(s):// is accepted and means ws(s)://.
pub fn client_url(raw: &str) -> Result<String, String> {
    let api = api_url(raw)?;
    let rest = &api.as_str()[api.scheme().len()..];
    let scheme = if api.scheme() == "https" { "wss" } else { "ws" };
    Ok(format!("{scheme}{}", rest.trim_end_matches('/')))
}

/// A Redis URL the client can use: `redis://` or `rediss://` with a host.
fn redis_url(raw: &str) -> Result<(), String> {
    let expected = "expected redis://[:password@]host[:port][/db] or rediss://... (TLS)";
    let url = Url::parse(raw).map_err(|_| expected.to_owned())?;
    if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none_or(str::is_empty) {
        return Err(expected.to_owned());
    }
    Ok(())
}

fn cors_origin(raw: &str) -> Result<(), String> {
    if raw == "*" {
        return Ok(());
    }
    let expected =
        "expected \"*\" or an origin such as \"https://app.example.com\" (scheme, host and optional port; no path)";
    let url = Url::parse(raw).map_err(|_| expected.to_owned())?;
    let origin = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https") || origin != raw {
        return Err(expected.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_turns_websocket_schemes_into_http() {
        assert_eq!(api_url("ws://localhost:7880").unwrap().as_str(), "http://localhost:7880/");
        assert_eq!(api_url("wss://lk.example.com").unwrap().as_str(), "https://lk.example.com/");
        assert!(api_url("ftp://lk.example.com").is_err());
        assert!(api_url("localhost:7880").is_err());
        assert!(api_url("not a url").is_err());
    }

    #[test]
    fn client_url_turns_http_schemes_into_websocket() {
        assert_eq!(client_url("http://localhost:7880").unwrap(), "ws://localhost:7880");
        assert_eq!(client_url("https://lk.example.com/").unwrap(), "wss://lk.example.com");
        assert_eq!(client_url("wss://lk.example.com").unwrap(), "wss://lk.example.com");
    }

    #[test]
    fn cors_origins_must_be_bare_origins() {
        assert!(cors_origin("*").is_ok());
        assert!(cors_origin("https://app.example.com").is_ok());
        assert!(cors_origin("http://localhost:3000").is_ok());
        assert!(cors_origin("https://app.example.com/").is_err());
        assert!(cors_origin("https://app.example.com/path").is_err());
        assert!(cors_origin("app.example.com").is_err());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let mut config = Config::default();
        config.livekit.api_secret = SecretString::from("super-secret-value");
        config.redis.url = Some(RedisUrl::new("redis://user:redis-password-value@redis:6379/0"));
        for shown in [format!("{config:?}"), config.to_redacted_json()] {
            assert!(!shown.contains("super-secret-value"), "{shown}");
            assert!(!shown.contains("redis-password-value"), "{shown}");
            assert!(shown.contains("redis://user:***@redis:6379/0"), "{shown}");
        }
    }
}
