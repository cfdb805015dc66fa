//! The table `bench tunnel` prints, with each row's reference and notes.

use super::*;

/// The row a path is compared with in the table: TCP rows with
/// `tailnet`, the HTTP rows with the like-for-like row that differs only in
/// the far end (`None`: a reference row itself).
pub fn reference_of(name: &str) -> Option<&'static str> {
    match name {
        "tailnet" | "tailnet-http" | "tsnet-tailnet" => None,
        // Same client (our node), server Go instead of ours.
        "tailnet-tsnet" => Some("tailnet-http"),
        // Same client (Go, through Caddy's proxy), server Go instead of ours.
        "tsnet-tsnet" => Some("tsnet-tailnet"),
        // The HTTP layers of the embedding API (issue 18).
        n if layers::PATHS.contains(&n) => layers::reference_of(n),
        _ => Some("tailnet"),
    }
}

/// The table's last column for `p`: its ratio to its reference row (or
/// what it is), and the route it took.
pub(crate) fn note(report: &TunnelReport, p: &PathResult) -> String {
    if let Some(why) = &p.skipped {
        return format!("skipped: {why}");
    }
    let what = match reference_of(&p.name) {
        None if p.name == "tsnet-tailnet" => "(Go client → ours)".to_string(),
        None => "(ours)".to_string(),
        Some(r) => {
            let ours = report.paths.iter().find(|o| o.name == r);
            match ours.map(|o| (o.gbit_per_s, p.gbit_per_s, o.rtt_p50_us, p.rtt_p50_us)) {
                Some((Some(a), Some(b), Some(ra), Some(rb))) if b > 0.0 && ra > 0.0 => {
                    let vs = if r == "tailnet" {
                        String::new()
                    } else {
                        format!("{r}: ")
                    };
                    format!(
                        "{vs}{:.2}x throughput, {:.2}x lower p50 RTT",
                        a / b,
                        rb / ra
                    )
                }
                _ => String::new(),
            }
        }
    };
    match p.path.as_deref().and_then(|x| x.split(' ').next()) {
        Some(route) => format!("{what}; {route}"),
        None => what,
    }
}

/// Prints the side-by-side table, with our ratio to each other path; the
/// HTTP rows (ours vs Go tsnet) in a block of their own; `--wan` rows in a
/// block per condition.
pub fn print_table(report: &TunnelReport) {
    if report.paths.iter().any(|p| p.wan.is_some()) {
        print!("{}", wan_table(report));
        return;
    }
    let header = |last: &str| {
        println!(
            "{:<21} {:>9} {:>9} {:>11} {:>11}   {last}",
            "path", "down Gb/s", "up Gb/s", "RTT p50 µs", "RTT p99 µs"
        )
    };
    let f = |v: Option<f64>, prec: usize| match v {
        Some(x) => format!("{x:.prec$}"),
        None => "-".into(),
    };
    let row = |p: &PathResult| {
        println!(
            "{:<21} {:>9} {:>9} {:>11} {:>11}   {}",
            p.name,
            f(p.gbit_per_s, 2),
            f(p.upload_gbit_per_s, 2),
            f(p.rtt_p50_us, 0),
            f(p.rtt_p99_us, 0),
            note(report, p)
        );
    };
    let (http, tcp): (Vec<&PathResult>, Vec<&PathResult>) =
        report.paths.iter().partition(|p| is_http_path(&p.name));
    if !tcp.is_empty() {
        header("tailnet vs this path");
        tcp.into_iter().for_each(row);
    }
    if !http.is_empty() {
        if report.paths.len() > http.len() {
            println!();
        }
        println!(
            "HTTP through the tailnet, our node vs Go tsnet (Caddy): GET of a large body \
             (down), 64-byte GETs on one keep-alive connection (RTT)"
        );
        header("ours vs this path");
        http.into_iter().for_each(row);
    }
}

/// The `--wan` table: a block per condition, Mbit/s, ramp-up,
/// retransmissions and RTT in milliseconds.
pub fn wan_table(report: &TunnelReport) -> String {
    use std::fmt::Write;
    let f = |v: Option<f64>, scale: f64, prec: usize| match v {
        Some(x) => format!("{:.prec$}", x * scale),
        None => "-".into(),
    };
    let n = |v: Option<u64>| v.map_or("-".to_string(), |x| x.to_string());
    let mut out = String::new();
    let mut conditions: Vec<&str> = Vec::new();
    for p in &report.paths {
        let c = p.wan.as_deref().unwrap_or("");
        if !conditions.contains(&c) {
            conditions.push(c);
        }
    }
    for (i, c) in conditions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "WAN: {c} (one stream each way, every datagram through the relay)"
        );
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>6} {:>7} {:>9} {:>6} {:>7} {:>8} {:>8}   note",
            "path",
            "down Mb/s",
            "90% s",
            "retrans",
            "up Mb/s",
            "90% s",
            "retrans",
            "p50 ms",
            "p99 ms"
        );
        for p in report
            .paths
            .iter()
            .filter(|p| p.wan.as_deref().unwrap_or("") == *c)
        {
            let note = match &p.skipped {
                Some(why) => format!("skipped: {why}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "{:<14} {:>9} {:>6} {:>7} {:>9} {:>6} {:>7} {:>8} {:>8}   {note}",
                p.name,
                f(p.gbit_per_s, 1000.0, 1),
                f(p.ramp_s, 1.0, 1),
                n(p.retrans),
                f(p.upload_gbit_per_s, 1000.0, 1),
                f(p.upload_ramp_s, 1.0, 1),
                n(p.upload_retrans),
                f(p.rtt_p50_us, 1e-3, 1),
                f(p.rtt_p99_us, 1e-3, 1),
            );
        }
    }
    out
}
