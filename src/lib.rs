//! plexsync: keeps a self-hosted TV tracker in step with what people watch on Plex.
//!
//! The library is the whole daemon; `main.rs` only parses the command line. See
//! ARCHITECTURE.md for the codemap and the invariants.

pub mod accounts;
pub mod admin;
pub mod alt_titles;
pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod export_board;
pub mod footprint;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod hostaddr;
pub mod http;
pub mod json;
pub mod logging;
pub mod matching;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod plex;
pub mod ratelimit;
pub mod registry;
pub mod secrets;
pub mod session;
pub mod settings;
pub mod sources;
pub mod state;
pub mod store;

/// Make sure the process-wide TLS provider is installed (reqwest is built without one).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
