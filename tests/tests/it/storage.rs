//! What the server stores: no sender for a sealed one-to-one envelope.

use hush_e2e::{TestAccount, TestServer, WsClient, random_bytes, send_request, to_all_devices};
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn sealed_envelope_rows_store_no_sender() {
    let server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    let content = random_bytes(512);
    alice_ws.send_ok(send_request(vec![to_all_devices(&bob, &content)])).await;

    let opts = SqliteConnectOptions::new().filename(server.db_path()).read_only(true);
    let mut db = SqliteConnection::connect_with(&opts)
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", server.db_path().display()));

    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('envelopes')")
        .fetch_all(&mut db)
        .await
        .unwrap_or_else(|e| panic!("cannot list the envelopes columns: {e}"));
    assert!(!columns.is_empty(), "no `envelopes` table in hush.db");
    for column in &columns {
        let lower = column.to_lowercase();
        for word in ["sender", "source", "from", "author", "origin"] {
            assert!(!lower.contains(word), "envelopes column {column:?} looks like it names a sender");
        }
    }

    // Every stored byte of every envelope row, column by column.
    let mut rows_with_content = 0;
    let id = alice.account_id;
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("account id bytes", id.as_bytes().to_vec()),
        ("account id string", id.hyphenated().to_string().into_bytes()),
        ("account id hex", id.simple().to_string().into_bytes()),
        ("username", alice.username.clone().into_bytes()),
    ];
    for column in &columns {
        let sql = format!("SELECT CAST(\"{column}\" AS BLOB) FROM envelopes");
        let values: Vec<Option<Vec<u8>>> = sqlx::query_scalar(&sql)
            .fetch_all(&mut db)
            .await
            .unwrap_or_else(|e| panic!("cannot read envelopes.{column}: {e}"));
        for value in values.into_iter().flatten() {
            if value == content {
                rows_with_content += 1;
            }
            for (what, needle) in &needles {
                assert!(!contains(&value, needle), "envelopes.{column} contains Alice's {what}");
            }
        }
    }
    assert_eq!(rows_with_content, 1, "expected exactly one stored envelope holding the sent content");
}
