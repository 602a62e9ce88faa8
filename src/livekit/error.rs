//! Why a LiveKit call failed, once, in terms a caller can act on; the
//! Twirp protocol's error codes.

use std::fmt;
use std::time::Duration;

/// Why a LiveKit call failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveKitError {
    /// LiveKit answered with a Twirp error.
    #[error("LiveKit {method}: {msg} ({code})")]
    Twirp { method: &'static str, code: TwirpCode, msg: String },
    /// What the caller named does not exist: found out by asking LiveKit
    /// first, where LiveKit itself would answer slowly or vaguely.
    #[error("{0}")]
    NotFound(Missing),
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
    /// LiveKit has no egress service: it answered that egress is not
    /// connected (egress needs Redis and an egress worker).
    #[error(
        "LiveKit has no egress service ({method}: {msg}): recordings need LiveKit's egress worker, and LiveKit and the worker sharing Redis (LiveKit's redis settings); see the README's \"Recordings and agents\" section"
    )]
    NoEgressService { method: &'static str, msg: String },
    /// LiveKit has an egress service, but no egress worker took the job.
    #[error(
        "no LiveKit egress worker took the recording ({method}: {msg}): are egress workers running, connected to LiveKit's Redis, and with capacity left?"
    )]
    NoEgressWorker { method: &'static str, msg: String },
    /// Signing a token failed.
    #[error("could not sign a LiveKit token: {0}")]
    Signing(String),
}

/// What a call named that LiveKit does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Room {
        room: String,
    },
    /// A room that is not live now, where the call needs one.
    LiveRoom {
        room: String,
    },
    /// A recording (egress) LiveKit does not know.
    Recording {
        id: String,
    },
    /// An agent dispatch the room does not have.
    Dispatch {
        room: String,
        id: String,
    },
    Track {
        room: String,
        identity: String,
        track_sid: String,
    },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Room { room } => write!(f, "room {room:?} does not exist"),
            Missing::LiveRoom { room } => write!(
                f,
                "room {room:?} is not live: LiveKit has no such room now (CreateRoom, or a participant joining, starts one)"
            ),
            Missing::Recording { id } => {
                write!(f, "LiveKit knows no recording {id:?} (ListRecordings lists the recordings it knows)")
            }
            Missing::Dispatch { room, id } => {
                write!(f, "room {room:?} has no agent dispatch {id:?} (ListAgentDispatches lists them)")
            }
            Missing::Track { room, identity, track_sid } => {
                write!(f, "participant {identity:?} in room {room:?} publishes no track {track_sid:?}")
            }
        }
    }
}

/// The error codes of the Twirp protocol, and any other LiveKit might send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwirpCode {
    Canceled,
    Unknown,
    InvalidArgument,
    Malformed,
    DeadlineExceeded,
    NotFound,
    BadRoute,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    Dataloss,
    /// A code the protocol does not define, as sent.
    Other(String),
}

/// Each Twirp code and its name on the wire.
const TWIRP_CODES: [(TwirpCode, &str); 18] = [
    (TwirpCode::Canceled, "canceled"),
    (TwirpCode::Unknown, "unknown"),
    (TwirpCode::InvalidArgument, "invalid_argument"),
    (TwirpCode::Malformed, "malformed"),
    (TwirpCode::DeadlineExceeded, "deadline_exceeded"),
    (TwirpCode::NotFound, "not_found"),
    (TwirpCode::BadRoute, "bad_route"),
    (TwirpCode::AlreadyExists, "already_exists"),
    (TwirpCode::PermissionDenied, "permission_denied"),
    (TwirpCode::Unauthenticated, "unauthenticated"),
    (TwirpCode::ResourceExhausted, "resource_exhausted"),
    (TwirpCode::FailedPrecondition, "failed_precondition"),
    (TwirpCode::Aborted, "aborted"),
    (TwirpCode::OutOfRange, "out_of_range"),
    (TwirpCode::Unimplemented, "unimplemented"),
    (TwirpCode::Internal, "internal"),
    (TwirpCode::Unavailable, "unavailable"),
    (TwirpCode::Dataloss, "dataloss"),
];

impl TwirpCode {
    pub fn parse(code: &str) -> TwirpCode {
        TWIRP_CODES
            .iter()
            .find(|(_, name)| *name == code)
            .map_or_else(|| TwirpCode::Other(code.to_owned()), |(known, _)| known.clone())
    }

    /// The code as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            TwirpCode::Other(code) => code,
            known => TWIRP_CODES.iter().find(|(code, _)| code == known).map_or("unknown", |(_, name)| name),
        }
    }

    /// A bounded label for metrics: anything outside the protocol shares one.
    fn label(&self) -> &'static str {
        TWIRP_CODES.iter().find(|(code, _)| code == self).map_or("twirp_other", |(_, name)| name)
    }
}

impl fmt::Display for TwirpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which limit ended a LiveKit call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutCause {
    /// RoomControl's `livekit.timeout`.
    Configured,
    /// The caller's own deadline (grpc-timeout).
    CallerDeadline,
}

fn describe_timeout(method: &str, after: &Duration, cause: TimeoutCause) -> String {
    let after = crate::duration::display(Duration::from_millis(after.as_millis() as u64));
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
            LiveKitError::Twirp { code, .. } => code.label(),
            LiveKitError::NotFound(_) => "not_found",
            LiveKitError::Unreachable { .. } => "unreachable",
            LiveKitError::Timeout { .. } => "timeout",
            LiveKitError::CredentialsRejected { .. } | LiveKitError::GrantRefused { .. } => "credentials_rejected",
            LiveKitError::NotTwirp { .. } => "not_twirp",
            LiveKitError::BadReply { .. } | LiveKitError::Signing(_) => "bad_reply",
            LiveKitError::NoEgressService { .. } => "no_egress",
            LiveKitError::NoEgressWorker { .. } => "no_egress_worker",
        }
    }
}

/// A Twirp error reply as a [`LiveKitError`].
pub(super) fn twirp_error(method: &'static str, code: &str, msg: String) -> LiveKitError {
    // LiveKit re-wraps errors from its internal RPC layer, so many messages
    // read "twirp error unknown: requested room does not exist"; the prefix
    // says nothing to the caller.
    let msg = match msg.strip_prefix("twirp error ").and_then(|rest| rest.split_once(": ")) {
        Some((_code, rest)) => rest.to_owned(),
        None => msg,
    };
    // With an API key and secret, a grant error means LiveKit refused the
    // service token RoomControl signed, never the caller's credential.
    let code = TwirpCode::parse(code);
    if matches!(code, TwirpCode::Unauthenticated | TwirpCode::PermissionDenied) {
        return LiveKitError::GrantRefused { method, msg };
    }
    LiveKitError::Twirp { method, code, msg }
}

/// The innermost cause of an error, which says what happened ("Connection
/// refused"); the outer layers only repeat the URL or the client's name.
pub(super) fn innermost<'a>(error: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    let mut innermost = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    innermost
}
