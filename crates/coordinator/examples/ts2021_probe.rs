//! Manual interop probe: serves the coordinator's HTTP/1.1 front door on a
//! loopback port and prints what each Noise connection sends first
//! (decrypted), so a real client (Caddy's tsnet) can be pointed at it.
//!
//! `cargo run -p coordinator --example ts2021_probe -- 127.0.0.1:8099 /tmp/coord-state`

use std::sync::Arc;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8099".into());
    let dir = args
        .next()
        .unwrap_or_else(|| "/tmp/coord-probe-state".into());
    let store =
        coordinator::Store::open(std::path::Path::new(&dir)).map_err(std::io::Error::other)?;
    let key = coordinator::http::ControlKey::load(&store).map_err(std::io::Error::other)?;
    eprintln!("probe: listening on {addr}, publicKey {:?}", key.public());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    coordinator::http::serve(listener, Arc::new(store), |mut conn| async move {
        eprintln!(
            "probe: handshake done: machine {:?} version {}",
            conn.machine_key, conn.protocol_version
        );
        let mut buf = vec![0u8; 8192];
        let mut plain = Vec::new();
        while plain.len() < 64 {
            match conn.io.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = conn.transport.open_into(&buf[..n], &mut plain) {
                        eprintln!("probe: record error {e}");
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("probe: read error {e}");
                    break;
                }
            }
        }
        eprintln!(
            "probe: first plaintext ({} bytes): {:?}",
            plain.len(),
            String::from_utf8_lossy(&plain[..plain.len().min(64)])
        );
    })
    .await
}
