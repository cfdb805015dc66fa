//! Who is calling: [`Node::whois`] names the node behind a tailnet
//! address from the netmap, like tsnet's `LocalClient().WhoIs`, so a
//! server can authorise a caller by its tags or user.

use crate::node::Node;
use std::net::{IpAddr, SocketAddr};
use tailnet_wire::control::{Netmap, Node as ControlNode};
use tailnet_wire::PublicKey;

/// The node behind a tailnet address ([`Node::whois`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WhoIs {
    /// Its node key.
    pub node_key: PublicKey,
    /// Control's node ID (0 for a statically configured peer).
    pub node_id: i64,
    /// Its MagicDNS name without the trailing dot
    /// (`web-1.tailnet.example`; empty for a static peer).
    pub name: String,
    /// The host name it reported (empty when unknown).
    pub host_name: String,
    /// Its ACL tags (`tag:web`). A tagged node belongs to no user.
    pub tags: Vec<String>,
    /// The user owning it, for an untagged node control told us about.
    pub user: Option<WhoIsUser>,
    /// Its tailnet addresses.
    pub addresses: Vec<IpAddr>,
    /// Its operating system as it reported it (`linux`, `macOS`, …;
    /// empty when unknown).
    pub os: String,
    /// Its node capabilities (`CapMap` keys and the deprecated list).
    pub capabilities: Vec<String>,
}

impl WhoIs {
    /// Whether the node carries `tag` (`"tag:web"`).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// The user owning a node ([`WhoIs::user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WhoIsUser {
    /// Control's user ID.
    pub id: i64,
    /// `alice@example.com`.
    pub login_name: String,
    /// `Alice Smith`.
    pub display_name: String,
}

fn from_control(netmap: &Netmap, n: &ControlNode) -> WhoIs {
    let user = if n.tags.is_empty() {
        netmap.user_profiles().get(&n.user).map(|u| WhoIsUser {
            id: u.id,
            login_name: u.login_name.clone(),
            display_name: u.display_name.clone(),
        })
    } else {
        None
    };
    let mut capabilities: Vec<String> = n.cap_map.keys().cloned().collect();
    for c in &n.capabilities {
        if !capabilities.contains(c) {
            capabilities.push(c.clone());
        }
    }
    let hostinfo = n.hostinfo.as_ref();
    WhoIs {
        node_key: PublicKey::from(n.key),
        node_id: n.id,
        name: n.name.trim_end_matches('.').to_string(),
        host_name: hostinfo.map(|h| h.hostname.clone()).unwrap_or_default(),
        tags: n.tags.clone(),
        user,
        addresses: n.addresses.iter().map(|p| p.addr()).collect(),
        os: hostinfo.map(|h| h.os.clone()).unwrap_or_default(),
        capabilities,
    }
}

impl Node {
    /// The node behind `addr` (its port is ignored), from the netmap: the
    /// peer (or this node) with that tailnet address, with its name,
    /// tags, user, addresses, OS and capabilities. `None` when no node has
    /// the address. Cheap (a scan of the netmap in memory): call it per
    /// accepted connection with the stream's `peer_addr()`, or use
    /// [`Node::listen`], whose `accept` hands it out.
    ///
    /// A statically configured node ([`Node::start`]) knows its peers only
    /// by key and allowed IPs: it answers with those, the rest empty.
    ///
    /// ```no_run
    /// # async fn f(node: tailnet::Node) -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = node.tcp_listen(8080)?;
    /// let (stream, peer) = listener.accept().await?;
    /// match node.whois(peer) {
    ///     Some(who) if who.has_tag("tag:web") => { /* serve */ }
    ///     _ => drop(stream),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn whois(&self, addr: SocketAddr) -> Option<WhoIs> {
        self.whois_ip(addr.ip())
    }

    /// [`whois`](Self::whois) by address alone.
    pub fn whois_ip(&self, ip: IpAddr) -> Option<WhoIs> {
        if let Some(rx) = self.watch_netmap() {
            let netmap = rx.borrow();
            let found = netmap
                .self_node()
                .into_iter()
                .chain(netmap.peers())
                .find(|n| n.addresses.iter().any(|p| p.addr() == ip));
            return found.map(|n| from_control(&netmap, n));
        }
        let key = self.route_to(ip)?;
        Some(WhoIs {
            node_key: key,
            node_id: 0,
            name: String::new(),
            host_name: String::new(),
            tags: Vec::new(),
            user: None,
            addresses: vec![ip],
            os: String::new(),
            capabilities: Vec::new(),
        })
    }
}
