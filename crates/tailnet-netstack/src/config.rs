use serde::{Deserialize, Serialize};
use std::time::Duration;

/// TCP congestion control algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// No congestion control: send whatever the peer's window allows.
    None,
    /// TCP Reno.
    Reno,
    /// CUBIC (the default, as in Linux).
    #[default]
    Cubic,
    /// A simplified BBR (v1): paces at the measured bottleneck bandwidth
    /// and does not back off on random loss (vendor-notes/smoltcp.md).
    Bbr,
}

/// Netstack tunables. The defaults are chosen for throughput on paths from
/// loopback to ~100 ms RTT; each is recorded with its reason in
/// `vendor-notes/smoltcp.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetstackConfig {
    /// IP MTU of the virtual interface (Tailscale's is 1280).
    pub mtu: usize,
    /// Per-connection TCP receive buffer in bytes at the start (this is the
    /// window); it grows up to `tcp_buffer_max` when it limits a transfer.
    pub tcp_rx_buffer: usize,
    /// Per-connection TCP send buffer in bytes at the start; grows like the
    /// receive buffer and shrinks back when idle.
    pub tcp_tx_buffer: usize,
    /// Largest a connection's receive or send buffer grows to (16 MiB:
    /// 1.9 Gbit/s at 70 ms).
    pub tcp_buffer_max: usize,
    /// Node-wide cap on what all connections' buffers hold beyond their
    /// initial sizes, bytes.
    pub tcp_memory_budget: usize,
    /// Nagle's algorithm (off: writes go out at once).
    pub nagle: bool,
    /// Delayed ACK; None acknowledges every segment at once.
    #[serde(with = "opt_millis")]
    pub ack_delay: Option<Duration>,
    /// Congestion control.
    pub congestion: Congestion,
    /// Pace TCP data at the congestion window's rate (as Linux does with
    /// `fq`), so large windows do not overflow shallow bottleneck queues.
    pub tcp_pacing: bool,
    /// Default accept backlog of a listener.
    pub listen_backlog: usize,
    /// Give up on a connection whose peer stops answering for this long.
    #[serde(with = "opt_millis")]
    pub tcp_timeout: Option<Duration>,
    /// Lower bound of TCP's retransmission timeout (RFC 6298 says 1 s;
    /// Linux and this default use 200 ms).
    #[serde(with = "millis")]
    pub tcp_min_rto: Duration,
    /// Send TCP keep-alives after this much idle time.
    #[serde(with = "opt_millis")]
    pub tcp_keepalive: Option<Duration>,
    /// UDP socket buffer, bytes (each direction).
    pub udp_buffer: usize,
    /// UDP socket buffer, datagrams (each direction).
    pub udp_buffer_packets: usize,
}

impl Default for NetstackConfig {
    fn default() -> Self {
        NetstackConfig {
            mtu: 1280,
            tcp_rx_buffer: 4 << 20,
            tcp_tx_buffer: 2 << 20,
            tcp_buffer_max: 16 << 20,
            tcp_memory_budget: 256 << 20,
            nagle: false,
            ack_delay: Some(Duration::from_millis(1)),
            congestion: Congestion::Cubic,
            tcp_pacing: true,
            listen_backlog: 512,
            tcp_timeout: Some(Duration::from_secs(120)),
            tcp_min_rto: Duration::from_millis(200),
            tcp_keepalive: Some(Duration::from_secs(30)),
            udp_buffer: 1 << 20,
            udp_buffer_packets: 1024,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
