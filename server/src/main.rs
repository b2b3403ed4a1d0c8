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
    let trust_root = base64::engine::general_purpose::STANDARD.encode(&running.trust_root);
    // A closed stdout (the starting script went away) must not stop the server.
    if let Err(e) = announce(running.addr, &trust_root) {
        tracing::warn!(error = %e, "cannot print the start-up lines to stdout");
    }

    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
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

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
