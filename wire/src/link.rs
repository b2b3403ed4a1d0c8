//! Linking a new device: the bytes the account's identity key signs to vouch for it
//! (see docs/PROTOCOL.md, "Linking a device"). Building them needs no crypto, so the
//! server checks and clients sign the same bytes.

use uuid::Uuid;

/// Domain separator of a link proof.
pub const LINK_PROOF_CONTEXT: &[u8] = b"hush-link-v1\0";

/// What a `LinkDeviceRequest.proof` signs (XEdDSA by the account identity key):
/// `"hush-link-v1\0" || account_id (16) || token (32) || auth_key (32) || registration_id (u32 BE)`.
/// `token` and `auth_key` are written as given (the server checks their lengths first).
pub fn link_proof_input(account_id: Uuid, token: &[u8], auth_key: &[u8], registration_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(LINK_PROOF_CONTEXT.len() + 16 + token.len() + auth_key.len() + 4);
    out.extend_from_slice(LINK_PROOF_CONTEXT);
    out.extend_from_slice(account_id.as_bytes());
    out.extend_from_slice(token);
    out.extend_from_slice(auth_key);
    out.extend_from_slice(&registration_id.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proof_input_is_laid_out_as_documented() {
        let account = Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        let input = link_proof_input(account, &[7; 32], &[9; 32], 0x3FFF);
        assert_eq!(input.len(), 13 + 16 + 32 + 32 + 4);
        assert_eq!(&input[..13], b"hush-link-v1\0");
        assert_eq!(&input[13..29], account.as_bytes());
        assert_eq!(&input[29..61], &[7; 32]);
        assert_eq!(&input[61..93], &[9; 32]);
        assert_eq!(&input[93..], &[0, 0, 0x3F, 0xFF]);
    }
}
