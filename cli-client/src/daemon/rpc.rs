//! JSON-RPC 2.0 framing: one JSON object per line. Small enough to write by hand with
//! serde_json (no batches; a batch gets an "invalid request" error).

use serde_json::{Value, json};

use crate::exit::{self, Kind};

/// JSON-RPC's own error codes.
pub const PARSE_ERROR: i64 = -32700;
/// The line is JSON but not a request.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Missing or wrong parameters.
pub const INVALID_PARAMS: i64 = -32602;

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `None` for a notification (no answer is sent).
    pub id: Option<Value>,
    /// The method name.
    pub method: String,
    /// The parameters (`null` when absent).
    pub params: Value,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The JSON-RPC error code.
    pub code: i64,
    /// What went wrong.
    pub message: String,
    /// `{"kind", "exit_code"}` for application errors.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a JSON-RPC code and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    /// Invalid parameters.
    pub fn params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    /// An application error of `kind`: code `-32000 - exit code` (so -32003 is a network
    /// error, -32004 an untrusted identity, -32005 rate limited, -32001 anything else).
    pub fn app(kind: Kind, message: impl Into<String>) -> Self {
        let code = if kind == Kind::Usage { INVALID_PARAMS } else { -32000 - i64::from(kind.exit_code()) };
        Self {
            code,
            message: message.into(),
            data: Some(json!({ "kind": kind.name(), "exit_code": kind.exit_code() })),
        }
    }
}

impl From<anyhow::Error> for RpcError {
    fn from(e: anyhow::Error) -> Self {
        RpcError::app(exit::error_kind(&e), format!("{e:#}"))
    }
}

impl From<hush_client_core::ClientError> for RpcError {
    fn from(e: hush_client_core::ClientError) -> Self {
        RpcError::app(exit::client_error_kind(&e), e.to_string())
    }
}

/// Parses one line. An `Err` carries the answer to send (with id `null` when unknown).
pub fn parse(line: &str) -> Result<Request, (Value, RpcError)> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| (Value::Null, RpcError::new(PARSE_ERROR, format!("parse error: {e}"))))?;
    let Value::Object(mut obj) = value else {
        let why = if value.is_array() { "batches are not supported" } else { "a request must be a JSON object" };
        return Err((Value::Null, RpcError::new(INVALID_REQUEST, why)));
    };
    let id = obj.remove("id");
    let answer_id = id.clone().unwrap_or(Value::Null);
    if !matches!(id, None | Some(Value::Null | Value::Number(_) | Value::String(_))) {
        return Err((Value::Null, RpcError::new(INVALID_REQUEST, "id must be a string, a number or null")));
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((answer_id, RpcError::new(INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\"")));
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return Err((answer_id, RpcError::new(INVALID_REQUEST, "\"method\" must be a string")));
    };
    let params = obj.remove("params").unwrap_or(Value::Null);
    if !matches!(params, Value::Null | Value::Object(_) | Value::Array(_)) {
        return Err((answer_id, RpcError::new(INVALID_REQUEST, "\"params\" must be an object or an array")));
    }
    Ok(Request { id, method, params })
}

/// A success answer line.
pub fn response(id: Value, result: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string()
}

/// An error answer line.
pub fn error(id: Value, e: &RpcError) -> String {
    let mut err = json!({ "code": e.code, "message": e.message });
    if let (Some(data), Some(obj)) = (&e.data, err.as_object_mut()) {
        obj.insert("data".into(), data.clone());
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": err }).to_string()
}

/// A notification line (no id).
pub fn notification(method: &str, params: Value) -> String {
    json!({ "jsonrpc": "2.0", "method": method, "params": params }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_parses_and_a_notification_has_no_id() {
        let r = parse(r#"{"jsonrpc":"2.0","id":1,"method":"status"}"#).expect("valid");
        assert_eq!((r.id, r.method.as_str(), r.params), (Some(json!(1)), "status", Value::Null));
        let n = parse(r#"{"jsonrpc":"2.0","method":"ack","params":{"event_id":3}}"#).expect("valid");
        assert_eq!(n.id, None);
    }

    #[test]
    fn malformed_lines_get_the_standard_errors() {
        assert_eq!(parse("{nope").map_err(|(_, e)| e.code), Err(PARSE_ERROR));
        assert_eq!(parse("[]").map_err(|(_, e)| e.code), Err(INVALID_REQUEST));
        assert_eq!(parse(r#"{"id":4,"method":"x"}"#).map_err(|(id, e)| (id, e.code)), Err((json!(4), INVALID_REQUEST)));
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":4,"method":"x","params":3}"#).map_err(|(_, e)| e.code),
            Err(INVALID_REQUEST)
        );
    }

    #[test]
    fn application_errors_carry_the_exit_code() {
        let e = RpcError::app(Kind::UntrustedIdentity, "changed");
        assert_eq!(e.code, -32004);
        let line: Value = serde_json::from_str(&error(json!(9), &e)).expect("json");
        assert_eq!(line["error"]["data"], json!({"kind": "untrusted_identity", "exit_code": 4}));
        assert_eq!(line["id"], json!(9));
    }
}
