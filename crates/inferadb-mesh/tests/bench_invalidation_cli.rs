//! `inferadb-mesh bench invalidation` from the command line, small: three
//! engines (one per region) and a few rounds on both paths, and a
//! discovery refresh of 3 clusters × 2 endpoints. The figures themselves
//! are measured by hand in release (docs/benchmarks.md), not tested.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{bin, run_json};
use std::time::{Duration, Instant};

fn positive_ms(v: &serde_json::Value, what: &str) {
    for key in ["p50_ms", "p99_ms", "max_ms", "mean_ms"] {
        let ms = v[key].as_f64().unwrap_or(-1.0);
        assert!(ms > 0.0 && ms < 15_000.0, "{what}.{key} = {ms}: {v}");
    }
    assert!(
        v["p50_ms"].as_f64() <= v["p99_ms"].as_f64()
            && v["p99_ms"].as_f64() <= v["max_ms"].as_f64(),
        "{what}: {v}"
    );
}

#[test]
fn three_engines_both_paths_and_discovery_as_json() {
    let t = Instant::now();
    let v = run_json(&[
        "bench",
        "invalidation",
        "--engines",
        "3",
        "--rounds",
        "3",
        "--warmup",
        "1",
        "--endpoints",
        "2",
        "--refreshes",
        "5",
        "--json",
    ]);
    assert_eq!(
        (v["rounds"].as_u64(), v["warmup"].as_u64()),
        (Some(3), Some(1))
    );
    let fanout = v["fanout"].as_array().unwrap();
    assert_eq!(fanout.len(), 1, "{v}");
    let c = &fanout[0];
    assert_eq!(c["engines"], 3);
    assert_eq!(
        c["regions"],
        serde_json::json!({"us-west-1": 1, "eu-west-1": 1, "ap-southeast-1": 1})
    );
    for path in ["tunnel", "loopback"] {
        let p = &c[path];
        assert_eq!(p["path"], path, "{c}");
        assert_eq!(p["last_receipt"]["samples"], 3, "{p}");
        positive_ms(&p["last_receipt"], &format!("{path}.last_receipt"));
        positive_ms(&p["answer"], &format!("{path}.answer"));
        assert!(p["cold_ms"].as_f64().unwrap_or(0.0) > 0.0, "{p}");
        // 3 engines × (1 warm-up + 3 rounds), each event exactly once.
        assert_eq!(p["receipts"], 12, "{p}");
        assert_eq!(p["exactly_once"], true, "{p}");
    }
    for key in ["ratio_p50", "ratio_p99", "start_s", "control_hop_p50_ms"] {
        assert!(c[key].as_f64().unwrap_or(0.0) > 0.0, "{key}: {c}");
    }
    let d = &v["discovery"];
    assert_eq!(
        (
            d["clusters"].as_u64(),
            d["endpoints_per_cluster"].as_u64(),
            d["health_checks"].as_bool()
        ),
        (Some(3), Some(2), Some(false)),
        "{d}"
    );
    assert_eq!(d["refresh"]["samples"], 5, "{d}");
    positive_ms(&d["refresh"], "discovery.refresh");
    positive_ms(&d["lookup"], "discovery.lookup");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn bad_sizes_are_refused() {
    for (args, needle) in [
        (
            vec!["--engines", "0"],
            "--engines values must be between 1 and",
        ),
        (vec!["--rounds", "0"], "--rounds must be between 1 and"),
        (
            vec!["--concurrency", "0"],
            "--concurrency must be between 1 and",
        ),
    ] {
        let out = bin()
            .args(["bench", "invalidation"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
