//! Punie: a coding agent server that editors and people attach to over the
//! Agent Client Protocol (ACP).
//!
//! `punie serve` runs the server ([`server`]); every client — the IDE bridge,
//! `punie ask`, the browser — is a thin WebSocket client of it. The server owns
//! all session state ([`session`]) and all model calls ([`model`]); [`acp`] is
//! the protocol glue between one client connection and those sessions.

pub mod acp;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod editors;
pub mod logging;
pub mod mcp;
pub mod model;
pub mod server;
pub mod session;
pub mod store;
pub mod text;
pub mod tools;
pub mod web;
pub mod workspace;

/// The version every part of Punie reports: `agentInfo`, `/health`, `server.json`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
