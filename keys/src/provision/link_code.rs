//! The link code the new device shows: its provisioning channel address and public key.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::cipher::is_low_order;
use crate::ProvisionError;

/// The longest provisioning channel address a link code carries.
pub const MAX_ADDRESS_LEN: usize = 64;

/// Start of the URI form, compared without regard to ASCII case.
const URI_PREFIX: &str = "hush://link?";
/// Scheme part of [`URI_PREFIX`], to tell a wrong URI from a text-form code.
const URI_SCHEME: &str = "hush:";
/// Length of a 32-byte key in base64url without padding.
const KEY_TEXT_LEN: usize = 43;

/// What the new device shows so that an existing device can send it the account: the
/// server's provisioning channel `address` and the new device's X25519 public key.
///
/// Two spellings, both accepted by [`Self::parse`]:
///
/// - URI, for QR codes ([`Self::to_uri`], also `Display`):
///   `hush://link?address=<address>&key=<key>`
/// - text, for typing or pasting ([`Self::to_text`]): `<address>.<key>`
///
/// `<address>` is 1 to [`MAX_ADDRESS_LEN`] characters of `A-Z a-z 0-9 _ -`; `<key>` is the
/// 32-byte public key in base64url without padding (43 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCode {
    address: String,
    public_key: [u8; 32],
}

impl LinkCode {
    /// A link code for `address` and the new device's `public_key`
    /// ([`super::ProvisioningKeyPair::public`]).
    ///
    /// Fails with [`ProvisionError::BadLinkCode`] if the address is empty, longer than
    /// [`MAX_ADDRESS_LEN`] or has a character outside `A-Z a-z 0-9 _ -`, or if the key is a
    /// low-order point.
    pub fn new(address: impl Into<String>, public_key: [u8; 32]) -> Result<Self, ProvisionError> {
        let address = address.into();
        validate_address(&address)?;
        if is_low_order(&public_key) {
            return Err(ProvisionError::BadLinkCode("the key is a low-order X25519 point"));
        }
        Ok(Self { address, public_key })
    }

    /// The server's provisioning channel address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The new device's X25519 public key, to seal to.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The URI form, `hush://link?address=<address>&key=<key>`, for a QR code.
    pub fn to_uri(&self) -> String {
        format!("{URI_PREFIX}address={}&key={}", self.address, URL_SAFE_NO_PAD.encode(self.public_key))
    }

    /// The text form, `<address>.<key>`, for typing or pasting.
    pub fn to_text(&self) -> String {
        format!("{}.{}", self.address, URL_SAFE_NO_PAD.encode(self.public_key))
    }

    /// Reads either form. Whitespace around the code is ignored; the `hush://link?` prefix
    /// may be in any case. The URI must have exactly the `address` and `key` parameters, in
    /// either order; the key must be canonical base64url without padding.
    ///
    /// Every failure is a [`ProvisionError::BadLinkCode`] saying what is wrong.
    pub fn parse(input: &str) -> Result<Self, ProvisionError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(ProvisionError::BadLinkCode("it is empty"));
        }
        let (address, key) = if starts_with_ignore_case(input, URI_SCHEME) {
            if !starts_with_ignore_case(input, URI_PREFIX) {
                return Err(ProvisionError::BadLinkCode("it is a hush: URI but does not start with `hush://link?`"));
            }
            parse_query(&input[URI_PREFIX.len()..])?
        } else {
            input.split_once('.').ok_or(ProvisionError::BadLinkCode("no `.` between the address and the key"))?
        };
        Self::new(address, decode_key(key)?)
    }
}

impl fmt::Display for LinkCode {
    /// The URI form ([`LinkCode::to_uri`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

impl FromStr for LinkCode {
    type Err = ProvisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `true` if `s` starts with the ASCII `prefix`, ignoring ASCII case (never panics on a
/// multi-byte character at the cut).
fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The `address` and `key` values of a URI query.
fn parse_query(query: &str) -> Result<(&str, &str), ProvisionError> {
    let mut address = None;
    let mut key = None;
    for param in query.split('&') {
        let (name, value) = param.split_once('=').ok_or(ProvisionError::BadLinkCode("a URI parameter has no `=`"))?;
        let slot = match name {
            "address" => &mut address,
            "key" => &mut key,
            _ => return Err(ProvisionError::BadLinkCode("the URI has a parameter other than `address` and `key`")),
        };
        if slot.replace(value).is_some() {
            return Err(ProvisionError::BadLinkCode("the URI repeats a parameter"));
        }
    }
    let address = address.ok_or(ProvisionError::BadLinkCode("the URI has no `address` parameter"))?;
    let key = key.ok_or(ProvisionError::BadLinkCode("the URI has no `key` parameter"))?;
    Ok((address, key))
}

fn validate_address(address: &str) -> Result<(), ProvisionError> {
    if address.is_empty() {
        return Err(ProvisionError::BadLinkCode("the address is empty"));
    }
    if address.len() > MAX_ADDRESS_LEN {
        return Err(ProvisionError::BadLinkCode("the address is longer than 64 characters"));
    }
    if !address.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ProvisionError::BadLinkCode("the address has a character other than A-Z a-z 0-9 _ -"));
    }
    Ok(())
}

fn decode_key(text: &str) -> Result<[u8; 32], ProvisionError> {
    const BAD_KEY: ProvisionError =
        ProvisionError::BadLinkCode("the key is not 43 characters of base64url without padding (32 bytes)");
    if text.len() != KEY_TEXT_LEN {
        return Err(BAD_KEY);
    }
    // The engine refuses padding and non-zero trailing bits, so each key has one spelling.
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| BAD_KEY)?;
    bytes.try_into().map_err(|_| BAD_KEY)
}
