//! The seed's discovery metrics, exactly as it names them:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `inferadb_tailscale_dns_resolutions_total` | counter | `hostname`, `result` (`success`, `not_found`, `timeout`, `error`) |
//! | `inferadb_tailscale_discovered_endpoints` | gauge | `cluster` (healthy endpoints) |
//! | `inferadb_tailscale_cluster_discovery_failures_total` | counter | `cluster`, `reason` (`not_found`, `timeout`, `error`, `kubernetes_api`) |
//! | `inferadb_tailscale_clusters_total` | counter | none (configured clusters) |
//!
//! `inferadb_tailscale_clusters_total` is exported as a counter set once at
//! start: the name is the seed's, and Prometheus' naming rules (checked by
//! `promtool check metrics`) reserve `_total` for counters. Its value is
//! what the seed means, the number of configured clusters; read it as is,
//! not through `rate()`.
//!
//! Registered into the caller's [`prometheus::Registry`], so the process
//! serves them beside its own on one `/metrics`.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The discovery metrics; cheap to clone (the vectors share their values).
#[derive(Clone, Debug)]
pub struct DiscoveryMetrics {
    /// `inferadb_tailscale_dns_resolutions_total{hostname,result}`.
    pub dns_resolutions: IntCounterVec,
    /// `inferadb_tailscale_discovered_endpoints{cluster}`.
    pub discovered_endpoints: IntGaugeVec,
    /// `inferadb_tailscale_cluster_discovery_failures_total{cluster,reason}`.
    pub cluster_discovery_failures: IntCounterVec,
    /// `inferadb_tailscale_clusters_total`.
    pub clusters_total: IntCounter,
}

impl DiscoveryMetrics {
    /// New metrics, not registered anywhere.
    pub fn new() -> Self {
        // The names and labels are constants: creation cannot fail.
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        DiscoveryMetrics {
            dns_resolutions: counter(
                "inferadb_tailscale_dns_resolutions_total",
                "DNS resolution attempts by hostname and result.",
                &["hostname", "result"],
            ),
            discovered_endpoints: IntGaugeVec::new(
                Opts::new(
                    "inferadb_tailscale_discovered_endpoints",
                    "Number of (healthy) endpoints discovered per cluster.",
                ),
                &["cluster"],
            )
            .expect("valid metric"),
            cluster_discovery_failures: counter(
                "inferadb_tailscale_cluster_discovery_failures_total",
                "Failed discovery attempts by cluster and reason.",
                &["cluster", "reason"],
            ),
            clusters_total: IntCounter::new(
                "inferadb_tailscale_clusters_total",
                "Total configured clusters.",
            )
            .expect("valid metric"),
        }
    }

    /// New metrics registered into `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::new();
        registry.register(Box::new(m.dns_resolutions.clone()))?;
        registry.register(Box::new(m.discovered_endpoints.clone()))?;
        registry.register(Box::new(m.cluster_discovery_failures.clone()))?;
        registry.register(Box::new(m.clusters_total.clone()))?;
        Ok(m)
    }
}

impl Default for DiscoveryMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `registry` in the Prometheus text format (what `/metrics` serves).
pub fn encode_text(registry: &Registry) -> Result<String, prometheus::Error> {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
}
