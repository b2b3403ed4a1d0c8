//! JSON bodies of the REST API. Binary values (keys, signatures, certificates)
//! travel as standard base64 with padding; account ids as UUID strings.
//!
//! Every error answer has the body [`ApiError`]: a stable machine-readable
//! `code` and a human-readable `message`, with the HTTP status documented per
//! endpoint in the OpenAPI document served at `/openapi.json`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;
use uuid::Uuid;

/// Bytes written as base64 in JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64(pub Vec<u8>);

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material is not printed; its length is enough to debug with.
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for B64 {
    fn from(v: Vec<u8>) -> Self {
        B64(v)
    }
}

impl AsRef<[u8]> for B64 {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map(B64).map_err(serde::de::Error::custom)
    }
}

/// Reads a JSON number into an unsigned integer the way JSON Schema's `integer` (which the
/// OpenAPI document declares) defines it: any number whose value is a whole number, so `7.0`
/// is 7. Plain serde refuses `7.0`, which a body valid by the document may carry (Python
/// writes whole floats that way). Request fields typed `integer` deserialize through this.
mod integer {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserializer;
    use serde::de::{Error, Unexpected, Visitor};

    /// `deserialize_with` target for `u32` and `u64` fields.
    pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        d.deserialize_u64(Whole(PhantomData))
    }

    struct Whole<T>(PhantomData<T>);

    impl<T: TryFrom<u64>> Whole<T> {
        fn fit<E: Error>(v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &"a smaller number"))
        }
    }

    impl<T: TryFrom<u64>> Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative whole number")
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
            Self::fit(v)
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self)).and_then(Self::fit)
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
            // 2^64 is the first f64 past u64::MAX; `as` is exact for whole values below it.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                Self::fit(v as u64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }
}

/// A signed prekey as uploaded and served: a signed EC prekey, or a Kyber1024 prekey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedPreKey {
    /// Key id chosen by the client.
    #[serde(deserialize_with = "integer::deserialize")]
    pub id: u32,
    /// Serialized public key (33 bytes for EC, 1569 for Kyber1024).
    #[schema(value_type = String, format = Byte)]
    pub public_key: B64,
    /// XEdDSA signature by the account identity key over `public_key` (64 bytes).
    #[schema(value_type = String, format = Byte)]
    pub signature: B64,
}

/// A one-time EC prekey (unsigned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreKey {
    /// Key id chosen by the client.
    #[serde(deserialize_with = "integer::deserialize")]
    pub id: u32,
    /// Serialized public key (33 bytes).
    #[schema(value_type = String, format = Byte)]
    pub public_key: B64,
}

/// Keys of a new device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewDevice {
    /// libsignal registration id, 1..=16383.
    #[schema(minimum = 1, maximum = 16383)]
    #[serde(deserialize_with = "integer::deserialize")]
    pub registration_id: u32,
    /// The device's ed25519 authentication public key (32 bytes).
    #[schema(value_type = String, format = Byte)]
    pub auth_key: B64,
    /// Optional display name, at most 64 characters
    /// ([`MAX_DEVICE_NAME_CHARS`](crate::limits::MAX_DEVICE_NAME_CHARS)). The server stores it
    /// as given; clients should encrypt it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    pub name: Option<String>,
    /// Signed EC prekey.
    pub signed_prekey: SignedPreKey,
    /// Last-resort Kyber1024 prekey, served when no one-time Kyber key is left.
    pub kyber_last_resort: SignedPreKey,
    /// One-time EC prekeys (at most 100).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub one_time_prekeys: Vec<PreKey>,
    /// One-time Kyber1024 prekeys (at most 100).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub one_time_kyber_prekeys: Vec<SignedPreKey>,
}

/// `POST /v1/accounts/challenge`: what a registration must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistrationChallenge {
    /// 32 bytes the server issued; copy it into [`RegistrationProof::nonce`].
    #[schema(value_type = String, format = Byte)]
    pub nonce: B64,
    /// The server's time when it issued the challenge (ms since the epoch); copy it into
    /// [`RegistrationProof::server_time`].
    pub server_time: u64,
    /// The challenge is refused after this time (ms since the epoch): fetch a new one.
    pub expires_at: u64,
}

/// The identity key's proof that it is registering this account: an XEdDSA signature
/// over a server challenge, the username and the primary device (see docs/PROTOCOL.md,
/// "Registration", and `hush_keys::registration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistrationProof {
    /// The challenge nonce, as issued.
    #[schema(value_type = String, format = Byte)]
    pub nonce: B64,
    /// The challenge's server time, as issued.
    #[serde(deserialize_with = "integer::deserialize")]
    pub server_time: u64,
    /// XEdDSA signature by the identity key over `hush_keys::registration::RegistrationSigningInput`.
    #[schema(value_type = String, format = Byte)]
    pub signature: B64,
}

/// `POST /v1/accounts`: create an account with its primary device (id 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// Handle others find the account by: 3 to 32 of `a-z 0-9 _ .`, case-insensitive.
    #[schema(pattern = "^[A-Za-z0-9_.]{3,32}$")]
    pub username: String,
    /// The account's libsignal identity public key (33 bytes), shared by all its devices.
    #[schema(value_type = String, format = Byte)]
    pub identity_key: B64,
    /// The primary device.
    pub device: NewDevice,
    /// Proof that the caller holds the identity key's private key.
    pub proof: RegistrationProof,
}

/// Answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    /// The account's id (its ACI), chosen by the server.
    pub account_id: Uuid,
    /// The primary device's id (always 1).
    pub device_id: u32,
}

/// `POST /v1/devices`: an existing device adds a new device to its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddDeviceRequest {
    /// Keys of the new device.
    pub device: NewDevice,
}

/// Answer to adding a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddDeviceResponse {
    /// The new device's id.
    pub device_id: u32,
}

/// `GET /v1/accounts/username/{username}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountInfo {
    /// The account's id.
    pub account_id: Uuid,
    /// Its username.
    pub username: String,
    /// Its identity public key.
    #[schema(value_type = String, format = Byte)]
    pub identity_key: B64,
}

/// One device of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceInfo {
    /// Device id, 1..=127.
    pub device_id: u32,
    /// Its current registration id.
    pub registration_id: u32,
    /// Display name, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it was added (ms since the epoch).
    pub created_at: u64,
    /// When it last connected (ms since the epoch, day precision), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// `GET /v1/accounts/{account_id}/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    /// Devices in id order.
    pub devices: Vec<DeviceInfo>,
}

/// `PUT /v1/keys`: add one-time prekeys and optionally rotate the signed ones.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct PreKeyUpload {
    /// A new signed EC prekey, replacing the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_prekey: Option<SignedPreKey>,
    /// A new last-resort Kyber prekey, replacing the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kyber_last_resort: Option<SignedPreKey>,
    /// One-time EC prekeys to add (at most 100).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub one_time_prekeys: Vec<PreKey>,
    /// One-time Kyber prekeys to add (at most 100).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub one_time_kyber_prekeys: Vec<SignedPreKey>,
}

/// `GET /v1/keys/count`: one-time prekeys the server still holds for the calling device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreKeyCount {
    /// One-time EC prekeys left.
    pub ec: u32,
    /// One-time Kyber prekeys left.
    pub kyber: u32,
    /// Upload more when either count is below this.
    pub refill_below: u32,
}

/// The keys to start a session with one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceBundle {
    /// Device id.
    pub device_id: u32,
    /// Its registration id.
    pub registration_id: u32,
    /// Its signed EC prekey.
    pub signed_prekey: SignedPreKey,
    /// A one-time Kyber prekey, or the last-resort one when none is left.
    pub kyber_prekey: SignedPreKey,
    /// True when `kyber_prekey` is the last-resort key.
    pub kyber_last_resort: bool,
    /// A one-time EC prekey, if any is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prekey: Option<PreKey>,
}

/// `GET /v1/keys/{account_id}/{device}`: bundles for one or all devices of an account.
/// Each one-time key in it has been handed out once and is gone from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreKeyBundles {
    /// The account.
    pub account_id: Uuid,
    /// Its identity public key.
    #[schema(value_type = String, format = Byte)]
    pub identity_key: B64,
    /// One bundle per requested device.
    pub devices: Vec<DeviceBundle>,
}

/// `GET /v1/certificate`: a sender certificate for sealed sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SenderCertificateResponse {
    /// Serialized libsignal `SenderCertificate`.
    #[schema(value_type = String, format = Byte)]
    pub certificate: B64,
    /// When it expires (ms since the epoch). Fetch a new one before then.
    pub expires_at: u64,
}

/// `GET /v1/server`: facts a client pins on first contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    /// The trust-root public key (33 bytes) that sender certificates chain to.
    #[schema(value_type = String, format = Byte)]
    pub trust_root: B64,
    /// Server software version.
    pub version: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// "ok" when the database answers.
    pub status: String,
}

/// A member's role in a group (see `GroupRole` in `frames.proto` for what each may do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    /// Send, read, leave; add others when the group allows it.
    Member,
    /// Also add and remove members (not owners), change title, description, avatar, settings.
    Admin,
    /// Everything, including changing roles and deleting the group.
    Owner,
}

/// `POST /v1/groups`: create a group; the caller becomes its owner. The title, description
/// and avatar are encrypted by the client with the group's key (which travels to members end to
/// end): the server stores them and cannot read them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateGroupRequest {
    /// The other first members (account ids; the caller is added as owner). At most the
    /// server's member limit in all.
    #[serde(default)]
    pub members: Vec<Uuid>,
    /// Encrypted title (at most 1 KiB; the document's `maxLength` in base64 characters is what
    /// always fits, see [`base64_chars_that_fit`]).
    #[serde(default)]
    #[schema(value_type = String, format = Byte, max_length = 1364)]
    pub title: B64,
    /// Encrypted description (at most 8 KiB).
    #[serde(default)]
    #[schema(value_type = String, format = Byte, max_length = 10920)]
    pub description: B64,
    /// Encrypted avatar (at most 64 KiB).
    #[serde(default)]
    #[schema(value_type = String, format = Byte, max_length = 87380)]
    pub avatar: B64,
    /// Whether members (not only admins) may add others.
    #[serde(default)]
    pub members_can_add: bool,
}

/// `PATCH /v1/groups/{group_id}`: change what is given (admins and owners). At least one
/// field, none `null` and no others: an update that changes nothing is refused, and so the
/// document says (no `null`, `additionalProperties: false`, and `minProperties: 1`, which the
/// server's OpenAPI modifier sets because utoipa 5.5 writes `#[schema(min_properties)]` as
/// `maxProperties`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupRequest {
    /// New encrypted title.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(value_type = String, format = Byte, max_length = 1364)]
    pub title: Option<B64>,
    /// New encrypted description.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(value_type = String, format = Byte, max_length = 10920)]
    pub description: Option<B64>,
    /// New encrypted avatar.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(value_type = String, format = Byte, max_length = 87380)]
    pub avatar: Option<B64>,
    /// New setting.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(value_type = bool)]
    pub members_can_add: Option<bool>,
}

/// The `maxLength` the document gives a base64 field of at most `max_bytes` bytes: the longest
/// base64 text that always decodes to no more (whole 3-byte groups). A text 1 to 4 characters
/// longer may still fit (padding), so the server checks the decoded bytes; the document errs
/// on the safe side, as a schema-valid body must be accepted.
pub const fn base64_chars_that_fit(max_bytes: usize) -> usize {
    max_bytes / 3 * 4
}

/// An optional field that may be left out but is never `null` (with `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /v1/groups/{group_id}/members`: add accounts (admins and owners, or any member when
/// `members_can_add`). They join as members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddMembersRequest {
    /// Account ids to add (not already members), at least one.
    #[schema(min_items = 1)]
    pub members: Vec<Uuid>,
}

/// `PUT /v1/groups/{group_id}/members/{account_id}/role` (owners only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetRoleRequest {
    /// The new role.
    pub role: GroupRole,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupMember {
    /// The member's account.
    pub account_id: Uuid,
    /// Its role.
    pub role: GroupRole,
    /// Who added it (for the creator: itself).
    pub added_by: Uuid,
    /// When it joined (ms since the epoch).
    pub joined_at: u64,
}

/// `GET /v1/groups/{group_id}`: the group as its members see it. Non-members get
/// `404 not_a_member`, whether or not the group exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupInfo {
    /// The group's id.
    pub group_id: Uuid,
    /// Grows with every roster or settings change.
    pub roster_version: u64,
    /// Grows when a member leaves or is removed (or a member account removes a device):
    /// sender keys made under an older epoch are refused.
    pub epoch: u64,
    /// The group's last sequence number (messages and roster changes).
    pub seq: u64,
    /// Members, owners first, then admins, then members, each by account id.
    pub members: Vec<GroupMember>,
    /// Encrypted title.
    #[schema(value_type = String, format = Byte)]
    pub title: B64,
    /// Encrypted description.
    #[schema(value_type = String, format = Byte)]
    pub description: B64,
    /// Encrypted avatar.
    #[schema(value_type = String, format = Byte)]
    pub avatar: B64,
    /// Whether members may add others.
    pub members_can_add: bool,
    /// Most members this group may have.
    pub max_members: u32,
}

/// One entry of `GET /v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupSummary {
    /// The group's id.
    pub group_id: Uuid,
    /// Its roster version (fetch the group when it differs from the one you know).
    pub roster_version: u64,
    /// The caller's role in it.
    pub role: GroupRole,
}

/// `GET /v1/groups`: the groups the calling account is a member of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    /// In group-id order.
    pub groups: Vec<GroupSummary>,
}

/// The answer to a roster or settings change (add, remove, leave, role, update): the change
/// was committed, and a `RosterChange` envelope with `group_seq` is on its way to every member
/// device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RosterChangeResult {
    /// The group.
    pub group_id: Uuid,
    /// The roster version after the change.
    pub roster_version: u64,
    /// The epoch after the change.
    pub epoch: u64,
    /// The change's group seq.
    pub group_seq: u64,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `username_taken`, `too_many_devices`.
    pub code: String,
    /// What happened and what to do, for people.
    pub message: String,
}

/// `POST /v1/devices/link-tokens` (primary device): a single-use token that lets one new
/// device join the account with `POST /v1/devices/link`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkToken {
    /// 32 random bytes. The server keeps only their SHA-256.
    #[schema(value_type = String, format = Byte)]
    pub token: B64,
    /// The token is refused after this time (ms since the epoch).
    pub expires_at: u64,
}

/// `PUT /v1/provisioning/{address}`: the one message for a provisioning socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvisioningBody {
    /// Opaque to the server (the link message, encrypted to the new device), at most 64 KiB
    /// decoded ([`MAX_PROVISIONING_BODY`](crate::limits::MAX_PROVISIONING_BODY)).
    #[schema(value_type = String, format = Byte)]
    pub body: B64,
}

/// `POST /v1/devices/link` (no `Hush-Sig`: the token authenticates): a new device joins the
/// account that issued `token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkDeviceRequest {
    /// The account to join.
    pub account_id: Uuid,
    /// The link token from `POST /v1/devices/link-tokens` (32 bytes).
    #[schema(value_type = String, format = Byte)]
    pub token: B64,
    /// Keys of the new device, signed by the account identity key.
    pub device: NewDevice,
    /// XEdDSA signature by the account identity key over
    /// [`link_proof_input`](crate::link::link_proof_input)`(account_id, token, device.auth_key,
    /// device.registration_id)`.
    #[schema(value_type = String, format = Byte)]
    pub proof: B64,
}

/// `PATCH /v1/devices/self`: change the calling device's display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RenameDevice {
    /// The new name, at most 64 characters; `null` or absent removes it.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub name: Option<String>,
}

/// `POST /v1/link-archives` (primary device): an empty history archive to upload in chunks
/// for a newly linked device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkArchive {
    /// The archive's id: 16 random bytes, base64url without padding.
    #[schema(pattern = "^[A-Za-z0-9_-]{22}$")]
    pub archive_id: String,
    /// Largest chunk, bytes (1 MiB).
    pub chunk_bytes: u32,
    /// Most bytes all chunks together may hold.
    pub max_bytes: u64,
    /// When the archive is deleted (ms since the epoch).
    pub expires_at: u64,
}

/// `POST /v1/link-archives/{id}/complete`: the upload is done, with chunks `0..chunks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CompleteArchive {
    /// How many chunks the archive has (indexes `0..chunks`).
    #[serde(deserialize_with = "integer::deserialize")]
    pub chunks: u32,
}

/// One chunk of a history archive, as raw `application/octet-stream` bytes (client-encrypted).
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ArchiveChunk(pub Vec<u8>);

/// Name of the header carrying a REST request signature.
pub const AUTH_HEADER: &str = "authorization";
/// Scheme word of the REST authorization header.
pub const AUTH_SCHEME: &str = "Hush-Sig";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linking_bodies_are_stable() {
        let link = LinkDeviceRequest {
            account_id: Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            token: B64(vec![7; 32]),
            device: NewDevice {
                registration_id: 42,
                auth_key: B64(vec![1; 32]),
                name: Some("laptop".into()),
                signed_prekey: SignedPreKey { id: 1, public_key: B64(vec![5; 4]), signature: B64(vec![9; 4]) },
                kyber_last_resort: SignedPreKey { id: 2, public_key: B64(vec![8; 4]), signature: B64(vec![9; 4]) },
                one_time_prekeys: vec![],
                one_time_kyber_prekeys: vec![],
            },
            proof: B64(vec![4; 64]),
        };
        insta::assert_json_snapshot!("link_device_request", link);
        insta::assert_json_snapshot!(
            "link_token",
            LinkToken { token: B64(vec![7; 32]), expires_at: 1_700_000_600_000 }
        );
        insta::assert_json_snapshot!("provisioning_body", ProvisioningBody { body: B64(b"sealed".to_vec()) });
        insta::assert_json_snapshot!("rename_device", RenameDevice { name: Some("phone".into()) });
        let archive = LinkArchive {
            archive_id: "AAECAwQFBgcICQoLDA0ODw".into(),
            chunk_bytes: 1 << 20,
            max_bytes: 64 << 20,
            expires_at: 1_700_003_600_000,
        };
        insta::assert_json_snapshot!("link_archive", archive);
        insta::assert_json_snapshot!("complete_archive", CompleteArchive { chunks: 3 });
        let back: LinkDeviceRequest =
            serde_json::from_value(serde_json::to_value(&link).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, link);
    }

    #[test]
    fn register_request_json_is_stable() {
        let req = RegisterRequest {
            username: "alice".into(),
            identity_key: B64(vec![5; 33]),
            device: NewDevice {
                registration_id: 42,
                auth_key: B64(vec![1; 32]),
                name: None,
                signed_prekey: SignedPreKey { id: 1, public_key: B64(vec![5; 4]), signature: B64(vec![9; 4]) },
                kyber_last_resort: SignedPreKey { id: 2, public_key: B64(vec![8; 4]), signature: B64(vec![9; 4]) },
                one_time_prekeys: vec![PreKey { id: 3, public_key: B64(vec![5; 4]) }],
                one_time_kyber_prekeys: vec![],
            },
            proof: RegistrationProof {
                nonce: B64(vec![3; 32]),
                server_time: 1_700_000_000_000,
                signature: B64(vec![4; 64]),
            },
        };
        insta::assert_json_snapshot!(req);
        let back: RegisterRequest =
            serde_json::from_value(serde_json::to_value(&req).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, req);
    }

    /// Regression (schemathesis): `"id": 2147483647.0` is an integer by the JSON schema the
    /// document declares, and was refused as "expected u32".
    #[test]
    fn whole_floats_are_integers_as_json_schema_says() {
        let key: PreKey =
            serde_json::from_str(r#"{"id":2147483647.0,"public_key":""}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.id, 2_147_483_647);
        let proof = r#"{"nonce":"","server_time":1.7e12,"signature":""}"#;
        let proof: RegistrationProof = serde_json::from_str(proof).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(proof.server_time, 1_700_000_000_000);
        for bad in ["1.5", "-1", "-1.0", "4294967296", "4294967296.0", "1e300", "\"1\""] {
            let json = format!(r#"{{"id":{bad},"public_key":""}}"#);
            assert!(serde_json::from_str::<PreKey>(&json).is_err(), "{json} was read as a key id");
        }
    }

    #[test]
    fn group_json_is_stable() {
        let id = Uuid::from_bytes([0x11; 16]);
        let member = Uuid::from_bytes([0x22; 16]);
        let info = GroupInfo {
            group_id: id,
            roster_version: 3,
            epoch: 1,
            seq: 7,
            members: vec![GroupMember { account_id: member, role: GroupRole::Owner, added_by: member, joined_at: 5 }],
            title: B64(vec![1; 4]),
            description: B64(vec![]),
            avatar: B64(vec![]),
            members_can_add: false,
            max_members: 1000,
        };
        let create = CreateGroupRequest { members: vec![member], title: B64(vec![1; 4]), ..Default::default() };
        let role = SetRoleRequest { role: GroupRole::Admin };
        insta::assert_json_snapshot!("group_info", info);
        insta::assert_json_snapshot!("create_group", create);
        insta::assert_json_snapshot!("set_role", role);
    }

    #[test]
    fn push_target_json_is_stable() {
        let targets = vec![
            PushTargetBody::Apns { token: "a1b2".into(), topic: "org.example.hush".into(), sandbox: true },
            PushTargetBody::Fcm { token: "fcm-token".into() },
            PushTargetBody::UnifiedPush { endpoint: "https://push.example/up/abc".into() },
        ];
        insta::assert_json_snapshot!("push_targets", targets);
        let status = PushStatus { target: targets[2].clone(), updated_at: 1_700_000_000_000 };
        insta::assert_json_snapshot!("push_status", status);
        for t in targets {
            let back: PushTargetBody =
                serde_json::from_value(serde_json::to_value(&t).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, t);
        }
    }

    #[test]
    fn bad_base64_is_a_clear_error() {
        let err = serde_json::from_str::<PreKey>(r#"{"id":1,"public_key":"%%%"}"#).err();
        assert!(err.map(|e| e.to_string().contains("Invalid")).unwrap_or(false));
    }
}

/// Where the calling device's wake-ups go while it is offline (`PUT /v1/devices/self/push`,
/// and inside [`PushStatus`]). A wake-up carries no content, no sender and no conversation:
/// only "you have mail"; the app then connects and drains its mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub enum PushTargetBody {
    /// Apple Push Notification service.
    Apns {
        /// The device token, hex (as iOS gives it to the app).
        token: String,
        /// The app's bundle id (sent as `apns-topic`).
        topic: String,
        /// True for a development build's token (Apple's sandbox environment).
        #[serde(default)]
        sandbox: bool,
    },
    /// Firebase Cloud Messaging (HTTP v1 API).
    Fcm {
        /// The FCM registration token.
        token: String,
    },
    /// A UnifiedPush distributor, or any webhook: hushd POSTs a tiny opaque body to this URL.
    /// It must be `https`, and must not name a private, loopback or link-local address,
    /// unless the operator's `push_allow_hosts` names its host.
    #[serde(rename = "unifiedpush")]
    UnifiedPush {
        /// The endpoint URL the distributor gave the app.
        endpoint: String,
    },
}

/// `GET /v1/devices/self/push`: the calling device's push target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PushStatus {
    /// The target.
    pub target: PushTargetBody,
    /// When it was set, ms since the Unix epoch.
    pub updated_at: u64,
}
