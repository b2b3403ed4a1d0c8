//! Opening and closing a client: a clean shutdown with requests in flight, the data-directory
//! lock, no half-made directories, the remembered server.

use hush_client_core::{Client, ClientConfig, ClientError, ConnectionState, Event};

use crate::support::{Hushd, TestClient, WAIT};

async fn wait_connected(events: &mut hush_client_core::EventStream) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Connection(ConnectionState::Connected))) => return,
            Ok(Some(_)) => {}
            other => panic!("not connected: {other:?}"),
        }
    }
}

/// `hush status` panicked about 1 run in 14 ("there is no reactor running"): the actor's
/// `LocalSet` was dropped outside its runtime while a REST call was still in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_client_with_requests_in_flight_is_clean_every_time() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    let config = alice.config(&server);
    alice.client.shutdown().await.unwrap();
    for round in 0..30 {
        let client = Client::open(config.clone()).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        let mut events = client.events();
        client.connect().await.unwrap();
        // Connected: the prekey count and the own device list are being fetched right now.
        wait_connected(&mut events).await;
        client.shutdown().await.unwrap_or_else(|e| panic!("round {round}: unclean shutdown: {e}"));
    }
}

/// A front for `hushd` that passes WebSocket upgrades through and holds every other HTTP
/// request open without ever answering: REST calls the client makes stay in flight.
async fn stalling_front(upstream: String) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncReadExt as _;
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let n = socket.read(&mut head).await.unwrap_or(0);
            head.truncate(n);
            if head.starts_with(b"GET /v1/websocket") {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    if server.write_all(&head).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut server).await;
                    }
                });
            } else {
                held.push(socket); // never answered
            }
        }
    });
    (url, task)
}

/// On connecting, the client asks for its prekey count and device list over REST; here those
/// requests never get an answer, so shutdown always finds them in flight: it must cancel them
/// inside the actor's runtime (a panic on the actor thread is reported by `shutdown`) and must
/// not wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_client_while_rest_calls_hang_is_clean() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    let dir = alice.dir.path().to_owned();
    alice.client.shutdown().await.unwrap();
    let (front, _front) = stalling_front(server.url()).await;
    for round in 0..5 {
        let client =
            Client::open(ClientConfig::new(&dir, &front)).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        let mut events = client.events();
        client.connect().await.unwrap();
        wait_connected(&mut events).await;
        let stopped = tokio::time::timeout(WAIT, client.shutdown()).await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("round {round}: unclean shutdown: {e}"),
            Err(_) => panic!("round {round}: shutdown waited for REST calls that never end"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_is_used_by_one_client_at_a_time() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    match Client::open(alice.config(&server)).await {
        Err(ClientError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("a second client on the directory was not refused: {other:?}"),
    }
    alice.client.shutdown().await.unwrap();
    let again = Client::open(alice.config(&server)).await.unwrap_or_else(|e| panic!("after shutdown: {e}"));
    again.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_registration_leaves_no_data_directory_and_opening_nothing_creates_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("alice");
    // Nothing listens on port 1.
    let e = Client::register(ClientConfig::new(&dir, "http://127.0.0.1:1"), "alice").await.unwrap_err();
    assert!(matches!(e, ClientError::Network(_)), "{e}");
    assert!(e.to_string().to_lowercase().contains("connection refused"), "the cause is kept: {e}");
    assert!(!dir.exists(), "a failed register left {}", dir.display());

    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = Client::open(ClientConfig::new(&empty, "http://127.0.0.1:1")).await.unwrap_err();
    assert!(matches!(e, ClientError::NotRegistered), "{e}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "opening created files");
    let e = Client::open(ClientConfig::new(parent.path().join("missing"), "")).await.unwrap_err();
    assert!(matches!(e, ClientError::NotRegistered), "{e}");
    assert!(!parent.path().join("missing").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_server_url_means_the_one_given_at_registration() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    alice.client.shutdown().await.unwrap();
    let client = Client::open(ClientConfig::new(alice.dir.path(), "")).await.unwrap();
    assert_eq!(client.status().await.unwrap().server_url, server.url());
    let mut events = client.events();
    client.connect().await.unwrap();
    wait_connected(&mut events).await;
    client.shutdown().await.unwrap();
}
