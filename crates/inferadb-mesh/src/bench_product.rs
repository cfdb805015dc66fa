//! The product as `inferadb-mesh bench` measures it: the roles and the
//! local API, behind [`inferadb_mesh_bench::Product`].

use crate::config::{ControlConfig, EngineConfig};
use crate::roles::{start_control, start_engine, Role};
use anyhow::Context;
use inferadb_discovery::Discovery;
use inferadb_invalidation::Recorder;
use inferadb_mesh_bench::{Product, RunningRole};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tailnet::status::Status;

/// This build of `inferadb-mesh`.
pub struct Mesh;

impl Product for Mesh {
    type Role = Role;

    async fn start_engine(config: PathBuf) -> anyhow::Result<Role> {
        let cfg = EngineConfig::load_from(Some(&config), Vec::new())
            .with_context(|| format!("{}", config.display()))?;
        Ok(start_engine(cfg).await?)
    }

    async fn start_control(config: PathBuf) -> anyhow::Result<Role> {
        let cfg = ControlConfig::load_from(Some(&config), Vec::new())
            .with_context(|| format!("{}", config.display()))?;
        Ok(start_control(cfg).await?)
    }

    async fn status(state_dir: PathBuf) -> anyhow::Result<Status> {
        let socket = crate::localapi::socket_path(&state_dir);
        Ok(crate::localapi::fetch_status(&socket).await?)
    }
}

impl RunningRole for Role {
    fn node(&self) -> &tailnet::Node {
        &self.node
    }

    fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    fn discovery(&self) -> Arc<Discovery> {
        self.discovery.clone()
    }

    fn received(&self) -> Option<Recorder> {
        self.received.clone()
    }

    fn shutdown(self) -> impl Future<Output = ()> + Send {
        Role::shutdown(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ControlConfig, EngineConfig};
    use inferadb_mesh_bench::invalidation::{control_yaml, engine_yaml, REGIONS};
    use inferadb_mesh_bench::seed_yaml::mesh_yaml;

    /// `bench invalidation` writes configurations the roles load: each
    /// region's engine, and control discovering all three clusters with no
    /// health checks.
    #[test]
    fn bench_invalidation_configs_load() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let url = "http://127.0.0.1:1";
        for region in REGIONS {
            let f = dir.path().join(format!("{region}.yaml"));
            let mesh = mesh_yaml(url, "k", "inferadb-engine-0", &state, true);
            std::fs::write(&f, format!("{mesh}{}", engine_yaml(region))).unwrap();
            EngineConfig::load_from(Some(&f), Vec::new()).unwrap();
        }
        let f = dir.path().join("control.yaml");
        let mesh = mesh_yaml(url, "k", "inferadb-control-0", &state, true);
        std::fs::write(&f, format!("{mesh}{}", control_yaml())).unwrap();
        let c = ControlConfig::load_from(Some(&f), Vec::new()).unwrap();
        assert_eq!(c.discovery_config.cluster_names().len(), 3);
        assert!(c.discovery_config.health_check.is_none());
    }
}
