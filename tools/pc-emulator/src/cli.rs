//! The command line, shaped like process-compose's (`up` is optional).

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand};

use crate::version::Version;

const ABOUT: &str = "pc-emulator: an EMULATOR of process-compose's REST API (not process-compose)";

const LONG_ABOUT: &str = "\
pc-emulator: an EMULATOR of process-compose's REST API. It is NOT process-compose.

It reads a process-compose project file (a subset of its YAML), runs every process \
as a real child with `bash -c`, and serves the REST API and the /process/states/ws \
WebSocket state stream of process-compose v1.122.0 (same routes, JSON shapes, frames, \
errors and state-machine timing) so that tests can run where the real binary cannot \
be installed. --emulate-version makes it look like an older release (e.g. v1.103.0, \
which has no state stream). There is no TUI, no log stream, no depends_on, no \
replicas and no daemons. See tools/pc-emulator/README.md.";

#[derive(Debug, Parser)]
#[command(name = "pc-emulator", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Sub>,

    /// Path to the project file; repeat to merge several (later ones replace
    /// processes of the same name). Default: compose.yml, compose.yaml,
    /// process-compose.yml or process-compose.yaml in the current directory
    #[arg(short = 'f', long = "config", global = true, value_name = "FILE")]
    pub config: Vec<PathBuf>,

    /// Accepted for compatibility (-t=false, --tui=false, -t false); the emulator never has a TUI
    #[arg(
        short = 't',
        long = "tui",
        global = true,
        num_args = 0..=1,
        require_equals = false,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub tui: Option<bool>,

    /// TCP port of the API
    #[arg(
        short = 'p',
        long = "port",
        global = true,
        env = "PC_PORT_NUM",
        default_value_t = 8080
    )]
    pub port: u16,

    /// Address the API listens on ("localhost" means 127.0.0.1)
    #[arg(
        long = "address",
        global = true,
        env = "PC_ADDRESS",
        default_value = "localhost"
    )]
    pub address: String,

    /// Listen on a unix domain socket instead of TCP
    #[arg(short = 'U', long = "use-uds", global = true)]
    pub use_uds: bool,

    /// Path of the unix socket (implies --use-uds). Default: $TMPDIR/process-compose-<pid>.sock
    #[arg(
        short = 'u',
        long = "unix-socket",
        global = true,
        env = "PC_SOCKET_PATH",
        value_name = "PATH"
    )]
    pub unix_socket: Option<PathBuf>,

    /// Write the emulator's own log to this file instead of stderr
    #[arg(
        short = 'L',
        long = "log-file",
        global = true,
        env = "PC_LOG_FILE",
        value_name = "FILE"
    )]
    pub log_file: Option<PathBuf>,

    /// Keep running after every process has ended (process-compose exits then)
    #[arg(long = "keep-project", global = true)]
    pub keep_project: bool,

    /// File holding the API token (used when PC_API_TOKEN is not set)
    #[arg(
        long = "token-file",
        global = true,
        env = "PC_API_TOKEN_PATH",
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,

    /// Behave like this process-compose release. Below v1.110.0 there is no
    /// /process/states/ws route (404) and ProcessState has no
    /// process_*_time / last_activity_time keys; below v1.116.0 no
    /// success_exit_codes
    #[arg(
        long = "emulate-version",
        global = true,
        env = "PC_EMULATOR_VERSION",
        default_value_t = Version::DEFAULT,
        value_parser = clap::value_parser!(Version),
        value_name = "vX.Y.Z"
    )]
    pub emulate_version: Version,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Run the project (the default when no subcommand is given)
    Up {
        /// Start only these processes; the others stay Pending
        processes: Vec<String>,
    },
}

impl Cli {
    /// The processes named after `up`, if any.
    pub fn only(&self) -> &[String] {
        match &self.command {
            Some(Sub::Up { processes }) => processes,
            None => &[],
        }
    }

    /// The unix socket to listen on, or `None` for TCP.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match (&self.unix_socket, self.use_uds) {
            (Some(path), _) => Some(path.clone()),
            (None, true) => Some(
                std::env::temp_dir().join(format!("process-compose-{}.sock", std::process::id())),
            ),
            (None, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("pc-emulator").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn accepts_process_compose_style_command_lines() {
        let cli = parse(&["up", "-f", "p.yaml", "-t=false", "-p", "9000"]);
        assert_eq!(cli.config, vec![PathBuf::from("p.yaml")]);
        assert_eq!(cli.tui, Some(false));
        assert_eq!(cli.port, 9000);
        assert!(cli.only().is_empty());

        let cli = parse(&["-f", "p.yaml", "--tui=false", "--port", "9001"]);
        assert_eq!(cli.tui, Some(false));
        assert_eq!(cli.port, 9001);
        assert!(cli.command.is_none());

        let cli = parse(&["up", "-t", "false", "-f", "p.yaml"]);
        assert_eq!(cli.tui, Some(false));

        let cli = parse(&["up", "web", "-f", "p.yaml", "-t"]);
        assert_eq!(cli.tui, Some(true));
        assert_eq!(cli.only(), ["web".to_owned()]);

        let cli = parse(&[
            "up",
            "-f",
            "p.yaml",
            "-U",
            "-u",
            "/tmp/x.sock",
            "-L",
            "/tmp/l",
        ]);
        assert_eq!(cli.socket_path(), Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(cli.log_file, Some(PathBuf::from("/tmp/l")));

        let cli = parse(&["up", "-f", "p.yaml", "-U"]);
        assert!(cli.socket_path().is_some());
        assert_eq!(cli.emulate_version, Version::DEFAULT);

        let cli = parse(&["up", "-f", "p.yaml", "--emulate-version", "v1.103.0"]);
        assert_eq!(cli.emulate_version, Version::new(1, 103, 0));
        assert!(
            Cli::try_parse_from(["pc-emulator", "--emulate-version", "latest"]).is_err(),
            "a bad version is a usage error"
        );
    }
}
