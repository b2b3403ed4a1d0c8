//! The command line: global options and one subcommand per action (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Default server URL.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 other error, 2 usage error, 3 network error (server unreachable or a wait \
timed out), 4 untrusted identity (a contact's key changed: compare safety numbers, then \
`hush trust`), 5 rate limited.

Data directory: --data-dir, else $HUSH_DATA_DIR, else $HOME/.local/share/hush, else ./hush-client. \
One data directory holds one account on one device; use it from one hush process at a time.
Logs go to stderr (HUSH_LOG=debug for more); message bodies are never logged.";

/// hush: end-to-end-encrypted messaging from the command line, for people, bots and scripts.
#[derive(Debug, Parser)]
#[command(name = "hush", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Base URL of the hushd server.
    #[arg(long, global = true, env = "HUSH_SERVER", value_name = "URL", default_value = DEFAULT_SERVER)]
    pub server: String,

    /// Directory of this device's account and messages
    /// [default: $HOME/.local/share/hush, or ./hush-client without HOME].
    #[arg(long, global = true, env = "HUSH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Print one JSON object per line on stdout instead of text (errors too, as {"error": ...}).
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account named USERNAME on the server, stored in the data directory.
    Register {
        /// The username to take (unique on the server).
        username: String,
    },
    /// Send a text message and wait until the server has stored it.
    Send {
        /// Who to write to.
        username: String,
        /// The text; `-` reads it from stdin (one trailing newline is dropped).
        text: String,
        /// How long to wait for the server to accept the message.
        #[command(flatten)]
        timeout: TimeoutArg,
    },
    /// Fetch new messages and print each one (at least once: a crash may repeat, never lose).
    Receive {
        /// Keep listening and print messages as they arrive, until SIGINT/SIGTERM or --timeout.
        #[arg(long)]
        follow: bool,
        /// Seconds to wait for the mailbox to drain (default 30), or with --follow how long to
        /// listen (default: until interrupted).
        #[arg(long, value_name = "SECONDS", value_parser = parse_secs)]
        timeout: Option<Duration>,
    },
    /// Print the conversation with USERNAME from the local store, oldest first.
    History {
        /// The other party.
        username: String,
        /// How many of the latest messages to print.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// List everyone this account has exchanged messages with, and whether their key is trusted.
    Contacts,
    /// Print the safety number shared with USERNAME (compare it with theirs out of band).
    SafetyNumber {
        /// The other party.
        username: String,
    },
    /// Trust USERNAME's current identity key after it changed (unblocks sending to them).
    Trust {
        /// The other party.
        username: String,
    },
    /// Show the account, check that the server is reachable, and count the outbox.
    Status {
        /// How long to try to reach the server.
        #[command(flatten)]
        timeout: TimeoutArg,
    },
    /// Serve JSON-RPC 2.0 (one JSON object per line) on stdio, or on a Unix socket.
    ///
    /// Methods: send, history, contacts, safety_number, trust, status, mark_read, typing, retry,
    /// subscribe, ack, unsubscribe. Message events are numbered and replayed after a restart
    /// until acknowledged. See the README, "Using the hush CLI".
    Daemon(DaemonArgs),
}

/// `--timeout SECONDS` with a default of 30.
#[derive(Debug, Clone, Copy, Args)]
pub struct TimeoutArg {
    /// Seconds to wait before giving up (exit code 3).
    #[arg(long = "timeout", value_name = "SECONDS", default_value = "30", value_parser = parse_secs)]
    pub value: Duration,
}

/// Options of `hush daemon`.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Listen on this Unix socket (several clients at once) instead of stdin/stdout. A stale
    /// socket file is replaced; the file is removed on exit.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Parses a number of seconds (fractions allowed) into a duration.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a valid number of seconds"))
}

impl Cli {
    /// The data directory: the flag or env, else `$HOME/.local/share/hush`, else `./hush-client`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/share/hush"),
            None => PathBuf::from("hush-client"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_parse_with_fractions_and_reject_garbage() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
