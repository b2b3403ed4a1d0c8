//! A minimal hush client on `hush-client-core`.
//!
//! ```text
//! cargo run -p hush-client-core --example chat -- register DIR SERVER_URL USERNAME
//! cargo run -p hush-client-core --example chat -- send DIR SERVER_URL TO TEXT...
//! cargo run -p hush-client-core --example chat -- listen DIR SERVER_URL
//! cargo run -p hush-client-core --example chat -- safety DIR SERVER_URL PEER
//! ```
//!
//! `send` queues the message, then connects, sends the whole outbox, receives what is waiting,
//! and exits. `listen` stays online and prints every event until Ctrl-C.

use std::time::Duration;

use hush_client_core::{Client, ClientConfig, ClientError, Event, LOG_FILTER_QUIET_LIBSIGNAL};

const USAGE: &str =
    "usage: chat register DIR URL USERNAME | send DIR URL TO TEXT... | listen DIR URL | safety DIR URL PEER";

#[tokio::main]
async fn main() {
    // libsignal names contacts in its info logs: keep it at warn.
    let filter = format!("warn,{LOG_FILTER_QUIET_LIBSIGNAL}");
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &[String]) -> Result<(), ClientError> {
    let [command, dir, url, rest @ ..] = args else {
        return Err(ClientError::Invalid(USAGE.into()));
    };
    let config = ClientConfig::new(dir, url);
    match (command.as_str(), rest) {
        ("register", [username]) => {
            let client = Client::register(config, username).await?;
            let status = client.status().await?;
            println!("registered {} (account {}, device {})", status.username, status.account_id, status.device_id);
            client.shutdown().await
        }
        ("send", [to, text @ ..]) if !text.is_empty() => {
            let client = Client::open(config).await?;
            let mut events = client.events();
            let id = client.send_text(to, &text.join(" ")).await?;
            client.run_until_queue_empty(Duration::from_secs(30)).await?;
            while let Some(event) = events.try_recv() {
                print_event(&event);
            }
            println!("queued and sent {id}");
            client.shutdown().await
        }
        ("listen", []) => {
            let client = Client::open(config).await?;
            let mut events = client.events();
            client.connect().await?;
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(event) => print_event(&event),
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            client.shutdown().await
        }
        ("safety", [peer]) => {
            let client = Client::open(config).await?;
            println!("{}", client.safety_number(peer).await?);
            client.shutdown().await
        }
        _ => Err(ClientError::Invalid(USAGE.into())),
    }
}

fn print_event(event: &Event) {
    match event {
        Event::Message(m) => println!("[{}] {}: {}", m.conversation, m.from, m.body),
        Event::Receipt(r) => println!("{:?} receipt from {} for {} message(s)", r.kind, r.from, r.message_ids.len()),
        Event::Typing { from, typing, .. } => {
            println!("{from} {}", if *typing { "is typing" } else { "stopped typing" })
        }
        Event::IdentityChanged { username } => {
            println!("the safety number with {username} changed; compare it, then trust the new key")
        }
        Event::SendFailed { to, reason, .. } => println!("a message to {to} failed: {reason}"),
        Event::RateLimited { to, retry_after_ms, .. } => {
            println!("sending to {to} is rate-limited; retrying in {retry_after_ms} ms")
        }
        Event::SendDelayed { to, reason, retry_in_ms, .. } => {
            println!("a message to {to} waits ({reason}); retrying in {retry_in_ms} ms")
        }
        Event::Connection(hush_client_core::ConnectionState::Stopped(why)) => println!("offline: {why}"),
        Event::DecryptionFailed { from, retry_requested, .. } => {
            let then = if *retry_requested { "; asked them to send it again" } else { "" };
            println!("a message from {from} could not be decrypted{then}")
        }
        Event::GroupInvite { group, from } => println!("{from} invited you to {group}"),
        _ => {}
    }
}
