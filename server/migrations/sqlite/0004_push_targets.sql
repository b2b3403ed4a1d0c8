-- Where to send a device's content-free wake-ups while it is offline: at most one push
-- target per device, gone with the device. `provider` is 'apns', 'fcm' or 'unifiedpush';
-- `token` is the APNs device token, the FCM registration token or the UnifiedPush
-- endpoint URL; `topic` and `sandbox` are APNs only (the app's bundle id, and whether the
-- token is for Apple's sandbox or production environment).
CREATE TABLE push_targets (
    device_pk  INTEGER PRIMARY KEY REFERENCES devices(pk) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    token      TEXT NOT NULL,
    topic      TEXT,
    sandbox    INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
