//! UnifiedPush (and plain webhooks): an HTTP POST of a tiny opaque body to the endpoint
//! the device registered. The endpoint was checked at registration
//! ([`crate::http::push::check_endpoint`]); here it is checked again, and every address a
//! name resolves to must be public unless the host is allowlisted, redirects are not
//! followed, so the server cannot be made to call into its own network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{Provider, PushError, Urgency, WakeUp, retry_after};
use crate::http::push::{allowed, check_endpoint, is_public};
use crate::store::PushTarget;

/// The whole body of a UnifiedPush wake-up: it says nothing but "connect".
pub const BODY: &[u8] = b"1";

/// Sends UnifiedPush wake-ups.
pub struct UnifiedPush {
    http: reqwest::Client,
    allow_hosts: Arc<Vec<String>>,
}

/// Resolves names and drops non-public addresses unless the name is allowlisted.
struct PublicOnly {
    allow_hosts: Arc<Vec<String>>,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_hosts = self.allow_hosts.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let listed = allowed(&host, &allow_hosts);
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| listed || is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

impl UnifiedPush {
    /// A sender; `allow_hosts` as in the configuration.
    pub fn new(allow_hosts: Vec<String>) -> Result<Self, reqwest::Error> {
        let allow_hosts = Arc::new(allow_hosts);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(Arc::new(PublicOnly { allow_hosts: allow_hosts.clone() }))
            .build()?;
        Ok(UnifiedPush { http, allow_hosts })
    }
}

#[async_trait]
impl Provider for UnifiedPush {
    fn name(&self) -> &'static str {
        "unifiedpush"
    }

    async fn send(&self, target: &PushTarget, wake: WakeUp) -> Result<(), PushError> {
        let PushTarget::UnifiedPush { endpoint } = target else {
            return Err(PushError::Failed("not a UnifiedPush target".into()));
        };
        let url = check_endpoint(endpoint, &self.allow_hosts).map_err(|_| PushError::InvalidToken)?;
        // RFC 8030 headers, which UnifiedPush distributors honour: urgency, a day to live,
        // and one topic so a newer wake-up replaces an undelivered one.
        let urgency = match wake.urgency {
            Urgency::Urgent => "high",
            Urgency::Background => "low",
        };
        let response = self
            .http
            .post(url)
            .header("Urgency", urgency)
            .header("TTL", "86400")
            .header("Topic", super::COLLAPSE_ID)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(BODY)
            .send()
            .await
            .map_err(|e| PushError::Retry(format!("request failed: {}", without_url(&e)), None))?;
        classify(response.status(), response.headers())
    }
}

/// A reqwest error without the URL (a UnifiedPush URL is a credential of sorts).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    kind.to_owned()
}

fn classify(status: StatusCode, headers: &reqwest::header::HeaderMap) -> Result<(), PushError> {
    match status {
        s if s.is_success() => Ok(()),
        // The distributor says the endpoint is gone (UnifiedPush and RFC 8030).
        StatusCode::NOT_FOUND | StatusCode::GONE => Err(PushError::InvalidToken),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
            Err(PushError::Retry(format!("HTTP {status}"), retry_after(headers)))
        }
        s if s.is_server_error() => Err(PushError::Retry(format!("HTTP {status}"), retry_after(headers))),
        s => Err(PushError::Failed(format!("HTTP {s}"))),
    }
}
