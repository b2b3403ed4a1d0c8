//! Fixed inputs shared by the tests.

use hush_keys::auth::DeviceSigningKey;
use uuid::Uuid;

/// A fixed account id, so snapshots are stable.
pub const ACCOUNT: Uuid = Uuid::from_u128(0x0f1e_2d3c_4b5a_4968_8776_a5b4_c3d2_e1f0);
/// A fixed device id.
pub const DEVICE: u32 = 3;
/// A fixed REST nonce.
pub const NONCE: [u8; 16] =
    [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
/// A fixed request time: 2025-01-01T00:00:00Z.
pub const TS_MS: u64 = 1_735_689_600_000;

/// A device key from fixed bytes (ed25519 signing is deterministic, so snapshots are stable).
pub fn fixed_key() -> DeviceSigningKey {
    DeviceSigningKey::from_bytes(&[0x42; 32])
}

/// Every single-bit flip of `bytes`.
pub fn bit_flips(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..bytes.len() * 8).map(move |bit| {
        let mut flipped = bytes.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        flipped
    })
}
