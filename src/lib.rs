//! pc-eventd: watches process-compose and publishes every process state change as a typed
//! lifecycle event on NATS JetStream.
//!
//! The pieces, from the edges in: [`config`] (layered settings), [`compose`] (the
//! process-compose REST client) and [`process`] (its data model), [`diff`] (the pure diff engine),
//! [`event`] (the published contract), [`outbox`] (events on disk until JetStream has them),
//! [`relay`] (outbox → JetStream), [`publish`] (JetStream), [`daemon`] (the loop that ties them
//! together), [`consumer`] (reading the events back: ephemeral tails and durable at-least-once
//! handlers, usable without the daemon), [`watch`] (the live viewer), [`remediate`] and [`alert`]
//! (consumers shipped as commands) and [`cli`].

#![forbid(unsafe_code)]

pub use pc_eventd_events::{consumer, event};

pub mod alert;
pub mod cli;
pub mod compose;
pub mod config;
pub mod daemon;
pub mod diff;
pub mod health;
pub mod logging;
pub mod notify;
pub mod outbox;
pub mod process;
pub mod relay;
pub mod remediate;
pub mod state;
pub mod status;
pub mod sync;
pub mod watch;
