//! Helpers shared by the test binaries.

#![allow(clippy::unwrap_used)] // test support: its helpers unwrap too

use std::io::Write;

/// `promtool check metrics` on `text`; skipped only when promtool is
/// missing and TAILNET_SKIP_INTEROP=1.
pub fn promtool_check(text: &str) {
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("TAILNET_SKIP_INTEROP").as_deref() == Ok("1") => {
            eprintln!("SKIPPED promtool check: promtool not runnable ({e}); install the Debian package prometheus");
            return;
        }
        Err(e) => panic!("promtool not runnable ({e}): run scripts/install-test-deps.sh (Debian package prometheus), or set TAILNET_SKIP_INTEROP=1"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
