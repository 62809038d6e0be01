//! The emulator's own log: stderr by default, or the file given with `-L`.
//!
//! Child processes' output does not go here: like process-compose without a
//! TUI, it is printed to stdout as `[name\t] line` (see `supervisor`).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

static SINK: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();
static TO_FILE: OnceLock<bool> = OnceLock::new();

/// Whether the log goes to a file (`-L`) rather than stderr.
pub fn to_file() -> bool {
    TO_FILE.get().copied().unwrap_or(false)
}

/// Sends the log to `path` (appending), or to stderr when `path` is `None`.
/// Call once, before anything is logged.
pub fn init(path: Option<&Path>) -> io::Result<()> {
    let sink: Box<dyn Write + Send> = match path {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Box::new(OpenOptions::new().create(true).append(true).open(path)?)
        }
        None => Box::new(io::stderr()),
    };
    // A second call keeps the first sink; that only happens in tests.
    let _ = TO_FILE.set(path.is_some());
    let _ = SINK.set(Mutex::new(sink));
    Ok(())
}

/// Writes one timestamped line. Errors writing the log are ignored.
pub fn write(level: &str, args: std::fmt::Arguments<'_>) {
    let now = chrono::Local::now().format("%y-%m-%d %H:%M:%S%.3f");
    let line = format!("{now} {level} {args}\n");
    match SINK.get() {
        Some(sink) => {
            let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
            let _ = sink.write_all(line.as_bytes());
            let _ = sink.flush();
        }
        // Unit tests never call `init`; keep their output quiet.
        None if cfg!(test) => {}
        None => {
            let _ = io::stderr().write_all(line.as_bytes());
        }
    }
}

/// `info!("...", args)`: an informational line in the emulator's log.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::logging::write("INF", format_args!($($arg)*)) };
}

/// `warn!("...", args)`: a warning line in the emulator's log.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::logging::write("WRN", format_args!($($arg)*)) };
}
