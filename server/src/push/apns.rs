//! APNs through the `a2` crate (token authentication with a .p8 key, HTTP/2, rustls + ring:
//! no OpenSSL). The payload is built with `a2`'s builder: an urgent wake-up is an alert push
//! (priority 10) with `mutable-content` and a fixed placeholder the app's notification
//! service extension replaces after fetching its mail; a background one is
//! `content-available` only (priority 5), with no alert at all. Neither carries content,
//! a sender or a conversation. `a2` only talks to Apple's two endpoints, so the sending
//! path around it is tested through [`ApnsSend`] with a recording implementation.

use std::path::Path;

use a2::request::payload::{Payload, PayloadLike};
use a2::{
    Client, ClientConfig, CollapseId, DefaultNotificationBuilder, Endpoint, ErrorReason, NotificationBuilder,
    NotificationOptions, Priority, PushType,
};
use async_trait::async_trait;

use super::{COLLAPSE_ID, Provider, PushError, Urgency, WakeUp};
use crate::store::PushTarget;

/// The placeholder an urgent wake-up shows if the app cannot replace it in time.
pub const PLACEHOLDER: &str = "New message";

/// One APNs request as `a2` would send it: the JSON body and the `apns-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsRequest {
    /// The device token.
    pub token: String,
    /// Apple's sandbox (true) or production environment.
    pub sandbox: bool,
    /// The JSON body.
    pub json: String,
    /// `apns-priority`, `apns-push-type`, `apns-collapse-id`, `apns-topic`.
    pub headers: Vec<(&'static str, String)>,
}

/// The `a2` payload of a wake-up, built with `a2`'s builder.
pub fn payload<'a>(token: &'a str, topic: &'a str, wake: WakeUp) -> Result<Payload<'a>, PushError> {
    let (push_type, priority) = match wake.urgency {
        Urgency::Urgent => (PushType::Alert, Priority::High),
        Urgency::Background => (PushType::Background, Priority::Normal),
    };
    let collapse = CollapseId::new(COLLAPSE_ID).map_err(|e| PushError::Failed(e.to_string()))?;
    let options = NotificationOptions {
        apns_push_type: Some(push_type),
        apns_priority: Some(priority),
        apns_topic: Some(topic),
        apns_collapse_id: Some(collapse),
        ..Default::default()
    };
    let builder = match wake.urgency {
        Urgency::Urgent => DefaultNotificationBuilder::new().set_body(PLACEHOLDER).set_mutable_content(),
        Urgency::Background => DefaultNotificationBuilder::new().set_content_available(),
    };
    Ok(builder.build(token, options))
}

/// The APNs request of a wake-up: the JSON and the `apns-*` headers exactly as `a2`'s
/// client derives them from the payload's options.
pub fn request(token: &str, topic: &str, sandbox: bool, wake: WakeUp) -> Result<ApnsRequest, PushError> {
    let payload = payload(token, topic, wake)?;
    let json = payload.to_json_string().map_err(|e| PushError::Failed(e.to_string()))?;
    let options = payload.get_options();
    let mut headers = Vec::new();
    if let Some(p) = &options.apns_priority {
        headers.push(("apns-priority", p.to_string()));
    }
    if let Some(t) = &options.apns_push_type {
        headers.push(("apns-push-type", t.to_string()));
    }
    if let Some(c) = &options.apns_collapse_id {
        headers.push(("apns-collapse-id", c.value.to_owned()));
    }
    if let Some(t) = options.apns_topic {
        headers.push(("apns-topic", t.to_owned()));
    }
    Ok(ApnsRequest { token: token.to_owned(), sandbox, json, headers })
}

/// The sending half of APNs: `a2`'s client in production, a recording one in tests.
#[async_trait]
pub trait ApnsSend: Send + Sync + 'static {
    /// Sends one wake-up built by [`request`].
    async fn send(&self, token: &str, topic: &str, sandbox: bool, wake: WakeUp) -> Result<(), PushError>;
}

/// Sends through `a2` to Apple (one client per environment).
pub struct A2 {
    production: Client,
    sandbox: Client,
}

impl A2 {
    /// Token authentication with the .p8 key at `key`. The key's contents are never logged.
    pub fn new(key: &Path, key_id: &str, team_id: &str) -> Result<Self, String> {
        let pem = std::fs::read(key).map_err(|e| format!("cannot read the APNs key {}: {e}", key.display()))?;
        let client = |endpoint| {
            Client::token(pem.as_slice(), key_id, team_id, ClientConfig::new(endpoint))
                .map_err(|_| "the APNs key is not a valid .p8 (PKCS#8 EC) key".to_owned())
        };
        Ok(A2 { production: client(Endpoint::Production)?, sandbox: client(Endpoint::Sandbox)? })
    }
}

#[async_trait]
impl ApnsSend for A2 {
    async fn send(&self, token: &str, topic: &str, sandbox: bool, wake: WakeUp) -> Result<(), PushError> {
        let payload = payload(token, topic, wake)?;
        let client = if sandbox { &self.sandbox } else { &self.production };
        match client.send(payload).await {
            Ok(_) => Ok(()),
            Err(a2::Error::ResponseError(response)) => Err(classify(response.code, response.error.map(|e| e.reason))),
            Err(a2::Error::RequestTimeout(_)) => Err(PushError::Retry("APNs timed out".into(), None)),
            Err(e) => Err(PushError::Retry(format!("APNs: {e}"), None)),
        }
    }
}

/// What an APNs error answer means for the target.
pub fn classify(code: u16, reason: Option<ErrorReason>) -> PushError {
    match (code, reason) {
        (410, _)
        | (_, Some(ErrorReason::Unregistered | ErrorReason::BadDeviceToken | ErrorReason::DeviceTokenNotForTopic)) => {
            PushError::InvalidToken
        }
        (429 | 500 | 503, _) => PushError::Retry(format!("APNs: HTTP {code}"), None),
        (code, reason) => PushError::Failed(format!("APNs: HTTP {code} {reason:?}")),
    }
}

/// The APNs provider over any [`ApnsSend`].
pub struct Apns<S> {
    sender: S,
}

impl<S: ApnsSend> Apns<S> {
    /// A provider sending through `sender`.
    pub fn new(sender: S) -> Self {
        Apns { sender }
    }
}

#[async_trait]
impl<S: ApnsSend> Provider for Apns<S> {
    fn name(&self) -> &'static str {
        "apns"
    }

    async fn send(&self, target: &PushTarget, wake: WakeUp) -> Result<(), PushError> {
        let PushTarget::Apns { token, topic, sandbox } = target else {
            return Err(PushError::Failed("not an APNs target".into()));
        };
        self.sender.send(token, topic, *sandbox, wake).await
    }
}
