//! The builder of a node that joins a tailnet through control: the
//! settings `Node::builder()` collects; `up` (in `control.rs`) joins.

use crate::node::Node;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tailnet_netstack::NetstackConfig;

impl Node {
    /// A node that joins a tailnet through a control server:
    /// `Node::builder().control_url(..).auth_key(..).hostname(..)
    /// .state_dir(..).up().await`.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }
}

/// Builds a node that joins a tailnet: `Node::builder().control_url(..)
/// .auth_key(..).hostname(..).state_dir(..).up().await`.
#[derive(Clone)]
pub struct NodeBuilder {
    pub(crate) control_url: Option<String>,
    pub(crate) auth_key: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) ephemeral: bool,
    pub(crate) tags: Vec<String>,
    pub(crate) listen: SocketAddr,
    pub(crate) netstack: NetstackConfig,
    pub(crate) timeout: Duration,
    pub(crate) magic_dns: bool,
    pub(crate) dns_options: tailnet_dns::DnsOptions,
    pub(crate) dns_listen: Option<SocketAddr>,
    pub(crate) derp_http: Option<bool>,
    pub(crate) always_use_derp: bool,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("control_url", &self.control_url)
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("hostname", &self.hostname)
            .field("state_dir", &self.state_dir)
            .field("ephemeral", &self.ephemeral)
            .field("tags", &self.tags)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Default for NodeBuilder {
    fn default() -> Self {
        NodeBuilder {
            control_url: None,
            auth_key: None,
            hostname: None,
            state_dir: None,
            ephemeral: false,
            tags: Vec::new(),
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            netstack: NetstackConfig::default(),
            timeout: Duration::from_secs(60),
            magic_dns: true,
            dns_options: tailnet_dns::DnsOptions::default(),
            dns_listen: None,
            derp_http: None,
            always_use_derp: false,
        }
    }
}

impl NodeBuilder {
    /// The control server: `http://127.0.0.1:PORT` for the embedded
    /// coordinator on loopback, `https://…` for Tailscale or Headscale.
    pub fn control_url(mut self, url: impl Into<String>) -> Self {
        self.control_url = Some(url.into());
        self
    }

    /// A pre-auth key (`tskey-auth-…`). Needed the first time; a node with
    /// a state directory rejoins without one.
    pub fn auth_key(mut self, key: impl Into<String>) -> Self {
        self.auth_key = Some(key.into());
        self
    }

    /// The host name to register (default: the machine's).
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.hostname = Some(name.into());
        self
    }

    /// Where keys and the registration live (created 0700, files 0600,
    /// locked against a second process).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// An ephemeral node keeps nothing on disk and is removed by control
    /// soon after it disconnects.
    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }

    /// ACL tags to request (control decides; auth keys usually carry them).
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// The UDP address WireGuard binds (default `0.0.0.0:0`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Netstack tuning.
    pub fn netstack(mut self, config: NetstackConfig) -> Self {
        self.netstack = config;
        self
    }

    /// MagicDNS at 100.100.100.100 inside the netstack (default on; see
    /// [`crate::dns`]).
    pub fn magic_dns(mut self, on: bool) -> Self {
        self.magic_dns = on;
        self
    }

    /// Service zones and TTLs of MagicDNS (default: every tag
    /// `tag:inferadb-<cluster>` makes the zone `<cluster>.ts.net`).
    pub fn dns_options(mut self, options: tailnet_dns::DnsOptions) -> Self {
        self.dns_options = options;
        self
    }

    /// Also serve MagicDNS on this OS address, UDP and TCP (e.g.
    /// `127.0.0.1:5353`, port 0 for any), so co-located processes and
    /// `dig @127.0.0.1 -p PORT` can ask it. [`Node::dns_listen_addr`]
    /// tells the port.
    pub fn dns_listen(mut self, addr: SocketAddr) -> Self {
        self.dns_listen = Some(addr);
        self.magic_dns = true;
        self
    }

    /// Speak plain HTTP to every DERP relay of the map, as Go's
    /// `TS_DEBUG_USE_DERP_HTTP=1` does (default port 3340). Unset: that
    /// environment variable decides. Otherwise relays get TLS, except our
    /// coordinator's own relay on a plain `http://` control URL (see
    /// `vendor-notes/derp.md`).
    pub fn derp_http(mut self, plain: bool) -> Self {
        self.derp_http = Some(plain);
        self
    }

    /// Reach peers through the DERP relay only, never directly, as Go's
    /// `TS_DEBUG_ALWAYS_USE_DERP=1` does (that variable turns it on too).
    /// For debugging and for measuring relayed paths.
    pub fn always_use_derp(mut self, on: bool) -> Self {
        self.always_use_derp = on;
        self
    }

    /// How long [`up`](Self::up) may take (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}
