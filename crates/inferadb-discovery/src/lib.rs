//! Endpoint discovery for InferaDB across clusters.
//!
//! Three modes ([`DiscoveryMode`]): `none` (the configured
//! `http_endpoints`), `kubernetes` (a Service's EndpointSlices through the
//! API server), `tailscale` (the local cluster and every remote cluster as
//! `<service_name>.<tailscale_domain>` through MagicDNS). Endpoints carry
//! their cluster; optional HTTP health checks mark them unhealthy and
//! back; the set is cached for a TTL (default 300 s), refreshed in the
//! background and published on a tokio watch.
//!
//! ```no_run
//! # async fn demo(node: tailnet::Node, yaml_value: serde_json::Value) -> Result<(), Box<dyn std::error::Error>> {
//! use inferadb_discovery::{Discovery, DiscoveryConfig};
//! let registry = prometheus::Registry::new();
//! let config: DiscoveryConfig = serde_json::from_value(yaml_value)?;
//! let discovery = Discovery::builder(config).node(&node).registry(&registry)?.start()?;
//! let set = discovery.ready().await?;
//! for e in set.healthy() {
//!     println!("{} {}", e.cluster, e.addr);
//! }
//! let mut changes = discovery.subscribe();
//! changes.changed().await?;
//! # Ok(()) }
//! ```
//!
//! Metrics ([`metrics`]) and log lines follow the seed guide
//! (`crates/inferadb-discovery/README.md`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod discovery;
pub mod health;
pub mod kubernetes;
pub mod metrics;
pub mod net;
#[cfg(feature = "tailnet")]
pub mod tailnet_metrics;

pub use config::{
    ClusterTarget, ConfigError, DiscoveryConfig, DiscoveryMode, HealthCheckConfig,
    KubernetesConfig, LocalCluster, PortSelector, StaticEndpoint, TailscaleConfig,
    DEFAULT_CACHE_TTL,
};
pub use discovery::{Discovery, DiscoveryBuilder, DiscoveryError, Endpoint, EndpointSet};
pub use metrics::{encode_text, DiscoveryMetrics};
pub use net::{Connect, Resolve, ResolveFailure, SystemResolver, TcpConnector};
pub use prometheus;
