//! UDP over the tailnet: an echo server on one node, a client that dials
//! it by MagicDNS short name (`dial_udp`) and checks every reply.
//!
//! Self-contained: an embedded coordinator on loopback, two nodes; exits
//! non-zero when a reply is wrong or missing.
//!
//!     cargo run -p tailnet --example udp_echo

mod common;

use std::time::Duration;

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let tailnet = common::Tailnet::start().await?;
    let server = tailnet.join("udp-echo", &["tag:echo"]).await?;
    let client = tailnet.join("udp-client", &["tag:client"]).await?;

    let sock = server.udp_bind(7)?;
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });

    common::wait_for_peer(&client, &common::fqdn(&server)).await?;
    let conn = client.dial_udp("udp-echo:7").await?;
    println!("dialed udp-echo:7 = {}", conn.peer_addr());
    let mut buf = vec![0u8; 2048];
    for i in 0..5u32 {
        let msg = format!("datagram {i}");
        // UDP may lose a datagram (the first waits for the WireGuard
        // handshake): resend a few times.
        let mut answered = false;
        for _ in 0..5 {
            conn.send(msg.as_bytes()).await?;
            if let Ok(n) = tokio::time::timeout(Duration::from_secs(1), conn.recv(&mut buf)).await {
                let n = n?;
                if &buf[..n] != msg.as_bytes() {
                    return Err(format!("echo of {msg:?} came back as {:?}", &buf[..n]).into());
                }
                answered = true;
                break;
            }
        }
        if !answered {
            return Err(format!("no echo of {msg:?}").into());
        }
        println!("echoed {msg:?}");
    }

    echo.abort();
    server.shutdown().await;
    client.shutdown().await;
    tailnet.shutdown().await;
    println!("ok");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .map_err(|_| "the example did not finish within 120 s")?
}
