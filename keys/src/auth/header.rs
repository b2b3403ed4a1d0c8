//! The `Authorization: Hush-Sig ...` header of authenticated REST requests.

use uuid::Uuid;

use crate::KeyError;

/// The authentication scheme name. Matched case-insensitively, as HTTP requires.
const SCHEME: &str = "Hush-Sig";
/// Far longer than any valid value (about 270 bytes); anything longer is refused unread.
const MAX_HEADER_LEN: usize = 1024;
/// The parameter names, in canonical order.
const PARAMS: [&str; 5] = ["account", "device", "ts", "nonce", "sig"];

/// A parsed `Authorization` header of a REST request:
/// `Hush-Sig account=<uuid>,device=<id>,ts=<unix ms>,nonce=<32 hex>,sig=<128 hex>`.
///
/// Parsing checks syntax only. The server still has to look up the device's
/// [`DeviceAuthKey`](super::DeviceAuthKey), check the signature with
/// [`verify_rest`](super::DeviceAuthKey::verify_rest), the time window and nonce replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    /// The account (ACI) the request claims to come from.
    pub account: Uuid,
    /// The device of that account.
    pub device_id: u32,
    /// Client clock at signing time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Fresh random nonce of this request.
    pub nonce: [u8; 16],
    /// ed25519 signature over the [`RestSigningInput`](super::RestSigningInput).
    pub signature: [u8; 64],
}

impl AuthHeader {
    /// Parses a header value. Accepts the canonical form and the same with spaces after the
    /// commas; parameters may come in any order, but each must appear exactly once and no
    /// other parameter is allowed. The scheme name is matched case-insensitively.
    pub fn parse(value: &str) -> Result<Self, KeyError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(malformed(format!("value is {} bytes long, the limit is {MAX_HEADER_LEN}", value.len())));
        }
        let value = value.trim_matches(is_space);
        let (scheme, params) = value
            .split_once(is_space)
            .ok_or_else(|| malformed("expected the scheme `Hush-Sig`, a space, then parameters"))?;
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(malformed("the scheme must be `Hush-Sig`"));
        }

        let mut raw: [Option<&str>; 5] = [None; 5];
        for part in params.split(',') {
            let part = part.trim_matches(is_space);
            if part.is_empty() {
                return Err(malformed("empty parameter (stray comma?)"));
            }
            let (name, val) = part.split_once('=').ok_or_else(|| malformed("every parameter must be `name=value`"))?;
            let index = PARAMS
                .iter()
                .position(|known| *known == name)
                .ok_or_else(|| malformed("unknown parameter; allowed are account, device, ts, nonce, sig"))?;
            if raw[index].replace(val).is_some() {
                return Err(malformed(format!("`{}` appears more than once", PARAMS[index])));
            }
        }
        let [account, device, ts, nonce, sig] = raw;
        let missing = |i: usize| malformed(format!("`{}` is missing", PARAMS[i]));
        let account = account.ok_or_else(|| missing(0))?;
        let device = device.ok_or_else(|| missing(1))?;
        let ts = ts.ok_or_else(|| missing(2))?;
        let nonce = nonce.ok_or_else(|| missing(3))?;
        let sig = sig.ok_or_else(|| missing(4))?;

        Ok(Self {
            account: parse_account(account)?,
            device_id: parse_decimal(device, "device")?,
            timestamp_ms: parse_decimal(ts, "ts")?,
            nonce: parse_hex(nonce, "nonce")?,
            signature: parse_hex(sig, "sig")?,
        })
    }

    /// The canonical header value: lowercase hex and UUID, no spaces, canonical order.
    pub fn to_header_value(&self) -> String {
        format!(
            "{SCHEME} account={},device={},ts={},nonce={},sig={}",
            self.account.as_hyphenated(),
            self.device_id,
            self.timestamp_ms,
            hex::encode(self.nonce),
            hex::encode(self.signature),
        )
    }
}

fn malformed(reason: impl Into<String>) -> KeyError {
    KeyError::MalformedAuthHeader(reason.into())
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn parse_account(value: &str) -> Result<Uuid, KeyError> {
    if value.len() != uuid::fmt::Hyphenated::LENGTH {
        return Err(malformed("`account` must be a hyphenated UUID (36 characters)"));
    }
    Uuid::try_parse(value).map_err(|_| malformed("`account` is not a valid UUID"))
}

fn parse_decimal<T: std::str::FromStr>(value: &str, name: &str) -> Result<T, KeyError> {
    // `FromStr` for integers also takes a leading `+`; only plain digits are allowed here.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("`{name}` must be a decimal number")));
    }
    value.parse().map_err(|_| malformed(format!("`{name}` is too large")))
}

fn parse_hex<const N: usize>(value: &str, name: &str) -> Result<[u8; N], KeyError> {
    if value.len() != 2 * N {
        return Err(malformed(format!(
            "`{name}` must be {} hex characters ({N} bytes), got {} characters",
            2 * N,
            value.len()
        )));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(value, &mut out).map_err(|_| malformed(format!("`{name}` is not valid hex")))?;
    Ok(out)
}
