//! [`TestAccount`] and [`TestDevice`]: registered accounts and their devices.

use hush_keys::auth::DeviceSigningKey;
use hush_keys::registration::{RegistrationSigningInput, sign_registration};
use hush_wire::api::{
    AddDeviceRequest, AddDeviceResponse, B64, NewDevice, RegisterRequest, RegisterResponse, RegistrationChallenge,
    RegistrationProof,
};
use libsignal_protocol::IdentityKeyPair;
use rand::RngCore as _;
use uuid::Uuid;

use crate::keys::{DEFAULT_ONE_TIME_KEYS, DeviceKeys, identity, identity_public};
use crate::rest::{ApiResponse, RestClient};
use crate::server::TestServer;

/// One registered device: its ids, its auth key and the keys it uploaded.
#[derive(Debug, Clone)]
pub struct TestDevice {
    /// The account it belongs to.
    pub account_id: Uuid,
    /// Its device id (1 is the primary).
    pub device_id: u32,
    /// Its libsignal registration id.
    pub registration_id: u32,
    /// Its ed25519 authentication key.
    pub signing_key: DeviceSigningKey,
    /// Exactly what it uploaded at registration.
    pub uploaded: NewDevice,
}

impl TestDevice {
    /// The `Authorization` header value for a request made now with a fresh nonce.
    pub fn authorization(&self, method: &str, path_and_query: &str, body: &[u8]) -> String {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        self.authorization_at(method, path_and_query, body, crate::now_ms(), nonce)
    }

    /// The `Authorization` header value with a chosen timestamp and nonce.
    pub fn authorization_at(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp_ms: u64,
        nonce: [u8; 16],
    ) -> String {
        self.signing_key.rest_authorization(
            self.account_id,
            self.device_id,
            method,
            path_and_query,
            body,
            timestamp_ms,
            nonce,
        )
    }

    /// The signature for the WebSocket challenge `nonce`.
    pub fn sign_challenge(&self, nonce: &[u8]) -> [u8; 64] {
        self.signing_key.sign_ws_challenge(nonce, self.account_id, self.device_id)
    }
}

/// A registered account with its identity and devices.
pub struct TestAccount {
    /// The unique username it registered with.
    pub username: String,
    /// Its account id (ACI), chosen by the server.
    pub account_id: Uuid,
    /// Its identity key pair, shared by all its devices.
    pub identity: IdentityKeyPair,
    /// Its devices, in the order they were added.
    pub devices: Vec<TestDevice>,
}

impl std::fmt::Debug for TestAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAccount")
            .field("username", &self.username)
            .field("account_id", &self.account_id)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl TestAccount {
    /// Registers an account named `prefix` plus a random suffix, with
    /// [`DEFAULT_ONE_TIME_KEYS`] one-time keys of each kind.
    pub async fn register(server: &TestServer, prefix: &str) -> TestAccount {
        Self::register_with_keys(server, prefix, DEFAULT_ONE_TIME_KEYS).await
    }

    /// Registers an account with `one_time` one-time prekeys of each kind.
    pub async fn register_with_keys(server: &TestServer, prefix: &str, one_time: u32) -> TestAccount {
        let identity = identity();
        let keys = DeviceKeys::generate(&identity, one_time);
        let username = crate::unique_username(prefix);
        let req = register_request(server, &username, &identity, &keys.new_device).await;
        let resp: RegisterResponse = RestClient::new(server).post_json("/v1/accounts", &req).await.json(201);
        assert_eq!(resp.device_id, 1, "the primary device must be device 1");
        TestAccount {
            username,
            account_id: resp.account_id,
            identity,
            devices: vec![TestDevice {
                account_id: resp.account_id,
                device_id: resp.device_id,
                registration_id: keys.new_device.registration_id,
                signing_key: keys.signing_key,
                uploaded: keys.new_device,
            }],
        }
    }

    /// Adds a new device (signed by the primary device) and returns a copy of it.
    pub async fn add_device(&mut self, server: &TestServer) -> TestDevice {
        let keys = DeviceKeys::generate(&self.identity, DEFAULT_ONE_TIME_KEYS);
        let resp: AddDeviceResponse = self.try_add_device(server, &keys.new_device).await.json(201);
        let device = TestDevice {
            account_id: self.account_id,
            device_id: resp.device_id,
            registration_id: keys.new_device.registration_id,
            signing_key: keys.signing_key,
            uploaded: keys.new_device,
        };
        self.devices.push(device.clone());
        device
    }

    /// Tries to add a device with the given keys; returns the raw answer.
    pub async fn try_add_device(&self, server: &TestServer, device: &NewDevice) -> ApiResponse {
        let body = AddDeviceRequest { device: device.clone() };
        RestClient::new(server).signed(self.primary(), "POST", "/v1/devices", Some(&body)).await
    }

    /// The primary device (id 1).
    pub fn primary(&self) -> &TestDevice {
        self.device(1)
    }

    /// The device with id `device_id`; panics if the account has none.
    pub fn device(&self, device_id: u32) -> &TestDevice {
        self.devices
            .iter()
            .find(|d| d.device_id == device_id)
            .unwrap_or_else(|| panic!("{} has no device {device_id}", self.username))
    }

    /// The account id as the 16 raw bytes used in frames.
    pub fn id_bytes(&self) -> Vec<u8> {
        self.account_id.as_bytes().to_vec()
    }
}

/// A registration body for `username` with the given identity and primary device, signed by
/// `identity` over a fresh challenge from `server` (as every client must).
pub async fn register_request(
    server: &TestServer,
    username: &str,
    identity: &IdentityKeyPair,
    device: &NewDevice,
) -> RegisterRequest {
    signed_register_request(&challenge(server).await, username, identity, device)
}

/// A fresh registration challenge from `server`.
pub async fn challenge(server: &TestServer) -> RegistrationChallenge {
    RestClient::new(server).raw("POST", "/v1/accounts/challenge", None, None).await.json(200)
}

/// A registration body signed by `identity` over `challenge` (no I/O).
pub fn signed_register_request(
    challenge: &RegistrationChallenge,
    username: &str,
    identity: &IdentityKeyPair,
    device: &NewDevice,
) -> RegisterRequest {
    let normalized = username.to_ascii_lowercase();
    let input = RegistrationSigningInput {
        username: &normalized,
        server_time_ms: challenge.server_time,
        nonce: &challenge.nonce.0,
        auth_key: &device.auth_key.0,
        registration_id: device.registration_id,
    };
    let signature = sign_registration(identity, &input, &mut rand::rng())
        .unwrap_or_else(|e| panic!("cannot sign a registration: {e}"));
    RegisterRequest {
        username: username.to_owned(),
        identity_key: B64(identity_public(identity)),
        device: device.clone(),
        proof: RegistrationProof {
            nonce: challenge.nonce.clone(),
            server_time: challenge.server_time,
            signature: B64(signature),
        },
    }
}
