//! REST: bodies, path parameters, query strings and `Authorization` headers through the
//! real router. A bad request gets a 4xx with a JSON `{"code","message"}` body, never a
//! 5xx and never a hang.

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use hush_keys::auth::AuthHeader;
use hush_wire::api::{
    AddDeviceRequest, AddMembersRequest, CreateGroupRequest, GroupInfo, GroupRole, SetRoleRequest, UpdateGroupRequest,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use uuid::Uuid;

use super::mutate::{fuzz_config, mutated};
use super::{Answer, Fixture, json, new_device, post, upload};

/// Bodies made from a valid one: structured JSON edits, byte edits, or any bytes.
fn bodies_from<T: serde::Serialize>(valid: &T) -> impl Strategy<Value = Vec<u8>> + use<T> {
    let value = serde_json::to_value(valid).unwrap();
    let bytes = serde_json::to_vec(valid).unwrap();
    prop_oneof![
        4 => json::edited(value),
        4 => mutated(bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        // Deep nesting must be refused by the parser's recursion limit, not overflow the stack.
        1 => (1..20_000usize, proptest::sample::select(vec!["[", "{\"a\":"])).prop_map(|(n, open)| open.repeat(n).into_bytes()),
    ]
}

/// A success, or a 4xx with a JSON error body.
fn check_success_or_refusal(answer: &Answer) -> Result<(), TestCaseError> {
    if !answer.status.is_success() {
        answer.check_json_refusal()?;
    }
    Ok(())
}

#[test]
fn register_bodies_get_a_success_or_a_json_4xx() {
    let fixture = Fixture::new();
    let (device, _) = new_device(&fixture.identity);
    let valid = fixture.register_request("fuzz_new", device);
    TestRunner::new(fuzz_config())
        .run(&bodies_from(&valid), |body| check_success_or_refusal(&fixture.call(post("/v1/accounts", body))?))
        .unwrap();
}

#[test]
fn signed_bodies_get_a_success_or_a_json_4xx() {
    let fixture = Fixture::new();
    let upload = upload(&fixture.identity);
    let add = AddDeviceRequest { device: new_device(&fixture.identity).0 };
    let create = CreateGroupRequest { members: vec![fixture.account], title: vec![1; 8].into(), ..Default::default() };
    let update =
        UpdateGroupRequest { title: Some(vec![2; 8].into()), members_can_add: Some(true), ..Default::default() };
    let members = AddMembersRequest { members: vec![Uuid::new_v4()] };
    let role = SetRoleRequest { role: GroupRole::Admin };
    // A group the fixture's account owns, so group bodies reach the roster checks too.
    let group = fixture.call(fixture.signed("POST", "/v1/groups", serde_json::to_vec(&create).unwrap())).unwrap();
    let group: GroupInfo = serde_json::from_slice(&group.body).unwrap();
    let (on_group, on_member) =
        (format!("/v1/groups/{}", group.group_id), format!("/v1/groups/{}/members", group.group_id));
    let on_role = format!("{on_member}/{}/role", fixture.account);
    let strategy = prop_oneof![
        bodies_from(&upload).prop_map(|body| ("PUT", "/v1/keys".to_owned(), body)),
        bodies_from(&add).prop_map(|body| ("POST", "/v1/devices".to_owned(), body)),
        bodies_from(&create).prop_map(|body| ("POST", "/v1/groups".to_owned(), body)),
        bodies_from(&update).prop_map(move |body| ("PATCH", on_group.clone(), body)),
        bodies_from(&members).prop_map(move |body| ("POST", on_member.clone(), body)),
        bodies_from(&role).prop_map(move |body| ("PUT", on_role.clone(), body)),
    ];
    TestRunner::new(fuzz_config())
        .run(&strategy, |(method, path, body)| {
            check_success_or_refusal(&fixture.call(fixture.signed(method, &path, body))?)
        })
        .unwrap();
}

/// Every byte outside RFC 3986's unreserved set as `%XX`, so the text stays one segment.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Path segments a client could send: ids in every spelling, numbers out of range, and
/// any text (percent-encoded), plus a few raw broken percent escapes.
fn segment(account: Uuid) -> impl Strategy<Value = String> {
    let spelled = prop_oneof![
        Just(account.to_string()),
        Just(account.simple().to_string()),
        Just(account.to_string().to_uppercase()),
        Just(format!("{{{account}}}")),
        Just(account.urn().to_string()),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        proptest::sample::select(vec![
            "-161",
            "0",
            "1",
            "2",
            "127",
            "128",
            "4294967295",
            "4294967296",
            "99999999999999999999",
            "+5",
            "1e3",
            "0x10",
            "*",
            "**",
            "..",
            ".",
            "fuzz_owner",
            "FUZZ_OWNER",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        ".{1,40}",
    ];
    prop_oneof![
        8 => spelled.prop_map(|s| percent_encode(&s)),
        1 => proptest::sample::select(vec!["%zz", "%", "%ff", "%E2%82", "%00", "a%2Fb", "%2e%2e"]).prop_map(str::to_owned),
    ]
}

/// Query strings: none, plausible ones, or any text percent-encoded.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,8}=[a-zA-Z0-9*%_.-]{0,16}(&[a-z]{1,8}=[a-zA-Z0-9_.-]{0,16}){0,3}".prop_map(|q| format!("?{q}")),
        ".{0,40}".prop_map(|q| format!("?{}", percent_encode(&q))),
        Just("?".to_owned()),
    ]
}

/// Routes with parameters (the account's own id is one of the spellings tried).
const ROUTES: [(&str, &str); 14] = [
    ("GET", "/v1/groups"),
    ("GET", "/v1/groups/{a}"),
    ("DELETE", "/v1/groups/{a}"),
    ("DELETE", "/v1/groups/{a}/members/{b}"),
    ("PUT", "/v1/groups/{a}/members/{b}/role"),
    ("GET", "/v1/accounts/username/{a}"),
    ("GET", "/v1/accounts/{a}"),
    ("GET", "/v1/accounts/{a}/devices"),
    ("DELETE", "/v1/devices/{a}"),
    ("GET", "/v1/keys/{a}/{b}"),
    ("GET", "/v1/keys/count"),
    ("GET", "/v1/certificate"),
    ("GET", "/v1/server"),
    ("GET", "/healthz"),
];

// KNOWN (issue 9, being fixed in server/src/http): axum's `Path` rejection answers a bad
// path parameter (`DELETE /v1/devices/-161`, a non-UUID account id) with `400 text/plain`.
// This property lets exactly that through; TIGHTEN once JSON errors land: drop the
// exception so every refusal must be a JSON `{"code","message"}`.
#[test]
fn path_parameters_and_query_strings_never_get_a_5xx() {
    let fixture = Fixture::new();
    let strategy =
        (proptest::sample::select(ROUTES.to_vec()), segment(fixture.account), segment(fixture.account), query());
    TestRunner::new(fuzz_config())
        .run(&strategy, |((method, route), a, b, query)| {
            let path_and_query = format!("{}{query}", route.replace("{a}", &a).replace("{b}", &b));
            if path_and_query.parse::<axum::http::Uri>().is_err() {
                return Ok(()); // not a request target a client can send at all
            }
            let answer = fixture.call(fixture.signed(method, &path_and_query, Vec::new()))?;
            prop_assert!(!answer.status.is_server_error(), "{method} {path_and_query}: {answer:?}");
            let plain_path_rejection = answer.status == StatusCode::BAD_REQUEST
                && answer.content_type.as_deref().is_some_and(|t| t.starts_with("text/plain"));
            if !answer.status.is_success() && !plain_path_rejection {
                answer.check_json_refusal()?;
            }
            if route == "/v1/keys/count" {
                prop_assert_eq!(answer.status, StatusCode::OK, "a query string broke {}", path_and_query);
            }
            Ok(())
        })
        .unwrap();
}

fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff]
}

/// Header values: edits of a valid one, Hush-Sig with any text, or any bytes.
fn header_values(valid: String) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => mutated(valid.into_bytes()),
        2 => "(?i)hush-sig [ -~]{0,300}".prop_map(String::into_bytes),
        // Bytes a header may carry: visible ASCII, tab, and obs-text (which is not ASCII).
        1 => proptest::collection::vec(header_byte(), 0..300),
        1 => proptest::collection::vec(header_byte(), 1000..1100).prop_map(|tail| [b"Hush-Sig ".to_vec(), tail].concat()),
    ]
}

#[test]
fn malformed_auth_headers_get_401_auth_malformed() {
    let fixture = Fixture::new();
    let valid = fixture.authorization("GET", "/v1/keys/count", b"");
    TestRunner::new(fuzz_config())
        .run(&header_values(valid), |bytes| {
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                return Ok(()); // control characters: no HTTP client can send this header
            };
            let malformed = value.to_str().map(|s| AuthHeader::parse(s).is_err()).unwrap_or(true);
            let request = Request::builder()
                .method("GET")
                .uri("/v1/keys/count")
                .header(header::AUTHORIZATION, value)
                .body(Body::empty())
                .unwrap();
            let answer = fixture.call(request)?;
            if answer.status == StatusCode::OK {
                prop_assert!(!malformed, "a malformed header was accepted");
                return Ok(());
            }
            prop_assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer);
            let error = answer.check_json_error()?;
            if malformed {
                prop_assert_eq!(error.code, "auth_malformed");
            } else {
                let allowed = ["auth_expired", "auth_failed", "auth_replayed"];
                prop_assert!(allowed.contains(&error.code.as_str()), "{error:?}");
            }
            Ok(())
        })
        .unwrap();
}
