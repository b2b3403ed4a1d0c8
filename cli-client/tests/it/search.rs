//! `hush search` and the daemon's `search`: English, emoji and CJK found in what arrived, the
//! matches marked, the query taken literally, errors with the CLI's exit codes.

use serde_json::json;

use crate::support::{Hushd, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_english_emoji_and_cjk_from_the_cli_and_the_daemon() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    for text in ["Lunch tomorrow?", "🎉 party tonight", "明天见", "lunch was great"] {
        alice.send("bob", text).await;
    }
    assert_eq!(bob.receive().await.len(), 4);

    let hits = bob.hush(&["search", "LUNCH", "--json"]).await.ok().json_lines();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h["conversation"] == json!("alice") && h["from"] == json!("alice")));
    assert_eq!(hits[0]["matches"], json!([{ "start": 0, "end": 5 }]));
    assert!(hits[0]["newer"].is_u64() && hits[0]["local_seq"].is_u64());

    let out = bob.hush(&["search", "明天见"]).await.ok();
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(out.stdout.contains("alice: [明天见]"), "the match is marked: {out:?}");
    let out = bob.hush(&["search", "🎉", "--conversation", "alice", "--json"]).await.ok();
    assert_eq!(out.json_lines()[0]["body"], json!("🎉 party tonight"));
    let out = bob.hush(&["search", "lunch", "--limit", "1", "--json"]).await.ok();
    assert_eq!(out.json_lines().len(), 1);
    let out = bob.hush(&["search", "\"lunch\" OR NEAR(x*", "--json"]).await.ok();
    assert!(out.stdout.is_empty(), "query syntax is taken literally: {out:?}");
    let out = bob.hush(&["search", "dinner"]).await.ok();
    assert!(out.stdout.is_empty() && out.stderr.contains("no message contains"), "{out:?}");
    assert_eq!(bob.hush(&["search", " "]).await.code, Some(2), "an empty query is a usage error");
    assert_eq!(bob.hush(&["search", "x", "--conversation", "nobody"]).await.code, Some(1));
    let help = bob.hush(&["search", "--help"]).await.ok();
    assert!(help.stdout.contains("--conversation") && help.stdout.contains("taken literally"), "{help:?}");

    let mut daemon = bob.daemon_stdio();
    let rpc = daemon.rpc();
    let found = rpc.call("search", json!({ "query": "明天见" })).await;
    assert_eq!(found["hits"][0]["body"], json!("明天见"));
    assert_eq!(found["hits"][0]["matches"], json!([{ "start": 0, "end": 9 }]));
    let found = rpc.call("search", json!({ "query": "party", "conversation": "alice", "limit": 5 })).await;
    assert_eq!(found["hits"].as_array().map(Vec::len), Some(1), "{found}");
    let found = rpc.call("search", json!({ "query": "lunch", "limit": 1 })).await;
    assert_eq!(found["hits"].as_array().map(Vec::len), Some(1), "{found}");
    let e = rpc.call_raw("search", json!({ "text": "lunch" })).await;
    assert_eq!(e["error"]["code"], json!(-32602), "{e}");
    let e = rpc.call_raw("search", json!({ "query": "" })).await;
    assert_eq!(e["error"]["data"]["exit_code"], json!(2), "{e}");
    assert!(daemon.terminate().await.success());
}
