//! The roles' YAML as the seed guide writes it (`mesh:`, the engine's
//! `auth.discovery`, control's `cache_invalidation`), for the demo, `bench
//! invalidation` and the tests that start roles from files: one writer, so
//! they all exercise the shape users write.

use std::path::Path;

/// The `mesh:` and `http:` sections of a role joining `url` with `key` as
/// `host`, state in `state`, everything on loopback.
pub fn mesh_yaml(url: &str, key: &str, host: &str, state: &Path, ephemeral: bool) -> String {
    format!(
        "mesh:\n  control_url: {url}\n  auth_key: {key}\n  hostname: {host}\n  state_dir: {}\n  \
         listen: 127.0.0.1:0\n  ephemeral: {ephemeral}\n  timeout_seconds: 30\nhttp:\n  listen: 127.0.0.1:0\n",
        state.display()
    )
}

/// A discovery section in tailscale mode.
#[derive(Debug, Clone, Default)]
pub struct Discovery<'a> {
    /// `local_cluster`.
    pub local_cluster: &'a str,
    /// The `local:` value, inline YAML (`{type: none}`), if not the default.
    pub local: Option<String>,
    /// `remote_clusters`: (cluster, service name, port); the domain is
    /// `<cluster>.ts.net`.
    pub remotes: Vec<(&'a str, &'a str, u16)>,
    /// `health_check`, inline YAML, if not the default.
    pub health_check: Option<&'a str>,
}

impl Discovery<'_> {
    /// The section's body, indented for `…:\n  discovery:\n`.
    fn yaml(&self) -> String {
        let mut s = String::new();
        if let Some(h) = self.health_check {
            s.push_str(&format!("    health_check: {h}\n"));
        }
        s.push_str(&format!(
            "    mode:\n      type: tailscale\n      local_cluster: {}\n",
            self.local_cluster
        ));
        if let Some(l) = &self.local {
            s.push_str(&format!("      local: {l}\n"));
        }
        if !self.remotes.is_empty() {
            s.push_str("      remote_clusters:\n");
            for (r, service, port) in &self.remotes {
                s.push_str(&format!(
                    "        - {{name: {r}, tailscale_domain: {r}.ts.net, service_name: {service}, port: {port}}}\n"
                ));
            }
        }
        s
    }
}

/// The seed's topology: each region's name, engine count, and whether it
/// runs control.
pub type Regions<'a> = [(&'a str, usize, bool)];

/// An engine's discovery in `regions`: control of every other region that
/// runs one, and its own region's through MagicDNS if it runs one (else
/// `local: {type: none}`).
pub fn engine_discovery<'a>(regions: &Regions<'a>, region: &'a str) -> Discovery<'a> {
    let local_control = regions.iter().any(|(r, _, c)| *r == region && *c);
    Discovery {
        local_cluster: region,
        local: (!local_control).then(|| "{type: none}".to_string()),
        remotes: regions
            .iter()
            .filter(|(r, _, control)| *control && *r != region)
            .map(|(r, _, _)| (*r, "inferadb-control", CONTROL_PORT))
            .collect(),
        health_check: None,
    }
}

/// Control's discovery in `regions`: the engines of its own region and of
/// every other.
pub fn control_discovery<'a>(regions: &Regions<'a>, region: &'a str) -> Discovery<'a> {
    Discovery {
        local_cluster: region,
        local: None,
        remotes: regions
            .iter()
            .filter(|(r, _, _)| *r != region)
            .map(|(r, _, _)| (*r, "inferadb-engine", ENGINE_PORT))
            .collect(),
        health_check: None,
    }
}

/// The engines' tailnet port in the seed.
pub const ENGINE_PORT: u16 = 8080;
/// Control's tailnet port in the seed.
pub const CONTROL_PORT: u16 = 9090;

/// An engine: where control is, and the webhook secret.
pub fn engine_yaml(discovery: &Discovery<'_>, secret: &str) -> String {
    format!(
        "auth:\n  discovery:\n{}cache_invalidation:\n  webhook_secret: {secret}\n",
        discovery.yaml()
    )
}

/// Control: the API token, where the engines are, and the webhooks'
/// timeout, retries and secret.
pub fn control_yaml(
    discovery: &Discovery<'_>,
    token: &str,
    timeout_ms: u64,
    retry_attempts: u32,
    secret: &str,
) -> String {
    format!(
        "api:\n  token: {token}\ncache_invalidation:\n  discovery:\n{}  timeout_ms: {timeout_ms}\n  \
         retry_attempts: {retry_attempts}\n  webhook_secret: {secret}\n",
        discovery.yaml()
    )
}
