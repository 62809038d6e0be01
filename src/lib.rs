//! pc-eventd, the daemon: watches process-compose and publishes every process state change as a
//! typed lifecycle event on NATS JetStream, and the commands that read them back.
//!
//! The folders follow the data (docs/architecture.md is the map): `source` (process-compose's
//! state stream and polling) → `diff` (the pure diff engine) → `delivery` (the outbox, the
//! relay to JetStream, the last-state records), tied together by `daemon`; `ops` (status,
//! health, sd_notify, logging) and `config` beside them; `commands` holds the shipped
//! consumers (`watch`, `remediate`, `alert`), built on the library crate `pc_eventd_events` only;
//! `cli` is the command line.
//!
//! The modules are private: what is public here is what the binary, the integration tests,
//! the benchmark and the fuzz targets use. A consumer of the events depends on
//! `pc_eventd_events`, not on this crate.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod config;
mod daemon;
mod delivery;
mod diff;
mod http;
mod ops;
mod source;
mod sync;
mod units;

// The command line.
pub use cli::{Cli, main};
// The daemon, from its configuration through each stage.
pub use config::{Config, OutboxConfig};
pub use daemon::{ConfigLoader, Control, Daemon, DaemonError};
pub use delivery::outbox::{LossMarker, Outbox};
pub use delivery::records::StateStore;
pub use delivery::relay::Relay;
pub use diff::{DiffContext, ProcessSettings, Snapshot, diff, diff_one};
pub use ops::status::{KindLabel, ModeLabel, Status};
pub use source::{SourceMode, StateFrame};
// The shipped consumers.
pub use commands::watch::format_line;
pub use commands::{alert, remediate};
