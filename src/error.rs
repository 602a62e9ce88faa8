//! RoomControl's one error type, turned into a gRPC status at the edge.
//!
//! The table from LiveKit's failures (its Twirp codes included) to gRPC
//! codes is here and nowhere else. Messages say what to fix; they never
//! carry a secret or a token.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::limits::{Limit, Rate};
use crate::livekit::{LiveKitError, TimeoutCause, TwirpCode};
use crate::tokens::SigningError;
use crate::validate::Violations;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request broke input rules; LiveKit was not called.
    #[error("invalid request: {0}")]
    InvalidArgument(Violations),
    /// The caller's credential does not allow this call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// No caller identity reached the handler (authentication layer missing).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// LiveKit failed or refused the call, or has no such thing.
    #[error(transparent)]
    LiveKit(#[from] LiveKitError),
    /// A join token could not be signed.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// The timeline's store failed or is shutting down.
    #[error("the event store is unavailable: {0}")]
    Store(String),
    /// A cursor older than the timeline keeps.
    #[error(
        "since_cursor {asked} is older than the timeline keeps (events.retention): events up to cursor {oldest} were pruned; snapshot again (include_current_state) and resume after cursor {oldest}"
    )]
    Pruned { asked: u64, oldest: u64 },
    /// A cursor this store never gave.
    #[error(
        "since_cursor {asked} is beyond the newest event stored ({newest}): a cursor from another store? resume from 0, or leave since_cursor unset to follow from now"
    )]
    FutureCursor { asked: u64, newest: u64 },
    /// The identity is banned from the room.
    #[error("permission denied: {identity:?} is banned from room {room:?} ({ban_id}, {until}){reason}")]
    Banned { identity: String, room: String, ban_id: String, until: String, reason: String },
    /// No ban in force has this id.
    #[error("no ban in force has id {0:?}: it was lifted, expired or never given (ListBans lists those in force)")]
    NoSuchBan(String),
    /// No room session has this id.
    #[error(
        "no room session has id {0:?}: it never existed, is not in the history yet, or history.retention pruned it (ListRoomSessions lists those kept)"
    )]
    NoSuchSession(String),
    /// The caller has used up its budget of one kind of call (`limits.*`).
    #[error("rate limit {} ({rate}) exceeded for {caller}; retry in {}", limit.setting(), crate::limits::retry_text(*retry_after))]
    RateLimited { limit: Limit, rate: Rate, caller: String, retry_after: Duration },
    /// The rate limits live in Redis, Redis cannot be asked, and
    /// `limits.on_redis_error` is "deny".
    #[error(
        "rate limits cannot be checked: {0}; calls are refused meanwhile (limits.on_redis_error = \"deny\"); retry shortly"
    )]
    LimitsUnavailable(String),
    /// A watcher fell too far behind, or the stream ended with the server:
    /// the client resumes from `resume`.
    #[error("{why}; resume with since_cursor = {resume}")]
    Resume { code: Code, why: String, resume: u64 },
}

/// The domain of RoomControl's google.rpc.ErrorInfo details.
pub const ERROR_DOMAIN: &str = "roomcontrol.v1";

impl From<crate::events::TimelineError> for ApiError {
    fn from(error: crate::events::TimelineError) -> Self {
        Self::Store(error.to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Store(error.to_string())
    }
}

impl From<Violations> for ApiError {
    fn from(violations: Violations) -> Self {
        Self::InvalidArgument(violations)
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let message = error.to_string();
        match error {
            ApiError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for violation in violations.iter() {
                    details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::LiveKit(error) => Status::new(livekit_code(&error), message),
            ApiError::Signing(_) => Status::internal(message),
            ApiError::Store(_) => Status::unavailable(message),
            ApiError::Pruned { oldest, .. } => {
                let details = ErrorDetails::with_error_info(
                    "CURSOR_PRUNED",
                    ERROR_DOMAIN,
                    [("oldest_cursor".to_owned(), oldest.to_string())],
                );
                Status::with_error_details(Code::OutOfRange, message, details)
            }
            ApiError::FutureCursor { newest, .. } => {
                let details = ErrorDetails::with_error_info(
                    "CURSOR_IN_THE_FUTURE",
                    ERROR_DOMAIN,
                    [("newest_cursor".to_owned(), newest.to_string())],
                );
                Status::with_error_details(Code::OutOfRange, message, details)
            }
            ApiError::Banned { ban_id, until, .. } => {
                let details = ErrorDetails::with_error_info(
                    "BANNED",
                    ERROR_DOMAIN,
                    [
                        ("ban_id".to_owned(), ban_id),
                        // The end as a timestamp, or "lifted".
                        ("until".to_owned(), until.trim_start_matches("until ").to_owned()),
                    ],
                );
                Status::with_error_details(Code::PermissionDenied, message, details)
            }
            ApiError::NoSuchBan(_) | ApiError::NoSuchSession(_) => Status::not_found(message),
            ApiError::RateLimited { limit, rate, retry_after, .. } => {
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                details.set_error_info(
                    "RATE_LIMITED",
                    ERROR_DOMAIN,
                    [
                        ("limit".to_owned(), limit.setting().to_owned()),
                        ("rate".to_owned(), rate.to_string()),
                        ("retry_after".to_owned(), crate::limits::retry_text(retry_after)),
                    ],
                );
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::LimitsUnavailable(_) => Status::with_error_details(
                Code::Unavailable,
                message,
                ErrorDetails::with_retry_info(Some(crate::limits::RETRY_AFTER_FAILURE)),
            ),
            ApiError::Resume { code, resume, .. } => {
                let details = ErrorDetails::with_error_info(
                    "RESUME_FROM_CURSOR",
                    ERROR_DOMAIN,
                    [("resume_cursor".to_owned(), resume.to_string())],
                );
                Status::with_error_details(code, message, details)
            }
        }
    }
}

/// The gRPC code for a LiveKit failure.
pub(crate) fn livekit_code(error: &LiveKitError) -> Code {
    match error {
        LiveKitError::Twirp { code, .. } => twirp_code(code),
        LiveKitError::NotFound(_) => Code::NotFound,
        LiveKitError::Unreachable { .. } => Code::Unavailable,
        LiveKitError::Timeout { cause: TimeoutCause::Configured | TimeoutCause::CallerDeadline, .. } => {
            Code::DeadlineExceeded
        }
        // RoomControl's own credentials are wrong: this replica cannot serve
        // (readiness says so too); another replica may.
        LiveKitError::CredentialsRejected { .. } => Code::Unavailable,
        // Something between RoomControl and LiveKit failed; worth a retry.
        LiveKitError::NotTwirp { .. } => Code::Unavailable,
        LiveKitError::GrantRefused { .. } | LiveKitError::BadReply { .. } | LiveKitError::Signing(_) => Code::Internal,
        // An operator must add the egress service: retrying will not help.
        LiveKitError::NoEgressService { .. } => Code::FailedPrecondition,
        // Workers may free up or connect: worth a retry.
        LiveKitError::NoEgressWorker { .. } => Code::Unavailable,
    }
}

/// Twirp's error codes and their gRPC twins, by name.
fn twirp_code(code: &TwirpCode) -> Code {
    match code {
        TwirpCode::Canceled => Code::Cancelled,
        TwirpCode::Unknown => Code::Unknown,
        TwirpCode::InvalidArgument => Code::InvalidArgument,
        TwirpCode::OutOfRange => Code::OutOfRange,
        TwirpCode::DeadlineExceeded => Code::DeadlineExceeded,
        TwirpCode::NotFound => Code::NotFound,
        TwirpCode::AlreadyExists => Code::AlreadyExists,
        TwirpCode::PermissionDenied => Code::PermissionDenied,
        TwirpCode::Unauthenticated => Code::Unauthenticated,
        TwirpCode::ResourceExhausted => Code::ResourceExhausted,
        TwirpCode::FailedPrecondition => Code::FailedPrecondition,
        TwirpCode::Aborted => Code::Aborted,
        TwirpCode::Unimplemented | TwirpCode::BadRoute => Code::Unimplemented,
        TwirpCode::Internal => Code::Internal,
        TwirpCode::Unavailable => Code::Unavailable,
        TwirpCode::Dataloss => Code::DataLoss,
        // LiveKit could not read what RoomControl sent.
        TwirpCode::Malformed => Code::Internal,
        TwirpCode::Other(_) => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_twirp_code_has_its_grpc_twin() {
        let table = [
            ("canceled", Code::Cancelled),
            ("unknown", Code::Unknown),
            ("invalid_argument", Code::InvalidArgument),
            ("malformed", Code::Internal),
            ("deadline_exceeded", Code::DeadlineExceeded),
            ("not_found", Code::NotFound),
            ("bad_route", Code::Unimplemented),
            ("already_exists", Code::AlreadyExists),
            ("permission_denied", Code::PermissionDenied),
            ("unauthenticated", Code::Unauthenticated),
            ("resource_exhausted", Code::ResourceExhausted),
            ("failed_precondition", Code::FailedPrecondition),
            ("aborted", Code::Aborted),
            ("out_of_range", Code::OutOfRange),
            ("unimplemented", Code::Unimplemented),
            ("internal", Code::Internal),
            ("unavailable", Code::Unavailable),
            ("dataloss", Code::DataLoss),
            ("something_new", Code::Unknown),
        ];
        for (twirp, grpc) in table {
            let code = TwirpCode::parse(twirp);
            assert_eq!(code.as_str(), twirp, "the code round-trips");
            assert_eq!(twirp_code(&code), grpc, "{twirp}");
        }
    }

    #[test]
    fn rate_limited_calls_carry_retry_info_and_name_the_limit() {
        let rate = crate::limits::RateSetting::parse("10/min").unwrap().rate().unwrap();
        let error = ApiError::RateLimited {
            limit: Limit::SelfServiceTokens,
            rate,
            caller: "API key \"browser\"".to_owned(),
            retry_after: Duration::from_millis(4_160),
        };
        let status = Status::from(error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "rate limit limits.self_service_tokens (10/min) exceeded for API key \"browser\"; retry in 4.2s"
        );
        let details = status.get_error_details();
        assert_eq!(details.retry_info().unwrap().retry_delay, Some(Duration::from_millis(4_160)));
        let info = details.error_info().unwrap();
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("RATE_LIMITED", ERROR_DOMAIN));
        assert_eq!(info.metadata["limit"], "limits.self_service_tokens");
        assert_eq!(info.metadata["rate"], "10/min");
        assert_eq!(info.metadata["retry_after"], "4.2s");
    }

    #[test]
    fn invalid_arguments_carry_bad_request_details() {
        let mut violations = Violations::new();
        violations.room_name("name", "");
        let status = Status::from(ApiError::from(violations));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid request: name: must not be empty: give the room name");
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("a BadRequest detail");
        assert_eq!(bad_request.field_violations[0].field, "name");
    }
}
