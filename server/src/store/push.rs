//! Push targets: where a device's content-free wake-ups go while it is offline.

use async_trait::async_trait;

use super::{DeviceKey, StoreError};

/// Where one device's wake-ups go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTarget {
    /// Apple Push Notification service.
    Apns {
        /// The device token (hex), as the app got it from iOS.
        token: String,
        /// The app's bundle id (the `apns-topic`).
        topic: String,
        /// Whether the token is for Apple's sandbox (development) environment.
        sandbox: bool,
    },
    /// Firebase Cloud Messaging (HTTP v1).
    Fcm {
        /// The registration token.
        token: String,
    },
    /// A UnifiedPush distributor (or any webhook): an HTTP POST to this URL.
    UnifiedPush {
        /// The endpoint URL (checked by the REST layer: https, no private address unless allowed).
        endpoint: String,
    },
}

impl PushTarget {
    /// The provider's name as stored and counted in metrics: `apns`, `fcm`, `unifiedpush`.
    pub fn provider(&self) -> &'static str {
        match self {
            PushTarget::Apns { .. } => "apns",
            PushTarget::Fcm { .. } => "fcm",
            PushTarget::UnifiedPush { .. } => "unifiedpush",
        }
    }

    /// The stored columns: provider, token, topic, sandbox.
    pub(crate) fn columns(&self) -> (&'static str, &str, Option<&str>, bool) {
        match self {
            PushTarget::Apns { token, topic, sandbox } => ("apns", token, Some(topic), *sandbox),
            PushTarget::Fcm { token } => ("fcm", token, None, false),
            PushTarget::UnifiedPush { endpoint } => ("unifiedpush", endpoint, None, false),
        }
    }

    /// Rebuilds a target from its stored columns.
    pub(crate) fn from_columns(
        provider: &str,
        token: String,
        topic: Option<String>,
        sandbox: bool,
    ) -> Result<Self, StoreError> {
        match provider {
            "apns" => Ok(PushTarget::Apns { token, topic: topic.unwrap_or_default(), sandbox }),
            "fcm" => Ok(PushTarget::Fcm { token }),
            "unifiedpush" => Ok(PushTarget::UnifiedPush { endpoint: token }),
            other => Err(StoreError::Backend(format!("unknown push provider {other:?} in push_targets").into())),
        }
    }
}

/// A device's push target with when it was last set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecord {
    /// The target.
    pub target: PushTarget,
    /// When it was set, ms.
    pub updated_at: u64,
}

/// Push targets, one per device at most; removed with their device.
#[async_trait]
pub trait PushStore: Send + Sync + 'static {
    /// Sets (or replaces) the device's push target. [`StoreError::UnknownDevice`] if the device does not exist.
    async fn set_push_target(&self, key: DeviceKey, target: &PushTarget, now_ms: u64) -> Result<(), StoreError>;
    /// The device's push target, if it has one.
    async fn push_target(&self, key: DeviceKey) -> Result<Option<PushRecord>, StoreError>;
    /// Removes the device's push target; with `only` given, only if it is still that one (a
    /// provider's "invalid token" answer must not remove a target the device set since).
    /// True if one was removed.
    async fn remove_push_target(&self, key: DeviceKey, only: Option<&PushTarget>) -> Result<bool, StoreError>;
}
