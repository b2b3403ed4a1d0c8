//! `hushd`: run the hush relay server. See `hushd --help`.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use base64::Engine;
use clap::Parser;
use hush_server::config::{Args, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs go to stderr; stdout carries only the two start-up lines scripts read.
    // libsignal logs contact addresses at info, so it is kept at warn.
    let filter = EnvFilter::try_from_env("HUSHD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,libsignal_protocol=warn,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = Config::from_args(args).context("invalid configuration")?;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "file-descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file-descriptor limit"),
    }
    let running = hush_server::serve::start(config).await.context("hushd could not start")?;
    // Listen for the shutdown signals before saying we listen: a SIGTERM sent as soon as the
    // start-up lines appear (tests do) killed the process when the handler came later.
    let signals = shutdown_signals();
    let trust_root = base64::engine::general_purpose::STANDARD.encode(&running.trust_root);
    // A closed stdout (the starting script went away) must not stop the server.
    if let Err(e) = announce(running.addr, &trust_root) {
        tracing::warn!(error = %e, "cannot print the start-up lines to stdout");
    }

    let token = running.shutdown_token();
    tokio::spawn(async move {
        signals.await;
        tracing::info!("shutting down: closing connections and finishing pending writes");
        token.cancel();
    });
    running.wait().await;
    Ok(())
}

fn announce(addr: std::net::SocketAddr, trust_root: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "hushd listening on {addr}")?;
    writeln!(out, "trust root: {trust_root}")?;
    out.flush()
}

/// SIGTERM or SIGINT (Ctrl-C), their handlers installed now; the future ends at the first.
#[cfg(unix)]
fn shutdown_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                one.recv().await;
            }
            (Err(_), Err(_)) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signals() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
