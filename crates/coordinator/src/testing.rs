//! For tests of this crate and of its clients: a self-signed certificate
//! to serve TLS with ([`crate::server::ServerBuilder::tls`]).

use crate::server::TlsFiles;
use std::net::IpAddr;
use std::path::Path;

/// Writes `cert.pem` and `key.pem` into `dir`: a one-day self-signed
/// P-256 certificate for `ip` (CN and an IP subject alternative name,
/// which Go checks), made by the `openssl` command. Panics when that
/// fails (Debian package openssl).
pub fn self_signed(dir: &Path, ip: IpAddr) -> TlsFiles {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={ip}"))
        .arg("-addext")
        .arg(format!("subjectAltName=IP:{ip}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (Debian package openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    TlsFiles { cert, key }
}
