//! `cargo bench -p tailnet-benches`: the tunnel benchmark, side by side.
//!
//! Runs exactly what `inferadb-mesh bench tunnel` runs: single-stream TCP
//! throughput and 64-byte round trips through our two-process path, and in
//! the same run through wireguard-go + kernel TCP and onetun when they are
//! installed (root needed), then the HTTP rows against Go tsnet (Caddy)
//! when it is installed. Speed is judged by the ratios in the table,
//! never by a fixed threshold. `TAILNET_BENCH_SECONDS` sets the per-path
//! duration (default 5).
//!
//! The benchmark re-executes this binary as the peer node (`node`, `up`),
//! so it answers the peer's subcommands itself.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let peer_role = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| matches!(a, "node" | "up" | "bench-server" | "bench-client"));
    if peer_role {
        return inferadb_mesh::cli::main_with_args(args);
    }
    let secs = std::env::var("TAILNET_BENCH_SECONDS").unwrap_or_else(|_| "5".into());
    inferadb_mesh::cli::main_with_args([
        "inferadb-mesh",
        "bench",
        "tunnel",
        "--duration",
        secs.as_str(),
    ])
}
