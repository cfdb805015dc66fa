//! The tables `bench control` prints.

use super::*;

pub(crate) fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// How many times `b` is of `a` (for "grows ×k" lines).
pub(crate) fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 {
        format!("×{:.1}", b / a)
    } else {
        "-".into()
    }
}

/// The netmap part as a table (one line per size, with a header).
pub fn format_netmap_table(cases: &[ControlCase]) -> String {
    use std::fmt::Write as _;
    let opt = |v: Option<f64>, prec: usize| v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"));
    let mut out = format!(
        "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}\n",
        "peers",
        "map KiB",
        "decode µs",
        "apply µs",
        "p99 µs",
        "delta µs",
        "status µs",
        "join ms",
        "RSS MiB"
    );
    for c in cases {
        let _ = writeln!(
            out,
            "{:>7} {:>10.1} {:>10.0} {:>10.0} {:>10.0} {:>10.1} {:>10.0} {:>8} {:>8}",
            c.peers,
            c.map_bytes as f64 / 1024.0,
            c.decode_us,
            c.apply_full_us,
            c.apply_full_p99_us,
            c.apply_delta_us,
            c.status_us,
            opt(c.join_ms, 0),
            opt(c.rss_mib, 1),
        );
    }
    out
}

/// The whole report as text: one section per part that ran, then notes.
pub fn format_table(report: &ControlReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(j) = &report.join {
        let _ = writeln!(
            out,
            "Join: process start to Running, loopback, embedded coordinator ({} samples, ms)",
            j.samples
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>9} {:>9} {:>9}",
            "", "median", "min", "max"
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>9.1} {:>9.1} {:>9.1}   goal ≤ {:.0} ms: {}",
            "inferadb-mesh up",
            j.ours.median_ms,
            j.ours.min_ms,
            j.ours.max_ms,
            j.goal_ms,
            verdict(j.ours.median_ms <= j.goal_ms)
        );
        let label = format!("{} (tsnet)", j.caddy_version.as_deref().unwrap_or("caddy"));
        match &j.caddy {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  {:<24} {:>9.1} {:>9.1} {:>9.1}   ours {:.1}× faster",
                    label,
                    c.median_ms,
                    c.min_ms,
                    c.max_ms,
                    c.median_ms / j.ours.median_ms.max(1e-9)
                );
            }
            None => {
                let _ = writeln!(out, "  {:<24} {:>9}", "caddy", "not installed or failed");
            }
        }
        out.push('\n');
    }
    if let Some(r) = &report.rss {
        let _ = writeln!(
            out,
            "Memory: VmRSS of an idle joined node after {:.0} s (MiB)",
            r.idle_secs
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>9.1}   goal ≤ {:.0} MiB: {}",
            "inferadb-mesh up",
            r.ours_mib,
            r.goal_mib,
            verdict(r.ours_mib <= r.goal_mib)
        );
        match r.caddy_mib {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  {:<24} {:>9.1}   ours {:.1}× smaller (Caddy's HTTP server included)",
                    "caddy (tsnet)",
                    c,
                    c / r.ours_mib.max(1e-9)
                );
            }
            None => {
                let _ = writeln!(out, "  {:<24} {:>9}", "caddy (tsnet)", "-");
            }
        }
        out.push('\n');
    }
    if !report.cases.is_empty() {
        let _ = writeln!(
            out,
            "Netmap, in-process: synthetic full map decode/apply, one delta, status view"
        );
        out.push_str(&format_netmap_table(&report.cases));
        out.push('\n');
    }
    if !report.scale_apply.is_empty() {
        let _ = writeln!(
            out,
            "Scale: a real node taking a netmap of N registered, stopped peers (ms; RSS MiB)"
        );
        let _ = writeln!(
            out,
            "{:>7} {:>9} {:>10} {:>9} {:>9} {:>8} {:>10} {:>10} {:>8}",
            "peers",
            "up()",
            "first map",
            "map KiB",
            "apply",
            "netmap",
            "apply onl",
            "proc join",
            "proc RSS"
        );
        let opt =
            |v: Option<f64>, prec: usize| v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"));
        for c in &report.scale_apply {
            let _ = writeln!(
                out,
                "{:>7} {:>9.1} {:>10.1} {:>9.1} {:>9.2} {:>8.2} {:>10.2} {:>10} {:>8}",
                c.peers,
                c.up_ms,
                c.first_map_ms,
                c.first_map_bytes as f64 / 1024.0,
                c.apply_ms,
                c.apply_netmap_ms,
                c.apply_online_ms,
                opt(c.process_join_ms, 1),
                opt(c.process_rss_mib, 1),
            );
        }
        if let Some(big) = report.scale_apply.iter().find(|c| c.peers == 1000) {
            let _ = writeln!(
                out,
                "  apply of 1,000 peers: {:.2} ms — goal ≤ {:.0} ms: {}",
                big.apply_ms,
                APPLY_GOAL_MS,
                verdict(big.apply_ms <= APPLY_GOAL_MS)
            );
        }
        if let (Some(a), Some(b)) = (report.scale_apply.first(), report.scale_apply.last()) {
            if b.peers > a.peers {
                let _ = writeln!(
                    out,
                    "  {} → {} peers: up() {}, first map {}, apply {}",
                    a.peers,
                    b.peers,
                    ratio(a.up_ms, b.up_ms),
                    ratio(a.first_map_ms, b.first_map_ms),
                    ratio(a.apply_ms, b.apply_ms)
                );
            }
        }
        out.push('\n');
    }
    if !report.scale_push.is_empty() {
        let _ = writeln!(
            out,
            "Scale: one registration pushed to N streaming nodes (coordinator and clients in-process)"
        );
        let _ = writeln!(
            out,
            "{:>7} {:>9} {:>11} {:>9} {:>9} {:>9}",
            "streams", "setup s", "setup msgs", "reg ms", "all ms", "p50 ms"
        );
        for c in &report.scale_push {
            let _ = writeln!(
                out,
                "{:>7} {:>9.2} {:>11} {:>9.2} {:>9.2} {:>9.2}",
                c.streams, c.setup_s, c.setup_messages, c.register_ms, c.all_ms, c.p50_ms
            );
        }
        if let (Some(a), Some(b)) = (report.scale_push.first(), report.scale_push.last()) {
            if b.streams > a.streams {
                let _ = writeln!(
                    out,
                    "  {} → {} streams: all received {}, per-stream median {}",
                    a.streams,
                    b.streams,
                    ratio(a.all_ms, b.all_ms),
                    ratio(a.p50_ms, b.p50_ms)
                );
            }
        }
        out.push('\n');
    }
    for n in &report.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
