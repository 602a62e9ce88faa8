//! RoomControl: a control plane for LiveKit.
//!
//! A request enters in [`server`] (one port: gRPC, grpc-web, health,
//! reflection), is handled in [`api`] after [`validate`] checked it, and
//! leaves for LiveKit through [`livekit`], the only module that talks to the
//! LiveKit server. [`error`] turns every failure into a gRPC status once.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod duration;
pub mod error;
pub mod health;
pub mod livekit;
pub mod metrics;
pub mod middleware;
pub mod proto;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod validate;

pub use config::Config;
pub use server::Application;
