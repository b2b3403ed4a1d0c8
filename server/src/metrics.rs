//! Prometheus metrics (`GET /metrics`). Names are constants so code and docs agree.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge: open, authenticated WebSocket connections.
pub const CONNECTIONS: &str = "hush_connections";
/// Counter: envelopes committed to a mailbox.
pub const ACCEPTED: &str = "hush_envelopes_accepted_total";
/// Counter: envelopes written to a connection (redeliveries count again).
pub const DELIVERED: &str = "hush_envelopes_delivered_total";
/// Counter: envelopes deleted on acknowledgement.
pub const ACKED: &str = "hush_envelopes_acked_total";
/// Counter: envelopes deleted because they expired.
pub const EXPIRED: &str = "hush_envelopes_expired_total";
/// Gauge: envelopes stored in all mailboxes (refreshed every maintenance pass).
pub const MAILBOX_DEPTH: &str = "hush_mailbox_envelopes";
/// Histogram: seconds from commit to the recipient's acknowledgement on a live connection.
pub const DELIVERY_LATENCY: &str = "hush_delivery_latency_seconds";
/// Histogram: sends per group commit.
pub const COMMIT_BATCH: &str = "hush_commit_batch_size";
/// Histogram: seconds from queueing a write with the writer to its answer (the wait for the
/// round in progress plus its own commit): the writer's share of a sender's wait.
pub const COMMIT_WAIT: &str = "hush_commit_wait_seconds";
/// Counter, label `code`: sends refused.
pub const SENDS_REJECTED: &str = "hush_sends_rejected_total";
/// Counter: resent sends answered from their idempotency key, not stored again.
pub const SENDS_DEDUPLICATED: &str = "hush_sends_deduplicated_total";
/// Counter, label `limit`: REST requests refused (or served without one-time keys) by an abuse limit.
pub const RATE_LIMITED: &str = "hush_rate_limited_total";
/// Counter, label `reason`: connections closed by the server with a reason.
pub const CLOSED: &str = "hush_connections_closed_total";
/// Counter, label `code`: WebSocket upgrades refused before the handshake.
pub const REFUSED: &str = "hush_connections_refused_total";
/// Counter: handshakes dropped (oldest first) to make room in a full handshake budget.
pub const HANDSHAKES_EVICTED: &str = "hush_handshakes_evicted_total";
/// Counter: REST nonce claims not sent to Redis because it is known to be unreachable
/// (the per-node replay cache alone checked them).
pub const REDIS_NONCE_SKIPPED: &str = "hush_redis_nonce_skipped_total";
/// Counter, label `provider`: wake-ups a push provider accepted.
pub const PUSH_SENT: &str = "hush_push_sent_total";
/// Counter, label `provider`: wake-ups given up (refused, or still failing after retries).
pub const PUSH_FAILED: &str = "hush_push_failed_total";
/// Counter, label `provider`: wake-ups retried after a temporary failure.
pub const PUSH_RETRIED: &str = "hush_push_retried_total";
/// Counter, label `provider`: push targets removed because the provider reported them invalid.
pub const PUSH_INVALID_TOKENS: &str = "hush_push_invalid_tokens_total";

/// Buckets of the latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Every series with its `# HELP` text.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (CONNECTIONS, "Open, authenticated WebSocket connections."),
    (ACCEPTED, "Envelopes committed to a mailbox."),
    (DELIVERED, "Envelopes written to a connection (redeliveries count again)."),
    (ACKED, "Envelopes deleted on acknowledgement."),
    (EXPIRED, "Envelopes deleted because they outlived the retention period."),
    (MAILBOX_DEPTH, "Envelopes stored in all mailboxes (refreshed every maintenance pass)."),
    (DELIVERY_LATENCY, "Seconds from commit to the recipient's acknowledgement on a live connection."),
    (COMMIT_BATCH, "Sends per group commit."),
    (COMMIT_WAIT, "Seconds from queueing a write with the group-commit writer to its answer."),
    (SENDS_REJECTED, "Sends refused, by error code."),
    (CLOSED, "Connections closed by the server, by close reason."),
    (REFUSED, "WebSocket upgrades refused before the handshake, by error code."),
    (HANDSHAKES_EVICTED, "Handshakes dropped, oldest first, to make room in a full handshake budget."),
    (
        REDIS_NONCE_SKIPPED,
        "REST nonce claims not sent to Redis while it is unreachable (checked by the per-node replay cache only).",
    ),
    (PUSH_SENT, "Wake-ups a push provider accepted, by provider."),
    (PUSH_FAILED, "Wake-ups given up (refused, or failing after every retry), by provider."),
    (PUSH_RETRIED, "Wake-ups retried after a temporary provider failure, by provider."),
    (PUSH_INVALID_TOKENS, "Push targets removed because their provider reported them invalid, by provider."),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders `/metrics`.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_WAIT.into()), LATENCY_BUCKETS))
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(COMMIT_BATCH.into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding app); then ours only renders.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Make every series visible from the start, at zero.
            for counter in [ACCEPTED, DELIVERED, ACKED, EXPIRED, SENDS_DEDUPLICATED, REDIS_NONCE_SKIPPED] {
                metrics::counter!(counter).increment(0);
            }
            metrics::gauge!(CONNECTIONS).increment(0.0);
            metrics::gauge!(MAILBOX_DEPTH).set(0.0);
            handle
        })
        .clone()
}

fn describe() {
    for &(name, help) in DESCRIPTIONS {
        match name {
            CONNECTIONS | MAILBOX_DEPTH => metrics::describe_gauge!(name, help),
            DELIVERY_LATENCY | COMMIT_BATCH | COMMIT_WAIT => metrics::describe_histogram!(name, help),
            _ => metrics::describe_counter!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_has_help_text() {
        let handle = handle();
        metrics::counter!(CLOSED, "reason" => "ping_timeout").increment(1);
        metrics::counter!(REFUSED, "code" => "too_many_handshakes").increment(1);
        metrics::counter!(HANDSHAKES_EVICTED).increment(1);
        for name in [PUSH_SENT, PUSH_FAILED, PUSH_RETRIED, PUSH_INVALID_TOKENS] {
            metrics::counter!(name, "provider" => "fcm").increment(1);
        }
        metrics::counter!(SENDS_REJECTED, "code" => "RATE_LIMITED").increment(1);
        metrics::histogram!(DELIVERY_LATENCY).record(0.001);
        metrics::histogram!(COMMIT_BATCH).record(1.0);
        metrics::histogram!(COMMIT_WAIT).record(0.002);
        let text = handle.render();
        for &(name, help) in DESCRIPTIONS {
            assert!(text.contains(&format!("# HELP {name} {help}")), "{name} has no HELP line in:\n{text}");
        }
    }
}
