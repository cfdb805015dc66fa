//! The `inferadb-mesh` command: run tailnet nodes, the demo and the
//! benchmarks. The library half exists so `benches/` and the tests can
//! drive the same code the command runs.

pub mod bench;
pub mod bench_control;
pub mod bench_dns;
pub mod bench_http;
pub mod bench_invalidation;
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
pub mod seed_yaml;
pub mod services;
pub mod static_node;
pub mod status_cmd;
pub mod up_cmd;
pub mod wan;
