//! `hush-bench`: measures hushd the way operators judge a relay. Every
//! sub-command prints its figures as its last line, `key=value` pairs
//! separated by spaces, so runs can be compared by scripts. A lost or
//! duplicated envelope makes the exit status non-zero.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

mod client;
mod crash;
mod fanout;
mod scenarios;
mod search;
mod storm;
mod target;

use target::Target;

#[derive(Parser)]
#[command(name = "hush-bench", version, about = "Load-test hushd: idle memory, throughput, latency, drain")]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct TargetArgs {
    /// Start a fresh release hushd (SQLite in a temp dir) next to this binary.
    #[arg(long, conflicts_with = "server")]
    spawn: bool,
    /// URL of a running hushd (repeat for several nodes; connections are spread over them).
    #[arg(long)]
    server: Vec<String>,
    /// Pid of that hushd, to read its CPU and memory (repeat to match --server).
    #[arg(long)]
    server_pid: Vec<u32>,
}

#[derive(Subcommand)]
enum Command {
    /// Hold N authenticated idle connections; report server memory per connection.
    Idle {
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
    },
    /// One-to-one messages between online pairs; throughput, latency, server CPU per message.
    Pairs {
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Messages per sender.
        #[arg(long, default_value_t = 2000)]
        messages: u32,
        /// Envelope size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Total messages per second (default: as fast as the server answers).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Queue N envelopes for an offline device, then time its drain.
    Drain {
        /// Envelopes to queue.
        #[arg(long, default_value_t = 10_000)]
        messages: u32,
        /// Envelope size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
    },
    /// Crash durability: pairs traffic while the spawned hushd is SIGKILLed and restarted;
    /// clients reconnect and resend unanswered sends. Reports acked, lost and duplicate
    /// counts; exits non-zero if an acknowledged message is lost. Needs --spawn.
    Crash {
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        /// Messages per sender.
        #[arg(long, default_value_t = 2000)]
        messages: u32,
        /// Envelope size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Total messages per second (keeps the run long enough for several crashes).
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Seconds between a (re)start of hushd and the next SIGKILL.
        #[arg(long, default_value_t = 2.0)]
        kill_every: f64,
    },
    /// Reconnect storm: N connected devices drop their sockets, get a small backlog each,
    /// and reconnect at once; time until all have `QueueEmpty`, and probe send latency.
    Reconnect {
        /// Devices in the storm.
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// Envelopes queued per device while it is away.
        #[arg(long, default_value_t = 2)]
        backlog: u32,
        /// Envelope size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Connected sender/receiver pairs measuring send latency during the storm.
        #[arg(long, default_value_t = 4)]
        probes: usize,
    },
    /// Group fan-out: one sender and N online member devices in one group; deliveries per
    /// second, latency per delivery, server CPU per delivery.
    Fanout {
        /// Member devices besides the sender (one account each, all online).
        #[arg(long, default_value_t = 500)]
        members: usize,
        /// Group messages the sender sends.
        #[arg(long, default_value_t = 100)]
        messages: u32,
        /// Group message size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// The fan-out path the spawned hushd takes: a reference in every member mailbox
        /// (write) or each device reading the group stream (read).
        #[arg(long, value_enum, default_value_t = fanout::FanoutPath::Write)]
        path: fanout::FanoutPath,
    },
    /// Local full-text search, no server: a fresh client store of N messages across several
    /// conversations (English, emoji, CJK), then the time of each of Q searches.
    Search {
        /// Messages in the store.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Searches to time (words, parts of words, phrases, emoji, CJK, in turn).
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
    /// Every measurement at a size that finishes in about two minutes on 2 cores.
    All,
}

fn target(args: &TargetArgs) -> anyhow::Result<Target> {
    target_with(args, &[])
}

/// [`target`], with extra arguments for a spawned hushd.
fn target_with(args: &TargetArgs, hushd_args: &[String]) -> anyhow::Result<Target> {
    if args.spawn {
        return Target::spawn(hushd_args);
    }
    if args.server.is_empty() {
        bail!("give --spawn, or --server URL --server-pid PID");
    }
    if args.server.len() != args.server_pid.len() {
        bail!("give one --server-pid per --server");
    }
    Ok(Target::attach(args.server.clone(), args.server_pid.clone()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Ok(limit) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("file-descriptor limit: {limit}");
    }
    let mut ok = true;
    match cli.command {
        Command::Idle { conns } => println!("{}", scenarios::idle(&target(&cli.target)?, conns).await?),
        Command::Pairs { pairs, messages, size, rate } => {
            let o = scenarios::PairsOptions { pairs, messages, size, rate };
            let (line, clean) = scenarios::pairs(&target(&cli.target)?, &o).await?;
            println!("{line}");
            ok &= clean;
        }
        Command::Drain { messages, size } => {
            let (line, clean) = scenarios::drain(&target(&cli.target)?, messages, size).await?;
            println!("{line}");
            ok &= clean;
        }
        Command::Crash { pairs, messages, size, rate, kill_every } => {
            if !kill_every.is_finite() || kill_every <= 0.0 {
                bail!("--kill-every must be a positive number of seconds");
            }
            let o =
                crash::CrashOptions { pairs, messages, size, rate, kill_every: Duration::from_secs_f64(kill_every) };
            let (line, clean) = crash::crash(&mut target(&cli.target)?, &o).await?;
            println!("{line}");
            ok &= clean;
        }
        Command::Reconnect { devices, backlog, size, probes } => {
            let o = storm::ReconnectOptions { devices, backlog, size, probes };
            let (line, clean) = storm::reconnect(&target(&cli.target)?, &o).await?;
            println!("{line}");
            ok &= clean;
        }
        Command::Fanout { members, messages, size, path } => {
            let o = fanout::FanoutOptions { members, messages, size, path };
            let (line, clean) = fanout::fanout(&target_with(&cli.target, &path.hushd_args(members))?, &o).await?;
            println!("{line}");
            ok &= clean;
        }
        Command::Search { messages, queries } => {
            println!("{}", search::search(&search::SearchOptions { messages, queries }).await?);
        }
        Command::All => {
            // A fresh server per measurement, so one does not skew the next.
            let fresh = || target(&cli.target);
            println!("{}", scenarios::idle(&fresh()?, 10_000).await?);
            let o = scenarios::PairsOptions { pairs: 50, messages: 2000, size: 200, rate: None };
            let (line, clean) = scenarios::pairs(&fresh()?, &o).await?;
            println!("{line}");
            ok &= clean;
            let o = scenarios::PairsOptions { pairs: 50, messages: 1000, size: 200, rate: Some(5000.0) };
            let (line, clean) = scenarios::pairs(&fresh()?, &o).await?;
            println!("paced {line}");
            ok &= clean;
            let (line, clean) = scenarios::drain(&fresh()?, 10_000, 200).await?;
            println!("{line}");
            ok &= clean;
            let o = storm::ReconnectOptions { devices: 5_000, backlog: 2, size: 200, probes: 4 };
            let (line, clean) = storm::reconnect(&fresh()?, &o).await?;
            println!("{line}");
            ok &= clean;
            if cli.target.spawn {
                let o = crash::CrashOptions {
                    pairs: 10,
                    messages: 2000,
                    size: 200,
                    rate: 2000.0,
                    kill_every: Duration::from_secs(2),
                };
                let (line, clean) = crash::crash(&mut fresh()?, &o).await?;
                println!("{line}");
                ok &= clean;
            }
            println!("{}", search::search(&search::SearchOptions { messages: 10_000, queries: 200 }).await?);
            for path in [fanout::FanoutPath::Write, fanout::FanoutPath::Read] {
                let o = fanout::FanoutOptions { members: 500, messages: 100, size: 200, path };
                let (line, clean) = fanout::fanout(&target_with(&cli.target, &path.hushd_args(500))?, &o).await?;
                println!("{line}");
                ok &= clean;
            }
        }
    }
    if !ok {
        bail!(
            "envelopes were lost, duplicated or refused (crash: an acknowledged message was lost or a message stored twice): see the figures above"
        );
    }
    Ok(())
}
