//! process-compose's REST API, for a consumer that acts on what it reads (the remediator
//! restarts a crashed process) and for the daemon's source: the client and process-compose's
//! model of a process. Behind the `process-compose` feature, so that a consumer that only reads
//! events does not build an HTTP client.
//!
//! The event contract ([`crate::event`]) does not depend on this model: the daemon converts
//! at its source's edge.

mod client;
pub mod model;

pub use client::{
    ComposeClient, ComposeError, Connection, Endpoint, MAX_RESPONSE_BYTES, TOKEN_HEADER,
    percent_encode,
};
