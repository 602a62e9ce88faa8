//! The command line: `roomcontrol` serves; `roomcontrol token` mints a join
//! token; `roomcontrol config` prints the effective configuration;
//! `roomcontrol history export` prints the room sessions of a range.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::config::Config;
use crate::proto::v1::{CreateTokenRequest, CreateTokenResponse, TokenPermissions, TrackSource};
use crate::tokens::TokenSigner;

/// RoomControl: a control plane for LiveKit.
///
/// Serves the roomcontrol.v1.RoomControl gRPC service (rooms, participants,
/// join tokens), the same service over grpc-web for browsers, the standard
/// grpc.health.v1 service and server reflection, all on one port.
///
/// Configuration: built-in defaults (a local `livekit-server --dev`), then
/// roomcontrol.toml, then the environment (LIVEKIT_URL, LIVEKIT_API_KEY,
/// LIVEKIT_API_SECRET, PORT, then ROOMCONTROL_SECTION__KEY variables); a
/// .env file in the working directory is read too.
#[derive(Debug, Parser)]
#[command(name = "roomcontrol", version)]
pub struct Cli {
    /// Configuration file [default: roomcontrol.toml, when it exists]
    #[arg(short, long, env = "ROOMCONTROL_CONFIG", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC, grpc-web and health on one port (what `roomcontrol` alone does)
    Serve,
    /// Mint a LiveKit join token, like `lk token create --join`, and print it
    Token(TokenArgs),
    /// Print the effective configuration as JSON, secrets redacted
    Config,
    /// Make a new API key: prints the key (give it to the service) and the
    /// configuration entry with its hash (give that to RoomControl)
    ApiKey(ApiKeyArgs),
    /// Room and participant sessions, from the store the server uses
    #[command(subcommand)]
    History(HistoryCommand),
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Print the room sessions that ran in a range, with their participant
    /// sessions, as CSV (one line per participant session) or JSON. The
    /// history is first brought up to date with the timeline.
    Export(ExportArgs),
}

/// What `roomcontrol history export` prints.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Start of the range, RFC 3339 (2026-11-27T00:00:00Z or with an offset)
    #[arg(long, value_parser = parse_time)]
    pub from: i64,
    /// End of the range (exclusive), RFC 3339
    #[arg(long, value_parser = parse_time)]
    pub to: i64,
    /// csv or json
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ExportFormat,
    /// Only this room (exact name); repeat for more [default: every room]
    #[arg(long = "room", value_name = "NAME")]
    pub rooms: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// An RFC 3339 time as unix microseconds.
fn parse_time(raw: &str) -> Result<i64, String> {
    raw.parse::<jiff::Timestamp>().map(|at| at.as_microsecond()).map_err(|_| {
        format!("expected an RFC 3339 time such as 2026-11-27T00:00:00Z or 2026-11-27T00:00:00+01:00, got {raw:?}")
    })
}

/// Runs `roomcontrol history export`: opens the store, brings the history
/// up to date, writes the export to `out`.
pub async fn history_export(config: &Config, args: ExportArgs, out: &mut impl std::io::Write) -> Result<(), String> {
    if args.from >= args.to {
        return Err("--to must be after --from: the range is [from, to)".to_owned());
    }
    let store = crate::store::Store::open(&config.store).await.map_err(|error| error.to_string())?;
    crate::history::catch_up(&store).await.map_err(|error| error.to_string())?;
    let format = match args.format {
        ExportFormat::Csv => crate::history::export::Format::Csv,
        ExportFormat::Json => crate::history::export::Format::Json,
    };
    let result = crate::history::export::export(&store, args.from, args.to, args.rooms, format, out).await;
    store.close().await;
    result.map(|_| ())
}

/// A new API key's name and scopes.
#[derive(Debug, Args)]
pub struct ApiKeyArgs {
    /// A name for logs and audit lines, e.g. billing-backend
    #[arg(long, default_value = "backend")]
    pub name: String,
    /// A scope to grant; repeat for more
    #[arg(long = "scope", value_name = "SCOPE", default_values_t = ["rooms:read".to_owned(), "rooms:write".to_owned(), "participants:moderate".to_owned(), "tokens:create".to_owned()])]
    pub scopes: Vec<String>,
}

/// Runs `roomcontrol api-key`.
pub fn api_key(args: ApiKeyArgs) -> Result<String, String> {
    for scope in &args.scopes {
        if crate::auth::Scope::from_name(scope).is_none() {
            return Err(format!(
                "unknown scope {scope:?}: expected one of {}",
                crate::auth::Scope::ALL.map(|scope| scope.name()).join(", ")
            ));
        }
    }
    let key = crate::auth::new_api_key();
    let scopes: Vec<String> = args.scopes.iter().map(|scope| format!("{scope:?}")).collect();
    Ok(format!(
        "# The key, for the calling service only (send it as \"authorization: Bearer <key>\"):\n{key}\n\n# For roomcontrol.toml:\n[[auth.api_keys]]\nname = {:?}\nhash = {:?}\nscopes = [{}]\nrooms = [\"*\"]",
        args.name,
        crate::auth::hash_api_key(&key),
        scopes.join(", ")
    ))
}

/// What the token grants. The same rules as the CreateToken RPC apply.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The room to join
    #[arg(short, long)]
    pub room: String,
    /// The participant's identity, unique in the room
    #[arg(short, long)]
    pub identity: String,
    /// Display name [default: the identity]
    #[arg(short, long)]
    pub name: Option<String>,
    /// Participant metadata
    #[arg(long)]
    pub metadata: Option<String>,
    /// A participant attribute; repeat for more
    #[arg(long = "attribute", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub attributes: Vec<(String, String)>,
    /// Lifetime, e.g. 30m or 2h [default: tokens.default_ttl]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// May publish tracks [default: true]
    #[arg(long, value_name = "BOOL")]
    pub can_publish: Option<bool>,
    /// May subscribe to tracks [default: true]
    #[arg(long, value_name = "BOOL")]
    pub can_subscribe: Option<bool>,
    /// May send data [default: the value of --can-publish]
    #[arg(long, value_name = "BOOL")]
    pub can_publish_data: Option<bool>,
    /// Allowed source; repeat for more [default: every source]
    #[arg(long = "can-publish-source", value_enum, value_name = "SOURCE")]
    pub can_publish_sources: Vec<Source>,
    /// May update its own metadata, name and attributes
    #[arg(long)]
    pub can_update_own_metadata: bool,
    /// Hidden from other participants
    #[arg(long)]
    pub hidden: bool,
    /// Print CreateToken's reply as JSON (the RPC's proto3 JSON: token,
    /// serverUrl, identity, room, expiresAt in RFC 3339)
    #[arg(long)]
    pub json: bool,
}

/// A track source.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Source {
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
}

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    let (key, value) = raw.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {raw:?}"))?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Runs `roomcontrol token`: prints the token (or JSON) on standard output.
pub fn token(config: &Config, args: TokenArgs) -> Result<String, String> {
    let signer = TokenSigner::new(&config.livekit)?;
    let ttl = match args.ttl {
        Some(ttl) => Some(prost_types::Duration::try_from(ttl).map_err(|_| {
            format!(
                "--ttl {}: too long; give at most tokens.max_ttl ({})",
                crate::duration::display(ttl),
                crate::duration::display(config.tokens.max_ttl)
            )
        })?),
        None => None,
    };
    let sources = args
        .can_publish_sources
        .iter()
        .map(|source| match source {
            Source::Camera => TrackSource::Camera,
            Source::Microphone => TrackSource::Microphone,
            Source::ScreenShare => TrackSource::ScreenShare,
            Source::ScreenShareAudio => TrackSource::ScreenShareAudio,
        } as i32)
        .collect();
    let request = CreateTokenRequest {
        room: args.room,
        identity: args.identity,
        name: args.name.unwrap_or_default(),
        metadata: args.metadata.unwrap_or_default(),
        attributes: args.attributes.into_iter().collect::<HashMap<_, _>>(),
        ttl,
        permissions: Some(TokenPermissions {
            can_publish: args.can_publish,
            can_subscribe: args.can_subscribe,
            can_publish_data: args.can_publish_data,
            can_publish_sources: sources,
            can_update_own_metadata: args.can_update_own_metadata.then_some(true),
            hidden: args.hidden.then_some(true),
        }),
    };
    let response = crate::api::create_token(&signer, &config.tokens, request).map_err(|error| error.to_string())?;
    if !args.json {
        return Ok(response.token);
    }
    Ok(token_json(&response))
}

/// CreateToken's reply in the proto3 JSON mapping, as grpcurl and grpc-web
/// clients see it: camelCase names, the expiry as an RFC 3339 UTC string.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenJson<'a> {
    token: &'a str,
    server_url: &'a str,
    identity: &'a str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

fn token_json(response: &CreateTokenResponse) -> String {
    let json = TokenJson {
        token: &response.token,
        server_url: &response.server_url,
        identity: &response.identity,
        room: &response.room,
        // prost's Timestamp Display is the proto3 JSON form: UTC, `Z`, and
        // 0, 3, 6 or 9 fractional digits.
        expires_at: response.expires_at.map(|at| at.to_string()),
    };
    serde_json::to_string_pretty(&json).expect("strings always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_json_is_create_tokens_proto3_json() {
        let response = CreateTokenResponse {
            token: "eyJ.e30.sig".to_owned(),
            server_url: "wss://livekit.example.com".to_owned(),
            identity: "alice".to_owned(),
            room: "standup".to_owned(),
            expires_at: Some(prost_types::Timestamp { seconds: 1_795_878_245, nanos: 0 }),
        };
        let json: serde_json::Value = serde_json::from_str(&token_json(&response)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "token": "eyJ.e30.sig",
                "serverUrl": "wss://livekit.example.com",
                "identity": "alice",
                "room": "standup",
                "expiresAt": "2026-11-28T15:04:05Z",
            })
        );
    }
}
