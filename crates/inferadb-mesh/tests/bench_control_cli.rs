//! `inferadb-mesh bench control` from the command line: the quick part
//! only (a coordinator with 10 registered peers, one node process), and
//! the argument errors. The slow parts (join against Caddy, 1,000 map
//! streams) are measured by hand, not tested.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{bin, run_json};

#[test]
fn scale_apply_for_ten_peers_prints_json_of_the_documented_shape() {
    let v = run_json(&[
        "bench",
        "control",
        "--parts",
        "scale-apply",
        "--peers",
        "10",
        "--samples",
        "1",
        "--idle-secs",
        "0",
        "--json",
    ]);
    for key in ["cases", "scale_apply", "scale_push", "notes"] {
        assert!(v[key].is_array(), "{key} missing: {v}");
    }
    assert!(v["join"].is_null() && v["rss"].is_null(), "{v}");
    assert_eq!(v["cases"], serde_json::json!([]));
    let apply = v["scale_apply"].as_array().unwrap();
    assert_eq!(apply.len(), 1, "{v}");
    let c = &apply[0];
    assert_eq!(
        (c["peers"].as_u64(), c["samples"].as_u64()),
        (Some(10), Some(1))
    );
    for key in ["up_ms", "first_map_ms", "apply_ms", "apply_online_ms"] {
        let ms = c[key].as_f64().unwrap_or(-1.0);
        assert!(ms > 0.0 && ms < 30_000.0, "{key} = {ms}: {c}");
    }
    // Ten peers with two addresses, endpoints and Hostinfo each.
    assert!(c["first_map_bytes"].as_u64().unwrap_or(0) > 10 * 200, "{c}");
    // This executable ran `up` as a process against the same coordinator.
    assert!(c["process_join_ms"].as_f64().unwrap_or(0.0) > 0.0, "{c}");
    assert!(c["process_rss_mib"].as_f64().unwrap_or(0.0) > 0.0, "{c}");
}

#[test]
fn bad_parts_and_sizes_are_refused() {
    let out = bin()
        .args(["bench", "control", "--parts", "everything"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scale-apply"), "{err}");

    let out = bin()
        .args(["bench", "control", "--parts", "scale-push", "--peers", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--peers values must be between 1 and"),
        "{err}"
    );
}
