//! The OpenAPI document against the router: what the document allows, the server takes; what
//! it forbids, the server refuses with a declared JSON answer. Each test here is a mismatch
//! schemathesis found or would find; the whole document is checked against a running hushd by
//! `schemathesis_passes_clean` in the hush-e2e crate (tests/tests/it/schemathesis.rs).

use axum::http::StatusCode;
use hush_server::http::ApiDoc;
use hush_wire::api::AddDeviceRequest;
use hush_wire::limits::{MAX_DEVICE_NAME_CHARS, MAX_PREKEYS_PER_UPLOAD};
use proptest::test_runner::TestRunner;
use utoipa::OpenApi as _;
use uuid::Uuid;

use crate::fuzz::mutate::fuzz_config;
use crate::fuzz::{Fixture, new_device, upload};

fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap()
}

/// The schema of path parameter `name` of `method path`.
fn parameter_schema(doc: &serde_json::Value, method: &str, path: &str, name: &str) -> serde_json::Value {
    let pointer = format!("/paths/{}/{method}/parameters", path.replace('/', "~1"));
    let parameters = doc.pointer(&pointer).and_then(|p| p.as_array()).unwrap_or_else(|| panic!("no {pointer}"));
    let parameter = parameters.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no {name} in {pointer}"));
    parameter["schema"].clone()
}

/// Regression (schemathesis, "schema-valid request rejected"): `device` of the bundle endpoint
/// had no pattern, so every string was valid by the document and nearly all were refused.
#[test]
fn bundle_device_parameters_the_document_allows_are_not_refused() {
    let doc = document();
    let schema = parameter_schema(&doc, "get", "/v1/keys/{account_id}/{device}", "device");
    let pattern = schema["pattern"].as_str().unwrap_or_else(|| panic!("`device` has no pattern: {schema}"));
    // proptest generates from the regex without its anchors.
    let body = pattern.trim_start_matches('^').trim_end_matches('$');
    let devices = proptest::string::string_regex(body).unwrap();
    let fixture = Fixture::new();
    TestRunner::new(fuzz_config())
        .run(&devices, |device| {
            for account in [fixture.account, Uuid::new_v4()] {
                let path = format!("/v1/keys/{account}/{device}");
                let answer = fixture.call(fixture.signed("GET", &path, Vec::new()))?;
                if answer.status != StatusCode::OK {
                    let error = answer.check_json_refusal()?;
                    proptest::prop_assert_eq!(answer.status, StatusCode::NOT_FOUND, "{} {:?}", path, error);
                }
            }
            Ok(())
        })
        .unwrap();
    // And what it forbids is refused, `u32::from_str`'s `+7` included.
    let regex = regex_lite(pattern);
    for device in ["+7", "-1", "1.0", "abc", "1234567890", "**", " 1"] {
        assert!(!regex(device), "the pattern allows {device:?}");
        let path = format!("/v1/keys/{}/{}", fixture.account, device.replace(' ', "%20"));
        let answer = fixture.call(fixture.signed("GET", &path, Vec::new())).unwrap();
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {answer:?}");
        assert_eq!(answer.check_json_refusal().unwrap().code, "invalid_request");
    }
}

/// The `device` pattern, `^(\*|[0-9]{1,9})$`, as a plain function (no regex crate here).
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    assert_eq!(pattern, r"^(\*|[0-9]{1,9})$", "the pattern changed; update this test");
    |s: &str| s == "*" || ((1..=9).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Regression (schemathesis, "schema-violating request accepted"): serde reads a struct from a
/// JSON array of its fields, so `[null, null]` was a valid prekey upload and `[<device>]` added
/// a device, though the document says both bodies are objects.
#[test]
fn a_json_array_is_not_an_object_body() {
    let fixture = Fixture::new();
    let (device, _) = new_device(&fixture.identity);
    let as_array = serde_json::to_vec(&[&device]).unwrap();
    let as_object = serde_json::to_vec(&AddDeviceRequest { device }).unwrap();
    for (method, path, body) in [
        ("PUT", "/v1/keys", b"[null, null]".to_vec()),
        ("PUT", "/v1/keys", b"  []".to_vec()),
        ("POST", "/v1/devices", as_array),
    ] {
        let answer = fixture.call(fixture.signed(method, path, body)).unwrap();
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{method} {path}: {answer:?}");
        assert_eq!(answer.check_json_refusal().unwrap().code, "invalid_request");
    }
    let answer = fixture.call(fixture.signed("POST", "/v1/devices", as_object)).unwrap();
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let answer = fixture.call(crate::fuzz::post("/v1/accounts", b"[]".to_vec())).unwrap();
    assert_eq!(answer.check_json_refusal().unwrap().code, "invalid_request");
}

/// Regression (schemathesis, "schema-valid request rejected"): `"id": 12.0` is an integer by
/// JSON Schema, which the document's `integer` means, and was refused as "expected u32".
#[test]
fn whole_floats_are_read_as_integers() {
    let fixture = Fixture::new();
    let mut body = serde_json::to_value(upload(&fixture.identity)).unwrap();
    body["one_time_prekeys"][0]["id"] = serde_json::json!(12.0);
    body["signed_prekey"]["id"] = serde_json::json!(10.0);
    let answer = fixture.call(fixture.signed("PUT", "/v1/keys", serde_json::to_vec(&body).unwrap())).unwrap();
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{answer:?}");
    body["one_time_prekeys"][0]["id"] = serde_json::json!(12.5);
    let answer = fixture.call(fixture.signed("PUT", "/v1/keys", serde_json::to_vec(&body).unwrap())).unwrap();
    assert_eq!(answer.check_json_refusal().unwrap().code, "invalid_request");
}

/// The document's bounds are the server's: a longer device name or more one-time prekeys
/// than it says are refused, so without them schema-valid bodies were refused.
#[test]
fn document_bounds_are_the_servers_limits() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["NewDevice"]["properties"]["name"]["maxLength"], MAX_DEVICE_NAME_CHARS);
    for schema in ["NewDevice", "PreKeyUpload"] {
        for list in ["one_time_prekeys", "one_time_kyber_prekeys"] {
            assert_eq!(schemas[schema]["properties"][list]["maxItems"], MAX_PREKEYS_PER_UPLOAD, "{schema}.{list}");
        }
    }
}

/// Every 429 is `rate_limited` with a `Retry-After` header, and the document says so.
#[test]
fn every_429_declares_retry_after() {
    let doc = document();
    let mut limited = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(response) = op.pointer("/responses/429") {
                limited += 1;
                let header = &response["headers"]["Retry-After"];
                assert_eq!(header["schema"]["type"], "integer", "{method} {path}: {response}");
            }
        }
    }
    assert!(limited >= 4, "only {limited} operations declare 429");
}

/// Creates a group owned by the fixture's account; its id.
fn create_group(fixture: &Fixture) -> Uuid {
    let answer = fixture.call(fixture.signed("POST", "/v1/groups", b"{}".to_vec())).unwrap();
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let group: hush_wire::api::GroupInfo = serde_json::from_slice(&answer.body).unwrap();
    group.group_id
}

/// Regression (schemathesis, "schema-valid request rejected"): `PATCH /v1/groups/{id}` with
/// `{}` was valid by the document and refused as "changes nothing". Now the document asks for
/// at least one property, none `null` and no others, and the server refuses exactly those.
#[test]
fn a_group_update_that_changes_nothing_is_schema_invalid_and_refused() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["UpdateGroupRequest"];
    assert_eq!(schema["minProperties"], 1, "{schema}");
    assert!(schema.get("maxProperties").is_none(), "{schema}");
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    for (name, property) in schema["properties"].as_object().unwrap() {
        assert!(property["type"].is_string(), "{name} may be null: {property}");
    }
    let fixture = Fixture::new();
    let path = format!("/v1/groups/{}", create_group(&fixture));
    for body in [r#"{}"#, r#"{"title":null}"#, r#"{"members_can_add":null}"#, r#"{"colour":"red"}"#] {
        let answer = fixture.call(fixture.signed("PATCH", &path, body.as_bytes().to_vec())).unwrap();
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {answer:?}");
        assert_eq!(answer.check_json_refusal().unwrap().code, "invalid_request", "{body}");
    }
    let answer = fixture.call(fixture.signed("PATCH", &path, br#"{"title":"QQ=="}"#.to_vec())).unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
}

/// Regression (schemathesis, "schema-valid request rejected"): adding `{"members": []}` was
/// valid by the document and refused; the document now says at least one.
#[test]
fn adding_no_members_is_schema_invalid_and_refused() {
    let doc = document();
    assert_eq!(doc["components"]["schemas"]["AddMembersRequest"]["properties"]["members"]["minItems"], 1);
    let fixture = Fixture::new();
    let path = format!("/v1/groups/{}/members", create_group(&fixture));
    let answer = fixture.call(fixture.signed("POST", &path, br#"{"members":[]}"#.to_vec())).unwrap();
    assert_eq!(answer.check_json_refusal().unwrap().code, "invalid_request");
}

/// The group blobs' byte limits reach the document as base64 lengths that always fit: without
/// them a schema-valid title of 2,000 base64 characters was refused with 413.
#[test]
fn group_blob_lengths_in_the_document_fit_the_servers_limits() {
    use hush_wire::api::base64_chars_that_fit;
    use hush_wire::limits::{MAX_GROUP_AVATAR_BYTES, MAX_GROUP_DESCRIPTION_BYTES, MAX_GROUP_TITLE_BYTES};
    let doc = document();
    let limits = [
        ("title", MAX_GROUP_TITLE_BYTES),
        ("description", MAX_GROUP_DESCRIPTION_BYTES),
        ("avatar", MAX_GROUP_AVATAR_BYTES),
    ];
    for schema in ["CreateGroupRequest", "UpdateGroupRequest"] {
        for (field, max) in limits {
            let length = &doc["components"]["schemas"][schema]["properties"][field]["maxLength"];
            assert_eq!(*length, base64_chars_that_fit(max), "{schema}.{field}");
        }
    }
    // The longest the document allows is accepted.
    let fixture = Fixture::new();
    let path = format!("/v1/groups/{}", create_group(&fixture));
    let title = "A".repeat(base64_chars_that_fit(MAX_GROUP_TITLE_BYTES));
    let body = serde_json::to_vec(&serde_json::json!({ "title": title })).unwrap();
    let answer = fixture.call(fixture.signed("PATCH", &path, body)).unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
}
