//! RoomControl's answers in NestJS's error shape: `{"statusCode",
//! "message", "error"}` with the HTTP status that matches the gRPC code.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use tonic::Code;
use tonic::body::Body;
use tonic_types::StatusExt;

use super::json::{ErrorJson, ErrorMessage};
use super::routes::Endpoint;
use crate::middleware::{BODY_TOO_LARGE, BODY_TOO_SLOW};

/// The HTTP status for a gRPC code (google.rpc.Code's own mapping, which
/// NestJS's exceptions follow).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // The client went away; nobody reads this.
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The answer to a failed call: the broken rules listed (with REST's field
/// names) for INVALID_ARGUMENT with a BadRequest detail, else the status's
/// message; `Retry-After` from a RetryInfo, `WWW-Authenticate` for 401; 413
/// and 408 for a body over the size limit or slower than its deadline.
pub fn from_status(endpoint: Endpoint, status: &tonic::Status) -> Response<Body> {
    let details = status.get_error_details();
    // The body's own limits have HTTP statuses of their own.
    let http = match details.error_info().map(|info| info.reason.as_str()) {
        Some(BODY_TOO_LARGE) => StatusCode::PAYLOAD_TOO_LARGE,
        Some(BODY_TOO_SLOW) => StatusCode::REQUEST_TIMEOUT,
        _ => http_status(status.code()),
    };
    let message = match details.bad_request() {
        Some(bad_request) if !bad_request.field_violations.is_empty() => ErrorMessage::Rules(
            bad_request
                .field_violations
                .iter()
                .map(|violation| {
                    if violation.field.is_empty() {
                        violation.description.clone()
                    } else {
                        format!("{}: {}", endpoint.field_name(&violation.field), violation.description)
                    }
                })
                .collect(),
        ),
        _ => ErrorMessage::Text(status.message().to_owned()),
    };
    let mut response = error(http, message);
    if http == StatusCode::TOO_MANY_REQUESTS {
        let delay = details.retry_info().and_then(|info| info.retry_delay).unwrap_or(Duration::from_secs(1));
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if http == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// One error answer in NestJS's shape.
pub fn error(status: StatusCode, message: ErrorMessage) -> Response<Body> {
    let body = ErrorJson {
        status_code: status.as_u16(),
        message,
        error: status.canonical_reason().unwrap_or("Error").to_owned(),
    };
    json(status, &body)
}

/// A JSON answer, as Express writes it.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    json_bytes(status, serde_json::to_vec(body).expect("the answer types serialize"))
}

/// Serialized JSON, as Express writes it.
pub fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::new(Full::new(Bytes::from(bytes))))
        .expect("a JSON answer is valid")
}

#[cfg(test)]
mod tests {
    use tonic_types::ErrorDetails;

    use super::*;

    async fn body_of(response: Response<Body>) -> serde_json::Value {
        use http_body_util::BodyExt;
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn broken_rules_become_a_list_in_rest_names() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("room", "must not be empty: give the room name");
        details.add_bad_request_violation("identity", "must be at most 256 bytes, got 300");
        let status = tonic::Status::with_error_details(Code::InvalidArgument, "invalid request: ...", details);
        let response = from_status(Endpoint::CreateToken, &status);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body_of(response).await,
            serde_json::json!({
                "statusCode": 400,
                "message": [
                    "roomName: must not be empty: give the room name",
                    "participantName: must be at most 256 bytes, got 300"
                ],
                "error": "Bad Request"
            })
        );
    }

    #[tokio::test]
    async fn refusals_keep_their_message_and_retry_hint() {
        let details = ErrorDetails::with_retry_info(Some(Duration::from_millis(1500)));
        let status = tonic::Status::with_error_details(Code::ResourceExhausted, "too many calls", details);
        let response = from_status(Endpoint::ListRooms, &status);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            body_of(response).await,
            serde_json::json!({"statusCode": 429, "message": "too many calls", "error": "Too Many Requests"})
        );
        let response = from_status(Endpoint::ListRooms, &tonic::Status::unauthenticated("no credential"));
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn every_code_has_its_http_status() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::Internal, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }
}
