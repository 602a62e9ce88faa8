//! RoomControl: a control plane for LiveKit.
//!
//! A request enters in [`server`] (one port: gRPC, grpc-web, health,
//! reflection), passes the [`middleware`] and [`auth`] layers, is admitted
//! and handled in [`api`] (the RPC's entry in the [`rpc`] registry, the
//! rules in [`validate`]), and leaves for LiveKit through [`livekit`], the
//! only module that talks to the LiveKit server. [`error`] turns every
//! failure into a gRPC status once. [`limits`] holds each caller to its
//! rate limits. [`rest`] serves the NestJS app's REST
//! routes by sending each through the same stack as an RPC. docs/architecture.md walks the path.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod bans;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod duration;
pub mod error;
pub mod events;
pub mod health;
pub mod history;
pub mod limits;
pub mod livekit;
pub mod metrics;
pub mod middleware;
pub mod proto;
pub mod recordings;
pub mod rest;
pub mod rpc;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod track_sources;
pub mod validate;

pub use config::Config;
pub use server::Application;
