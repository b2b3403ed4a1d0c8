//! The calling device's push target: set (`PUT`), read (`GET`), remove (`DELETE`)
//! `/v1/devices/self/push`. Wake-ups themselves are sent by [`crate::push`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hush_wire::api::{ApiError, PushStatus, PushTargetBody};
use reqwest::Url;

use super::auth::Authed;
use super::error::HttpError;
use crate::state::{AppState, now_ms};
use crate::store::PushTarget;

/// Longest token or endpoint URL accepted.
pub const MAX_PUSH_TOKEN: usize = 4096;

/// Sets or replaces the calling device's push target.
#[utoipa::path(put, path = "/v1/devices/self/push", request_body = PushTargetBody, tag = "push",
    responses((status = 204, description = "set; it replaces any earlier target of this device"),
              (status = 400, body = ApiError, description = "invalid_request (malformed body), invalid_push_token (an APNs or FCM token or an APNs topic of the wrong shape), invalid_push_endpoint (a UnifiedPush URL that is not https, names a private, loopback or link-local address, or carries credentials)"),
              (status = 404, body = ApiError, description = "unknown_device (the device was removed meanwhile)"),
              (status = 503, body = ApiError, description = "unavailable: the database failed; retry")),
    security(("hush_sig" = [])))]
pub async fn set(State(state): State<AppState>, auth: Authed) -> Result<StatusCode, HttpError> {
    let body: PushTargetBody = auth.json()?;
    let target = validate(body, &state.config.push.allow_hosts)?;
    state.store.set_push_target(auth.key(), &target, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The calling device's push target.
#[utoipa::path(get, path = "/v1/devices/self/push", tag = "push",
    responses((status = 200, body = PushStatus),
              (status = 404, body = ApiError, description = "no_push_target: this device has none (none was set, it was removed, or a provider reported its token invalid)"),
              (status = 503, body = ApiError, description = "unavailable: the database failed; retry")),
    security(("hush_sig" = [])))]
pub async fn get(State(state): State<AppState>, auth: Authed) -> Result<Json<PushStatus>, HttpError> {
    let record = state.store.push_target(auth.key()).await?.ok_or_else(no_target)?;
    Ok(Json(PushStatus { target: body(record.target), updated_at: record.updated_at }))
}

/// Removes the calling device's push target: it gets no more wake-ups.
#[utoipa::path(delete, path = "/v1/devices/self/push", tag = "push",
    responses((status = 204, description = "removed"),
              (status = 404, body = ApiError, description = "no_push_target: this device has none"),
              (status = 503, body = ApiError, description = "unavailable: the database failed; retry")),
    security(("hush_sig" = [])))]
pub async fn remove(State(state): State<AppState>, auth: Authed) -> Result<StatusCode, HttpError> {
    if state.store.remove_push_target(auth.key(), None).await? { Ok(StatusCode::NO_CONTENT) } else { Err(no_target()) }
}

fn no_target() -> HttpError {
    HttpError::not_found("no_push_target", "this device has no push target; set one with PUT /v1/devices/self/push")
}

fn body(target: PushTarget) -> PushTargetBody {
    match target {
        PushTarget::Apns { token, topic, sandbox } => PushTargetBody::Apns { token, topic, sandbox },
        PushTarget::Fcm { token } => PushTargetBody::Fcm { token },
        PushTarget::UnifiedPush { endpoint } => PushTargetBody::UnifiedPush { endpoint },
    }
}

fn bad_token(message: &str) -> HttpError {
    HttpError::bad_request("invalid_push_token", message)
}

fn bad_endpoint(message: impl Into<String>) -> HttpError {
    HttpError::bad_request("invalid_push_endpoint", message)
}

/// Checks a push target's shape; a UnifiedPush endpoint also against server-side request
/// forgery (see [`check_endpoint`]).
pub fn validate(body: PushTargetBody, allow_hosts: &[String]) -> Result<PushTarget, HttpError> {
    match body {
        PushTargetBody::Apns { token, topic, sandbox } => {
            if token.len() < 32 || token.len() > 200 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad_token("an APNs device token is 32 to 200 hex digits"));
            }
            let topic_ok = (1..=255).contains(&topic.len())
                && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
            if !topic_ok {
                return Err(bad_token("an APNs topic is the app's bundle id (letters, digits, '.', '-', '_')"));
            }
            Ok(PushTarget::Apns { token: token.to_ascii_lowercase(), topic, sandbox })
        }
        PushTargetBody::Fcm { token } => {
            if token.is_empty() || token.len() > MAX_PUSH_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad_token("an FCM registration token is 1 to 4096 printable ASCII characters"));
            }
            Ok(PushTarget::Fcm { token })
        }
        PushTargetBody::UnifiedPush { endpoint } => {
            let url = check_endpoint(&endpoint, allow_hosts).map_err(bad_endpoint)?;
            Ok(PushTarget::UnifiedPush { endpoint: url.to_string() })
        }
    }
}

/// Whether `host` (a URL's host, brackets removed) is named by the operator's allowlist.
pub fn allowed(host: &str, allow_hosts: &[String]) -> bool {
    allow_hosts.iter().any(|a| a.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(host))
}

/// Parses a UnifiedPush endpoint: `https` (plain `http` only for an allowlisted host), no
/// credentials in it, and no private, loopback, link-local or otherwise internal address or
/// name unless `allow_hosts` names the host. Names are checked again at send time, after
/// resolution ([`crate::push::unifiedpush`]), so a public name cannot point inside either.
pub fn check_endpoint(endpoint: &str, allow_hosts: &[String]) -> Result<Url, String> {
    if endpoint.len() > MAX_PUSH_TOKEN {
        return Err("the endpoint URL is over 4096 bytes".into());
    }
    let url = Url::parse(endpoint).map_err(|e| format!("the endpoint is not a URL: {e}"))?;
    let host = url.host_str().ok_or("the endpoint URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let listed = allowed(&host, allow_hosts);
    match url.scheme() {
        "https" => {}
        "http" if listed => {}
        "http" => return Err("the endpoint must be https (plain http only for hosts in push_allow_hosts)".into()),
        other => return Err(format!("the endpoint's scheme {other:?} is not https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the endpoint URL must not carry credentials".into());
    }
    if listed {
        return Ok(url);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !is_public(ip) {
            return Err(format!("the endpoint names a non-public address ({ip}); refused unless in push_allow_hosts"));
        }
    } else {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let internal = !name.contains('.')
            || [".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan"]
                .iter()
                .any(|suffix| name.ends_with(suffix));
        if internal || name == "localhost" {
            return Err(format!("the endpoint names an internal host ({name}); refused unless in push_allow_hosts"));
        }
    }
    Ok(url)
}

/// True for an address on the public internet: not loopback, private, link-local,
/// shared (CGNAT), unspecified, multicast, broadcast, documentation or unique-local.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x64 && ip.segments()[1] == 0xff9b)) // NAT64 (reaches IPv4 space)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> Result<Url, String> {
        check_endpoint(url, &[])
    }

    #[test]
    fn unifiedpush_endpoints_must_be_https_and_public() {
        assert!(check("https://push.example.org/up/abc?x=1").is_ok());
        assert!(check("https://93.184.216.34/up").is_ok());
        for bad in [
            "http://push.example.org/up",
            "ftp://push.example.org/up",
            "https://user:pw@push.example.org/up",
            "https://127.0.0.1/up",
            "https://127.1/up",
            "https://2130706433/up",
            "https://10.1.2.3/up",
            "https://192.168.1.1/up",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/up",
            "https://0.0.0.0/up",
            "https://[::1]/up",
            "https://[fd00::1]/up",
            "https://[fe80::1]/up",
            "https://[::ffff:127.0.0.1]/up",
            "https://localhost/up",
            "https://foo.localhost/up",
            "https://metadata.google.internal/up",
            "https://printer.local/up",
            "https://intranet/up",
            "not a url",
        ] {
            assert!(check(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_allowlist_admits_named_hosts_over_http_and_nothing_else() {
        let allow = vec!["127.0.0.1".to_owned(), "[::1]".to_owned()];
        assert!(check_endpoint("http://127.0.0.1:8080/up", &allow).is_ok());
        assert!(check_endpoint("https://[::1]:8443/up", &allow).is_ok());
        assert!(check_endpoint("http://127.0.0.2/up", &allow).is_err());
        assert!(check_endpoint("http://10.0.0.1/up", &allow).is_err());
        assert!(check_endpoint("http://push.example.org/up", &allow).is_err(), "http stays refused for others");
    }

    #[test]
    fn tokens_and_topics_are_checked() {
        let apns = |token: &str, topic: &str| {
            validate(PushTargetBody::Apns { token: token.into(), topic: topic.into(), sandbox: false }, &[])
        };
        assert!(apns(&"AB".repeat(32), "org.example.app").is_ok());
        assert_eq!(apns("abc", "org.example.app").err().map(|e| e.code()), Some("invalid_push_token"));
        assert_eq!(apns(&"ab".repeat(32), "").err().map(|e| e.code()), Some("invalid_push_token"));
        assert_eq!(apns(&"ab".repeat(32), "a b").err().map(|e| e.code()), Some("invalid_push_token"));
        let fcm = |token: &str| validate(PushTargetBody::Fcm { token: token.into() }, &[]);
        assert!(fcm("dGVzdA:APA91b-token_x").is_ok());
        assert!(fcm("").is_err());
        assert!(fcm("has space").is_err());
        assert!(fcm(&"x".repeat(MAX_PUSH_TOKEN + 1)).is_err());
        let up = validate(PushTargetBody::UnifiedPush { endpoint: "http://10.0.0.1/".into() }, &[]);
        assert_eq!(up.err().map(|e| e.code()), Some("invalid_push_endpoint"));
    }
}
