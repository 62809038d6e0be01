//! Operations: what the daemon tells the world about itself: [`status`] (counters and
//! readiness), [`process_metrics`] (gauges of the processes), [`health`] (the HTTP endpoint), [`notify`] (sd_notify) and [`logging`].

pub(crate) mod health;
pub(crate) mod logging;
pub(crate) mod notify;
pub(crate) mod process_metrics;
pub(crate) mod status;
