//! The STUN responder beside the DERP region (`shared/protocol/derp.md`
//! §7): it answers Tailscale binding requests on the coordinator's UDP
//! port with the address each request came from. Go clients use it to
//! learn their endpoint and, in netcheck, to see that UDP works (which
//! also stops netcheck's captive-portal probes of Tailscale's servers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tailnet_wire::stun;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// What the responder did.
#[derive(Debug, Default)]
pub struct StunCounters {
    /// Binding requests answered.
    pub answered: AtomicU64,
    /// Datagrams dropped (not a Tailscale binding request).
    pub dropped: AtomicU64,
}

/// Answers binding requests on `sock` until `shutdown` turns true.
pub(crate) async fn serve(
    sock: UdpSocket,
    counters: Arc<StunCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "STUN receive error");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        match stun::parse_binding_request(&buf[..n]) {
            Ok(tx) => {
                let resp = stun::binding_response(tx, from);
                if let Err(e) = sock.send_to(&resp, from).await {
                    tracing::debug!(error = %e, %from, "STUN reply failed");
                } else {
                    counters.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, %from, len = n, "dropped a STUN datagram");
            }
        }
    }
}
