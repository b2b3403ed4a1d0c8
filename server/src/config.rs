//! `hushd` configuration: flags, environment variables (`HUSHD_*`) and an
//! optional TOML file, in that order of precedence, over built-in defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Command line of `hushd`. Every flag can also be set by the environment
/// variable named in its help, or by the key of the same name (with `_`
/// instead of `-`) in the `--config` file.
#[derive(Debug, Default, Parser)]
#[command(name = "hushd", version, about = "hush relay server: stores and forwards end-to-end-encrypted envelopes")]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, env = "HUSHD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7878].
    #[arg(long, env = "HUSHD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the database and the server's certificate keys [default: ./hush-data].
    #[arg(long, env = "HUSHD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL [default: sqlite://<data-dir>/hush.db].
    #[arg(long, env = "HUSHD_DB")]
    pub db: Option<String>,
    /// Days an unacknowledged envelope is kept [default: 30].
    #[arg(long, env = "HUSHD_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Envelopes one device mailbox may hold [default: 100000].
    #[arg(long, env = "HUSHD_MAX_MAILBOX")]
    pub max_mailbox: Option<u64>,
    /// Members (accounts) one group may have [default: 1000].
    #[arg(long, env = "HUSHD_MAX_GROUP_MEMBERS")]
    pub max_group_members: Option<u32>,
    /// Groups with more members than this are read from their stream by each member device's
    /// cursor (fan-out on read); smaller ones put a reference in every member device's
    /// mailbox (fan-out on write). A group switches at the roster change that crosses it
    /// [default: 100].
    #[arg(long, env = "HUSHD_GROUP_FANOUT_READ_ABOVE")]
    pub group_fanout_read_above: Option<u32>,
    /// Sends one device may make in a burst [default: 60].
    #[arg(long, env = "HUSHD_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Sustained sends per second per device [default: 1].
    #[arg(long, env = "HUSHD_RATE_PER_SECOND")]
    pub rate_per_second: Option<f64>,
    /// Online-only sends (typing, presence) one device may make in a burst; a budget of their
    /// own, apart from the send rate [default: 1000].
    #[arg(long, env = "HUSHD_ONLINE_ONLY_BURST")]
    pub online_only_burst: Option<u32>,
    /// Sustained online-only sends per second per device [default: 10].
    #[arg(long, env = "HUSHD_ONLINE_ONLY_PER_SECOND")]
    pub online_only_per_second: Option<f64>,
    /// Seconds between WebSocket pings; a connection silent for two intervals is dropped [default: 30].
    #[arg(long, env = "HUSHD_PING_INTERVAL_SECS")]
    pub ping_interval_secs: Option<u64>,
    /// Seconds a new WebSocket has to authenticate [default: 10].
    #[arg(long, env = "HUSHD_AUTH_TIMEOUT_SECS")]
    pub auth_timeout_secs: Option<u64>,
    /// Hours a sender certificate is valid [default: 24].
    #[arg(long, env = "HUSHD_CERTIFICATE_HOURS")]
    pub certificate_hours: Option<u64>,
    /// Most simultaneous WebSocket connections, authenticating or authenticated [default: 100000].
    #[arg(long, env = "HUSHD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most WebSocket connections still authenticating; when full, the oldest is dropped for a new one [default: 1024].
    #[arg(long, env = "HUSHD_MAX_HANDSHAKES")]
    pub max_handshakes: Option<usize>,
    /// Most WebSocket connections still authenticating from one source address [default: 32].
    #[arg(long, env = "HUSHD_MAX_HANDSHAKES_PER_ADDRESS")]
    pub max_handshakes_per_address: Option<usize>,
    /// Length of the listening socket's queue of connections not yet accepted (the kernel caps it
    /// at net.core.somaxconn); a full queue drops new connections' SYNs, which clients resend
    /// only after a second [default: 1024].
    #[arg(long, env = "HUSHD_LISTEN_BACKLOG")]
    pub listen_backlog: Option<u32>,
    /// Seconds one write to a WebSocket may take; a client that stops reading is closed with 4007 [default: 10].
    #[arg(long, env = "HUSHD_WRITE_TIMEOUT_SECS")]
    pub write_timeout_secs: Option<u64>,
    /// Seconds shutdown waits for connections to close before dropping them [default: 10].
    #[arg(long, env = "HUSHD_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Redis URL for running several nodes (routing table and wake-ups), e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "HUSHD_REDIS")]
    pub redis: Option<String>,
    /// This node's id in a cluster [default: random].
    #[arg(long, env = "HUSHD_NODE_ID")]
    pub node_id: Option<String>,
    /// Registrations one source address may make in a burst [default: 10].
    #[arg(long, env = "HUSHD_REGISTER_BURST")]
    pub register_burst: Option<u32>,
    /// Registrations per hour per source address, sustained [default: 20].
    #[arg(long, env = "HUSHD_REGISTER_PER_HOUR")]
    pub register_per_hour: Option<u32>,
    /// Username lookups and registration challenges one source address may make in a burst [default: 100].
    #[arg(long, env = "HUSHD_LOOKUP_BURST")]
    pub lookup_burst: Option<u32>,
    /// Username lookups and registration challenges per hour per source address, sustained [default: 3600].
    #[arg(long, env = "HUSHD_LOOKUP_PER_HOUR")]
    pub lookup_per_hour: Option<u32>,
    /// Prekey-bundle requests one account may make in a burst [default: 1000].
    #[arg(long, env = "HUSHD_BUNDLE_BURST")]
    pub bundle_burst: Option<u32>,
    /// Prekey-bundle requests per hour per account, sustained [default: 6000].
    #[arg(long, env = "HUSHD_BUNDLE_PER_HOUR")]
    pub bundle_per_hour: Option<u32>,
    /// One-time prekeys of one target device one account may take in a burst; beyond it
    /// the bundle carries only the signed and last-resort keys [default: 10].
    #[arg(long, env = "HUSHD_ONE_TIME_KEY_BURST")]
    pub one_time_key_burst: Option<u32>,
    /// One-time prekeys of one target device per hour per account, sustained [default: 10].
    #[arg(long, env = "HUSHD_ONE_TIME_KEY_PER_HOUR")]
    pub one_time_key_per_hour: Option<u32>,
    /// Link tokens one account may ask for, and device links one source address may try, in a burst [default: 10].
    #[arg(long, env = "HUSHD_LINK_BURST")]
    pub link_burst: Option<u32>,
    /// Link tokens per hour per account, and device links per hour per source address, sustained [default: 60].
    #[arg(long, env = "HUSHD_LINK_PER_HOUR")]
    pub link_per_hour: Option<u32>,
    /// Seconds a link token and a provisioning address stay valid [default: 600].
    #[arg(long, env = "HUSHD_LINK_TIMEOUT_SECS")]
    pub link_timeout_secs: Option<u64>,
    /// Most bytes one history archive for a linked device may hold [default: 67108864 (64 MiB)].
    #[arg(long, env = "HUSHD_MAX_LINK_ARCHIVE_BYTES")]
    pub max_link_archive_bytes: Option<u64>,
    /// Seconds a history archive for a linked device is kept [default: 3600].
    #[arg(long, env = "HUSHD_LINK_ARCHIVE_SECS")]
    pub link_archive_secs: Option<u64>,
    /// Addresses of reverse proxies / load balancers whose `X-Forwarded-For` is believed,
    /// comma-separated [default: none: the peer address is the source address].
    #[arg(long, env = "HUSHD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// Hosts a UnifiedPush endpoint may name although they are private or loopback (and then
    /// over plain http too), comma-separated, e.g. a distributor on the LAN [default: none].
    #[arg(long, env = "HUSHD_PUSH_ALLOW_HOSTS", value_delimiter = ',')]
    pub push_allow_hosts: Option<Vec<String>>,
    /// Seconds: at most one wake-up per offline device in this window (in a cluster, across
    /// all nodes) [default: 60].
    #[arg(long, env = "HUSHD_PUSH_WINDOW_SECS")]
    pub push_window_secs: Option<u64>,
    /// Seconds a non-urgent envelope (a receipt, a sync message) waits before its coalesced
    /// background wake-up [default: 900].
    #[arg(long, env = "HUSHD_PUSH_BACKGROUND_DELAY_SECS")]
    pub push_background_delay_secs: Option<u64>,
    /// Seconds after a device disconnects with envelopes unacknowledged before it is woken [default: 60].
    #[arg(long, env = "HUSHD_PUSH_DISCONNECT_DELAY_SECS")]
    pub push_disconnect_delay_secs: Option<u64>,
    /// FCM: the Google service-account JSON key file (enables FCM wake-ups). Its contents are never logged.
    #[arg(long, env = "HUSHD_FCM_SERVICE_ACCOUNT")]
    pub fcm_service_account: Option<PathBuf>,
    /// FCM: base URL of the HTTP v1 API [default: https://fcm.googleapis.com]. The OAuth token
    /// endpoint is the service account's `token_uri`.
    #[arg(long, env = "HUSHD_FCM_ENDPOINT")]
    pub fcm_endpoint: Option<String>,
    /// APNs: the token-signing key (.p8 file from Apple; enables APNs wake-ups). Never logged.
    #[arg(long, env = "HUSHD_APNS_KEY")]
    pub apns_key: Option<PathBuf>,
    /// APNs: the key's id (10 characters, from Apple's developer portal).
    #[arg(long, env = "HUSHD_APNS_KEY_ID")]
    pub apns_key_id: Option<String>,
    /// APNs: the team id (10 characters).
    #[arg(long, env = "HUSHD_APNS_TEAM_ID")]
    pub apns_team_id: Option<String>,
}

/// The same settings as [`Args`], read from the `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    db: Option<String>,
    retention_days: Option<u32>,
    max_mailbox: Option<u64>,
    max_group_members: Option<u32>,
    group_fanout_read_above: Option<u32>,
    rate_burst: Option<u32>,
    rate_per_second: Option<f64>,
    online_only_burst: Option<u32>,
    online_only_per_second: Option<f64>,
    ping_interval_secs: Option<u64>,
    auth_timeout_secs: Option<u64>,
    certificate_hours: Option<u64>,
    max_connections: Option<usize>,
    max_handshakes: Option<usize>,
    max_handshakes_per_address: Option<usize>,
    listen_backlog: Option<u32>,
    write_timeout_secs: Option<u64>,
    shutdown_timeout_secs: Option<u64>,
    redis: Option<String>,
    node_id: Option<String>,
    register_burst: Option<u32>,
    register_per_hour: Option<u32>,
    lookup_burst: Option<u32>,
    lookup_per_hour: Option<u32>,
    bundle_burst: Option<u32>,
    bundle_per_hour: Option<u32>,
    one_time_key_burst: Option<u32>,
    one_time_key_per_hour: Option<u32>,
    link_burst: Option<u32>,
    link_per_hour: Option<u32>,
    link_timeout_secs: Option<u64>,
    max_link_archive_bytes: Option<u64>,
    link_archive_secs: Option<u64>,
    trusted_proxies: Option<Vec<IpAddr>>,
    push_allow_hosts: Option<Vec<String>>,
    push_window_secs: Option<u64>,
    push_background_delay_secs: Option<u64>,
    push_disconnect_delay_secs: Option<u64>,
    fcm_service_account: Option<PathBuf>,
    fcm_endpoint: Option<String>,
    apns_key: Option<PathBuf>,
    apns_key_id: Option<String>,
    apns_team_id: Option<String>,
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {name}: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Bytes of pushes queued for one connection: a few frames' worth. Beyond it the connection
/// re-reads its mailbox, so a client that stops reading pins no more memory than this.
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// Limits enforced by the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Envelopes one mailbox may hold.
    pub max_mailbox: u64,
    /// Unacknowledged envelopes in flight per connection.
    pub window: u32,
    /// Rate-limit burst per device.
    pub rate_burst: u32,
    /// Rate-limit sustained sends per second per device.
    pub rate_per_second: f64,
    /// Online-only sends (typing, presence) per device in a burst: a budget apart from the
    /// send rate, so neither uses up the other.
    pub online_only_burst: u32,
    /// Sustained online-only sends per second per device.
    pub online_only_per_second: f64,
    /// Devices per account.
    pub max_devices: u32,
    /// Members (accounts) per group.
    pub max_group_members: u32,
    /// Groups with more members are read from their stream (fan-out on read).
    pub group_fanout_read_above: u32,
    /// Simultaneous WebSocket connections (authenticating or authenticated).
    pub max_connections: usize,
    /// Connections still authenticating, in all.
    pub max_handshakes: usize,
    /// Connections still authenticating from one source address.
    pub max_handshakes_per_address: usize,
    /// Bytes of envelopes the hub queues for one connection before it re-reads its mailbox instead.
    pub queue_bytes: usize,
}

/// A rate: `burst` at once, refilled at `per_hour` (governor's GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed at once.
    pub burst: u32,
    /// Sustained requests per hour.
    pub per_hour: u32,
}

impl Rate {
    fn resolve(name: &'static str, burst: u32, per_hour: u32) -> Result<Self, ConfigError> {
        if burst == 0 || per_hour == 0 {
            return Err(ConfigError::Invalid { name, message: "burst and per-hour rate must be at least 1".into() });
        }
        // The limiter refills a burst in `burst` periods, counted in nanoseconds in a u64.
        if (3_600_000_000_000u64 / u64::from(per_hour)).checked_mul(u64::from(burst)).is_none() {
            return Err(ConfigError::Invalid {
                name,
                message: format!(
                    "a burst of {burst} at {per_hour} per hour takes centuries to refill: raise the rate or lower the burst"
                ),
            });
        }
        Ok(Rate { burst, per_hour })
    }
}

/// Abuse limits on the REST API (see README, "Abuse limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbuseLimits {
    /// Registrations per source address.
    pub register: Rate,
    /// Username lookups and registration challenges per source address.
    pub lookup: Rate,
    /// Prekey-bundle requests per requesting account.
    pub bundles: Rate,
    /// One-time prekeys taken per (requesting account, target device).
    pub one_time_keys: Rate,
    /// Link tokens per account, and device links per source address.
    pub link: Rate,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

/// APNs token authentication (a .p8 key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsConfig {
    /// The .p8 key file.
    pub key: PathBuf,
    /// Its key id.
    pub key_id: String,
    /// The team id.
    pub team_id: String,
}

/// Wake-ups for offline devices (see README, "Push").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// Hosts UnifiedPush endpoints may name although they are private or loopback.
    pub allow_hosts: Vec<String>,
    /// At most one wake-up per device in this window.
    pub window: Duration,
    /// How long non-urgent envelopes wait for their background wake-up.
    pub background_delay: Duration,
    /// How long after a disconnect with unacknowledged envelopes the device is woken.
    pub disconnect_delay: Duration,
    /// FCM service-account key file, if FCM is enabled.
    pub fcm_service_account: Option<PathBuf>,
    /// FCM HTTP v1 base URL.
    pub fcm_endpoint: String,
    /// APNs, if enabled.
    pub apns: Option<ApnsConfig>,
}

/// The resolved configuration of one `hushd`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Queue length of the listening socket.
    pub listen_backlog: u32,
    /// Data directory (database, certificate keys).
    pub data_dir: PathBuf,
    /// Database URL.
    pub db: String,
    /// How long an envelope is kept.
    pub retention: Duration,
    /// Interval between pings.
    pub ping_interval: Duration,
    /// Time allowed to authenticate.
    pub auth_timeout: Duration,
    /// Time one write to a connection may take before it is closed as a slow consumer.
    pub write_timeout: Duration,
    /// Time shutdown waits for connections before dropping them.
    pub shutdown_timeout: Duration,
    /// Sender certificate lifetime.
    pub certificate_lifetime: Duration,
    /// Lifetime of a link token and of a provisioning address.
    pub link_timeout: Duration,
    /// Most bytes of one history archive.
    pub max_link_archive_bytes: u64,
    /// Lifetime of a history archive.
    pub link_archive_lifetime: Duration,
    /// Limits.
    pub limits: Limits,
    /// Abuse limits on the REST API.
    pub abuse: AbuseLimits,
    /// Redis URL, when several nodes share the database.
    pub redis: Option<String>,
    /// This node's id.
    pub node_id: String,
    /// Wake-ups for offline devices.
    pub push: PushConfig,
}

impl Config {
    /// Resolves flags, environment and config file into a configuration.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("hush-data"));
        let db = args.db.or(file.db).unwrap_or_else(|| default_db_url(&data_dir));
        let retention_days = args.retention_days.or(file.retention_days).unwrap_or(hush_wire::limits::RETENTION_DAYS);
        let rate_per_second = args.rate_per_second.or(file.rate_per_second).unwrap_or(1.0);
        if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
            return Err(ConfigError::Invalid { name: "rate_per_second", message: "must be a positive number".into() });
        }
        let rate_burst = args.rate_burst.or(file.rate_burst).unwrap_or(60);
        if rate_burst == 0 {
            return Err(ConfigError::Invalid { name: "rate_burst", message: "must be at least 1".into() });
        }
        let online_only_per_second = args.online_only_per_second.or(file.online_only_per_second).unwrap_or(10.0);
        if !(online_only_per_second.is_finite() && online_only_per_second > 0.0) {
            return Err(ConfigError::Invalid {
                name: "online_only_per_second",
                message: "must be a positive number".into(),
            });
        }
        let online_only_burst = args.online_only_burst.or(file.online_only_burst).unwrap_or(1000);
        if online_only_burst == 0 {
            return Err(ConfigError::Invalid { name: "online_only_burst", message: "must be at least 1".into() });
        }
        let max_group_members =
            args.max_group_members.or(file.max_group_members).unwrap_or(hush_wire::limits::MAX_GROUP_MEMBERS);
        if max_group_members < 1 {
            return Err(ConfigError::Invalid { name: "max_group_members", message: "must be at least 1".into() });
        }
        let ping = args.ping_interval_secs.or(file.ping_interval_secs).unwrap_or(30);
        if ping == 0 {
            return Err(ConfigError::Invalid { name: "ping_interval_secs", message: "must be at least 1".into() });
        }
        let abuse = AbuseLimits {
            register: Rate::resolve(
                "register_burst/register_per_hour",
                args.register_burst.or(file.register_burst).unwrap_or(10),
                args.register_per_hour.or(file.register_per_hour).unwrap_or(20),
            )?,
            lookup: Rate::resolve(
                "lookup_burst/lookup_per_hour",
                args.lookup_burst.or(file.lookup_burst).unwrap_or(100),
                args.lookup_per_hour.or(file.lookup_per_hour).unwrap_or(3600),
            )?,
            bundles: Rate::resolve(
                "bundle_burst/bundle_per_hour",
                args.bundle_burst.or(file.bundle_burst).unwrap_or(1000),
                args.bundle_per_hour.or(file.bundle_per_hour).unwrap_or(6000),
            )?,
            one_time_keys: Rate::resolve(
                "one_time_key_burst/one_time_key_per_hour",
                args.one_time_key_burst.or(file.one_time_key_burst).unwrap_or(10),
                args.one_time_key_per_hour.or(file.one_time_key_per_hour).unwrap_or(10),
            )?,
            link: Rate::resolve(
                "link_burst/link_per_hour",
                args.link_burst.or(file.link_burst).unwrap_or(10),
                args.link_per_hour.or(file.link_per_hour).unwrap_or(60),
            )?,
            trusted_proxies: args.trusted_proxies.or(file.trusted_proxies).unwrap_or_default(),
        };
        let link_timeout =
            args.link_timeout_secs.or(file.link_timeout_secs).unwrap_or(hush_wire::limits::LINK_TIMEOUT_SECS);
        if link_timeout == 0 {
            return Err(ConfigError::Invalid { name: "link_timeout_secs", message: "must be at least 1".into() });
        }
        let apns = match (
            args.apns_key.or(file.apns_key),
            args.apns_key_id.or(file.apns_key_id),
            args.apns_team_id.or(file.apns_team_id),
        ) {
            (Some(key), Some(key_id), Some(team_id)) => Some(ApnsConfig { key, key_id, team_id }),
            (None, None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "apns_key/apns_key_id/apns_team_id",
                    message: "APNs needs all three: the .p8 key file, its key id and the team id".into(),
                });
            }
        };
        let window = args.push_window_secs.or(file.push_window_secs).unwrap_or(60);
        if window == 0 {
            return Err(ConfigError::Invalid { name: "push_window_secs", message: "must be at least 1".into() });
        }
        let push = PushConfig {
            allow_hosts: args.push_allow_hosts.or(file.push_allow_hosts).unwrap_or_default(),
            window: Duration::from_secs(window),
            background_delay: Duration::from_secs(
                args.push_background_delay_secs.or(file.push_background_delay_secs).unwrap_or(900),
            ),
            disconnect_delay: Duration::from_secs(
                args.push_disconnect_delay_secs.or(file.push_disconnect_delay_secs).unwrap_or(60),
            ),
            fcm_service_account: args.fcm_service_account.or(file.fcm_service_account),
            fcm_endpoint: args
                .fcm_endpoint
                .or(file.fcm_endpoint)
                .unwrap_or_else(|| "https://fcm.googleapis.com".into())
                .trim_end_matches('/')
                .to_owned(),
            apns,
        };
        Ok(Config {
            push,
            abuse,
            listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7878))),
            listen_backlog: args.listen_backlog.or(file.listen_backlog).unwrap_or(1024).max(1),
            data_dir,
            db,
            retention: Duration::from_secs(u64::from(retention_days) * 86_400),
            ping_interval: Duration::from_secs(ping),
            auth_timeout: Duration::from_secs(args.auth_timeout_secs.or(file.auth_timeout_secs).unwrap_or(10).max(1)),
            write_timeout: Duration::from_secs(
                args.write_timeout_secs.or(file.write_timeout_secs).unwrap_or(10).max(1),
            ),
            shutdown_timeout: Duration::from_secs(
                args.shutdown_timeout_secs.or(file.shutdown_timeout_secs).unwrap_or(10),
            ),
            certificate_lifetime: Duration::from_secs(
                args.certificate_hours.or(file.certificate_hours).unwrap_or(24).max(1) * 3600,
            ),
            link_timeout: Duration::from_secs(link_timeout),
            max_link_archive_bytes: args
                .max_link_archive_bytes
                .or(file.max_link_archive_bytes)
                .unwrap_or(hush_wire::limits::MAX_LINK_ARCHIVE_BYTES),
            link_archive_lifetime: Duration::from_secs(
                args.link_archive_secs
                    .or(file.link_archive_secs)
                    .unwrap_or(hush_wire::limits::LINK_ARCHIVE_SECS)
                    .max(1),
            ),
            limits: Limits {
                max_mailbox: args.max_mailbox.or(file.max_mailbox).unwrap_or(hush_wire::limits::MAX_MAILBOX_ENVELOPES),
                window: hush_wire::limits::IN_FLIGHT_WINDOW,
                rate_burst,
                rate_per_second,
                online_only_burst,
                online_only_per_second,
                max_devices: hush_wire::limits::MAX_DEVICES_PER_ACCOUNT,
                max_group_members,
                group_fanout_read_above: args
                    .group_fanout_read_above
                    .or(file.group_fanout_read_above)
                    .unwrap_or(hush_wire::limits::GROUP_FANOUT_READ_ABOVE),
                max_connections: args.max_connections.or(file.max_connections).unwrap_or(100_000),
                max_handshakes: args.max_handshakes.or(file.max_handshakes).unwrap_or(1024).max(1),
                max_handshakes_per_address: args
                    .max_handshakes_per_address
                    .or(file.max_handshakes_per_address)
                    .unwrap_or(32)
                    .max(1),
                queue_bytes: QUEUE_BYTES,
            },
            redis: args.redis.or(file.redis),
            node_id: args.node_id.or(file.node_id).unwrap_or_else(|| {
                let id = uuid::Uuid::new_v4().simple().to_string();
                id[..12].to_owned()
            }),
        })
    }

    /// A configuration for tests and embedding: SQLite in `data_dir`, an ephemeral port, defaults otherwise.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        let args = Args {
            data_dir: Some(data_dir.to_path_buf()),
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Args::default()
        };
        // The defaults above are all valid, so this cannot fail.
        Self::from_args(args).unwrap_or_else(|e| unreachable!("default config is valid: {e}"))
    }
}

fn default_db_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("hush.db").display())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("hushd.toml");
        std::fs::write(&file, "max_mailbox = 5\nrate_burst = 7\nlisten = \"127.0.0.1:9000\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let args = Args { config: Some(file), rate_burst: Some(9), ..Args::default() };
        let config = Config::from_args(args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.limits.max_mailbox, 5);
        assert_eq!(config.limits.rate_burst, 9);
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.retention, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn group_member_limit_defaults_to_1000_and_flags_beat_the_file() {
        let config = Config::from_args(Args::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.limits.max_group_members, 1000);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("hushd.toml");
        std::fs::write(&file, "max_group_members = 50\n").unwrap_or_else(|e| panic!("{e}"));
        let from_file = Config::from_args(Args { config: Some(file.clone()), ..Args::default() });
        assert_eq!(from_file.map(|c| c.limits.max_group_members).ok(), Some(50));
        let flag = Config::from_args(Args { config: Some(file), max_group_members: Some(7), ..Args::default() });
        assert_eq!(flag.map(|c| c.limits.max_group_members).ok(), Some(7));
        let zero = Config::from_args(Args { max_group_members: Some(0), ..Args::default() });
        assert!(matches!(zero, Err(ConfigError::Invalid { name: "max_group_members", .. })));
    }

    #[test]
    fn the_fan_out_on_read_threshold_defaults_to_100_and_flags_beat_the_file() {
        let config = Config::from_args(Args::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.limits.group_fanout_read_above, 100);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("hushd.toml");
        std::fs::write(&file, "group_fanout_read_above = 20\n").unwrap_or_else(|e| panic!("{e}"));
        let from_file = Config::from_args(Args { config: Some(file.clone()), ..Args::default() });
        assert_eq!(from_file.map(|c| c.limits.group_fanout_read_above).ok(), Some(20));
        let flag = Config::from_args(Args { config: Some(file), group_fanout_read_above: Some(0), ..Args::default() });
        assert_eq!(flag.map(|c| c.limits.group_fanout_read_above).ok(), Some(0), "0: every group reads its stream");
    }

    #[test]
    fn unknown_key_in_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("hushd.toml");
        std::fs::write(&file, "max_mailboxes = 5\n").unwrap_or_else(|e| panic!("{e}"));
        let err = Config::from_args(Args { config: Some(file), ..Args::default() });
        assert!(matches!(err, Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn abuse_limits_have_documented_defaults_and_read_the_file() {
        let config = Config::from_args(Args::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.abuse.register, Rate { burst: 10, per_hour: 20 });
        assert_eq!(config.abuse.lookup, Rate { burst: 100, per_hour: 3600 });
        assert_eq!(config.abuse.bundles, Rate { burst: 1000, per_hour: 6000 });
        assert_eq!(config.abuse.one_time_keys, Rate { burst: 10, per_hour: 10 });
        assert!(config.abuse.trusted_proxies.is_empty());

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("hushd.toml");
        std::fs::write(&file, "register_burst = 3\ntrusted_proxies = [\"10.0.0.1\", \"::1\"]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let config =
            Config::from_args(Args { config: Some(file), ..Args::default() }).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.abuse.register.burst, 3);
        assert_eq!(config.abuse.trusted_proxies.len(), 2);
        let err = Config::from_args(Args { bundle_per_hour: Some(0), ..Args::default() });
        assert!(matches!(err, Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn default_prekey_limits_allow_a_large_group_and_stop_a_drain() {
        let c = Config::from_args(Args::default()).unwrap_or_else(|e| panic!("{e}"));
        let (bundles, one_time) = (c.abuse.bundles, c.abuse.one_time_keys);
        // A 1,000-member group of ~6 devices each, one request per device, within the first hour.
        assert!(bundles.burst + bundles.per_hour >= 6_000, "{bundles:?}");
        // One requester takes at most a few dozen of one target device's one-time keys an hour.
        assert!(one_time.burst + one_time.per_hour <= 36, "{one_time:?}");
    }

    #[test]
    fn push_settings_have_defaults_and_apns_needs_all_three() {
        let c = Config::from_args(Args::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.push.window, Duration::from_secs(60));
        assert_eq!(c.push.disconnect_delay, Duration::from_secs(60));
        assert_eq!(c.push.fcm_endpoint, "https://fcm.googleapis.com");
        assert!(c.push.allow_hosts.is_empty() && c.push.apns.is_none() && c.push.fcm_service_account.is_none());
        let half = Config::from_args(Args { apns_key_id: Some("ABC123DEFG".into()), ..Args::default() });
        assert!(matches!(half, Err(ConfigError::Invalid { name: "apns_key/apns_key_id/apns_team_id", .. })));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("hushd.toml");
        std::fs::write(&file, "push_allow_hosts = [\"127.0.0.1\"]\npush_window_secs = 5\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = Config::from_args(Args { config: Some(file), ..Args::default() }).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.push.allow_hosts, c.push.window), (vec!["127.0.0.1".to_owned()], Duration::from_secs(5)));
    }

    #[test]
    fn the_listen_backlog_defaults_to_1024_and_can_be_set() {
        assert_eq!(Config::from_args(Args::default()).unwrap_or_else(|e| panic!("{e}")).listen_backlog, 1024);
        let args = Args { listen_backlog: Some(16_384), ..Args::default() };
        assert_eq!(Config::from_args(args).unwrap_or_else(|e| panic!("{e}")).listen_backlog, 16_384);
    }

    #[test]
    fn the_link_timeout_defaults_to_ten_minutes_and_reads_the_file() {
        let c = Config::from_args(Args::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.link_timeout, Duration::from_secs(600));
        assert_eq!((c.max_link_archive_bytes, c.link_archive_lifetime), (64 << 20, Duration::from_secs(3600)));
        assert_eq!(c.abuse.link, Rate { burst: 10, per_hour: 60 });
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("hushd.toml");
        std::fs::write(&file, "link_timeout_secs = 5\n").unwrap_or_else(|e| panic!("{e}"));
        let c = Config::from_args(Args { config: Some(file), ..Args::default() }).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.link_timeout, Duration::from_secs(5));
        let zero = Config::from_args(Args { link_timeout_secs: Some(0), ..Args::default() });
        assert!(matches!(zero, Err(ConfigError::Invalid { name: "link_timeout_secs", .. })));
    }

    #[test]
    fn the_online_only_budget_has_flags_of_its_own_and_refuses_zero() {
        let defaults = Config::from_args(Args::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((defaults.limits.online_only_burst, defaults.limits.online_only_per_second), (1000, 10.0));
        assert_eq!(
            (defaults.limits.rate_burst, defaults.limits.rate_per_second),
            (60, 1.0),
            "apart from the send rate"
        );
        let set = Args { online_only_burst: Some(5), online_only_per_second: Some(0.5), ..Args::default() };
        let set = Config::from_args(set).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((set.limits.online_only_burst, set.limits.online_only_per_second), (5, 0.5));
        let zero = Config::from_args(Args { online_only_burst: Some(0), ..Args::default() });
        assert!(matches!(zero, Err(ConfigError::Invalid { name: "online_only_burst", .. })));
        let zero = Config::from_args(Args { online_only_per_second: Some(0.0), ..Args::default() });
        assert!(matches!(zero, Err(ConfigError::Invalid { name: "online_only_per_second", .. })));
    }

    #[test]
    fn zero_rate_is_refused() {
        let err = Config::from_args(Args { rate_per_second: Some(0.0), ..Args::default() });
        assert!(matches!(err, Err(ConfigError::Invalid { name: "rate_per_second", .. })));
    }

    #[test]
    fn a_burst_too_large_for_its_rate_is_refused_not_a_panic() {
        let args = Args { register_burst: Some(1_000_000_000), ..Args::default() };
        let err = Config::from_args(args);
        assert!(matches!(err, Err(ConfigError::Invalid { name: "register_burst/register_per_hour", .. })), "{err:?}");
        let args = Args { register_burst: Some(1_000_000), register_per_hour: Some(1_000_000_000), ..Args::default() };
        assert!(Config::from_args(args).is_ok());
    }
}
