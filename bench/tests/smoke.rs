//! A small run of every `hush-bench` measurement against a spawned hushd, so CI
//! notices when the tool breaks. The figures of a debug build mean nothing; only
//! that each run finishes, loses nothing, and prints its `key=value` line.

use std::path::PathBuf;
use std::process::Command;

fn hushd() -> PathBuf {
    if let Some(p) = std::env::var_os("HUSHD_BIN") {
        return PathBuf::from(p);
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_hush-bench"));
    let hushd = bench.with_file_name("hushd");
    assert!(hushd.exists(), "{} is missing: build it with `cargo build -p hush-server`", hushd.display());
    hushd
}

/// Runs `hush-bench --spawn <args>` and returns its last line as key=value pairs.
fn run(args: &[&str]) -> Vec<(String, String)> {
    run_with(&[], args)
}

/// [`run`] with extra environment variables (the spawned hushd inherits them).
fn run_with(env: &[(&str, &str)], args: &[&str]) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_hush-bench"))
        .env("HUSHD_BIN", hushd())
        .envs(env.iter().copied())
        .arg("--spawn")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run hush-bench: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hush-bench {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_else(|| panic!("hush-bench {args:?} printed nothing"));
    // A leading bare word names the measurement (`fanout path=write ...`).
    let pairs = last.split_whitespace().skip_while(|word| !word.contains('='));
    pairs
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("not key=value: {kv:?} in {last:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn value<'a>(figures: &'a [(String, String)], key: &str) -> &'a str {
    figures.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key} in {figures:?}"))
}

#[test]
fn pairs_delivers_everything_once() {
    let f = run(&["pairs", "--pairs", "2", "--messages", "50", "--size", "64"]);
    assert_eq!(value(&f, "delivered"), "100");
    assert_eq!(value(&f, "lost"), "0");
    assert_eq!(value(&f, "dup"), "0");
    for key in ["msgs_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_msg"] {
        let v: f64 = value(&f, key).parse().unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(v >= 0.0);
    }
}

#[test]
fn drain_delivers_the_whole_backlog() {
    let f = run(&["drain", "--messages", "300", "--size", "64"]);
    assert_eq!((value(&f, "lost"), value(&f, "dup")), ("0", "0"));
    assert!(value(&f, "drain_ms").parse::<f64>().is_ok());
}

#[test]
fn idle_reports_memory_per_connection() {
    let f = run(&["idle", "--conns", "20"]);
    assert_eq!(value(&f, "idle_conns"), "20");
    assert!(value(&f, "server_rss_kib_per_conn").parse::<f64>().is_ok());
}

/// `idle` opened every socket at once and gave up on the `1013 server_busy` close of a full
/// handshake budget: against the default budget of 1,024, `idle --conns 5000` failed.
#[test]
fn idle_connects_through_a_full_handshake_budget() {
    let f = run_with(&[("HUSHD_MAX_HANDSHAKES", "16")], &["idle", "--conns", "400"]);
    assert_eq!(value(&f, "idle_conns"), "400");
    let retries: u64 = value(&f, "connect_retries").parse().unwrap_or_else(|e| panic!("connect_retries: {e}"));
    eprintln!("{retries} handshakes were retried");
}

#[test]
fn crash_survives_restarts_and_loses_nothing_acknowledged() {
    // Enough kills under load that some sends are resent after being stored (a few seconds).
    let f =
        run(&["crash", "--pairs", "4", "--messages", "2000", "--size", "64", "--rate", "2000", "--kill-every", "0.5"]);
    let n = |key: &str| value(&f, key).parse::<u64>().unwrap_or_else(|e| panic!("{key}: {e}"));
    assert!(n("crash_kills") >= 1, "the server was killed at least once: {f:?}");
    assert_eq!((n("sent"), n("acked"), n("delivered")), (8000, 8000, 8000));
    assert_eq!((n("lost"), n("dup_other")), (0, 0));
    assert!(n("reconnects") >= 1, "the clients reconnected: {f:?}");
    // Resends carry their message's idempotency key: a stored one is not stored again.
    assert_eq!(n("dup_resent"), 0, "a resend was stored twice: {f:?}");
}

#[test]
fn reconnect_storm_brings_every_device_back_with_its_backlog() {
    let f = run(&["reconnect", "--devices", "60", "--backlog", "2", "--size", "64", "--probes", "2"]);
    assert_eq!(value(&f, "reconnect_devices"), "60");
    assert_eq!((value(&f, "failed"), value(&f, "lost")), ("0", "0"));
    for key in ["storm_ms", "device_p50_ms", "device_p99_ms", "probe_send_p50_ms", "probe_send_p99_ms"] {
        let v: f64 = value(&f, key).parse().unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(v >= 0.0);
    }
}

/// Runs `fanout` with 20 members on one path and checks every delivery came once.
fn fanout_delivers_once(path: &str) {
    let f = run(&["fanout", "--members", "20", "--messages", "5", "--size", "64", "--path", path]);
    assert_eq!((value(&f, "path"), value(&f, "members"), value(&f, "messages")), (path, "20", "5"));
    assert_eq!(value(&f, "deliveries"), "100");
    assert_eq!((value(&f, "lost"), value(&f, "dup"), value(&f, "send_failed")), ("0", "0", "0"));
    for key in ["deliveries_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_delivery"] {
        let v: f64 = value(&f, key).parse().unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(v >= 0.0);
    }
}

#[test]
fn fanout_on_write_delivers_every_group_message_to_every_member_once() {
    fanout_delivers_once("write");
}

/// The members ack group-stream envelopes by (group, group seq); the bench fails if any
/// came through a mailbox instead.
#[test]
fn fanout_on_read_delivers_every_group_message_to_every_member_once() {
    fanout_delivers_once("read");
}

#[test]
fn search_times_queries_on_a_local_store() {
    let f = run(&["search", "--messages", "300", "--queries", "20"]);
    assert_eq!((value(&f, "messages"), value(&f, "queries")), ("300", "20"));
    for key in ["p50_ms", "p99_ms", "max_ms"] {
        let v: f64 = value(&f, key).parse().unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(v >= 0.0);
    }
}
