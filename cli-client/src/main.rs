//! `hush`: the command-line client of the hush end-to-end-encrypted messenger, for bots and
//! scripts. Built only on `hush-client-core`.
//!
//! - [`cli`]: the command line (clap).
//! - [`commands`]: the one-shot commands (`register`, `send`, `receive`, ...).
//! - [`group`]: `hush group ...`; [`devices`]: `hush devices ...`; [`link`]: `hush link` and
//!   `hush link-approve` (a device on another machine joins the account).
//! - [`daemon`]: `hush daemon`, JSON-RPC 2.0 with an at-least-once event stream.
//! - [`search`]: `hush search` and the daemon's `search` (the local history).
//! - [`exit`]: exit codes; [`output`]: JSON and text output; [`cursor`]: persistent positions.

mod cli;
mod commands;
mod cursor;
mod daemon;
mod devices;
mod exit;
mod group;
mod link;
mod output;
mod presence;
mod push;
mod search;
mod signals;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use hush_client_core::ClientConfig;
use serde_json::json;

use crate::cli::{Cli, Command};
use crate::commands::Ctx;
use crate::output::Printer;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let printer = Printer { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(printer, &anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    let result = runtime.block_on(run(cli));
    // A blocking read of stdin (daemon on stdio) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(printer, &e),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // `register` and `link` take the given server (or the default) and store it; every other
    // command uses the stored one unless --server says otherwise (an empty URL means "the stored one").
    let server = match (&cli.server, &cli.command) {
        (Some(url), _) => url.clone(),
        (None, Command::Register { .. } | Command::Link { .. }) => cli::DEFAULT_SERVER.to_owned(),
        (None, _) => String::new(),
    };
    let mut config = ClientConfig::new(cli.data_dir(), server);
    // Presence is announced by the commands that stay connected; `send`, `status`... only
    // connect for a moment.
    config.announce_presence = matches!(cli.command, Command::Receive { follow: true, .. } | Command::Daemon(_));
    let ctx = Ctx { config, printer: Printer { json: cli.json } };
    match cli.command {
        Command::Register { username } => commands::register(&ctx, &username).await,
        Command::Link { name } => link::link(&ctx, name.as_deref()).await,
        Command::LinkApprove { code, no_history, history_messages } => {
            let options =
                hush_client_core::LinkOptions { history: !no_history, messages_per_conversation: history_messages };
            link::approve(&ctx, &code, options).await
        }
        Command::Send { username, text, timeout } => {
            let text = commands::message_text(text)?;
            commands::send(&ctx, &username, &text, timeout.value).await
        }
        Command::Receive { follow, timeout } => commands::receive(&ctx, follow, timeout).await,
        Command::History { username, limit } => commands::history(&ctx, &username, limit).await,
        Command::Search { query, conversation, limit } => {
            search::run(&ctx, &query, hush_client_core::SearchOptions { conversation, limit }).await
        }
        Command::Contacts => commands::contacts(&ctx).await,
        Command::SafetyNumber { username } => commands::safety_number(&ctx, &username).await,
        Command::Trust { username } => commands::trust(&ctx, &username).await,
        Command::Status { timeout } => commands::status(&ctx, timeout.value).await,
        Command::Outbox { action } => commands::outbox(&ctx, action).await,
        Command::Group { action, timeout } => group::run(&ctx, action, timeout.value).await,
        Command::Devices { action } => devices::run(&ctx, action).await,
        Command::Push { action } => push::run(&ctx, action).await,
        Command::Presence { action } => presence::run(&ctx, action).await,
        Command::Daemon(args) => daemon::run(&ctx, args).await,
    }
}

/// Reports `e` on stderr (and as a JSON line on stdout with `--json`); returns its exit code.
fn fail(printer: Printer, e: &anyhow::Error) -> ExitCode {
    let kind = exit::error_kind(e);
    eprintln!("hush: error: {e:#}");
    if printer.json {
        let value =
            json!({ "error": { "kind": kind.name(), "message": format!("{e:#}"), "exit_code": kind.exit_code() } });
        println!("{value}");
    }
    ExitCode::from(kind.exit_code())
}

/// Logs to stderr: `HUSH_LOG` (default `warn`). libsignal is capped at `error` whatever is
/// asked: its `info` logs name contacts, and so do some of its `warn` logs (a failed decryption
/// attempt names the session's account, e.g. when both sides started a session at once).
fn init_logging() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HUSH_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let filter = match "libsignal_protocol=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
