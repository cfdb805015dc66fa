//! Prometheus metrics. Register each set once per registry and clone it
//! into every sender / receiver of the process (clones share the series).
//!
//! Sender (control):
//! - `inferadb_cache_invalidation_deliveries_total{cluster,result}`
//!   counter: one per (event, target) when its delivery ends; `result` is
//!   `success` or `failure` (all attempts spent, or a non-retryable answer).
//! - `inferadb_cache_invalidation_attempt_failures_total{cluster,reason}`
//!   counter: each failed attempt, retried or not; `reason` is `timeout`,
//!   `connect`, `http` (protocol or I/O error mid-request), `status_4xx`,
//!   `status_5xx`.
//! - `inferadb_cache_invalidation_delivery_duration_seconds{cluster}`
//!   histogram: from the start of a delivery (first attempt) to the
//!   engine's 2xx, retries and backoff included; successful deliveries only.
//! - `inferadb_cache_invalidation_in_flight` gauge: attempts holding a
//!   concurrency permit now (never above `max_concurrency`).
//!
//! Receiver (engine):
//! - `inferadb_cache_invalidation_received_total{result}` counter: each
//!   request to the webhook path; `result` is `invalidated`, `duplicate`
//!   (an event id already applied), `unauthorized` (401), `bad_request`
//!   (400/413), `failed` (the cache callback failed: 500, the sender retries).
//! - `inferadb_cache_invalidation_auth_failures_total{reason}` counter:
//!   each 401; `reason` is `missing`, `malformed`, `stale`, `bad_signature`.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Latency buckets, seconds: 1 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The sender's metrics.
#[derive(Clone, Debug)]
pub struct SenderMetrics {
    pub deliveries: IntCounterVec,
    pub attempt_failures: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGauge,
}

impl SenderMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<SenderMetrics, prometheus::Error> {
        let m = SenderMetrics::build()?;
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.attempt_failures.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        Ok(m)
    }

    /// Metrics that no registry exports (tests, embedding without metrics).
    pub fn unregistered() -> SenderMetrics {
        SenderMetrics::build().expect("constant metric definitions are valid")
    }

    fn build() -> Result<SenderMetrics, prometheus::Error> {
        Ok(SenderMetrics {
            deliveries: IntCounterVec::new(
                Opts::new(
                    "inferadb_cache_invalidation_deliveries_total",
                    "Cache invalidation webhook deliveries by target cluster and final result (success, failure).",
                ),
                &["cluster", "result"],
            )?,
            attempt_failures: IntCounterVec::new(
                Opts::new(
                    "inferadb_cache_invalidation_attempt_failures_total",
                    "Failed cache invalidation delivery attempts by target cluster and reason (timeout, connect, http, status_4xx, status_5xx).",
                ),
                &["cluster", "reason"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "inferadb_cache_invalidation_delivery_duration_seconds",
                    "Time from the first attempt to the engine's acknowledgement of a successful cache invalidation delivery, retries included.",
                )
                .buckets(BUCKETS.to_vec()),
                &["cluster"],
            )?,
            in_flight: IntGauge::new(
                "inferadb_cache_invalidation_in_flight",
                "Cache invalidation delivery attempts in progress.",
            )?,
        })
    }

    pub(crate) fn duration_for(&self, cluster: &str) -> Histogram {
        self.duration.with_label_values(&[cluster])
    }
}

/// The receiver's metrics.
#[derive(Clone, Debug)]
pub struct ReceiverMetrics {
    pub received: IntCounterVec,
    pub auth_failures: IntCounterVec,
}

impl ReceiverMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<ReceiverMetrics, prometheus::Error> {
        let m = ReceiverMetrics::build()?;
        registry.register(Box::new(m.received.clone()))?;
        registry.register(Box::new(m.auth_failures.clone()))?;
        Ok(m)
    }

    /// Metrics that no registry exports.
    pub fn unregistered() -> ReceiverMetrics {
        ReceiverMetrics::build().expect("constant metric definitions are valid")
    }

    fn build() -> Result<ReceiverMetrics, prometheus::Error> {
        Ok(ReceiverMetrics {
            received: IntCounterVec::new(
                Opts::new(
                    "inferadb_cache_invalidation_received_total",
                    "Cache invalidation webhooks received by result (invalidated, duplicate, unauthorized, bad_request, failed).",
                ),
                &["result"],
            )?,
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "inferadb_cache_invalidation_auth_failures_total",
                    "Cache invalidation webhooks rejected with 401 by reason (missing, malformed, stale, bad_signature).",
                ),
                &["reason"],
            )?,
        })
    }
}
