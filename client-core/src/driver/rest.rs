//! REST calls to `hushd`, signed with the device auth key (`Authorization: Hush-Sig ...`).

use std::time::Duration;

use hush_keys::auth::DeviceSigningKey;
use hush_wire::api::{
    AccountInfo, AddDeviceRequest, AddDeviceResponse, ApiError, PreKeyBundles, RegisterRequest, RegisterResponse,
    RegistrationChallenge, ServerInfo,
};
use rand::RngCore as _;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ClientError;
use crate::machine::{RestAnswer, RestCall, RestFailure};

/// How long one REST call may take.
const REST_TIMEOUT: Duration = Duration::from_secs(15);

/// The signing identity of a device.
#[derive(Clone)]
pub(crate) struct DeviceAuth {
    pub account: Uuid,
    pub device_id: u32,
    pub key: DeviceSigningKey,
}

/// A REST client for one server, optionally signing as one device.
#[derive(Clone)]
pub(crate) struct Rest {
    http: reqwest::Client,
    base: String,
    auth: Option<DeviceAuth>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `e` and its causes, e.g. "error sending request for url (…): client error (Connect):
/// tcp connect error: Connection refused (os error 111)": the cause is what tells people what
/// to do.
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

fn network(e: impl std::error::Error + 'static) -> RestFailure {
    RestFailure { status: None, code: "network".into(), message: with_causes(&e) }
}

impl From<RestFailure> for ClientError {
    fn from(f: RestFailure) -> Self {
        match f.status {
            Some(status) => ClientError::Server { status, code: f.code, message: f.message },
            None => ClientError::Network(f.message),
        }
    }
}

impl Rest {
    pub fn new(base: &str, auth: Option<DeviceAuth>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(REST_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), auth })
    }

    async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>, RestFailure> {
        self.call_as(method, path, body, "application/json").await
    }

    /// A call whose body is `content_type` (JSON for every call but archive chunks, which are
    /// raw bytes); the signature covers the body's bytes as sent.
    async fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<Vec<u8>, RestFailure> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(network)?;
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            let mut nonce = [0u8; 16];
            rand::rng().fill_bytes(&mut nonce);
            let body_bytes = body.as_deref().unwrap_or(&[]);
            let header =
                auth.key.rest_authorization(auth.account, auth.device_id, method, path, body_bytes, now_ms(), nonce);
            req = req.header(hush_wire::api::AUTH_HEADER, header);
        }
        if let Some(body) = body {
            req = req.header("content-type", content_type).body(body);
        }
        let resp = req.send().await.map_err(network)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(network)?.to_vec();
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let err: ApiError = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| ApiError { code: "http_error".into(), message: format!("HTTP {status}") });
        Err(RestFailure { status: Some(status), code: err.code, message: err.message })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, RestFailure> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| RestFailure {
            status: None,
            code: "bad_answer".into(),
            message: format!("the server's answer to {method} {path} does not decode: {e}"),
        })
    }

    /// `GET /v1/server`.
    pub async fn server_info(&self) -> Result<ServerInfo, RestFailure> {
        self.json("GET", "/v1/server", None).await
    }

    /// `POST /v1/accounts/challenge`: what a registration signs.
    pub async fn registration_challenge(&self) -> Result<RegistrationChallenge, RestFailure> {
        self.json("POST", "/v1/accounts/challenge", None).await
    }

    /// `POST /v1/accounts`.
    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, RestFailure> {
        let body = serde_json::to_vec(req).map_err(network)?;
        self.json("POST", "/v1/accounts", Some(body)).await
    }

    /// `POST /v1/devices`, signed by this device: adds another device to its account.
    pub async fn add_device(&self, req: &AddDeviceRequest) -> Result<AddDeviceResponse, RestFailure> {
        let body = serde_json::to_vec(req).map_err(network)?;
        self.json("POST", "/v1/devices", Some(body)).await
    }

    /// `POST /v1/devices/link-tokens` (the primary device): a single-use token for one new device.
    pub async fn link_token(&self) -> Result<hush_wire::api::LinkToken, RestFailure> {
        self.json("POST", "/v1/devices/link-tokens", None).await
    }

    /// `PUT /v1/provisioning/{address}`: hands `body` to the new device waiting there.
    pub async fn provision(&self, address: &str, body: &hush_wire::api::ProvisioningBody) -> Result<(), RestFailure> {
        let body = serde_json::to_vec(body).map_err(network)?;
        self.call("PUT", &format!("/v1/provisioning/{address}"), Some(body)).await.map(|_| ())
    }

    /// `POST /v1/devices/link` (unsigned: the link token vouches): this new device joins its account.
    pub async fn link_device(&self, req: &hush_wire::api::LinkDeviceRequest) -> Result<AddDeviceResponse, RestFailure> {
        let body = serde_json::to_vec(req).map_err(network)?;
        self.json("POST", "/v1/devices/link", Some(body)).await
    }

    /// `POST /v1/link-archives` (the primary device): a new, empty history archive.
    pub async fn create_archive(&self) -> Result<hush_wire::api::LinkArchive, RestFailure> {
        self.json("POST", "/v1/link-archives", None).await
    }

    /// `PUT /v1/link-archives/{id}/chunks/{index}`: one sealed chunk, as raw bytes.
    pub async fn put_archive_chunk(&self, id: &str, index: u32, chunk: Vec<u8>) -> Result<(), RestFailure> {
        let path = format!("/v1/link-archives/{id}/chunks/{index}");
        self.call_as("PUT", &path, Some(chunk), "application/octet-stream").await.map(|_| ())
    }

    /// `POST /v1/link-archives/{id}/complete`: the archive holds chunks `0..chunks`.
    pub async fn complete_archive(&self, id: &str, chunks: u32) -> Result<(), RestFailure> {
        let body = serde_json::to_vec(&hush_wire::api::CompleteArchive { chunks }).map_err(network)?;
        self.call("POST", &format!("/v1/link-archives/{id}/complete"), Some(body)).await.map(|_| ())
    }

    /// `GET /v1/link-archives/{id}/chunks/{index}`: one sealed chunk.
    pub async fn archive_chunk(&self, id: &str, index: u32) -> Result<Vec<u8>, RestFailure> {
        self.call("GET", &format!("/v1/link-archives/{id}/chunks/{index}"), None).await
    }

    /// `DELETE /v1/link-archives/{id}`.
    pub async fn delete_archive(&self, id: &str) -> Result<(), RestFailure> {
        self.call("DELETE", &format!("/v1/link-archives/{id}"), None).await.map(|_| ())
    }

    /// `GET /v1/accounts/username/{username}`.
    pub async fn lookup_username(&self, username: &str) -> Result<AccountInfo, RestFailure> {
        self.json("GET", &format!("/v1/accounts/username/{username}"), None).await
    }

    /// `PUT /v1/devices/self/push`: sets or replaces this device's push target.
    pub async fn set_push(&self, target: &hush_wire::api::PushTargetBody) -> Result<(), RestFailure> {
        let body = serde_json::to_vec(target).map_err(network)?;
        self.call("PUT", "/v1/devices/self/push", Some(body)).await.map(|_| ())
    }

    /// `GET /v1/devices/self/push`: this device's push target, if it has one.
    pub async fn push(&self) -> Result<Option<hush_wire::api::PushStatus>, RestFailure> {
        match self.json("GET", "/v1/devices/self/push", None).await {
            Ok(status) => Ok(Some(status)),
            Err(f) if f.status == Some(404) && f.code == "no_push_target" => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// `DELETE /v1/devices/self/push`: this device gets no more wake-ups.
    pub async fn remove_push(&self) -> Result<(), RestFailure> {
        match self.call("DELETE", "/v1/devices/self/push", None).await {
            Ok(_) => Ok(()),
            Err(f) if f.status == Some(404) && f.code == "no_push_target" => Ok(()),
            Err(f) => Err(f),
        }
    }

    /// `GET /v1/accounts/{account}/devices`: the devices of `account`.
    pub async fn devices(&self, account: uuid::Uuid) -> Result<hush_wire::api::DeviceList, RestFailure> {
        self.json("GET", &format!("/v1/accounts/{account}/devices"), None).await
    }

    /// `DELETE /v1/devices/{id}`: removes a device of this account (the primary removes any
    /// other; any device removes itself).
    pub async fn remove_device(&self, id: u32) -> Result<(), RestFailure> {
        self.call("DELETE", &format!("/v1/devices/{id}"), None).await.map(|_| ())
    }

    /// `PATCH /v1/devices/self` with `{"name": ...}`: names this device (`None` clears it).
    pub async fn rename_device(&self, name: Option<&str>) -> Result<(), RestFailure> {
        let body = serde_json::to_vec(&serde_json::json!({ "name": name })).map_err(network)?;
        self.call("PATCH", "/v1/devices/self", Some(body)).await.map(|_| ())
    }

    /// Carries out a call the machine asked for.
    pub async fn execute(&self, call: RestCall) -> Result<RestAnswer, RestFailure> {
        match call {
            RestCall::LookupAccount(id) => {
                self.json("GET", &format!("/v1/accounts/{id}"), None).await.map(RestAnswer::Account)
            }
            RestCall::FetchBundles { account, devices: None } => {
                self.json("GET", &format!("/v1/keys/{account}/*"), None).await.map(RestAnswer::Bundles)
            }
            RestCall::FetchBundles { account, devices: Some(list) } => {
                // One call per device, so devices that already have a session keep it.
                let mut merged: Option<PreKeyBundles> = None;
                for device in list {
                    let one: PreKeyBundles = match self.json("GET", &format!("/v1/keys/{account}/{device}"), None).await
                    {
                        Ok(b) => b,
                        Err(f) if f.status == Some(404) && f.code == "unknown_device" => continue,
                        Err(f) => return Err(f),
                    };
                    match merged.as_mut() {
                        Some(m) => m.devices.extend(one.devices),
                        None => merged = Some(one),
                    }
                }
                let empty = || PreKeyBundles { account_id: account, identity_key: Default::default(), devices: vec![] };
                Ok(RestAnswer::Bundles(merged.unwrap_or_else(empty)))
            }
            RestCall::FetchCertificate => self.json("GET", "/v1/certificate", None).await.map(RestAnswer::Certificate),
            RestCall::FetchOwnDevices => {
                let own = self.auth.as_ref().map(|a| a.account).unwrap_or_default();
                self.json("GET", &format!("/v1/accounts/{own}/devices"), None).await.map(RestAnswer::Devices)
            }
            RestCall::PrekeyCount => self.json("GET", "/v1/keys/count", None).await.map(RestAnswer::PrekeyCount),
            RestCall::UploadPrekeys(upload) => {
                let body = serde_json::to_vec(&upload).map_err(network)?;
                self.call("PUT", "/v1/keys", Some(body)).await.map(|_| RestAnswer::Done)
            }
            RestCall::CreateGroup(request) => {
                let body = serde_json::to_vec(&request).map_err(network)?;
                self.json("POST", "/v1/groups", Some(body)).await.map(RestAnswer::Group)
            }
            RestCall::GetGroup(group) => {
                self.json("GET", &format!("/v1/groups/{group}"), None).await.map(RestAnswer::Group)
            }
            RestCall::UpdateGroup { group, request } => {
                let body = serde_json::to_vec(&request).map_err(network)?;
                self.json("PATCH", &format!("/v1/groups/{group}"), Some(body)).await.map(RestAnswer::RosterChange)
            }
            RestCall::AddMembers { group, request } => {
                let body = serde_json::to_vec(&request).map_err(network)?;
                let path = format!("/v1/groups/{group}/members");
                self.json("POST", &path, Some(body)).await.map(RestAnswer::RosterChange)
            }
            RestCall::DeleteGroup(group) => {
                self.call("DELETE", &format!("/v1/groups/{group}"), None).await.map(|_| RestAnswer::Done)
            }
            RestCall::RemoveMember { group, account } => {
                let path = format!("/v1/groups/{group}/members/{account}");
                self.json("DELETE", &path, None).await.map(RestAnswer::RosterChange)
            }
            RestCall::SetRole { group, account, request } => {
                let body = serde_json::to_vec(&request).map_err(network)?;
                let path = format!("/v1/groups/{group}/members/{account}/role");
                self.json("PUT", &path, Some(body)).await.map(RestAnswer::RosterChange)
            }
        }
    }
}
