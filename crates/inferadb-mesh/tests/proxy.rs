//! `up --socks5` and `up --http-proxy` as a program that is not on the
//! tailnet uses them: real curl reaches a tailnet service by MagicDNS
//! name (short and FQDN) and by IPv6 address through SOCKS5
//! (`--socks5-hostname`), and through the HTTP proxy both as a plain
//! `http://` request (`-x`) and as a CONNECT tunnel (`-p -x`); an unknown
//! name fails that request only, with the reason.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{coordinator_with_key, path, spawn_until, text};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// curl with a time limit; its output is small (the 64-byte answer or
/// an error line).
fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs (Debian package curl)")
}

/// Retries `args` until curl succeeds (the proxy's node learns B from
/// its netmap shortly after joining), returning the body.
fn curl_until_ok(args: &[&str]) -> Vec<u8> {
    for attempt in 0..50 {
        let out = curl(args);
        if out.status.success() {
            return out.stdout;
        }
        assert!(attempt < 49, "curl {args:?}: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!()
}

#[test]
fn curl_reaches_tailnet_names_through_socks5_and_the_http_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (_c, url, key) = coordinator_with_key(dir.path());
    let (_b, b_ready) = spawn_until(
        &[
            "up",
            "--control-url",
            &url,
            "--auth-key",
            &key,
            "--hostname",
            "inferadb-control-0",
            "--state-dir",
            path(&dir.path().join("b")),
            "--listen",
            "127.0.0.1:0",
            "--serve",
            "http:8080",
        ],
        "\"state\":\"Running\"",
    );
    let (_a, a_ready) = spawn_until(
        &[
            "up",
            "--control-url",
            &url,
            "--auth-key",
            &key,
            "--hostname",
            "inferadb-engine-0",
            "--state-dir",
            path(&dir.path().join("a")),
            "--listen",
            "127.0.0.1:0",
            "--socks5",
            "127.0.0.1:0",
            "--http-proxy",
            "127.0.0.1:0",
        ],
        "\"state\":\"Running\"",
    );
    let a: Value = serde_json::from_str(&a_ready).unwrap();
    let b: Value = serde_json::from_str(&b_ready).unwrap();
    let socks = a["socks5"]
        .as_str()
        .expect("the ready line names the SOCKS5 port");
    let http = a["http_proxy"]
        .as_str()
        .expect("the ready line names the HTTP proxy port");
    let fqdn = b["name"]
        .as_str()
        .unwrap()
        .trim_end_matches('.')
        .to_string();
    let v6 = b["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.contains(':'))
        .expect("B has an IPv6 tailnet address")
        .to_string();
    let small = vec![b'x'; 64];

    // SOCKS5, the name resolved by the proxy (MagicDNS).
    let body = curl_until_ok(&[
        "--socks5-hostname",
        socks,
        "http://inferadb-control-0:8080/small",
    ]);
    assert_eq!(body, small);
    let body = curl_until_ok(&[
        "--socks5-hostname",
        socks,
        &format!("http://{fqdn}:8080/small"),
    ]);
    assert_eq!(body, small);
    let body = curl_until_ok(&[
        "--socks5-hostname",
        socks,
        &format!("http://[{v6}]:8080/small"),
    ]);
    assert_eq!(body, small);

    // The HTTP proxy: a plain request, then a CONNECT tunnel.
    let body = curl_until_ok(&[
        "-x",
        &format!("http://{http}"),
        "http://inferadb-control-0:8080/small",
    ]);
    assert_eq!(body, small);
    let body = curl_until_ok(&[
        "-p",
        "-x",
        &format!("http://{http}"),
        &format!("http://{fqdn}:8080/small"),
    ]);
    assert_eq!(body, small);

    // An unknown name: that request fails with the reason, the proxies
    // stay up.
    let out = curl(&["--socks5-hostname", socks, "http://nobody-here:8080/small"]);
    assert!(!out.status.success(), "SOCKS5 to an unknown name succeeded");
    let out = curl(&[
        "-x",
        &format!("http://{http}"),
        "-w",
        "\n%{http_code}",
        "http://nobody-here:8080/small",
    ]);
    let shown = text(&out.stdout);
    assert!(shown.ends_with("\n502"), "{shown}");
    assert!(shown.contains("unknown name nobody-here"), "{shown}");
    let body = curl_until_ok(&[
        "--socks5-hostname",
        socks,
        "http://inferadb-control-0:8080/small",
    ]);
    assert_eq!(body, small);
}
