//! The command line: global options and one subcommand per action (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Default server URL.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 other error (also: message too long, data directory in use), 2 usage error, \
3 network error (server unreachable or a wait timed out), 4 untrusted identity (a contact's key \
changed: compare safety numbers, then `hush trust`), 5 rate limited, 6 a recipient's mailbox is full \
(the message stays queued).

Message size: the server takes at most 96 KiB per device envelope and 256 KiB per send across all \
devices of the recipient and your own other devices, so the longest text (a bit under 92 KiB with \
one device each) shrinks as devices are added; `hush send` refuses a longer one before queuing it.

Data directory: --data-dir, else $HUSH_DATA_DIR, else $HOME/.local/share/hush, else ./hush-client. \
One data directory holds one account on one device; one hush process at a time may use it (a \
second one is refused, naming the first one's pid). `register` and `link` remember the server, \
so later commands need no --server.
Logs go to stderr (HUSH_LOG=debug for more); message bodies are never logged.";

/// hush: end-to-end-encrypted messaging from the command line, for people, bots and scripts.
#[derive(Debug, Parser)]
#[command(name = "hush", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Base URL of the hushd server, e.g. http://127.0.0.1:7878 [default: the one given at
    /// `register` or `link`; for those two: http://127.0.0.1:7878].
    #[arg(long, global = true, env = "HUSH_SERVER", value_name = "URL", value_parser = parse_server_url)]
    pub server: Option<String>,

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
    /// Link this machine to an existing account as a new device (approved on its primary
    /// device with `hush link-approve`).
    ///
    /// Prints a link code (as text, as a hush://link URI and as a QR code of the URI), then
    /// waits until the account's primary device approves it, registers this machine as a new
    /// device of that account in the data directory (which must not hold an account yet) and
    /// prints the account and the new device id. The code works for 10 minutes (unless the
    /// server is set otherwise); an account has at most 6 devices. Unless the primary approves
    /// with --no-history, the new device gets the recent history (the newest messages of every
    /// conversation, contacts with their trust, groups) in an end-to-end-encrypted archive the
    /// server deletes once fetched. With --json: a {"event":"link_code",...} line at once, then a
    /// {"event":"linked",...} line. Like `register`, it remembers the server.
    Link {
        /// A name for this device in the account's device list, e.g. "laptop".
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Approve a new device's link code (from `hush link` on that machine), on the primary device.
    ///
    /// The new device gets this account's identity key, sealed to the key in the code (the
    /// server sees only ciphertext), and joins the account. Only the primary device (1) may
    /// approve; a code works once, and only while its `hush link` is still waiting.
    LinkApprove {
        /// The code `hush link` printed: its text form (<address>.<key>) or its hush://link URI.
        /// (A code may start with `-`: it is still the code, not an option.)
        #[arg(allow_hyphen_values = true)]
        code: String,
        /// Send the new device no history (by default it gets the newest messages of every
        /// conversation, contacts with their trust and groups, end-to-end encrypted).
        #[arg(long)]
        no_history: bool,
        /// How many of the newest messages of each conversation the history carries.
        #[arg(long, value_name = "N", default_value_t = 500)]
        history_messages: usize,
    },
    /// Send a text message (to USERNAME, or to a group: group:<uuid>) and wait until the server
    /// has stored it.
    ///
    /// The server takes at most 96 KiB per device envelope and 256 KiB per send across all of
    /// the recipient's devices and your own other devices; a longer text is refused before it
    /// is queued, and the error names the longest text for the current devices.
    Send {
        /// Who to write to: a username, or group:<uuid> (see `hush group list`).
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
    /// Print the conversation with USERNAME (or group:<uuid>) from the local store, oldest first.
    History {
        /// The other party, or group:<uuid>.
        username: String,
        /// How many of the latest messages to print.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Search the local history for messages containing QUERY, best matches first.
    ///
    /// Finds text messages of every conversation (one-to-one and groups) that contain QUERY
    /// anywhere, ignoring case: words, parts of words, emoji, Chinese, Japanese or Korean text.
    /// QUERY is taken literally (quotes, `*`, `OR` are plain characters). Hits with more and
    /// denser matches come first, then newer ones; a query of one or two characters scans
    /// every message and lists the newest first. Nothing is sent to the server. Each line is
    /// the message as `hush history` prints it, with the matches marked; with --json also
    /// `matches` (byte ranges of `body`) and `newer` (messages after it in its conversation:
    /// `hush history CONVERSATION --limit <newer + 1>` starts with it).
    Search {
        /// The text to find.
        query: String,
        /// Only in the conversation with this username, or in this group (group:<uuid>).
        #[arg(long, value_name = "USERNAME|GROUP")]
        conversation: Option<String>,
        /// How many hits to print at most.
        #[arg(long, value_name = "N", default_value_t = hush_client_core::DEFAULT_SEARCH_LIMIT)]
        limit: usize,
    },
    /// List everyone this account has exchanged messages with, whether their key is trusted,
    /// and their presence as this device last saw it (online, or last seen within an hour;
    /// live while `hush receive --follow` or the daemon runs, which hold the account).
    Contacts,
    /// Share your presence with your one-to-one contacts (on, the default) or not (off: then
    /// you see no one's either); without an action, show the setting.
    ///
    /// While `hush receive --follow` or the daemon is connected, contacts see you online and
    /// you see them (`presence` events); after a clean stop they see "last seen" at the
    /// granularity of an hour. Presence is end-to-end encrypted and never stored by the server.
    Presence {
        /// What to do; without one, show the setting.
        #[command(subcommand)]
        action: Option<PresenceAction>,
    },
    /// Print the safety number shared with USERNAME (compare it with theirs out of band).
    SafetyNumber {
        /// The other party.
        username: String,
    },
    /// Trust USERNAME's current identity key after it changed (unblocks sending to them).
    ///
    /// Your other devices trust it too if it is the key they know for USERNAME; they are told
    /// at once when the server is reachable, else when this device next connects.
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
    /// List the messages waiting in the outbox (pending and failed), or act on one.
    Outbox {
        /// What to do; without one, list.
        #[command(subcommand)]
        action: Option<OutboxAction>,
    },
    /// Groups: create one, change its roster, list them, accept or decline invites.
    ///
    /// A group is named group:<uuid> (`hush group list` shows them); write to it with
    /// `hush send group:<uuid> TEXT` and read it with `hush receive` / `hush history group:<uuid>`.
    /// Roster changes show in the conversation ("alice added bob"). Someone who is not a
    /// contact adding you makes an invite, hidden until `hush group accept`.
    Group {
        /// What to do.
        #[command(subcommand)]
        action: GroupAction,
        /// How long to wait for the server (and for this device's key to reach new members).
        #[command(flatten)]
        timeout: GroupTimeout,
    },
    /// The devices of this account (at most 6): list them (this one marked), remove one,
    /// or name this one.
    ///
    /// Every device gets every message, shows what the others sent, and follows their read
    /// and trust decisions. The primary device (1) may remove any other device; any device
    /// may remove itself, and then stops for good (its data directory can be deleted).
    Devices {
        /// What to do; without one, list.
        #[command(subcommand)]
        action: Option<DevicesAction>,
    },
    /// Wake-ups for this device while it is offline (UnifiedPush, FCM, APNs).
    Push {
        /// What to do.
        #[command(subcommand)]
        action: PushAction,
    },
    /// Serve JSON-RPC 2.0 (one JSON object per line) on stdio, or on a Unix socket.
    ///
    /// Methods: send, history, search, contacts, safety_number, trust, status, mark_read, unread,
    /// typing, presence, presence_sharing, outbox, retry, cancel, subscribe, ack, unsubscribe,
    /// devices, device_remove, device_rename, link_approve, push_register, push_status, push_remove, group_create, group_add,
    /// group_remove, group_leave, group_role, group_title, group_list, group_invites,
    /// group_info, group_accept, group_decline. The daemon reconnects by itself
    /// (connection events and `status` say how it stands), except after this device was
    /// removed or a copy of it connected from elsewhere. Message events are numbered and replayed after a restart
    /// until acknowledged. See the README, "Using the hush CLI".
    Daemon(DaemonArgs),
}

/// What `hush presence` does.
#[derive(Debug, Subcommand)]
pub enum PresenceAction {
    /// Share your presence (and see your contacts').
    On,
    /// Stop sharing: contacts are told to forget it (at the next connection if offline now),
    /// and you see no one's presence.
    Off,
    /// Show the setting (the default).
    Status,
}

/// What `hush devices` does.
#[derive(Debug, Subcommand)]
pub enum DevicesAction {
    /// List the account's devices: id, name, when added, when last seen; this one is marked
    /// (the default).
    List,
    /// Remove device ID from the account (from the primary device, any other one; from any
    /// device, itself). A removed device gets nothing more, and correspondents stop
    /// encrypting for it on their next message.
    Remove {
        /// The device id (from `hush devices`).
        id: u32,
    },
    /// Name this device (other devices see the name in `hush devices`); an empty NAME clears it.
    Rename {
        /// The new name, e.g. "laptop".
        name: String,
    },
}

/// What `hush push` does.
#[derive(Debug, Subcommand)]
pub enum PushAction {
    /// Have the server wake this device while it is offline (exactly one kind of target;
    /// a new one replaces the old). A wake-up carries no content, no sender, no conversation.
    Register {
        /// A UnifiedPush (or webhook) endpoint URL; https (hushd refuses private and loopback
        /// addresses unless its operator allows them).
        #[arg(long, conflicts_with_all = ["fcm", "apns"])]
        unifiedpush: Option<String>,
        /// An FCM registration token.
        #[arg(long, conflicts_with = "apns")]
        fcm: Option<String>,
        /// An APNs device token (hex); needs --topic.
        #[arg(long, requires = "topic")]
        apns: Option<String>,
        /// The app's bundle id, for --apns.
        #[arg(long)]
        topic: Option<String>,
        /// The APNs token is from a development build (Apple's sandbox).
        #[arg(long)]
        sandbox: bool,
    },
    /// Show this device's push target.
    Status,
    /// Stop wake-ups for this device.
    Remove,
}

/// What `hush group` does.
#[derive(Debug, Subcommand)]
pub enum GroupAction {
    /// Create a group titled TITLE with MEMBERS (usernames); you become its owner.
    Create {
        /// The title (encrypted: the server cannot read it).
        title: String,
        /// The first members.
        members: Vec<String>,
    },
    /// Add MEMBERS to GROUP (admins and owners, or anyone when the group allows it).
    Add {
        /// group:<uuid>.
        group: String,
        /// Usernames to add.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Remove MEMBER from GROUP (admins and owners); the others make new keys before they write
    /// again, so MEMBER reads nothing sent afterwards.
    Remove {
        /// group:<uuid>.
        group: String,
        /// The username to remove.
        member: String,
    },
    /// Leave GROUP (an owner must first make another member owner).
    Leave {
        /// group:<uuid>.
        group: String,
    },
    /// Let members of GROUP add others (`on`), or only admins and owners (`off`; the default).
    MembersCanAdd {
        /// group:<uuid>.
        group: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        setting: String,
    },
    /// Delete GROUP for every member (owners only); their devices are told it was deleted.
    Delete {
        /// group:<uuid>.
        group: String,
    },
    /// Give MEMBER of GROUP the role ROLE (owners only).
    Role {
        /// group:<uuid>.
        group: String,
        /// The username.
        member: String,
        /// owner, admin or member.
        #[arg(value_parser = ["owner", "admin", "member"])]
        role: String,
    },
    /// Change GROUP's title (admins and owners).
    Title {
        /// group:<uuid>.
        group: String,
        /// The new title.
        title: String,
    },
    /// List your groups and open invites.
    List,
    /// Show GROUP: title, members and roles, your standing.
    Info {
        /// group:<uuid>.
        group: String,
    },
    /// Accept the invite to GROUP: it appears, with what arrived meanwhile.
    Accept {
        /// group:<uuid>.
        group: String,
    },
    /// Decline the invite to GROUP: you leave it.
    Decline {
        /// group:<uuid>.
        group: String,
    },
}

/// What `hush outbox` does.
#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// List pending and failed messages (the default).
    List,
    /// Drop a pending or failed message: it is never sent, and shows as failed ("cancelled").
    Cancel {
        /// The message id (from `hush outbox` or `hush send`).
        id: String,
    },
    /// Queue a failed message again, or send a pending one now instead of after its backoff.
    Retry {
        /// The message id.
        id: String,
    },
}

/// `--timeout SECONDS` with a default of 30.
#[derive(Debug, Clone, Copy, Args)]
pub struct TimeoutArg {
    /// Seconds to wait before giving up (exit code 3).
    #[arg(long = "timeout", value_name = "SECONDS", default_value = "30", value_parser = parse_secs)]
    pub value: Duration,
}

/// `--timeout SECONDS` (default 30) anywhere after `hush group`.
#[derive(Debug, Clone, Copy, Args)]
pub struct GroupTimeout {
    /// Seconds to wait for the server before giving up (exit code 3).
    #[arg(long = "timeout", value_name = "SECONDS", default_value = "30", value_parser = parse_secs, global = true)]
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

/// Checks a server URL: `http://` or `https://`, then a host.
fn parse_server_url(s: &str) -> Result<String, String> {
    let url = s.trim().trim_end_matches('/');
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(url.to_owned()),
        Some(_) => Err(format!("{s:?} has no host; write it like http://127.0.0.1:7878")),
        None if url.contains("://") => Err(format!("{s:?}: only http:// and https:// servers are supported")),
        None => Err(format!("{s:?} has no scheme; did you mean http://{url} ?")),
    }
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

    /// Regression: a link code is base64url, so one in 64 starts with `-`, and clap took it
    /// for an option (`unexpected argument '-4'`).
    #[test]
    fn a_link_code_starting_with_a_hyphen_is_the_code() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["hush", "link-approve", "-4Ab_c.xYz-1"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(cli.command, Command::LinkApprove { ref code, .. } if code == "-4Ab_c.xYz-1"),
            "{:?}",
            cli.command
        );
        let cli = Cli::try_parse_from(["hush", "link-approve", "-4Ab_c.xYz-1", "--no-history"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.command, Command::LinkApprove { no_history: true, .. }));
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_server_url_without_a_scheme_is_refused_with_a_hint() {
        assert_eq!(parse_server_url("http://127.0.0.1:7878/"), Ok("http://127.0.0.1:7878".into()));
        assert_eq!(parse_server_url("https://hush.example"), Ok("https://hush.example".into()));
        let e = parse_server_url("127.0.0.1:7878").err().unwrap_or_default();
        assert!(e.contains("did you mean http://127.0.0.1:7878"), "{e}");
        assert!(parse_server_url("ws://x").is_err());
        assert!(parse_server_url("http://").is_err());
    }

    #[test]
    fn seconds_parse_with_fractions_and_reject_garbage() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
