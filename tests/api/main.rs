//! RoomControl's integration suite: the real server on an ephemeral port,
//! real sockets, generated gRPC, grpc-web and health clients, and the LiveKit
//! stand-in (or a real LiveKit server, see `support`).

mod support;

mod agents;
mod auth;
mod bans;
mod config;
mod connections;
mod console;
mod deploy;
mod errors;
mod events;
mod grpc_web;
mod health;
mod history;
mod limits;
mod operations;
mod participants;
mod process;
mod recordings;
mod replicas;
mod resilience;
mod rest;
mod rooms;
mod shutdown;
mod timeline;
mod tokens;
mod validation;
