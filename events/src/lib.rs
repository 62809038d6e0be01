//! The pc-eventd event contract and consumer library.
//!
//! pc-eventd publishes every process-compose state change as a typed lifecycle event on NATS
//! JetStream. This crate is what both sides speak: the events ([`event`]), the NATS settings and
//! the one way to connect ([`nats`]), and reading the events back ([`consumer`]): ephemeral
//! tails and durable at-least-once handlers. It has none of the daemon's dependencies.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod consumer;
pub mod event;
pub mod nats;
pub mod pattern;
#[cfg(feature = "process-compose")]
pub mod process_compose;
pub mod publish;
pub mod remediation;
pub mod retry;
