//! Hostile and broken peers: a client that stops reading, sockets that never authenticate,
//! shutdown with stuck connections. The server closes what it must, loses nothing, and keeps
//! serving everyone else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hush_e2e::{TestAccount, TestServer, WsClient, message, recipient, send_request};
use hush_wire::close;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{WebSocketStream, client_async};

const ENVELOPE: usize = 90 * 1024;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The value of one `/metrics` series, or 0 when it has not appeared yet.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// Waits until `series` reaches `at_least`, polling within a deadline.
async fn wait_for_metric(server: &TestServer, series: &str, at_least: f64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if metric(server, series).await >= at_least {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{series} did not reach {at_least} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Alice fills Bob's mailbox with `n` envelopes of 90 KiB.
async fn backlog(server: &TestServer, bob: &TestAccount, n: usize) {
    let alice = TestAccount::register(server, "alice").await;
    let mut alice_ws = WsClient::connect_drained(server, alice.primary()).await;
    for i in 0..n {
        let mut content = vec![0u8; ENVELOPE];
        content[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let req = send_request(vec![recipient(bob.account_id, vec![message(bob.primary(), content)])]);
        alice_ws.send_ok(req).await;
    }
    alice_ws.close().await;
}

/// Reads every envelope until `QueueEmpty` and checks each of the `n` sent is there once.
async fn drain_all(server: &TestServer, bob: &TestAccount, n: usize) {
    let mut bob_ws = WsClient::connect(server, bob.primary()).await;
    bob_ws.timeout = Duration::from_secs(30);
    let mut seen = vec![false; n];
    let mut seqs = Vec::new();
    // Envelopes until QueueEmpty.
    while let hush_e2e::Event::Envelope(e) = bob_ws.next_event().await {
        let i = u64::from_be_bytes(e.content[..8].try_into().unwrap_or_default()) as usize;
        assert!(!seen[i], "envelope {i} delivered twice in one connection");
        seen[i] = true;
        seqs.push(e.seq);
        if seqs.len() == 128 {
            bob_ws.ack(&seqs).await;
            seqs.clear();
        }
    }
    let missing: Vec<usize> = (0..n).filter(|i| !seen[*i]).collect();
    assert!(missing.is_empty(), "envelopes lost: {missing:?}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer_and_loses_nothing() {
    let server = TestServer::builder().args(["--write-timeout-secs", "2", "--rate-burst", "1000"]).start().await;
    let bob = TestAccount::register(&server, "bob").await;
    let pid = server.pid();
    let baseline = rss_kib(pid);
    // Bob connects and then reads nothing: his kernel buffers fill and the server's writes stall.
    let stalled = WsClient::connect_drained(&server, bob.primary()).await;
    backlog(&server, &bob, 256).await;
    let peak = rss_kib(pid);
    let closed_after = wait_for_metric(
        &server,
        "hush_connections_closed_total{reason=\"slow_consumer\"}",
        1.0,
        Duration::from_secs(30),
    )
    .await;
    let after = rss_kib(pid);
    eprintln!(
        "rss baseline={baseline} KiB with-stalled-reader={peak} KiB after-close={after} KiB; closed {closed_after:?} after the backlog"
    );
    drop(stalled);
    // Everything is still in the mailbox for the next connection.
    drain_all(&server, &bob, 256).await;
}

#[tokio::test]
async fn shutdown_drops_connections_that_cannot_close_within_its_deadline() {
    let server = TestServer::builder()
        .args(["--write-timeout-secs", "600", "--shutdown-timeout-secs", "2", "--rate-burst", "1000"])
        .start()
        .await;
    let bob = TestAccount::register(&server, "bob").await;
    let _stalled = WsClient::connect_drained(&server, bob.primary()).await;
    backlog(&server, &bob, 256).await;
    let mut server = server;
    let start = Instant::now();
    server.stop().await; // SIGTERM; panics unless hushd exits cleanly
    let took = start.elapsed();
    eprintln!("shutdown with a stalled reader took {took:?}");
    assert!(took < Duration::from_secs(8), "shutdown took {took:?} with a 2 s deadline");
    server.restart().await;
    drain_all(&server, &bob, 256).await;
}

/// Opens a WebSocket to the server from `local` and stops there: no `Auth` ever follows.
async fn half_open(server: &TestServer, local: Ipv4Addr) -> Result<WebSocketStream<TcpStream>, WsError> {
    let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    socket.bind(SocketAddr::new(IpAddr::V4(local), 0)).unwrap_or_else(|e| panic!("bind {local}: {e}"));
    let stream = socket.connect(server.addr()).await.unwrap_or_else(|e| panic!("connect from {local}: {e}"));
    client_async(server.ws_url(), stream).await.map(|(ws, _)| ws)
}

fn refused_with(result: &Result<WebSocketStream<TcpStream>, WsError>, status: u16, code: &str) -> bool {
    match result {
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            response.status().as_u16() == status && body.contains(code)
        }
        _ => false,
    }
}

#[tokio::test]
async fn sockets_that_never_authenticate_from_one_address_cannot_lock_out_a_real_client() {
    let server = TestServer::builder()
        .args(["--max-connections", "100", "--max-handshakes-per-address", "16", "--auth-timeout-secs", "60"])
        .start()
        .await;
    let bob = TestAccount::register(&server, "bob").await;
    let flooder = Ipv4Addr::new(127, 0, 0, 2);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..110 {
        let r = half_open(&server, flooder).await;
        if refused_with(&r, 429, "too_many_handshakes") {
            refused += 1;
        } else {
            held.push(r.unwrap_or_else(|e| panic!("unexpected answer: {e}")));
        }
    }
    assert_eq!((held.len(), refused), (16, 94), "one address holds at most 16 handshakes");
    let start = Instant::now();
    let bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
    eprintln!("a real client connected in {:?} during a 110-socket handshake flood", start.elapsed());
    bob_ws.close().await;
}

#[tokio::test]
async fn a_handshake_flood_from_many_addresses_evicts_the_oldest_and_lets_a_real_client_in() {
    let server = TestServer::builder()
        .args(["--max-connections", "200", "--max-handshakes", "32", "--max-handshakes-per-address", "4"])
        .args(["--auth-timeout-secs", "60"])
        .start()
        .await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut held = Vec::new();
    for i in 0..110u8 {
        let from = Ipv4Addr::new(127, 0, 1, 2 + i / 3);
        held.push(half_open(&server, from).await.unwrap_or_else(|e| panic!("upgrade from {from}: {e}")));
    }
    let start = Instant::now();
    let bob_ws = WsClient::connect_drained(&server, bob.primary()).await;
    eprintln!("a real client connected in {:?} during a 110-address handshake flood", start.elapsed());
    bob_ws.close().await;
    // The oldest flood sockets were told to come back later.
    use futures_util::StreamExt as _;
    let first = &mut held[0];
    let close = tokio::time::timeout(hush_e2e::WAIT, async {
        while let Some(msg) = first.next().await {
            if let Ok(tokio_tungstenite::tungstenite::Message::Close(Some(c))) = msg {
                return Some((u16::from(c.code), c.reason.to_string()));
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("the oldest handshake was not closed"));
    assert_eq!(close, Some((close::TRY_AGAIN_LATER, close::REASON_BUSY.to_owned())));
    let evicted = metric(&server, "hush_handshakes_evicted_total").await;
    assert!(evicted >= 78.0, "110 handshakes into a budget of 32 evict at least 78, counted {evicted}");
}

/// Upgrades from `proxy` on behalf of the client `forwarded_for`, as a load balancer would.
async fn half_open_via(
    server: &TestServer,
    proxy: Ipv4Addr,
    forwarded_for: &str,
) -> Result<WebSocketStream<TcpStream>, WsError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    socket.bind(SocketAddr::new(IpAddr::V4(proxy), 0)).unwrap_or_else(|e| panic!("bind {proxy}: {e}"));
    let stream = socket.connect(server.addr()).await.unwrap_or_else(|e| panic!("connect from {proxy}: {e}"));
    let mut request = server.ws_url().into_client_request().unwrap_or_else(|e| panic!("{e}"));
    request.headers_mut().insert("x-forwarded-for", forwarded_for.parse().unwrap_or_else(|e| panic!("{e}")));
    client_async(request, stream).await.map(|(ws, _)| ws)
}

/// Behind a trusted proxy every upgrade comes from the proxy's address: the per-address
/// handshake budget must count the clients it forwards for, not the proxy.
#[tokio::test]
async fn behind_a_trusted_proxy_the_handshake_budget_is_per_client() {
    let proxy = Ipv4Addr::new(127, 0, 0, 3);
    let server = TestServer::builder()
        .args(["--max-handshakes-per-address", "4", "--auth-timeout-secs", "60", "--trusted-proxies", "127.0.0.3"])
        .start()
        .await;
    let mut held = Vec::new();
    for i in 0..12u8 {
        let client = format!("203.0.113.{i}");
        held.push(half_open_via(&server, proxy, &client).await.unwrap_or_else(|e| panic!("client {client}: {e}")));
    }
    let mut refused = 0;
    for _ in 0..6 {
        match half_open_via(&server, proxy, "198.51.100.7").await {
            r if refused_with(&r, 429, "too_many_handshakes") => refused += 1,
            Ok(ws) => held.push(ws),
            Err(e) => panic!("unexpected answer: {e}"),
        }
    }
    assert_eq!((held.len(), refused), (16, 2), "twelve clients in, then one client held to four");
}
