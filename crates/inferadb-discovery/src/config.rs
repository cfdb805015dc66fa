//! Discovery configuration: one [`DiscoveryConfig`] that both of the seed's
//! shapes deserialize into.
//!
//! Engine (`discovery:` in the engine's config file; the Helm chart's
//! `discovery.mode` / `discovery.tailscale.*` values render into it):
//!
//! ```yaml
//! discovery:
//!   mode: tailscale
//!   local_cluster: us-west-1
//!   remote_clusters:
//!     - { name: eu-west-1, tailscale_domain: eu-west-1.ts.net, service_name: inferadb-control, port: 9090 }
//! ```
//!
//! Control (`cache_invalidation.discovery:`), and the engine's environment
//! form `INFERADB__AUTH__DISCOVERY__MODE__TYPE=tailscale`:
//!
//! ```yaml
//! discovery:
//!   mode:
//!     type: tailscale
//!     local_cluster: us-west-1
//!     remote_clusters:
//!       - { name: eu-west-1, tailscale_domain: eu-west-1.ts.net, service_name: inferadb-engine, port: 8080 }
//! ```
//!
//! Both read the same keys, wherever they sit: at the `discovery` level
//! beside a string `mode`, inside a `mode` table beside `type`, or in a
//! Helm-style `tailscale:` block (`localCluster`, `remoteClusters`, …).
//! Keys match in snake_case, camelCase or upper case (`local_cluster`,
//! `localCluster`, `LOCAL_CLUSTER`); numbers and booleans may be strings
//! (`"9090"`, as environment variables give them); a list may be a table
//! keyed `0`, `1`, … (`REMOTE_CLUSTERS__0__NAME`). Anything else is an
//! error naming its key path, e.g.
//! `mode.remote_clusters[1].port: expected a port number (1-65535), got "http"`.
//!
//! Loading (files, environment layering) is the caller's: deserialize the
//! `discovery` value into [`DiscoveryConfig`] with any serde deserializer,
//! or call [`DiscoveryConfig::from_value_at`] to get errors with the full
//! path (`cache_invalidation.discovery.mode.type: …`).
//!
//! Extra keys of ours (not in the seed): `cache_ttl_seconds` (default
//! 300), `health_check: {path, interval_ms, timeout_ms, healthy_threshold,
//! unhealthy_threshold}`, `local: {type: tailscale|kubernetes|none, …}`
//! (how the local cluster is found in `tailscale` mode), and the
//! `kubernetes` mode's `namespace`, `service_name`, `port`, `api_url`,
//! `token_file`, `ca_file`.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The seed's default discovery cache TTL.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// The cluster label of `http_endpoints` in `none` mode.
pub const STATIC_CLUSTER: &str = "static";

/// A configuration value that is wrong, with the key path that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Where: `mode.remote_clusters[1].port`, prefixed with what the caller
    /// gave [`DiscoveryConfig::from_value_at`].
    pub path: String,
    /// What is wrong, one sentence.
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Everything discovery needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// Where endpoints come from.
    pub mode: DiscoveryMode,
    /// Static endpoints (`http_endpoints`); the endpoints of `none` mode,
    /// ignored (with a warning at start) in the other modes.
    pub http_endpoints: Vec<StaticEndpoint>,
    /// How long a discovered set is trusted before it is refreshed in the
    /// background (`cache_ttl_seconds`, default 300).
    pub cache_ttl: Duration,
    /// HTTP health checks of every endpoint; `None`: every discovered
    /// endpoint counts as healthy.
    pub health_check: Option<HealthCheckConfig>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            mode: DiscoveryMode::None,
            http_endpoints: Vec::new(),
            cache_ttl: DEFAULT_CACHE_TTL,
            health_check: None,
        }
    }
}

/// `mode` / `mode.type`.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryMode {
    /// `none`: only the configured `http_endpoints`.
    None,
    /// `kubernetes`: the local endpoints of one Service.
    Kubernetes(KubernetesConfig),
    /// `tailscale`: the local cluster and remote clusters through MagicDNS.
    Tailscale(TailscaleConfig),
}

impl DiscoveryMode {
    /// The name the config uses: `none`, `kubernetes`, `tailscale`.
    pub fn name(&self) -> &'static str {
        match self {
            DiscoveryMode::None => "none",
            DiscoveryMode::Kubernetes(_) => "kubernetes",
            DiscoveryMode::Tailscale(_) => "tailscale",
        }
    }
}

/// Which port of an EndpointSlice to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelector {
    /// This port number, whatever the slice says.
    Number(u16),
    /// The slice's port of this name.
    Name(String),
}

/// The `kubernetes` mode, or the local cluster of `tailscale` mode with
/// `local.type: kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// The cluster label its endpoints carry (`local_cluster`, else
    /// `local`).
    pub cluster: String,
    /// The Service's namespace; `None`: the pod's own (the service
    /// account's `namespace` file).
    pub namespace: Option<String>,
    /// The Service (`service_name`).
    pub service_name: String,
    /// Which port; `None`: the slices' first TCP port.
    pub port: Option<PortSelector>,
    /// The API server; `None`: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    pub api_url: Option<String>,
    /// The bearer token file; `None`: the service account's.
    pub token_file: Option<PathBuf>,
    /// The API server's CA bundle; `None`: the service account's.
    pub ca_file: Option<PathBuf>,
}

/// One cluster found through MagicDNS as `<service_name>.<tailscale_domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    /// The cluster's name (`name`), the `cluster` label of its endpoints
    /// and metrics.
    pub name: String,
    /// Its MagicDNS zone (`tailscale_domain`), e.g. `eu-west-1.ts.net`.
    pub tailscale_domain: String,
    /// The service (`service_name`), e.g. `inferadb-control`.
    pub service_name: String,
    /// The port its endpoints serve on.
    pub port: u16,
}

impl ClusterTarget {
    /// The name resolved: `<service_name>.<tailscale_domain>`.
    pub fn hostname(&self) -> String {
        format!("{}.{}", self.service_name, self.tailscale_domain)
    }
}

/// How `tailscale` mode finds the local cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCluster {
    /// Through MagicDNS like a remote cluster (the default: with the
    /// embedded node every pod of the local cluster is on the tailnet).
    Tailscale(ClusterTarget),
    /// Through the Kubernetes API (the seed's "local cluster discovery").
    Kubernetes(KubernetesConfig),
    /// Not at all: remote clusters only.
    None,
}

/// The `tailscale` mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailscaleConfig {
    /// `local_cluster`.
    pub local_cluster: String,
    /// How the local cluster is found (`local`).
    pub local: LocalCluster,
    /// `remote_clusters`.
    pub remote_clusters: Vec<ClusterTarget>,
}

impl TailscaleConfig {
    /// Every configured cluster: the local one (unless `local.type: none`)
    /// and the remote ones.
    pub fn cluster_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !matches!(self.local, LocalCluster::None) {
            v.push(self.local_cluster.clone());
        }
        v.extend(self.remote_clusters.iter().map(|c| c.name.clone()));
        v
    }
}

/// `health_check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// The path asked (`path`, default `/healthz`); a 2xx answer is healthy.
    pub path: String,
    /// Between checks of one endpoint (`interval_ms`, default 10000).
    pub interval: Duration,
    /// For one check, connect to status line (`timeout_ms`, default 2000).
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy endpoint healthy
    /// (`healthy_threshold`, default 2).
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy
    /// (`unhealthy_threshold`, default 3).
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/healthz".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

impl HealthCheckConfig {
    /// The longest a dead endpoint stays healthy: its failures in a row,
    /// each an interval apart, the last one taking the whole timeout.
    pub fn detection_window(&self) -> Duration {
        self.interval * self.unhealthy_threshold + self.timeout
    }
}

/// One of `http_endpoints`: `http://host:port[/…]` or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEndpoint {
    /// A host name or an IP address.
    pub host: String,
    /// The port (80 when an `http://` URL gives none).
    pub port: u16,
}

impl fmt::Display for StaticEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses one `http_endpoints` entry.
pub fn parse_http_endpoint(s: &str) -> Result<StaticEndpoint, String> {
    let t = s.trim();
    let (rest, default_port) = if let Some(r) = t.strip_prefix("http://") {
        (r, Some(80))
    } else if t.contains("://") {
        return Err(format!("{t:?}: only http:// URLs or host:port"));
    } else {
        (t, None)
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(format!("{t:?}: user info is not allowed"));
    }
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| format!("{t:?}: unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("{t:?}: bad address")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{t:?}: no host"));
    }
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{t:?}: bad port {p:?}"))?,
        (None, Some(d)) => d,
        (None, None) => return Err(format!("{t:?}: no port (write host:port)")),
    };
    Ok(StaticEndpoint {
        host: host.to_string(),
        port,
    })
}

impl<'de> Deserialize<'de> for DiscoveryConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        DiscoveryConfig::from_value(&v).map_err(serde::de::Error::custom)
    }
}

impl DiscoveryConfig {
    /// From the `discovery` value; error paths relative to it.
    pub fn from_value(v: &Value) -> Result<Self, ConfigError> {
        Self::from_value_at("", v)
    }

    /// From the value at `prefix` (e.g. `cache_invalidation.discovery`);
    /// error paths start with it.
    pub fn from_value_at(prefix: &str, v: &Value) -> Result<Self, ConfigError> {
        parse(prefix, v)
    }

    /// Sets the static endpoints from a sibling `http_endpoints` list (the
    /// control config keeps it beside `discovery`); `path` names that key
    /// in errors.
    pub fn with_http_endpoints<S: AsRef<str>>(
        mut self,
        path: &str,
        endpoints: &[S],
    ) -> Result<Self, ConfigError> {
        self.http_endpoints = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                parse_http_endpoint(e.as_ref())
                    .map_err(|m| ConfigError::new(format!("{path}[{i}]"), m))
            })
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// The configuration as the control shape writes it, every default
    /// filled in (`mode: {type, local_cluster, local, remote_clusters}`,
    /// `http_endpoints`, `cache_ttl_seconds`, `health_check` or null):
    /// what `inferadb-mesh engine|control --check` prints.
    /// [`DiscoveryConfig::from_value`] reads it back to an equal config.
    pub fn to_value(&self) -> Value {
        use serde_json::json;
        fn target(c: &ClusterTarget) -> Value {
            json!({
                "name": c.name,
                "tailscale_domain": c.tailscale_domain,
                "service_name": c.service_name,
                "port": c.port,
            })
        }
        fn kube(k: &KubernetesConfig, kind: Option<&str>) -> serde_json::Map<String, Value> {
            let mut m = serde_json::Map::new();
            if let Some(t) = kind {
                m.insert("type".into(), json!(t));
            }
            m.insert("service_name".into(), json!(k.service_name));
            let opt = |v: Option<String>| v.map_or(Value::Null, Value::String);
            m.insert("namespace".into(), opt(k.namespace.clone()));
            m.insert(
                "port".into(),
                match &k.port {
                    None => Value::Null,
                    Some(PortSelector::Number(n)) => json!(n),
                    Some(PortSelector::Name(n)) => json!(n),
                },
            );
            m.insert("api_url".into(), opt(k.api_url.clone()));
            let path = |p: &Option<PathBuf>| opt(p.as_ref().map(|p| p.display().to_string()));
            m.insert("token_file".into(), path(&k.token_file));
            m.insert("ca_file".into(), path(&k.ca_file));
            m
        }
        let mode = match &self.mode {
            DiscoveryMode::None => json!({"type": "none"}),
            DiscoveryMode::Kubernetes(k) => {
                let mut m = kube(k, Some("kubernetes"));
                m.insert("local_cluster".into(), json!(k.cluster));
                Value::Object(m)
            }
            DiscoveryMode::Tailscale(t) => {
                let local = match &t.local {
                    LocalCluster::Tailscale(c) => json!({
                        "type": "tailscale",
                        "tailscale_domain": c.tailscale_domain,
                        "service_name": c.service_name,
                        "port": c.port,
                    }),
                    LocalCluster::Kubernetes(k) => Value::Object(kube(k, Some("kubernetes"))),
                    LocalCluster::None => json!({"type": "none"}),
                };
                json!({
                    "type": "tailscale",
                    "local_cluster": t.local_cluster,
                    "local": local,
                    "remote_clusters": t.remote_clusters.iter().map(target).collect::<Vec<_>>(),
                })
            }
        };
        json!({
            "mode": mode,
            "http_endpoints": self.http_endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "cache_ttl_seconds": self.cache_ttl.as_secs(),
            "health_check": self.health_check.as_ref().map(|h| json!({
                "path": h.path,
                "interval_ms": u64::try_from(h.interval.as_millis()).unwrap_or(u64::MAX),
                "timeout_ms": u64::try_from(h.timeout.as_millis()).unwrap_or(u64::MAX),
                "healthy_threshold": h.healthy_threshold,
                "unhealthy_threshold": h.unhealthy_threshold,
            })),
        })
    }

    /// The names of the configured clusters, as `inferadb_tailscale_clusters_total`
    /// counts them.
    pub fn cluster_names(&self) -> Vec<String> {
        match &self.mode {
            DiscoveryMode::None => vec![STATIC_CLUSTER.to_string()],
            DiscoveryMode::Kubernetes(k) => vec![k.cluster.clone()],
            DiscoveryMode::Tailscale(t) => t.cluster_names(),
        }
    }
}

// ---------------------------------------------------------------------------
// The value walker.

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `local_cluster`, `localCluster`, `LOCAL_CLUSTER` → `localcluster`.
fn norm(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a table".into(),
    }
}

/// A table being read: keys are matched by [`norm`], each used key is
/// remembered, [`Table::finish`] rejects the rest.
struct Table<'a> {
    path: String,
    entries: Vec<(String, &'a str, &'a Value)>,
    used: Vec<bool>,
}

impl<'a> Table<'a> {
    fn new(path: &str, v: &'a Value) -> Result<Self, ConfigError> {
        let obj = v.as_object().ok_or_else(|| {
            ConfigError::new(path, format!("expected a table, got {}", describe(v)))
        })?;
        let mut seen = BTreeSet::new();
        let mut entries = Vec::new();
        for (k, v) in obj {
            let n = norm(k);
            if !seen.insert(n.clone()) {
                return Err(ConfigError::new(join(path, k), "given twice"));
            }
            entries.push((n, k.as_str(), v));
        }
        let used = vec![false; entries.len()];
        Ok(Table {
            path: path.to_string(),
            entries,
            used,
        })
    }

    fn empty(path: &str) -> Self {
        Table {
            path: path.to_string(),
            entries: Vec::new(),
            used: Vec::new(),
        }
    }

    /// The value of `key` (normalized spelling) and its path; `null` counts
    /// as absent.
    fn take(&mut self, key: &str) -> Option<(&'a Value, String)> {
        let i = self.entries.iter().position(|(n, _, _)| n == key)?;
        self.used[i] = true;
        let (_, orig, v) = self.entries[i];
        if v.is_null() {
            return None;
        }
        Some((v, join(&self.path, orig)))
    }

    /// Rejects keys outside `allowed` before anything else is read, so an
    /// unknown key is the error reported, not what its absence caused.
    fn check_known(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        for (n, orig, _) in &self.entries {
            if !allowed.iter().any(|a| norm(a) == *n) {
                return Err(ConfigError::new(
                    join(&self.path, orig),
                    format!("unknown key (known here: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn finish(self, allowed: &[&str]) -> Result<(), ConfigError> {
        for (i, (_, orig, _)) in self.entries.iter().enumerate() {
            if !self.used[i] {
                return Err(ConfigError::new(
                    join(&self.path, orig),
                    format!("unknown key (known here: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// Looks a key up in several tables (the `mode` table, the discovery
/// level, a `tailscale:` block); more than one giving it is an error.
fn take_one<'a>(
    tables: &mut [&mut Table<'a>],
    key: &str,
) -> Result<Option<(&'a Value, String)>, ConfigError> {
    let mut found: Option<(&'a Value, String)> = None;
    for t in tables.iter_mut() {
        if let Some((v, p)) = t.take(key) {
            if let Some((_, first)) = &found {
                return Err(ConfigError::new(
                    p,
                    format!("also given as {first}; give it once"),
                ));
            }
            found = Some((v, p));
        }
    }
    Ok(found)
}

fn string(v: &Value, path: &str) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s.trim().to_string()),
        other => Err(ConfigError::new(
            path,
            format!("expected a string, got {}", describe(other)),
        )),
    }
}

fn uint(v: &Value, path: &str, what: &str) -> Result<u64, ConfigError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.ok_or_else(|| ConfigError::new(path, format!("expected {what}, got {}", describe(v))))
}

fn port(v: &Value, path: &str) -> Result<u16, ConfigError> {
    uint(v, path, "a port number (1-65535)").and_then(|n| {
        u16::try_from(n).ok().filter(|p| *p > 0).ok_or_else(|| {
            ConfigError::new(
                path,
                format!("expected a port number (1-65535), got {}", describe(v)),
            )
        })
    })
}

fn boolean(v: &Value, path: &str) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ConfigError::new(
            path,
            format!("expected true or false, got {}", describe(other)),
        )),
    }
}

/// A list, or a table keyed `0`, `1`, … (environment layering), in index
/// order.
fn list<'a>(v: &'a Value, path: &str) -> Result<Vec<(&'a Value, String)>, ConfigError> {
    match v {
        Value::Array(a) => Ok(a
            .iter()
            .enumerate()
            .map(|(i, v)| (v, format!("{path}[{i}]")))
            .collect()),
        Value::Object(o) => {
            let mut items = Vec::new();
            for (k, v) in o {
                let i: usize = k.parse().map_err(|_| {
                    ConfigError::new(join(path, k), "expected a list (or a table keyed 0, 1, …)")
                })?;
                items.push((i, v));
            }
            items.sort_by_key(|(i, _)| *i);
            Ok(items
                .into_iter()
                .map(|(i, v)| (v, format!("{path}[{i}]")))
                .collect())
        }
        other => Err(ConfigError::new(
            path,
            format!("expected a list, got {}", describe(other)),
        )),
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn label(v: &Value, path: &str, what: &str) -> Result<String, ConfigError> {
    let s = string(v, path)?;
    if is_label(&s) {
        Ok(s)
    } else {
        Err(ConfigError::new(
            path,
            format!("expected {what} (letters, digits and '-', at most 63), got {s:?}"),
        ))
    }
}

fn domain(v: &Value, path: &str) -> Result<String, ConfigError> {
    let s = string(v, path)?;
    let t = s.trim_end_matches('.');
    if !t.is_empty() && t.len() <= 253 && t.split('.').all(is_label) {
        Ok(t.to_ascii_lowercase())
    } else {
        Err(ConfigError::new(
            path,
            format!("expected a DNS domain like eu-west-1.ts.net, got {s:?}"),
        ))
    }
}

fn millis(v: &Value, path: &str) -> Result<Duration, ConfigError> {
    let n = uint(v, path, "milliseconds (a positive whole number)")?;
    if n == 0 {
        return Err(ConfigError::new(path, "must be more than 0"));
    }
    Ok(Duration::from_millis(n))
}

const MODE_KEYS: &[&str] = &[
    "type",
    "local_cluster",
    "remote_clusters",
    "local",
    "namespace",
    "service_name",
    "port",
    "api_url",
    "token_file",
    "ca_file",
];
const TOP_KEYS: &[&str] = &[
    "mode",
    "local_cluster",
    "remote_clusters",
    "local",
    "namespace",
    "service_name",
    "port",
    "api_url",
    "token_file",
    "ca_file",
    "tailscale",
    "kubernetes",
    "http_endpoints",
    "cache_ttl_seconds",
    "health_check",
];
const TAILSCALE_KEYS: &[&str] = &["enabled", "local_cluster", "remote_clusters", "local"];
const KUBERNETES_KEYS: &[&str] = &[
    "namespace",
    "service_name",
    "port",
    "api_url",
    "token_file",
    "ca_file",
];
const CLUSTER_KEYS: &[&str] = &["name", "tailscale_domain", "service_name", "port"];
const LOCAL_KEYS: &[&str] = &[
    "type",
    "service_name",
    "port",
    "tailscale_domain",
    "namespace",
    "api_url",
    "token_file",
    "ca_file",
];
const HEALTH_KEYS: &[&str] = &[
    "enabled",
    "path",
    "interval_ms",
    "timeout_ms",
    "healthy_threshold",
    "unhealthy_threshold",
];

fn parse(prefix: &str, v: &Value) -> Result<DiscoveryConfig, ConfigError> {
    if v.is_null() {
        return Ok(DiscoveryConfig::default());
    }
    let mut top = Table::new(prefix, v)?;
    top.check_known(TOP_KEYS)?;
    let mut out = DiscoveryConfig::default();

    if let Some((v, p)) = top.take("cachettlseconds") {
        let n = uint(v, &p, "seconds (a positive whole number)")?;
        if n == 0 {
            return Err(ConfigError::new(p, "must be more than 0"));
        }
        out.cache_ttl = Duration::from_secs(n);
    }
    if let Some((v, p)) = top.take("httpendpoints") {
        let items: Vec<(String, String)> = match v {
            // One string, comma-separated (an environment variable).
            Value::String(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .enumerate()
                .map(|(i, s)| (s.to_string(), format!("{p}[{i}]")))
                .collect(),
            _ => list(v, &p)?
                .into_iter()
                .map(|(v, p)| string(v, &p).map(|s| (s, p)))
                .collect::<Result<_, _>>()?,
        };
        for (s, p) in items {
            out.http_endpoints
                .push(parse_http_endpoint(&s).map_err(|m| ConfigError::new(p, m))?);
        }
    }
    if let Some((v, p)) = top.take("healthcheck") {
        out.health_check = health(v, &p)?;
    }

    // The mode: a string beside the mode's keys, or a table with `type`.
    let mut mode_table = None;
    let mode_name = match top.take("mode") {
        None => None,
        Some((Value::String(s), p)) => Some((s.trim().to_ascii_lowercase(), p)),
        Some((v @ Value::Object(_), p)) => {
            let mut t = Table::new(&p, v)?;
            t.check_known(MODE_KEYS)?;
            let name = match t.take("type") {
                Some((v, tp)) => (string(v, &tp)?.to_ascii_lowercase(), tp),
                None => {
                    return Err(ConfigError::new(
                        join(&p, "type"),
                        "missing (tailscale, kubernetes or none)",
                    ))
                }
            };
            mode_table = Some(t);
            Some(name)
        }
        Some((other, p)) => {
            return Err(ConfigError::new(
                p,
                format!(
                    "expected tailscale, kubernetes, none or a table with `type`, got {}",
                    describe(other)
                ),
            ))
        }
    };
    let ts_block = match top.take("tailscale") {
        Some((v, p)) => Some(Table::new(&p, v)?),
        None => None,
    };
    if let Some(t) = &ts_block {
        t.check_known(TAILSCALE_KEYS)?;
    }
    let k8s_block = match top.take("kubernetes") {
        Some((v, p)) => Some(Table::new(&p, v)?),
        None => None,
    };
    if let Some(t) = &k8s_block {
        t.check_known(KUBERNETES_KEYS)?;
    }
    let mut mode_t = mode_table.unwrap_or_else(|| Table::empty(&join(prefix, "mode")));
    let mut ts_t = ts_block.unwrap_or_else(|| Table::empty(&join(prefix, "tailscale")));
    let mut k8s_t = k8s_block.unwrap_or_else(|| Table::empty(&join(prefix, "kubernetes")));

    let (name, name_path) = match mode_name {
        Some(n) => n,
        None => ("none".to_string(), join(prefix, "mode")),
    };
    out.mode = match name.as_str() {
        "none" | "static" => DiscoveryMode::None,
        "kubernetes" | "k8s" => {
            let local_cluster = take_one(&mut [&mut mode_t, &mut top], "localcluster")?
                .map(|(v, p)| label(v, &p, "a cluster name"))
                .transpose()?;
            let service_path = join(&mode_t.path, "service_name");
            DiscoveryMode::Kubernetes(kubernetes(
                &mut [&mut mode_t, &mut top, &mut k8s_t],
                local_cluster.unwrap_or_else(|| "local".into()),
                &service_path,
            )?)
        }
        "tailscale" => {
            if let Some((v, p)) = ts_t.take("enabled") {
                if !boolean(v, &p)? {
                    return Err(ConfigError::new(p, "is false but the mode is tailscale"));
                }
            }
            DiscoveryMode::Tailscale(tailscale(
                &mut [&mut mode_t, &mut top, &mut ts_t],
                &mut k8s_t,
                &name_path,
            )?)
        }
        other => {
            return Err(ConfigError::new(
                name_path,
                format!("unknown mode {other:?} (tailscale, kubernetes or none)"),
            ))
        }
    };
    mode_t.finish(MODE_KEYS)?;
    ts_t.finish(TAILSCALE_KEYS)?;
    k8s_t.finish(KUBERNETES_KEYS)?;
    top.finish(TOP_KEYS)?;
    Ok(out)
}

fn health(v: &Value, path: &str) -> Result<Option<HealthCheckConfig>, ConfigError> {
    let mut t = Table::new(path, v)?;
    let mut h = HealthCheckConfig::default();
    let mut enabled = true;
    if let Some((v, p)) = t.take("enabled") {
        enabled = boolean(v, &p)?;
    }
    if let Some((v, p)) = t.take("path") {
        let s = string(v, &p)?;
        if !s.starts_with('/') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(
                p,
                format!("expected an absolute path like /healthz, got {s:?}"),
            ));
        }
        h.path = s;
    }
    if let Some((v, p)) = t.take("intervalms") {
        h.interval = millis(v, &p)?;
    }
    if let Some((v, p)) = t.take("timeoutms") {
        h.timeout = millis(v, &p)?;
    }
    for (key, slot) in [
        ("healthythreshold", &mut h.healthy_threshold),
        ("unhealthythreshold", &mut h.unhealthy_threshold),
    ] {
        if let Some((v, p)) = t.take(key) {
            let n = uint(v, &p, "a count (1 or more)")?;
            *slot = u32::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ConfigError::new(p, "expected a count (1 or more)"))?;
        }
    }
    t.finish(HEALTH_KEYS)?;
    Ok(enabled.then_some(h))
}

fn kubernetes(
    tables: &mut [&mut Table<'_>],
    cluster: String,
    service_path: &str,
) -> Result<KubernetesConfig, ConfigError> {
    let service_name = match take_one(tables, "servicename")? {
        Some((v, p)) => label(v, &p, "a Service name")?,
        None => {
            return Err(ConfigError::new(
                service_path,
                "missing (the Service to watch)",
            ))
        }
    };
    let namespace = take_one(tables, "namespace")?
        .map(|(v, p)| label(v, &p, "a namespace"))
        .transpose()?;
    let port = match take_one(tables, "port")? {
        None => None,
        Some((Value::String(s), _)) if s.trim().parse::<u64>().is_err() => {
            Some(PortSelector::Name(s.trim().to_string()))
        }
        Some((v, p)) => Some(PortSelector::Number(port(v, &p)?)),
    };
    let api_url = take_one(tables, "apiurl")?
        .map(|(v, p)| {
            let s = string(v, &p)?;
            if s.starts_with("https://") || s.starts_with("http://") {
                Ok(s.trim_end_matches('/').to_string())
            } else {
                Err(ConfigError::new(
                    p,
                    format!("expected an http(s):// URL, got {s:?}"),
                ))
            }
        })
        .transpose()?;
    let token_file = take_one(tables, "tokenfile")?
        .map(|(v, p)| string(v, &p).map(PathBuf::from))
        .transpose()?;
    let ca_file = take_one(tables, "cafile")?
        .map(|(v, p)| string(v, &p).map(PathBuf::from))
        .transpose()?;
    Ok(KubernetesConfig {
        cluster,
        namespace,
        service_name,
        port,
        api_url,
        token_file,
        ca_file,
    })
}

fn cluster_target(v: &Value, path: &str) -> Result<ClusterTarget, ConfigError> {
    let mut t = Table::new(path, v)?;
    fn need<'a>(
        t: &mut Table<'a>,
        path: &str,
        key: &str,
        spelled: &str,
    ) -> Result<(&'a Value, String), ConfigError> {
        t.take(key)
            .ok_or_else(|| ConfigError::new(join(path, spelled), "missing"))
    }
    let (v, p) = need(&mut t, path, "name", "name")?;
    let name = label(v, &p, "a cluster name")?;
    let (v, p) = need(&mut t, path, "tailscaledomain", "tailscale_domain")?;
    let tailscale_domain = domain(v, &p)?;
    let (v, p) = need(&mut t, path, "servicename", "service_name")?;
    let service_name = label(v, &p, "a service name")?;
    let (v, p) = need(&mut t, path, "port", "port")?;
    let port = port(v, &p)?;
    t.finish(CLUSTER_KEYS)?;
    Ok(ClusterTarget {
        name,
        tailscale_domain,
        service_name,
        port,
    })
}

fn tailscale<'a>(
    tables: &mut [&mut Table<'a>],
    k8s_block: &mut Table<'a>,
    mode_path: &str,
) -> Result<TailscaleConfig, ConfigError> {
    let local_cluster = match take_one(tables, "localcluster")? {
        Some((v, p)) => label(v, &p, "a cluster name")?,
        None => {
            return Err(ConfigError::new(
                sibling(mode_path, "local_cluster"),
                "missing (the name of this cluster, e.g. us-west-1)",
            ))
        }
    };
    let mut remote_clusters: Vec<ClusterTarget> = Vec::new();
    if let Some((v, p)) = take_one(tables, "remoteclusters")? {
        for (v, p) in list(v, &p)? {
            let c = cluster_target(v, &p)?;
            if c.name == local_cluster {
                return Err(ConfigError::new(
                    join(&p, "name"),
                    format!("{:?} is the local cluster", c.name),
                ));
            }
            if remote_clusters.iter().any(|o| o.name == c.name) {
                return Err(ConfigError::new(
                    join(&p, "name"),
                    format!("cluster {:?} is listed twice", c.name),
                ));
            }
            remote_clusters.push(c);
        }
    }
    // The local cluster: `local: {type, …}`, default MagicDNS with the
    // remote clusters' service and port.
    let local_spec = take_one(tables, "local")?;
    let local_path = local_spec
        .as_ref()
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| sibling(mode_path, "local"));
    let mut lt = match &local_spec {
        Some((v, p)) => Table::new(p, v)?,
        None => Table::empty(&local_path),
    };
    lt.check_known(LOCAL_KEYS)?;
    let kind = match lt.take("type") {
        Some((v, p)) => {
            let s = string(v, &p)?.to_ascii_lowercase();
            match s.as_str() {
                "tailscale" | "kubernetes" | "none" => s,
                _ => {
                    return Err(ConfigError::new(
                        p,
                        format!("unknown local discovery {s:?} (tailscale, kubernetes or none)"),
                    ))
                }
            }
        }
        None => "tailscale".into(),
    };
    let local = match kind.as_str() {
        "none" => LocalCluster::None,
        "kubernetes" => LocalCluster::Kubernetes(kubernetes(
            &mut [&mut lt, k8s_block],
            local_cluster.clone(),
            &join(&local_path, "service_name"),
        )?),
        _ => {
            let common = |f: fn(&ClusterTarget) -> String| -> Option<String> {
                let first = remote_clusters.first().map(f)?;
                remote_clusters
                    .iter()
                    .all(|c| f(c) == first)
                    .then_some(first)
            };
            let service_name = match lt.take("servicename") {
                Some((v, p)) => label(v, &p, "a service name")?,
                None => common(|c| c.service_name.clone()).ok_or_else(|| {
                    ConfigError::new(
                        join(&local_path, "service_name"),
                        "missing (no remote clusters share one to default to)",
                    )
                })?,
            };
            let port = match lt.take("port") {
                Some((v, p)) => port(v, &p)?,
                None => common(|c| c.port.to_string())
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| {
                        ConfigError::new(
                            join(&local_path, "port"),
                            "missing (no remote clusters share one to default to)",
                        )
                    })?,
            };
            let tailscale_domain = match lt.take("tailscaledomain") {
                Some((v, p)) => domain(v, &p)?,
                None => default_local_domain(&local_cluster, &remote_clusters),
            };
            LocalCluster::Tailscale(ClusterTarget {
                name: local_cluster.clone(),
                tailscale_domain,
                service_name,
                port,
            })
        }
    };
    lt.finish(LOCAL_KEYS)?;
    if remote_clusters.is_empty() && matches!(local, LocalCluster::None) {
        return Err(ConfigError::new(
            sibling(mode_path, "remote_clusters"),
            "no clusters to discover (empty, and local.type is none)",
        ));
    }
    Ok(TailscaleConfig {
        local_cluster,
        local,
        remote_clusters,
    })
}

/// `a.b.mode` + `x` → `a.b.mode.x` when mode is a table path, else a
/// sibling of `mode`. Only used for messages.
fn sibling(mode_path: &str, key: &str) -> String {
    match mode_path.strip_suffix(".type") {
        Some(table) => join(table, key),
        None => match mode_path.rsplit_once('.') {
            Some((parent, _)) => join(parent, key),
            None => key.to_string(),
        },
    }
}

/// `<local>.<suffix>` when the remote clusters' domains are
/// `<name>.<suffix>` with one suffix; else `<local>.ts.net`.
fn default_local_domain(local: &str, remotes: &[ClusterTarget]) -> String {
    let suffixes: BTreeSet<&str> = remotes
        .iter()
        .filter_map(|c| {
            c.tailscale_domain
                .strip_prefix(c.name.as_str())
                .and_then(|s| s.strip_prefix('.'))
        })
        .collect();
    match (suffixes.len(), suffixes.iter().next()) {
        (1, Some(s)) if !remotes.is_empty() => format!("{local}.{s}"),
        _ => format!("{local}.ts.net"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Result<DiscoveryConfig, String> {
        let v: Value = serde_yaml_ng::from_str(s).map_err(|e| e.to_string())?;
        DiscoveryConfig::from_value(&v).map_err(|e| e.to_string())
    }

    fn remote(name: &str, service: &str, port: u16) -> ClusterTarget {
        ClusterTarget {
            name: name.into(),
            tailscale_domain: format!("{name}.ts.net"),
            service_name: service.into(),
            port,
        }
    }

    /// The engine's shape (string mode beside the keys) and the control's
    /// (a `mode` table) read the same.
    #[test]
    fn engine_and_control_shapes() {
        let engine = yaml(
            r#"
mode: "tailscale"
local_cluster: "us-west-1"
remote_clusters:
  - name: "eu-west-1"
    tailscale_domain: "eu-west-1.ts.net"
    service_name: "inferadb-control"
    port: 9090
  - name: "ap-southeast-1"
    tailscale_domain: "ap-southeast-1.ts.net"
    service_name: "inferadb-control"
    port: 9090
"#,
        )
        .unwrap();
        let DiscoveryMode::Tailscale(t) = &engine.mode else {
            panic!("{engine:?}")
        };
        assert_eq!(t.local_cluster, "us-west-1");
        assert_eq!(
            t.remote_clusters,
            [
                remote("eu-west-1", "inferadb-control", 9090),
                remote("ap-southeast-1", "inferadb-control", 9090)
            ]
        );
        assert_eq!(
            t.local,
            LocalCluster::Tailscale(remote("us-west-1", "inferadb-control", 9090))
        );
        assert_eq!(
            t.remote_clusters[0].hostname(),
            "inferadb-control.eu-west-1.ts.net"
        );
        assert_eq!(engine.cache_ttl, Duration::from_secs(300));
        assert_eq!(engine.health_check, None);

        // The seed's control config: `cache_invalidation.discovery`.
        let control = yaml(
            r#"
mode:
  type: tailscale
  local_cluster: "us-west-1"
  remote_clusters:
    - name: "eu-west-1"
      tailscale_domain: "eu-west-1.ts.net"
      service_name: "inferadb-engine"
      port: 8080
    - name: "ap-southeast-1"
      tailscale_domain: "ap-southeast-1.ts.net"
      service_name: "inferadb-engine"
      port: 8080
"#,
        )
        .unwrap();
        let DiscoveryMode::Tailscale(t) = &control.mode else {
            panic!()
        };
        assert_eq!(
            t.remote_clusters[1],
            remote("ap-southeast-1", "inferadb-engine", 8080)
        );
        assert_eq!(
            control.cluster_names(),
            ["us-west-1", "eu-west-1", "ap-southeast-1"]
        );
    }

    /// What environment layering gives: upper-case keys, strings for
    /// numbers, lists as tables keyed by index.
    #[test]
    fn environment_form() {
        let v = serde_json::json!({
            "MODE": {"TYPE": "tailscale", "LOCAL_CLUSTER": "us-west-1",
                     "REMOTE_CLUSTERS": {"1": {"NAME": "ap-southeast-1", "TAILSCALE_DOMAIN": "ap-southeast-1.ts.net", "SERVICE_NAME": "inferadb-control", "PORT": "9090"},
                                         "0": {"NAME": "eu-west-1", "TAILSCALE_DOMAIN": "eu-west-1.ts.net", "SERVICE_NAME": "inferadb-control", "PORT": "9090"}}},
            "cache_ttl_seconds": "60",
            "health_check": {"interval_ms": "500", "unhealthy_threshold": 2}
        });
        let c = DiscoveryConfig::from_value(&v).unwrap();
        let DiscoveryMode::Tailscale(t) = &c.mode else {
            panic!()
        };
        assert_eq!(t.remote_clusters[0].name, "eu-west-1");
        assert_eq!(t.remote_clusters[1].port, 9090);
        assert_eq!(c.cache_ttl, Duration::from_secs(60));
        let h = c.health_check.unwrap();
        assert_eq!(h.interval, Duration::from_millis(500));
        assert_eq!(h.unhealthy_threshold, 2);
        assert_eq!(h.path, "/healthz");
    }

    /// The Helm values' camelCase `tailscale:` block.
    #[test]
    fn helm_style_block() {
        let c = yaml(
            r#"
mode: tailscale
tailscale:
  enabled: true
  localCluster: us-west-1
  remoteClusters:
    - { name: eu-west-1, tailscaleDomain: eu-west-1.ts.net, serviceName: inferadb-control, port: 9090 }
"#,
        )
        .unwrap();
        assert_eq!(c.cluster_names(), ["us-west-1", "eu-west-1"]);
    }

    #[test]
    fn none_kubernetes_and_static() {
        let c = yaml("mode: none\nhttp_endpoints: ['http://10.0.0.5:8080/hook', 'engine.local:8081', 'http://[fd7a::1]:80']").unwrap();
        assert_eq!(c.mode, DiscoveryMode::None);
        assert_eq!(
            c.http_endpoints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.0.5:8080", "engine.local:8081", "[fd7a::1]:80"]
        );
        assert_eq!(yaml("{}").unwrap(), DiscoveryConfig::default());
        let c = DiscoveryConfig::default()
            .with_http_endpoints("cache_invalidation.http_endpoints", &["http://a:1"])
            .unwrap();
        assert_eq!(c.http_endpoints[0].host, "a");
        let e = DiscoveryConfig::default()
            .with_http_endpoints("cache_invalidation.http_endpoints", &["ftp://a"])
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cache_invalidation.http_endpoints[0]: "),
            "{e}"
        );

        let c = yaml("mode: {type: kubernetes, service_name: inferadb-engine, port: http, namespace: inferadb}").unwrap();
        let DiscoveryMode::Kubernetes(k) = &c.mode else {
            panic!()
        };
        assert_eq!(k.port, Some(PortSelector::Name("http".into())));
        assert_eq!(k.cluster, "local");
        let c = yaml("mode: tailscale\nlocal_cluster: us\nlocal: {type: kubernetes, service_name: eng, port: 8080}\nremote_clusters: []").unwrap();
        let DiscoveryMode::Tailscale(t) = &c.mode else {
            panic!()
        };
        let LocalCluster::Kubernetes(k) = &t.local else {
            panic!()
        };
        assert_eq!(
            (k.cluster.as_str(), k.port.clone()),
            ("us", Some(PortSelector::Number(8080)))
        );
    }

    /// `to_value` writes every mode so that `from_value` reads it back.
    #[test]
    fn to_value_round_trips() {
        let inputs = [
            "{}",
            "mode: none\nhttp_endpoints: ['http://10.0.0.5:8080/hook', '[fd7a::1]:80']",
            "mode: tailscale\nlocal_cluster: us-west-1\nremote_clusters: [{name: eu-west-1, tailscale_domain: eu-west-1.ts.net, service_name: inferadb-control, port: 9090}]\ncache_ttl_seconds: 60\nhealth_check: {interval_ms: 500, path: /readyz}",
            "mode: {type: tailscale, local_cluster: us, local: {type: none}, remote_clusters: [{name: eu, tailscale_domain: eu.ts.net, service_name: e, port: 1}]}",
            "mode: {type: tailscale, local_cluster: us, local: {type: kubernetes, service_name: eng, port: http, namespace: db, api_url: 'https://k:6443', token_file: /t, ca_file: /c}, remote_clusters: []}",
            "mode: {type: tailscale, local_cluster: us, local: {service_name: c, port: 9, tailscale_domain: us.example.net}}",
            "mode: {type: kubernetes, service_name: inferadb-engine, port: 8080}",
            "mode: {type: kubernetes, local_cluster: us-west-1, service_name: e}\nhealth_check: {enabled: false}",
        ];
        for input in inputs {
            let c = yaml(input).unwrap();
            let v = c.to_value();
            assert_eq!(DiscoveryConfig::from_value(&v).unwrap(), c, "{input}\n{v}");
        }
        let v = yaml(inputs[2]).unwrap().to_value();
        assert_eq!(v["mode"]["local"]["service_name"], "inferadb-control");
        assert_eq!(v["mode"]["local"]["tailscale_domain"], "us-west-1.ts.net");
        assert_eq!(v["health_check"]["interval_ms"], 500);
        assert_eq!(v["health_check"]["timeout_ms"], 2000);
        assert_eq!(v["cache_ttl_seconds"], 60);
    }

    /// Every error is one line that names its key.
    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("mode: tailscal", "mode: unknown mode \"tailscal\""),
            ("mode: {type: tailscale}", "mode.local_cluster: missing"),
            ("mode: tailscale", "local_cluster: missing"),
            (
                "mode: {type: tailscale, local_cluster: us, remote_clusters: [{name: eu, tailscale_domain: eu.ts.net, service_name: x, port: http}]}",
                "mode.remote_clusters[0].port: expected a port number (1-65535), got \"http\"",
            ),
            (
                "mode: {type: tailscale, local_cluster: us, remote_clusters: [{name: eu, tailscale_domain: eu.ts.net, service_name: x, port: 1, prot: 2}]}",
                "mode.remote_clusters[0].prot: unknown key",
            ),
            (
                "mode: {type: tailscale, local_cluster: us, remote_clusters: [{name: eu, service_name: x, port: 1}]}",
                "mode.remote_clusters[0].tailscale_domain: missing",
            ),
            (
                "mode: {type: tailscale, local_cluster: us, remote_clusters: [{name: us, tailscale_domain: us.ts.net, service_name: x, port: 1}]}",
                "mode.remote_clusters[0].name: \"us\" is the local cluster",
            ),
            ("mode: {type: tailscale, local_cluster: 'a b'}", "mode.local_cluster: expected a cluster name"),
            ("mode: {type: none}\nlocal_clustr: x", "local_clustr: unknown key"),
            ("mode: tailscale\nlocal_cluster: us\nmode_x: 1", "mode_x: unknown key"),
            ("cache_ttl_seconds: 0", "cache_ttl_seconds: must be more than 0"),
            ("health_check: {path: healthz}", "health_check.path: expected an absolute path"),
            ("mode: {type: kubernetes}", "mode.service_name: missing"),
            (
                "mode: {type: tailscale, local_cluster: us}\nlocal_cluster: eu",
                "local_cluster: also given as mode.local_cluster",
            ),
            ("http_endpoints: ['10.0.0.1']", "http_endpoints[0]: \"10.0.0.1\": no port"),
        ];
        for (input, want) in cases {
            let e = yaml(input).unwrap_err();
            assert!(e.starts_with(want), "{input}\n  got:  {e}\n  want: {want}…");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // With the caller's prefix.
        let v: Value = serde_yaml_ng::from_str("mode: {type: bogus}").unwrap();
        let e = DiscoveryConfig::from_value_at("cache_invalidation.discovery", &v).unwrap_err();
        assert_eq!(e.path, "cache_invalidation.discovery.mode.type");
        // Through serde (any deserializer).
        let e = serde_yaml_ng::from_str::<DiscoveryConfig>("mode: {type: bogus}").unwrap_err();
        assert!(e.to_string().contains("mode.type: unknown mode"), "{e}");
    }
}
