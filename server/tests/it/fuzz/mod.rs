//! Fuzzing what hushd decodes from clients, on stable: REST bodies, path parameters, query
//! strings and `Authorization` headers through the real router ([`hush_server::http::router`]
//! with `oneshot`), and WebSocket frames through the real connection
//! ([`hush_server::ws::conn::run`]) — all on a real SQLite store.
//!
//! Cases per property: `HUSH_FUZZ_CASES` (default 64); see [`mutate::fuzz_config`].

mod json;
pub mod mutate;
mod rest;
mod ws;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hush_keys::auth::DeviceSigningKey;
use hush_keys::registration::{RegistrationSigningInput, sign_registration};
use hush_server::config::Config;
use hush_server::state::{AppState, now_ms};
use hush_wire::api::{
    ApiError, B64, NewDevice, PreKey, PreKeyUpload, RegisterRequest, RegisterResponse, RegistrationChallenge,
    RegistrationProof, SignedPreKey,
};
use libsignal_protocol::{GenericSignedPreKey as _, IdentityKeyPair, KeyPair, KyberPreKeyRecord, kem};
use proptest::prelude::*;
use tower::ServiceExt as _;
use uuid::Uuid;

/// Longest a request or a connection step may take before the property fails as a hang.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A signed EC prekey, signed by `identity`.
fn signed_ec(identity: &IdentityKeyPair, id: u32) -> SignedPreKey {
    let mut rng = rand::rng();
    let public = KeyPair::generate(&mut rng).public_key.serialize().to_vec();
    let signature = identity.private_key().calculate_signature(&public, &mut rng).unwrap().to_vec();
    SignedPreKey { id, public_key: B64(public), signature: B64(signature) }
}

/// A signed Kyber1024 prekey, signed by `identity`.
fn kyber(identity: &IdentityKeyPair, id: u32) -> SignedPreKey {
    let record = KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, id.into(), identity.private_key()).unwrap();
    let public = record.public_key().unwrap().serialize().to_vec();
    SignedPreKey { id, public_key: B64(public), signature: B64(record.signature().unwrap()) }
}

fn one_time(id: u32) -> PreKey {
    PreKey { id, public_key: B64(KeyPair::generate(&mut rand::rng()).public_key.serialize().to_vec()) }
}

/// Valid keys of a new device of the account `identity` (one one-time key of each kind).
pub fn new_device(identity: &IdentityKeyPair) -> (NewDevice, DeviceSigningKey) {
    let signing_key = DeviceSigningKey::generate(&mut rand::rng());
    let device = NewDevice {
        registration_id: 4242,
        auth_key: B64(signing_key.public().to_bytes().to_vec()),
        name: Some("fuzz".into()),
        signed_prekey: signed_ec(identity, 1),
        kyber_last_resort: kyber(identity, 2),
        one_time_prekeys: vec![one_time(3)],
        one_time_kyber_prekeys: vec![kyber(identity, 4)],
    };
    (device, signing_key)
}

/// A valid prekey upload for the account `identity`: every field present.
pub fn upload(identity: &IdentityKeyPair) -> PreKeyUpload {
    PreKeyUpload {
        signed_prekey: Some(signed_ec(identity, 10)),
        kyber_last_resort: Some(kyber(identity, 11)),
        one_time_prekeys: vec![one_time(12), one_time(13)],
        one_time_kyber_prekeys: vec![kyber(identity, 14)],
    }
}

/// An answer, read to the end.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Fails unless this is a 4xx with a JSON `{"code","message"}` body and a snake_case code.
    pub fn check_json_refusal(&self) -> Result<ApiError, TestCaseError> {
        prop_assert!(self.status.is_client_error(), "expected a 4xx, got {self:?}");
        self.check_json_error()
    }

    /// Fails unless the body is a JSON `{"code","message"}` with a snake_case code.
    pub fn check_json_error(&self) -> Result<ApiError, TestCaseError> {
        let json = self.content_type.as_deref().is_some_and(|t| t.starts_with("application/json"));
        prop_assert!(json, "error answer is not JSON: {self:?}");
        let error: ApiError = serde_json::from_slice(&self.body)
            .map_err(|e| TestCaseError::fail(format!("error body is not an ApiError ({e}): {self:?}")))?;
        let snake = !error.code.is_empty() && error.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        prop_assert!(snake && !error.message.is_empty(), "bad error body {error:?}");
        Ok(error)
    }
}

/// A server state and router on a fresh SQLite database, with one registered account.
pub struct Fixture {
    rt: tokio::runtime::Runtime,
    app: Router,
    pub state: AppState,
    pub identity: IdentityKeyPair,
    pub account: Uuid,
    pub signing_key: DeviceSigningKey,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Builds the state and registers an account (primary device 1).
    pub fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    /// As [`Fixture::new`], with `tweak` applied to the configuration last.
    pub fn with(tweak: impl FnOnce(&mut Config)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut config = Config::for_data_dir(dir.path());
        // Thousands of sends per property: a rate-limited send is answered before the
        // store sees it, so keep the limit out of the way.
        config.limits.rate_burst = 1_000_000;
        config.limits.rate_per_second = 1_000_000.0;
        // Likewise the per-address limits: every request here comes from the same (no) address.
        let lifted = hush_server::config::Rate { burst: 1_000_000, per_hour: 1_000_000 };
        config.abuse.register = lifted;
        config.abuse.lookup = lifted;
        tweak(&mut config);
        let (state, _writer) = rt.block_on(hush_server::serve::build_state(config)).unwrap();
        let app = hush_server::http::router(state.clone());
        let identity = IdentityKeyPair::generate(&mut rand::rng());
        let (device, signing_key) = new_device(&identity);
        let mut fixture = Fixture { rt, app, state, identity, account: Uuid::nil(), signing_key, _dir: dir };
        let register = fixture.register_request("fuzz_owner", device);
        let answer = fixture.call(post("/v1/accounts", serde_json::to_vec(&register).unwrap())).unwrap();
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        let registered: RegisterResponse = serde_json::from_slice(&answer.body).unwrap();
        fixture.account = registered.account_id;
        fixture
    }

    /// A registration of `username` with `device` under the fixture's identity, signed over a
    /// challenge from the server (as every client must).
    pub fn register_request(&self, username: &str, device: NewDevice) -> RegisterRequest {
        let answer = self.call(post("/v1/accounts/challenge", Vec::new())).unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        let challenge: RegistrationChallenge = serde_json::from_slice(&answer.body).unwrap();
        let input = RegistrationSigningInput {
            username,
            server_time_ms: challenge.server_time,
            nonce: &challenge.nonce.0,
            auth_key: &device.auth_key.0,
            registration_id: device.registration_id,
        };
        let signature = sign_registration(&self.identity, &input, &mut rand::rng()).unwrap();
        RegisterRequest {
            username: username.to_owned(),
            identity_key: B64(self.identity.identity_key().serialize().to_vec()),
            device,
            proof: RegistrationProof {
                nonce: challenge.nonce,
                server_time: challenge.server_time,
                signature: B64(signature),
            },
        }
    }

    /// Runs a future on the fixture's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Sends one request through the router; a hang is an error.
    pub fn call(&self, request: Request<Body>) -> Result<Answer, TestCaseError> {
        let what = format!("{} {}", request.method(), request.uri());
        self.block_on(async {
            let response = tokio::time::timeout(STEP_TIMEOUT, self.app.clone().oneshot(request))
                .await
                .map_err(|_| TestCaseError::fail(format!("{what} got no answer in {STEP_TIMEOUT:?}")))?
                .unwrap_or_else(|never| match never {});
            let status = response.status();
            let content_type =
                response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = tokio::time::timeout(STEP_TIMEOUT, axum::body::to_bytes(response.into_body(), usize::MAX))
                .await
                .map_err(|_| TestCaseError::fail(format!("{what}: the body did not end in {STEP_TIMEOUT:?}")))?
                .map_err(|e| TestCaseError::fail(format!("{what}: reading the body failed: {e}")))?;
            Ok(Answer { status, content_type, body: body.to_vec() })
        })
    }

    /// The `Authorization` value of the registered device for a request made now.
    pub fn authorization(&self, method: &str, path_and_query: &str, body: &[u8]) -> String {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        self.signing_key.rest_authorization(self.account, 1, method, path_and_query, body, now_ms(), nonce)
    }

    /// A request signed by the registered device.
    pub fn signed(&self, method: &str, path_and_query: &str, body: Vec<u8>) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::AUTHORIZATION, self.authorization(method, path_and_query, &body))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    }
}

/// An unauthenticated JSON POST.
pub fn post(path: &str, body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}
