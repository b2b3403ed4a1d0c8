//! [`RestClient`]: plain-HTTP calls to `hushd`, signed as a device when asked.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::device::TestDevice;
use crate::server::TestServer;

/// A status and body from the server, with helpers that fail clearly.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP method and path of the request, for failure messages.
    pub request: String,
    /// HTTP status code.
    pub status: u16,
    /// Response headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// The first value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status is `status`, then decodes the JSON body.
    pub fn json<T: DeserializeOwned>(&self, status: u16) -> T {
        self.assert_status(status);
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not the expected JSON ({e}): {}", self.request, self.text()))
    }

    /// Asserts the status is `status`.
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{}: expected HTTP {status}, got {} with body {}",
            self.request,
            self.status,
            self.text()
        );
        self
    }

    /// Asserts an error answer: HTTP `status` and `{"code": code, ...}`.
    pub fn assert_error(&self, status: u16, code: &str) {
        let err: hush_wire::api::ApiError = self.json(status);
        assert_eq!(err.code, code, "{}: expected error code {code:?}, got {err:?}", self.request);
        assert!(!err.message.is_empty(), "{}: error {code} has an empty message", self.request);
    }
}

/// An HTTP client for one [`TestServer`] address.
#[derive(Debug, Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
}

impl RestClient {
    /// A client for the server's current address.
    pub fn new(server: &TestServer) -> RestClient {
        RestClient {
            http: reqwest::Client::builder()
                .timeout(crate::WAIT)
                .build()
                .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}")),
            base: server.http_url(),
        }
    }

    /// Sends a request with an optional raw body and `Authorization` header.
    pub async fn raw(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        authorization: Option<&str>,
    ) -> ApiResponse {
        self.raw_with_headers(method, path_and_query, body, authorization, &[]).await
    }

    /// [`Self::raw`] with extra request headers (e.g. `X-Forwarded-For`).
    pub async fn raw_with_headers(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        authorization: Option<&str>,
        headers: &[(&str, &str)],
    ) -> ApiResponse {
        let request = format!("{method} {path_and_query}");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("bad method {method}: {e}"));
        let mut req = self.http.request(m, format!("{}{path_and_query}", self.base));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        if let Some(auth) = authorization {
            req = req.header(hush_wire::api::AUTH_HEADER, auth);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{request}: HTTP request failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = resp.bytes().await.unwrap_or_else(|e| panic!("{request}: reading the body failed: {e}")).to_vec();
        ApiResponse { request, status, headers, body }
    }

    /// An unauthenticated GET.
    pub async fn get(&self, path: &str) -> ApiResponse {
        self.raw("GET", path, None, None).await
    }

    /// An unauthenticated POST of a JSON body.
    pub async fn post_json<T: Serialize>(&self, path: &str, body: &T) -> ApiResponse {
        self.raw("POST", path, Some(to_json(body)), None).await
    }

    /// A request signed as `device` (current time, random nonce). `body` is
    /// sent as JSON and its exact bytes are hashed into the signature.
    pub async fn signed<T: Serialize>(
        &self,
        device: &TestDevice,
        method: &str,
        path_and_query: &str,
        body: Option<&T>,
    ) -> ApiResponse {
        let bytes = body.map(to_json);
        let auth = device.authorization(method, path_and_query, bytes.as_deref().unwrap_or_default());
        self.raw(method, path_and_query, bytes, Some(&auth)).await
    }

    /// A request signed as `device` whose body is raw `application/octet-stream` bytes.
    pub async fn signed_octets(
        &self,
        device: &TestDevice,
        method: &str,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> ApiResponse {
        let request = format!("{method} {path_and_query}");
        let auth = device.authorization(method, path_and_query, &body);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("bad method {method}: {e}"));
        let resp = self
            .http
            .request(m, format!("{}{path_and_query}", self.base))
            .header("content-type", "application/octet-stream")
            .header(hush_wire::api::AUTH_HEADER, auth)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{request}: HTTP request failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = resp.bytes().await.unwrap_or_else(|e| panic!("{request}: reading the body failed: {e}")).to_vec();
        ApiResponse { request, status, headers, body }
    }

    /// A signed GET without a body.
    pub async fn signed_get(&self, device: &TestDevice, path_and_query: &str) -> ApiResponse {
        self.signed::<()>(device, "GET", path_and_query, None).await
    }
}

/// Serializes `body` to JSON bytes.
pub fn to_json<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_else(|e| panic!("cannot serialize a request body: {e}"))
}
