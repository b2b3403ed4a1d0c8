//! Operator endpoints: health, metrics, OpenAPI, server info.

use hush_e2e::{RestClient, TestAccount, TestServer, WsClient, send_request, to_all_devices};
use hush_wire::api::{Health, SenderCertificateResponse, ServerInfo};

#[tokio::test]
async fn healthz_answers_ok() {
    let server = TestServer::start().await;
    let health: Health = RestClient::new(&server).get("/healthz").await.json(200);
    assert_eq!(health.status, "ok");
}

#[tokio::test]
async fn metrics_count_accepted_envelopes() {
    let server = TestServer::start().await;
    let alice = TestAccount::register(&server, "alice").await;
    let bob = TestAccount::register(&server, "bob").await;
    let mut alice_ws = WsClient::connect_drained(&server, alice.primary()).await;
    alice_ws.send_ok(send_request(vec![to_all_devices(&bob, b"count me")])).await;
    let metrics = RestClient::new(&server).get("/metrics").await;
    metrics.assert_status(200);
    let text = metrics.text();
    assert!(text.contains("hush_envelopes_accepted_total"), "no hush_envelopes_accepted_total in /metrics:\n{text}");
}

#[tokio::test]
async fn openapi_document_lists_the_endpoints() {
    let server = TestServer::start().await;
    let doc: serde_json::Value = RestClient::new(&server).get("/openapi.json").await.json(200);
    let paths = doc
        .get("paths")
        .and_then(|p| p.as_object())
        .unwrap_or_else(|| panic!("no `paths` object in /openapi.json: {doc}"));
    for path in ["/v1/accounts", "/v1/devices", "/v1/keys"] {
        assert!(paths.contains_key(path), "/openapi.json lacks {path}");
    }
}

#[tokio::test]
async fn server_info_serves_the_printed_trust_root() {
    let server = TestServer::start().await;
    let info: ServerInfo = RestClient::new(&server).get("/v1/server").await.json(200);
    use base64::Engine as _;
    let printed = base64::engine::general_purpose::STANDARD
        .decode(server.trust_root())
        .unwrap_or_else(|e| panic!("printed trust root is not base64: {e}"));
    assert_eq!(info.trust_root.0, printed);
    assert_eq!(info.trust_root.0.len(), 33);
}

#[tokio::test]
async fn sender_certificate_chains_to_the_trust_root_which_survives_restart() {
    let mut server = TestServer::start().await;
    let mut alice = TestAccount::register(&server, "alice").await;
    let alice2 = alice.add_device(&server).await;
    let rest = RestClient::new(&server);
    let info: ServerInfo = rest.get("/v1/server").await.json(200);

    let cert: SenderCertificateResponse = rest.signed_get(&alice2, "/v1/certificate").await.json(200);
    let now = hush_e2e::now_ms();
    assert!(cert.expires_at > now, "certificate already expired");
    let certified = hush_keys::certs::verify_sender_certificate(&cert.certificate.0, &info.trust_root.0, now)
        .unwrap_or_else(|e| panic!("sender certificate does not verify: {e}"));
    assert_eq!(certified.account, alice.account_id);
    assert_eq!(certified.device_id, 2);
    assert_eq!(certified.expires_at_ms, cert.expires_at);
    assert_eq!(certified.identity_key, hush_e2e::keys::identity_public(&alice.identity));

    // The server's certificate key lives in the data directory.
    server.kill9().await;
    server.restart().await;
    let after: ServerInfo = RestClient::new(&server).get("/v1/server").await.json(200);
    assert_eq!(after.trust_root, info.trust_root, "trust root changed across restart");
}

#[tokio::test]
async fn openapi_declares_401_on_every_authenticated_operation() {
    let server = TestServer::start().await;
    let doc: serde_json::Value = RestClient::new(&server).get("/openapi.json").await.json(200);
    let paths = doc.get("paths").and_then(|p| p.as_object()).cloned().unwrap_or_default();
    let mut authenticated = 0;
    for (path, item) in &paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            let secured = op.get("security").and_then(|s| s.as_array()).is_some_and(|s| !s.is_empty());
            if secured {
                authenticated += 1;
                assert!(op.pointer("/responses/401").is_some(), "{method} {path} does not declare 401");
            }
            if op.get("parameters").and_then(|p| p.as_array()).is_some_and(|p| !p.is_empty()) {
                assert!(op.pointer("/responses/400").is_some(), "{method} {path} does not declare 400");
            }
        }
    }
    assert!(authenticated >= 9, "only {authenticated} authenticated operations found");
    let username = doc.pointer("/components/schemas/RegisterRequest/properties/username/pattern");
    assert!(username.is_some(), "usernames have a pattern in the schema");
    let registration_id = doc.pointer("/components/schemas/NewDevice/properties/registration_id/maximum");
    assert_eq!(registration_id.and_then(|v| v.as_u64()), Some(16383));
}

/// Regression: a bad path parameter and an oversized body answered `text/plain`.
#[tokio::test]
async fn every_error_is_json_with_a_code() {
    let server = TestServer::start().await;
    let rest = RestClient::new(&server);
    let alice = TestAccount::register(&server, "alice").await;
    rest.signed::<()>(alice.primary(), "DELETE", "/v1/devices/-161", None).await.assert_error(400, "invalid_request");
    rest.raw("DELETE", "/v1/devices/-161", None, None).await.assert_error(400, "invalid_request");
    rest.signed_get(alice.primary(), "/v1/accounts/not-a-uuid").await.assert_error(400, "invalid_request");
    let huge = vec![b' '; 1024 * 1024 + 1024];
    rest.raw("POST", "/v1/accounts", Some(huge.clone()), None).await.assert_error(413, "body_too_large");
    let auth = alice.primary().authorization("PUT", "/v1/keys", &huge);
    rest.raw("PUT", "/v1/keys", Some(huge), Some(&auth)).await.assert_error(413, "body_too_large");
    rest.get("/v1/nothing-here").await.assert_error(404, "not_found");
    rest.raw("PATCH", "/v1/accounts", None, None).await.assert_error(405, "method_not_allowed");
    rest.get("/v1/keys/count").await.assert_error(401, "auth_missing");
}
