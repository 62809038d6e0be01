//! Operations: what the daemon tells the world about itself: [`status`] (counters and
//! readiness), [`health`] (the HTTP endpoint), [`notify`] (sd_notify) and [`logging`].

pub(crate) mod health;
pub(crate) mod logging;
pub(crate) mod notify;
pub(crate) mod status;
