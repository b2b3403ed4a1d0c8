//! The per-address registration limit: what it charges.

use axum::http::StatusCode;
use hush_server::config::Rate;
use hush_wire::api::ApiError;

use crate::fuzz::{Fixture, new_device, post};

/// A shared address (a campus, a carrier NAT) must not lose its registrations to requests
/// that fail the cheap checks: a taken username (a lookup, charged as one) or a challenge
/// that is not ours. An invalid signature is charged: that is the request a
/// guessing client makes, and it costs the server its verification.
#[test]
fn registration_limit_charges_signed_attempts_not_taken_usernames_or_bad_challenges() {
    // Three registrations at once, one of them the fixture's own.
    let f = Fixture::with(|c| c.abuse.register = Rate { burst: 3, per_hour: 1 });
    let register = |req: &hush_wire::api::RegisterRequest| {
        let answer = f.call(post("/v1/accounts", serde_json::to_vec(req).unwrap())).unwrap();
        let code = serde_json::from_slice::<ApiError>(&answer.body).map(|e| e.code).unwrap_or_default();
        (answer.status, code)
    };
    for _ in 0..5 {
        let taken = f.register_request("fuzz_owner", new_device(&f.identity).0);
        assert_eq!(register(&taken), (StatusCode::CONFLICT, "username_taken".to_owned()));
    }
    for _ in 0..5 {
        let mut not_ours = f.register_request("alice", new_device(&f.identity).0);
        not_ours.proof.nonce.0[0] ^= 1;
        assert_eq!(register(&not_ours), (StatusCode::BAD_REQUEST, "registration_challenge_invalid".to_owned()));
    }
    let valid = f.register_request("alice", new_device(&f.identity).0);
    assert_eq!(register(&valid).0, StatusCode::CREATED, "failures that are not charged used up the limit");
    let mut forged = f.register_request("bob", new_device(&f.identity).0);
    let last = forged.proof.signature.0.len() - 1;
    forged.proof.signature.0[last] ^= 1;
    assert_eq!(register(&forged), (StatusCode::BAD_REQUEST, "registration_signature_invalid".to_owned()));
    // The forged signature was charged: the burst is used up.
    let valid = f.register_request("bob", new_device(&f.identity).0);
    assert_eq!(register(&valid), (StatusCode::TOO_MANY_REQUESTS, "rate_limited".to_owned()));
}
