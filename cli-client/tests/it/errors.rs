//! Exit codes: usage 2, network 3, untrusted identity 4, rate limited 5.

use serde_json::json;

use crate::support::{Hushd, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_with_2() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    assert_eq!(alice.hush(&["send", "bob"]).await.code, Some(2));
    assert_eq!(alice.hush(&["receive", "--timeout", "soon"]).await.code, Some(2));
    let _bob = User::register(&server, "bob").await;
    let out = alice.hush(&["send", "bob", "", "--json"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.json_lines()[0]["error"]["kind"], json!("usage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_exits_with_3() {
    let mut server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let _bob = User::register(&server, "bob").await;
    let _carol = User::register(&server, "carol").await;
    alice.send("bob", "while the server is up").await;
    server.kill().await;

    // Unknown contact: the lookup fails at once.
    let out = alice.hush(&["send", "carol", "hi", "--json"]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert_eq!(out.json_lines()[0]["error"]["kind"], json!("network"));
    // Known contact: queued, but never accepted.
    let out = alice.hush(&["send", "bob", "hi", "--timeout", "1"]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("cannot reach the server"), "{}", out.stderr);
    assert_eq!(alice.hush(&["receive", "--timeout", "1"]).await.code, Some(3));
    let out = alice.hush(&["status", "--timeout", "5", "--json"]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert_eq!(out.json_lines()[0]["server_reachable"], json!(false));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = alice.hush(&["register", "dave", "--data-dir", dir.path().to_str().expect("utf-8")]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_identity_key_exits_with_4_until_trusted() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    alice.send("bob", "hi").await;

    // No second account can take Bob's name, so mark his key as changed in Alice's store, the
    // way client-core records a key change it detects.
    let db = alice.dir().join("client.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.expect("open client.db");
    let changed = serde_json::to_string(&json!("changed")).expect("json");
    let updated = sqlx::query("UPDATE contacts SET trust = ? WHERE username = 'bob'")
        .bind(changed)
        .execute(&pool)
        .await
        .expect("update");
    assert_eq!(updated.rows_affected(), 1);
    pool.close().await;

    let out = alice.hush(&["send", "bob", "blocked?", "--json"]).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert_eq!(out.json_lines()[0]["error"]["kind"], json!("untrusted_identity"));
    let contacts = alice.hush(&["contacts", "--json"]).await.ok().json_lines();
    assert_eq!(contacts[0]["trust"], json!("changed"));

    alice.hush(&["trust", "bob"]).await.ok();
    alice.send("bob", "trusted again").await;
    let bodies: Vec<_> = bob.receive().await.iter().map(|m| m["body"].clone()).collect();
    assert_eq!(bodies, vec![json!("hi"), json!("trusted again")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_send_exits_with_5_and_the_message_stays_queued() {
    let server = Hushd::start_with(&["--rate-burst", "1", "--rate-per-second", "0.01"]).await;
    let alice = User::register(&server, "alice").await;
    let _bob = User::register(&server, "bob").await;
    alice.send("bob", "uses the burst").await;

    // The next send may go out only in ~100 s, longer than the timeout: exit 5 at once.
    let out = alice.hush(&["send", "bob", "held back", "--timeout", "20", "--json"]).await;
    assert_eq!(out.code, Some(5), "{out:?}");
    assert_eq!(out.json_lines()[0]["error"]["kind"], json!("rate_limited"));
    let status = alice.hush(&["status", "--json"]).await.ok();
    assert_eq!(status.json_lines()[0]["outbox_pending"], json!(1), "the message stays queued, not lost");
}
