//! The `inferadb-mesh` command: run tailnet nodes, the demo and the
//! benchmarks. The library half exists so `benches/` and the tests can
//! drive the same code the command runs. The benchmarks themselves are the
//! crate `inferadb-mesh-bench`; [`bench_product`] hands them the roles and
//! the local API they measure.

pub mod bench_product;
pub mod cli;
pub mod config;
pub mod coordinator_cmd;
pub mod demo;
pub mod dns_cmd;
pub mod forward;
pub mod localapi;
pub mod ping_cmd;
pub mod proxy;
pub mod roles;
pub mod static_node;
pub mod status_cmd;
pub mod up_cmd;

/// The roles' YAML in the seed guide's shapes (the demo, the tests and
/// `bench invalidation` write it).
pub use inferadb_mesh_bench::seed_yaml;
/// The measurement services (`node --serve`, `up --serve`), shared with
/// the benchmarks.
pub use inferadb_mesh_bench::services;
