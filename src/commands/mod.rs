//! The shipped consumers, each a command of the `pc-eventd` binary, each built on the library
//! crate `pc_eventd_events` alone, as a user's consumer would be.

pub mod alert;
pub mod dashboard;
pub mod remediate;
pub(crate) mod watch;
