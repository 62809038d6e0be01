//! pc-eventd, the daemon: watches process-compose and publishes every process state change as a
//! typed lifecycle event on NATS JetStream, and the commands that read them back.
//!
//! The folders follow the data (docs/architecture.md is the map): [`source`] (process-compose's
//! state stream and polling) → [`diff`] (the pure diff engine) → [`delivery`] (the outbox, the
//! relay to JetStream, the last-state records), tied together by [`daemon`]; [`ops`] (status,
//! health, sd_notify, logging) and [`config`] beside them; [`commands`] holds the shipped
//! consumers (`watch`, `remediate`, `alert`), built on the library crate `pc_eventd_events` only;
//! [`cli`] is the command line.

#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod diff;
pub mod ops;
pub mod source;
mod sync;
