//! Configuration of the `engine` and `control` roles: a YAML file and
//! environment variables, with the names of the multi-region guide
//! (`shared/seed/tailscale-multi-region.md`).
//!
//! Layers, later wins: the defaults below, the YAML file, the environment.
//! The engine reads variables starting with `INFERADB__`, control those
//! starting with `INFERADB_CTRL__`; after the prefix, `__` nests and a
//! number indexes a list, so
//! `INFERADB__AUTH__DISCOVERY__MODE__REMOTE_CLUSTERS__0__NAME=eu-west-1`
//! sets `auth.discovery.mode.remote_clusters[0].name` (the first element
//! of the file's list, or a new one). Values are read as YAML-ish scalars
//! (`9090` a number, `true` a bool, `[a, b]` a list); a string field takes
//! a number-looking value as its text.
//!
//! Engine file (the engine discovers control, so `auth.discovery`):
//!
//! ```yaml
//! mesh:                       # the embedded tailnet node
//!   control_url: https://controlplane.tailscale.com
//!   auth_key_file: /var/run/secrets/tailscale/authkey   # or auth_key / INFERADB__MESH__AUTH_KEY
//!   hostname: inferadb-engine-0
//!   state_dir: /var/lib/inferadb-mesh
//!   tags: [tag:inferadb-us-west-1]
//! http:
//!   listen: 0.0.0.0:8080      # the OS port (probes, Prometheus)
//!   tailnet_port: 8080        # the same server on the tailnet
//!   # Optional server limits (defaults shown; crates/tailnet-listen/README.md):
//!   # max_connections: 4096, max_connections_per_ip: 256,
//!   # header_timeout_seconds: 10, idle_timeout_seconds: 180
//! auth:
//!   discovery:
//!     mode:
//!       type: tailscale
//!       local_cluster: us-west-1
//!       remote_clusters:
//!         - {name: eu-west-1, tailscale_domain: eu-west-1.ts.net, service_name: inferadb-control, port: 9090}
//! cache_invalidation:
//!   webhook_secret_file: /var/run/secrets/inferadb/webhook
//! ```
//!
//! Control file: the guide's `cache_invalidation` block as is, plus
//! `mesh`, `http` (tailnet port 9090) and `api.token` / `api.token_file`
//! (the bearer token of `POST /v1/vaults`).
//!
//! The file is parsed by `figment` (YAML provider, value parsing, typed
//! extraction with the failing key's path). Neither figment nor `config`
//! turns `__0__` into a list index, so the environment layer is applied
//! here onto figment's value tree before extraction. Unknown keys are
//! errors; every error is one line naming the key (and the variable when
//! the environment set it); secrets are never echoed.

use figment::providers::{Format, Serialized, Yaml};
use figment::value::{Dict, Tag, Value};
use figment::{Figment, Profile, Provider};
use inferadb_discovery::DiscoveryConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as JsonValue;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment prefix of the engine.
pub const ENGINE_ENV_PREFIX: &str = "INFERADB__";
/// Environment prefix of control.
pub const CONTROL_ENV_PREFIX: &str = "INFERADB_CTRL__";

/// Key names whose values are never shown in errors or `Debug`.
const SECRET_KEYS: &[&str] = &["auth_key", "token", "webhook_secret"];

/// A configuration error, as one line: `config: <key>: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

/// A secret string: `Debug` and `Serialize` do not show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(LenientString::deserialize(d)?.0))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A string that also accepts a number or bool (an environment value such
/// as `NAME=123` parses as a number).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LenientString(String);

impl<'de> Deserialize<'de> for LenientString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LenientString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn lenient_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<LenientString>::deserialize(d)?.map(|s| s.0))
}

fn lenient_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<LenientString>::deserialize(d)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

/// The embedded tailnet node (`mesh:`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// The control server: Tailscale, Headscale or our coordinator.
    #[serde(default, deserialize_with = "lenient_opt")]
    pub control_url: Option<String>,
    /// The pre-auth key (prefer `auth_key_file` or the environment).
    #[serde(default)]
    pub auth_key: Option<Secret>,
    /// A file holding the pre-auth key (a mounted Secret).
    #[serde(default)]
    pub auth_key_file: Option<PathBuf>,
    /// Host name to register; its MagicDNS name is `<hostname>.<domain>`.
    #[serde(default, deserialize_with = "lenient_opt")]
    pub hostname: Option<String>,
    /// Node keys and registration (one process per directory).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// ACL tags to request, e.g. `tag:inferadb-us-west-1`.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub tags: Vec<String>,
    /// UDP address for WireGuard.
    #[serde(default = "default_udp_listen")]
    pub listen: SocketAddr,
    /// Leave no identity behind (control removes the node when it leaves).
    #[serde(default)]
    pub ephemeral: bool,
    /// Give up joining after this many seconds.
    #[serde(default = "default_join_timeout")]
    pub timeout_seconds: u64,
}

fn default_udp_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}
fn default_join_timeout() -> u64 {
    60
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            control_url: None,
            auth_key: None,
            auth_key_file: None,
            hostname: None,
            state_dir: None,
            tags: Vec::new(),
            listen: default_udp_listen(),
            ephemeral: false,
            timeout_seconds: default_join_timeout(),
        }
    }
}

impl MeshConfig {
    /// The auth key: from `auth_key_file` if set, else `auth_key`; `None`
    /// when neither is (a node with state rejoins without one).
    pub fn read_auth_key(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(path) = &self.auth_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!(
                    "mesh.auth_key_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let key = text.trim();
            if key.is_empty() {
                return Err(ConfigError(format!(
                    "mesh.auth_key_file: {} is empty",
                    path.display()
                )));
            }
            return Ok(Some(Secret::new(key)));
        }
        Ok(self
            .auth_key
            .clone()
            .filter(|k| !k.expose().trim().is_empty()))
    }
}

/// The HTTP server of a role (`http:`): `/metrics`, `/healthz`, `/readyz`
/// and the role's API, on an OS address and on the tailnet.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// OS address (kubelet probes, Prometheus); port 0 picks one.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Port of the same server on the node's tailnet addresses (0: off).
    #[serde(default)]
    pub tailnet_port: Option<u16>,
    /// Connections served at once, all sources (each of the two
    /// listeners).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections served at once from one source address.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Seconds a client may take to send a request's headers (idle and
    /// slowloris connections are closed after it).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
    /// Seconds a connection may go with no bytes either way.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn default_max_connections() -> usize {
    tailnet_listen::Limits::default().max_connections
}

fn default_max_connections_per_ip() -> usize {
    tailnet_listen::Limits::default().max_connections_per_ip
}

fn default_header_timeout() -> u64 {
    tailnet_listen::Limits::default()
        .header_read_timeout
        .as_secs()
}

fn default_idle_timeout() -> u64 {
    tailnet_listen::Limits::default().idle_timeout.as_secs()
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            tailnet_port: None,
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            header_timeout_seconds: default_header_timeout(),
            idle_timeout_seconds: default_idle_timeout(),
        }
    }
}

impl HttpConfig {
    /// The server limits these set (the rest at `tailnet_listen`'s
    /// defaults); a zero is an error naming its key.
    pub fn limits(&self) -> Result<tailnet_listen::Limits, ConfigError> {
        for (key, v) in [
            ("http.max_connections", self.max_connections as u64),
            (
                "http.max_connections_per_ip",
                self.max_connections_per_ip as u64,
            ),
            ("http.header_timeout_seconds", self.header_timeout_seconds),
            ("http.idle_timeout_seconds", self.idle_timeout_seconds),
        ] {
            if v == 0 {
                return Err(ConfigError(format!("{key}: must be at least 1")));
            }
        }
        Ok(tailnet_listen::Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            header_read_timeout: Duration::from_secs(self.header_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            ..tailnet_listen::Limits::default()
        })
    }
}

/// The engine's `auth:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineAuth {
    /// Where control is (local and remote clusters): the guide's
    /// `discovery.mode{type, local_cluster, remote_clusters}`, read by
    /// [`inferadb_discovery::DiscoveryConfig`].
    #[serde(default)]
    pub discovery: Option<JsonValue>,
}

/// The engine's `cache_invalidation:` section (the webhook receiver).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineInvalidation {
    /// Shared secret the webhooks are signed with.
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    /// A file holding it.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
}

/// Configuration of `inferadb-mesh engine`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// The embedded node.
    #[serde(default)]
    pub mesh: MeshConfig,
    /// The HTTP server (tailnet port default 8080).
    #[serde(default)]
    pub http: HttpConfig,
    /// Discovery of control (`auth.discovery`, as the guide's variables
    /// `INFERADB__AUTH__DISCOVERY__…` name it).
    #[serde(default)]
    pub auth: EngineAuth,
    /// The invalidation receiver.
    #[serde(default)]
    pub cache_invalidation: EngineInvalidation,
    /// `auth.discovery` parsed (set by `load`). A file may give the
    /// guide's engine shape instead, a top-level `discovery:` with `mode:
    /// tailscale` beside `local_cluster`, …: it is read as
    /// `auth.discovery` (`mode: {type: tailscale, local_cluster, …}`)
    /// before the environment applies, and errors name it so.
    #[serde(skip)]
    pub discovery_config: DiscoveryConfig,
}

/// Control's `cache_invalidation:` section, as in the guide.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControlInvalidation {
    /// Discovery of engines, read by [`inferadb_discovery::DiscoveryConfig`].
    #[serde(default)]
    pub discovery: Option<JsonValue>,
    /// Static engine URLs (mode `none`); leave empty with discovery.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub http_endpoints: Vec<String>,
    /// Per-attempt timeout of one webhook.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after the first attempt.
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// Shared secret the webhooks are signed with.
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    /// A file holding it.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_retry_attempts() -> u32 {
    2
}

impl Default for ControlInvalidation {
    fn default() -> Self {
        ControlInvalidation {
            discovery: None,
            http_endpoints: Vec::new(),
            timeout_ms: default_timeout_ms(),
            retry_attempts: default_retry_attempts(),
            webhook_secret: None,
            webhook_secret_file: None,
        }
    }
}

/// Control's `api:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer token of `POST /v1/vaults`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding it.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// Configuration of `inferadb-mesh control`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// The embedded node.
    #[serde(default)]
    pub mesh: MeshConfig,
    /// The HTTP server (tailnet port default 9090).
    #[serde(default)]
    pub http: HttpConfig,
    /// The API's bearer token.
    #[serde(default)]
    pub api: ApiConfig,
    /// Invalidation webhooks to engines.
    #[serde(default)]
    pub cache_invalidation: ControlInvalidation,
    /// `cache_invalidation.discovery` and `http_endpoints`, parsed (set by
    /// `load`).
    #[serde(skip)]
    pub discovery_config: DiscoveryConfig,
}

/// Reads a secret given inline or as a file; `key` names it in errors.
pub fn read_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{key}_file: cannot read {}: {e}", path.display())))?;
        let s = text.trim();
        if s.is_empty() {
            return Err(ConfigError(format!(
                "{key}_file: {} is empty",
                path.display()
            )));
        }
        return Ok(Some(Secret::new(s)));
    }
    Ok(inline.clone().filter(|s| !s.expose().is_empty()))
}

impl EngineConfig {
    /// Loads the engine's configuration: `file` (if any), then the
    /// process environment's `INFERADB__…` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// [`EngineConfig::load`] with the environment given.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut c, origins): (EngineConfig, Origins) =
            load_with(file, ENGINE_ENV_PREFIX, env, engine_shape)?;
        let value = c
            .auth
            .discovery
            .clone()
            .unwrap_or_else(|| JsonValue::Object(Default::default()));
        c.discovery_config = DiscoveryConfig::from_value_at("auth.discovery", &value)
            .map_err(|e| discovery_error(&e, file, &origins))?;
        Ok(c)
    }

    /// The tailnet port of the HTTP server (default 8080).
    pub fn tailnet_port(&self) -> u16 {
        self.http.tailnet_port.unwrap_or(8080)
    }
}

impl ControlConfig {
    /// Loads control's configuration: `file` (if any), then the process
    /// environment's `INFERADB_CTRL__…` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// [`ControlConfig::load`] with the environment given.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut c, origins): (ControlConfig, Origins) =
            load_with(file, CONTROL_ENV_PREFIX, env, |_| Ok(()))?;
        let value = c
            .cache_invalidation
            .discovery
            .clone()
            .unwrap_or_else(|| JsonValue::Object(Default::default()));
        c.discovery_config = DiscoveryConfig::from_value_at("cache_invalidation.discovery", &value)
            .and_then(|d| {
                d.with_http_endpoints(
                    "cache_invalidation.http_endpoints",
                    &c.cache_invalidation.http_endpoints,
                )
            })
            .map_err(|e| discovery_error(&e, file, &origins))?;
        if c.cache_invalidation.timeout_ms == 0 {
            return Err(ConfigError(
                "cache_invalidation.timeout_ms: must be at least 1".into(),
            ));
        }
        Ok(c)
    }

    /// The tailnet port of the HTTP server (default 9090).
    pub fn tailnet_port(&self) -> u16 {
        self.http.tailnet_port.unwrap_or(9090)
    }
}

/// `mesh`, `http` and secrets as `--check` prints them.
fn mesh_value(m: &MeshConfig) -> JsonValue {
    serde_json::to_value(m).unwrap_or(JsonValue::Null)
}

fn http_value(h: &HttpConfig, tailnet_port: u16) -> JsonValue {
    serde_json::json!({
        "listen": h.listen,
        "tailnet_port": tailnet_port,
        "max_connections": h.max_connections,
        "max_connections_per_ip": h.max_connections_per_ip,
        "header_timeout_seconds": h.header_timeout_seconds,
        "idle_timeout_seconds": h.idle_timeout_seconds,
    })
}

/// `"***"` when a secret is given inline, else null; never the secret.
fn secret_value(s: &Option<Secret>) -> JsonValue {
    match s {
        Some(s) if !s.expose().is_empty() => JsonValue::from("***"),
        _ => JsonValue::Null,
    }
}

fn path_value(p: &Option<PathBuf>) -> JsonValue {
    p.as_ref().map_or(JsonValue::Null, |p| {
        JsonValue::from(p.display().to_string())
    })
}

/// What a role needs before it can start, short of reading files: the
/// node's control URL and state directory, and a secret given inline or
/// as a file.
fn need_mesh(m: &MeshConfig) -> Result<(), ConfigError> {
    if m.control_url.as_deref().is_none_or(|u| u.trim().is_empty()) {
        return Err(ConfigError("mesh.control_url: missing".into()));
    }
    if m.state_dir.is_none() {
        return Err(ConfigError("mesh.state_dir: missing".into()));
    }
    Ok(())
}

fn need_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<(), ConfigError> {
    if file.is_none() && secret_value(inline).is_null() {
        return Err(ConfigError(format!("{key}: missing (or {key}_file)")));
    }
    Ok(())
}

impl EngineConfig {
    /// The effective configuration (file, environment and defaults), as
    /// `inferadb-mesh engine --check` prints it: secrets shown as `"***"`,
    /// discovery as [`inferadb_discovery::DiscoveryConfig::to_value`].
    pub fn effective(&self) -> JsonValue {
        serde_json::json!({
            "role": "engine",
            "mesh": mesh_value(&self.mesh),
            "http": http_value(&self.http, self.tailnet_port()),
            "auth": {"discovery": self.discovery_config.to_value()},
            "cache_invalidation": {
                "webhook_secret": secret_value(&self.cache_invalidation.webhook_secret),
                "webhook_secret_file": path_value(&self.cache_invalidation.webhook_secret_file),
            },
        })
    }

    /// Whether the engine has what it needs to start (files it names are
    /// not read): `mesh.control_url`, `mesh.state_dir`, the webhook secret.
    pub fn check_complete(&self) -> Result<(), ConfigError> {
        need_mesh(&self.mesh)?;
        self.http.limits()?;
        need_secret(
            &self.cache_invalidation.webhook_secret,
            &self.cache_invalidation.webhook_secret_file,
            "cache_invalidation.webhook_secret",
        )
    }
}

impl ControlConfig {
    /// The effective configuration, as `inferadb-mesh control --check`
    /// prints it (see [`EngineConfig::effective`]); `cache_invalidation
    /// .discovery` holds `http_endpoints` too.
    pub fn effective(&self) -> JsonValue {
        let ci = &self.cache_invalidation;
        serde_json::json!({
            "role": "control",
            "mesh": mesh_value(&self.mesh),
            "http": http_value(&self.http, self.tailnet_port()),
            "api": {
                "token": secret_value(&self.api.token),
                "token_file": path_value(&self.api.token_file),
            },
            "cache_invalidation": {
                "discovery": self.discovery_config.to_value(),
                "timeout_ms": ci.timeout_ms,
                "retry_attempts": ci.retry_attempts,
                "webhook_secret": secret_value(&ci.webhook_secret),
                "webhook_secret_file": path_value(&ci.webhook_secret_file),
            },
        })
    }

    /// Whether control has what it needs to start (files it names are not
    /// read): `mesh.control_url`, `mesh.state_dir`, the webhook secret, the
    /// API token.
    pub fn check_complete(&self) -> Result<(), ConfigError> {
        need_mesh(&self.mesh)?;
        self.http.limits()?;
        need_secret(
            &self.cache_invalidation.webhook_secret,
            &self.cache_invalidation.webhook_secret_file,
            "cache_invalidation.webhook_secret",
        )?;
        need_secret(&self.api.token, &self.api.token_file, "api.token")
    }
}

/// Where an environment layer's values came from: key path → variable.
type Origins = BTreeMap<String, String>;

/// The three layers and extraction; see the module docs.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    Ok(load_with(file, prefix, env, |_| Ok(()))?.0)
}

/// [`load`], with `shape` applied to the file's tree before the
/// environment, and where each environment value came from.
fn load_with<T: DeserializeOwned>(
    file: Option<&Path>,
    prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
    shape: impl FnOnce(&mut Dict) -> Result<(), ConfigError>,
) -> Result<(T, Origins), ConfigError> {
    let mut root = match file {
        Some(path) => {
            if !path.is_file() {
                return Err(ConfigError(format!("{}: no such file", path.display())));
            }
            let fig = Figment::from(Yaml::file_exact(path));
            let mut data = fig.data().map_err(|e| {
                ConfigError(format!(
                    "{}: {}",
                    path.display(),
                    one_line(&e.kind.to_string())
                ))
            })?;
            data.remove(&Profile::Default).unwrap_or_default()
        }
        None => Dict::new(),
    };
    shape(&mut root)?;
    let mut origins = Origins::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.len() > prefix.len() && k.starts_with(prefix))
        .collect();
    // Numeric segments in numeric order, so `__2__` comes before `__10__`
    // and lists grow one index at a time.
    vars.sort_by_key(|(k, _)| {
        k.split("__")
            .map(|seg| match seg.parse::<u64>() {
                Ok(n) => (0, n, String::new()),
                Err(_) => (1, 0, seg.to_string()),
            })
            .collect::<Vec<_>>()
    });
    for (var, raw) in vars {
        let path: Vec<String> = var[prefix.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(|s| s.is_empty()) {
            return Err(ConfigError(format!("{var}: empty key segment")));
        }
        let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
        set_path(&mut root, &path, value).map_err(|e| ConfigError(format!("{var}: {e}")))?;
        origins.insert(path.join("."), var);
    }
    let fig = Figment::from(Serialized::defaults(Value::Dict(Tag::Default, root)));
    let t = fig.extract::<T>().map_err(|e| {
        let e = e.into_iter().next().map(Box::new);
        match e {
            Some(e) => describe(&e, file, &origins),
            None => ConfigError("invalid configuration".into()),
        }
    })?;
    Ok((t, origins))
}

/// Keys of a discovery mode that the guide's engine shape puts beside a
/// string `mode` (normalised: no `_`, lowercase).
const MODE_KEYS: &[&str] = &[
    "localcluster",
    "remoteclusters",
    "local",
    "namespace",
    "servicename",
    "port",
    "apiurl",
    "tokenfile",
    "cafile",
];

/// The engine file's top-level `discovery:` (the guide's engine shape)
/// becomes `auth.discovery` with a `mode` table, so the guide's
/// `INFERADB__AUTH__DISCOVERY__MODE__…` variables apply to it.
fn engine_shape(root: &mut Dict) -> Result<(), ConfigError> {
    let Some(d) = root.remove("discovery") else {
        return Ok(());
    };
    let has_auth_discovery = matches!(
        root.get("auth"),
        Some(Value::Dict(_, a)) if a.contains_key("discovery")
    );
    if has_auth_discovery {
        return Err(ConfigError(
            "discovery: give either discovery or auth.discovery, not both".into(),
        ));
    }
    let d = match d {
        Value::Dict(tag, mut d) => {
            if let Some(Value::String(t, mode)) = d.get("mode").cloned() {
                let mut m = Dict::new();
                m.insert("type".into(), Value::String(t, mode));
                let keys: Vec<String> = d
                    .keys()
                    .filter(|k| {
                        let n: String = k
                            .chars()
                            .filter(|c| *c != '_' && *c != '-')
                            .flat_map(char::to_lowercase)
                            .collect();
                        MODE_KEYS.contains(&n.as_str())
                    })
                    .cloned()
                    .collect();
                for k in keys {
                    if let Some(v) = d.remove(&k) {
                        m.insert(k, v);
                    }
                }
                d.insert("mode".into(), Value::Dict(Tag::Default, m));
            }
            Value::Dict(tag, d)
        }
        other => other,
    };
    match root
        .entry("auth".into())
        .or_insert_with(|| Value::Dict(Tag::Default, Dict::new()))
    {
        Value::Dict(_, a) => {
            a.insert("discovery".into(), d);
            Ok(())
        }
        _ => Err(ConfigError("auth: expected a table".into())),
    }
}

fn discovery_error(
    e: &inferadb_discovery::ConfigError,
    file: Option<&Path>,
    origins: &Origins,
) -> ConfigError {
    let dotted = e.path.replace('[', ".").replace(']', "");
    let source = source_of(&dotted, file, origins);
    ConfigError(format!("{}{source}", one_line(&e.to_string())))
}

fn source_of(path: &str, file: Option<&Path>, origins: &Origins) -> String {
    origins
        .iter()
        .find(|(k, _)| *k == path || k.starts_with(&format!("{path}.")))
        .map(|(_, var)| format!(" (set by {var})"))
        .or_else(|| file.map(|f| format!(" (in {})", f.display())))
        .unwrap_or_default()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn describe(e: &figment::Error, file: Option<&Path>, origins: &Origins) -> ConfigError {
    // An unknown key reads as discovery's do: the key's own path, then
    // `unknown key (known here: …)`.
    if let figment::error::Kind::UnknownField(field, expected) = &e.kind {
        // figment's path may already end in the key.
        let mut at = e.path.clone();
        if at.last() != Some(field) {
            at.push(field.clone());
        }
        let source = source_of(&at.join("."), file, origins);
        return ConfigError(format!(
            "{}: unknown key (known here: {}){source}",
            display_path(&at),
            expected.join(", ")
        ));
    }
    let path = e.path.join(".");
    let last = e.path.last().map(String::as_str).unwrap_or("");
    let kind = if SECRET_KEYS.contains(&last) {
        "invalid value (not shown: secret)".to_string()
    } else {
        one_line(&e.kind.to_string())
    };
    let at = if path.is_empty() {
        String::from("(top level)")
    } else {
        display_path(&e.path)
    };
    let source = source_of(&path, file, origins);
    ConfigError(format!("{at}: {kind}{source}"))
}

/// `a.b.0.c` → `a.b[0].c`.
fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Sets `path` in `dict`; numeric segments index lists (creating the list
/// or appending when the index is the next one).
fn set_path(dict: &mut Dict, path: &[String], value: Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return Ok(());
    }
    let slot = dict
        .entry(first.clone())
        .or_insert_with(|| empty_container(&rest[0]));
    set_in(slot, rest, value)
}

fn empty_container(next: &str) -> Value {
    if next.bytes().all(|b| b.is_ascii_digit()) {
        Value::Array(Tag::Default, Vec::new())
    } else {
        Value::Dict(Tag::Default, Dict::new())
    }
}

fn set_in(slot: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty key")?;
    match slot {
        Value::Dict(_, d) => set_path(d, path, value),
        Value::Array(_, items) => {
            let i: usize = first
                .parse()
                .map_err(|_| format!("`{first}` is not a list index"))?;
            if i > items.len() {
                return Err(format!(
                    "list index {i} skips {} (the list has {} element(s))",
                    items.len(),
                    items.len()
                ));
            }
            if i == items.len() {
                items.push(match rest.first() {
                    Some(next) => empty_container(next),
                    None => Value::from(String::new()),
                });
            }
            if rest.is_empty() {
                items[i] = value;
                Ok(())
            } else {
                set_in(&mut items[i], rest, value)
            }
        }
        other => {
            // A scalar where the variable nests: replace it.
            *other = empty_container(first);
            set_in(other, path, value)
        }
    }
}

/// The seed's YAML shapes (`inferadb_mesh_bench::seed_yaml`, used by the
/// demo, the tests and `bench invalidation`) load as the roles read them.
#[cfg(test)]
mod seed_yaml_tests {
    use crate::config::{ControlConfig, EngineConfig};
    use crate::seed_yaml::{control_yaml, engine_yaml, mesh_yaml, Discovery};

    #[test]
    fn what_it_writes_loads_as_the_roles_read_it() {
        let d = Discovery {
            local_cluster: "eu-west-1",
            local: Some("{type: none}".into()),
            remotes: vec![("us-west-1", "inferadb-control", 9090)],
            health_check: Some("{interval_ms: 500, timeout_ms: 400}"),
        };
        let dir = tempfile::tempdir().unwrap();
        let mesh = mesh_yaml("http://127.0.0.1:1", "k", "h", &dir.path().join("s"), true);
        let file = dir.path().join("role.yaml");
        std::fs::write(&file, format!("{mesh}{}", engine_yaml(&d, "s"))).unwrap();
        let engine = EngineConfig::load_from(Some(&file), Vec::new()).unwrap();
        let json = serde_json::to_string(&engine.auth.discovery).unwrap();
        assert!(
            json.contains("us-west-1.ts.net") && json.contains("interval_ms"),
            "{json}"
        );
        std::fs::write(
            &file,
            format!("{mesh}{}", control_yaml(&d, "t", 1234, 5, "s")),
        )
        .unwrap();
        let control = ControlConfig::load_from(Some(&file), Vec::new()).unwrap();
        assert_eq!(control.cache_invalidation.timeout_ms, 1234);
        assert_eq!(control.cache_invalidation.retry_attempts, 5);
    }
}
