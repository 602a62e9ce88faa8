//! Caller authentication and authorization.
//!
//! Credentials arrive as `authorization: Bearer ...` (gRPC and grpc-web
//! alike). A credential with two dots is a JWT from a configured identity
//! provider ([`jwt`]); anything else is an API key ([`api_keys`]). The
//! [`Authenticate`] layer turns a good credential into a [`Caller`] in the request's
//! extensions, or answers UNAUTHENTICATED itself; handlers then ask the
//! caller for a [`Scope`] and a room ([`Caller::authorize`]), which answers
//! PERMISSION_DENIED. Health and reflection need no credential.
//!
//! With no issuer and no API key configured every caller is anonymous and
//! may do everything: RoomControl then only serves on loopback, unless
//! `auth.allow_unauthenticated` says otherwise (`config` refuses anything
//! else, and [`Authenticate`] answers only requests addressed to a loopback
//! name).

mod api_keys;
mod authenticator;
mod caller;
mod jwt;
mod layer;
pub mod policy;

pub use api_keys::{hash_api_key, new_api_key};
pub use authenticator::{AuthFailure, Authenticator, Unauthenticated, check_config};
use caller::CallerKind;
pub use caller::{Caller, RoomPatterns, Scope};
pub use layer::Authenticate;
