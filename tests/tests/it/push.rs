//! Push targets over REST (`/v1/devices/self/push`) against a real hushd.

use hush_e2e::{RestClient, TestAccount, TestServer};
use hush_wire::api::{PushStatus, PushTargetBody};

const PATH: &str = "/v1/devices/self/push";

#[tokio::test]
async fn a_device_sets_reads_replaces_and_removes_its_push_target() {
    let server = TestServer::builder().arg("--push-allow-hosts").arg("127.0.0.1").start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    let device = alice.primary();
    rest.signed_get(device, PATH).await.assert_error(404, "no_push_target");
    rest.signed::<()>(device, "DELETE", PATH, None).await.assert_error(404, "no_push_target");

    let up = PushTargetBody::UnifiedPush { endpoint: "http://127.0.0.1:9/up/alice".into() };
    rest.signed(device, "PUT", PATH, Some(&up)).await.assert_status(204);
    let status: PushStatus = rest.signed_get(device, PATH).await.json(200);
    assert_eq!(status.target, up);

    let apns = PushTargetBody::Apns { token: "ab".repeat(32), topic: "org.example.hush".into(), sandbox: true };
    rest.signed(device, "PUT", PATH, Some(&apns)).await.assert_status(204);
    let status: PushStatus = rest.signed_get(device, PATH).await.json(200);
    assert_eq!(status.target, apns, "a PUT replaces the target");

    rest.signed::<()>(device, "DELETE", PATH, None).await.assert_status(204);
    rest.signed_get(device, PATH).await.assert_error(404, "no_push_target");
}

#[tokio::test]
async fn unifiedpush_endpoints_inside_the_network_are_refused_unless_allowlisted() {
    let server = TestServer::builder().arg("--push-allow-hosts").arg("127.0.0.1").start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    for endpoint in [
        "http://push.example.org/up",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/up",
        "https://[::1]/up",
        "https://localhost/up",
        "http://127.0.0.2/up",
    ] {
        let body = PushTargetBody::UnifiedPush { endpoint: endpoint.into() };
        rest.signed(alice.primary(), "PUT", PATH, Some(&body)).await.assert_error(400, "invalid_push_endpoint");
    }
    let bad_token = PushTargetBody::Fcm { token: String::new() };
    rest.signed(alice.primary(), "PUT", PATH, Some(&bad_token)).await.assert_error(400, "invalid_push_token");
    let garbage = serde_json::json!({ "provider": "carrier_pigeon", "token": "x" });
    rest.signed(alice.primary(), "PUT", PATH, Some(&garbage)).await.assert_error(400, "invalid_request");
    rest.signed_get(alice.primary(), PATH).await.assert_error(404, "no_push_target");
}

#[tokio::test]
async fn the_push_endpoints_are_in_the_openapi_document_with_every_status() {
    let server = TestServer::start().await;
    let doc: serde_json::Value = RestClient::new(&server).get("/openapi.json").await.json(200);
    let item = &doc["paths"][PATH];
    let statuses = |method: &str| -> Vec<String> {
        item[method]["responses"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
    };
    for (method, expected) in [
        ("put", &["204", "400", "401", "404", "413", "503"][..]),
        ("get", &["200", "401", "404", "503"][..]),
        ("delete", &["204", "401", "404", "503"][..]),
    ] {
        let got = statuses(method);
        for status in expected {
            assert!(got.iter().any(|s| s == status), "{method} {PATH} lacks {status}: {got:?}");
        }
    }
}
