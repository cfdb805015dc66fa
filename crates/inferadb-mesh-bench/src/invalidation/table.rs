//! The table `bench invalidation` prints.

use super::*;

pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// The report as a table.
pub fn format_table(r: &InvalidationReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Invalidation fan-out: send → last engine's receipt, {} timed rounds per row (after {} warm-up)\n",
        r.rounds, r.warmup
    ));
    s.push_str(&format!(
        "  {:>7}  {:<9} {:>8} {:>8} {:>8} {:>9} {:>10}  {}\n",
        "engines", "path", "p50 ms", "p99 ms", "max ms", "cold ms", "answer p50", "receipts"
    ));
    for c in &r.fanout {
        for p in [&c.tunnel, &c.loopback] {
            s.push_str(&format!(
                "  {:>7}  {:<9} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>10.2}  {} (each once)\n",
                c.engines,
                p.path,
                p.last_receipt.p50_ms,
                p.last_receipt.p99_ms,
                p.last_receipt.max_ms,
                p.cold_ms.map_or("-".into(), |v| format!("{v:.2}")),
                p.answer.p50_ms,
                p.receipts
            ));
        }
        s.push_str(&format!(
            "  {:>7}  tunnel / loopback: {:.2}× p50, {:.2}× p99\n",
            "", c.ratio_p50, c.ratio_p99
        ));
        s.push_str(&format!(
            "  {:>7}  regions {}; up in {:.1} s; RSS {} → {} MiB; idle CPU {}% of a core; control HTTP hop p50 {:.2} ms\n",
            "",
            c.regions
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            c.start_s,
            c.rss_before_mib.map_or("-".into(), |v| format!("{v:.0}")),
            c.rss_mib.map_or("-".into(), |v| format!("{v:.0}")),
            c.idle_cpu_percent.map_or("-".into(), |v| format!("{v:.1}")),
            c.control_hop_p50_ms
        ));
    }
    if let Some(d) = &r.discovery {
        s.push_str(&format!(
            "Discovery refresh: {} clusters × {} endpoints through MagicDNS on the node's virtual interface, health checks off\n",
            d.clusters, d.endpoints_per_cluster
        ));
        s.push_str(&format!(
            "  refresh_now: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} refreshes)\n",
            d.refresh.p50_ms, d.refresh.p99_ms, d.refresh.max_ms, d.refresh.samples
        ));
        s.push_str(&format!(
            "  one cluster's name (A + AAAA, {} addresses): p50 {:.2} ms, p99 {:.2} ms\n",
            2 * d.endpoints_per_cluster,
            d.lookup.p50_ms,
            d.lookup.p99_ms
        ));
        s.push_str(&format!(
            "  {} nodes up in {:.1} s; RSS {} → {} MiB\n",
            d.clusters * d.endpoints_per_cluster + 1,
            d.start_s,
            d.rss_before_mib.map_or("-".into(), |v| format!("{v:.0}")),
            d.rss_mib.map_or("-".into(), |v| format!("{v:.0}"))
        ));
    }
    s
}
