//! Operations: what the daemon tells the world about itself: [`status`] (counters and
//! readiness), [`health`] (the HTTP endpoint), [`notify`] (sd_notify) and [`logging`].

pub mod health;
pub mod logging;
pub mod notify;
pub mod status;
