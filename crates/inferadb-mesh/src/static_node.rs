//! Running a node from a static configuration file (`inferadb-mesh node`).
//!
//! The file is the JSON form of [`tailnet::NodeConfig`]; unknown keys are
//! rejected with their name, and the private key is never echoed.

use anyhow::Context;
use std::path::Path;
use tailnet::NodeConfig;

/// Reads and validates a node configuration file.
pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read node config {}", path.display()))?;
    let cfg: NodeConfig = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("node config {}: {e}", path.display()))?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("node config {}: {e}", path.display()))?;
    Ok(cfg)
}

pub use inferadb_mesh_bench::ReadyLine;
