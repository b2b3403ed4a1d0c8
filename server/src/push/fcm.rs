//! FCM through the HTTP v1 API: `POST {endpoint}/v1/projects/{project}/messages:send` with
//! an OAuth2 access token from the service account (the JWT-bearer grant of RFC 7523,
//! signed RS256 with `ring`, cached until shortly before it expires). The message is a
//! data message with one opaque flag, no notification block, so nothing is shown and
//! nothing is revealed. The token endpoint is the service account's `token_uri`, so tests
//! and private relays can point both at a local server.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{COLLAPSE_ID, Provider, PushError, Urgency, WakeUp, retry_after};
use crate::store::PushTarget;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// The parts of a Google service-account key file FCM needs.
#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    token_uri: String,
}

/// Why FCM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FcmSetupError {
    /// The key file could not be read.
    #[error("cannot read the FCM service-account file {0}: {1}")]
    Read(String, std::io::Error),
    /// The key file is not a service-account key.
    #[error("the FCM service-account file is not a Google service-account JSON key: {0}")]
    Parse(String),
    /// The private key is not an RSA PKCS#8 key.
    #[error("the FCM service account's private_key is not an RSA PKCS#8 PEM key")]
    Key,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Sends FCM wake-ups.
pub struct Fcm {
    http: reqwest::Client,
    send_url: String,
    email: String,
    token_uri: String,
    key: ring::signature::RsaKeyPair,
    token: Mutex<Option<(String, SystemTime)>>,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm").field("send_url", &self.send_url).finish_non_exhaustive()
    }
}

impl Fcm {
    /// Reads the service-account file; `endpoint` is the API's base URL.
    pub fn from_file(path: &Path, endpoint: &str) -> Result<Self, FcmSetupError> {
        let text = std::fs::read_to_string(path).map_err(|e| FcmSetupError::Read(path.display().to_string(), e))?;
        // serde_json's message names a position, never the file's contents.
        let account: ServiceAccount = serde_json::from_str(&text).map_err(|e| FcmSetupError::Parse(e.to_string()))?;
        let der = pem_body(&account.private_key).ok_or(FcmSetupError::Key)?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|_| FcmSetupError::Key)?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Fcm {
            http,
            send_url: format!("{endpoint}/v1/projects/{}/messages:send", account.project_id),
            email: account.client_email,
            token_uri: account.token_uri,
            key,
            token: Mutex::new(None),
        })
    }

    /// The signed JWT asking for an access token.
    fn assertion(&self, now: u64) -> Result<String, PushError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iss": self.email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| PushError::Failed("signing the OAuth assertion failed".into()))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    async fn access_token(&self, renew: bool) -> Result<String, PushError> {
        let mut cached = self.token.lock().await;
        if !renew
            && let Some((token, until)) = cached.as_ref()
            && SystemTime::now() < *until
        {
            return Ok(token.clone());
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let body = format!("grant_type={GRANT}&assertion={}", self.assertion(now)?);
        let response = self
            .http
            .post(&self.token_uri)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|_| PushError::Retry("the OAuth token endpoint did not answer".into(), None))?;
        let status = response.status();
        if !status.is_success() {
            return Err(if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                PushError::Retry(format!("OAuth token endpoint: HTTP {status}"), retry_after(response.headers()))
            } else {
                PushError::Failed(format!("OAuth token endpoint refused the service account: HTTP {status}"))
            });
        }
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            expires_in: u64,
        }
        let token: Token = response
            .json()
            .await
            .map_err(|_| PushError::Retry("the OAuth token endpoint sent no token".into(), None))?;
        let until = SystemTime::now() + Duration::from_secs(token.expires_in.saturating_sub(60));
        *cached = Some((token.access_token.clone(), until));
        Ok(token.access_token)
    }
}

/// The FCM v1 message of a wake-up: a data message with one opaque flag.
pub fn message(token: &str, wake: WakeUp) -> serde_json::Value {
    let priority = match wake.urgency {
        Urgency::Urgent => "HIGH",
        Urgency::Background => "NORMAL",
    };
    serde_json::json!({
        "message": {
            "token": token,
            "data": { "hush": "1" },
            "android": { "priority": priority, "collapse_key": COLLAPSE_ID, "ttl": "86400s" },
        }
    })
}

/// The DER inside a PEM block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    STANDARD.decode(body).ok().filter(|d| !d.is_empty())
}

#[async_trait]
impl Provider for Fcm {
    fn name(&self) -> &'static str {
        "fcm"
    }

    async fn send(&self, target: &PushTarget, wake: WakeUp) -> Result<(), PushError> {
        let PushTarget::Fcm { token } = target else {
            return Err(PushError::Failed("not an FCM target".into()));
        };
        let body = message(token, wake);
        let mut renew = false;
        for _ in 0..2 {
            let access = self.access_token(renew).await?;
            let response = self
                .http
                .post(&self.send_url)
                .bearer_auth(access)
                .json(&body)
                .send()
                .await
                .map_err(|_| PushError::Retry("FCM did not answer".into(), None))?;
            let status = response.status();
            match status {
                s if s.is_success() => return Ok(()),
                // The access token expired or was revoked: get a new one, once.
                StatusCode::UNAUTHORIZED => renew = true,
                // UNREGISTERED (404); INVALID_ARGUMENT (400): the message is fixed, so it is
                // the token; SENDER_ID_MISMATCH (403): the token belongs to another project.
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => return Err(PushError::InvalidToken),
                StatusCode::FORBIDDEN => {
                    let text = response.text().await.unwrap_or_default();
                    return Err(if text.contains("SENDER_ID_MISMATCH") {
                        PushError::InvalidToken
                    } else {
                        PushError::Failed("FCM: HTTP 403 (check the service account's permissions)".into())
                    });
                }
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    return Err(PushError::Retry(format!("FCM: HTTP {s}"), retry_after(response.headers())));
                }
                s => return Err(PushError::Failed(format!("FCM: HTTP {s}"))),
            }
        }
        Err(PushError::Retry("FCM refused a fresh access token".into(), None))
    }
}
