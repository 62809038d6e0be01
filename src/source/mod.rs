//! The source: where process states come from. process-compose's REST client and model are
//! the library's (`pc_eventd_events::process_compose`, shared with the remediator); this folder
//! adds what only the daemon does: the `[process_compose]` settings, the state stream, and
//! reading a crashed process's last output (`[crash_output]`).

mod config;
mod output;
mod stream;

pub(crate) use config::ProcessComposeConfig;
pub use config::SourceMode;
pub(crate) use output::CrashOutputConfig;
pub use stream::StateFrame;
pub(crate) use stream::{Frames, Subscriptions};
