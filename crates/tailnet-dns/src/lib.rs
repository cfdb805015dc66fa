//! The MagicDNS responder of the tailnet node, sans-IO.
//!
//! [`Zone::from_netmap`] turns a netmap into everything the node answers
//! for itself: node names (`<host>.<tailnet domain>` → the node's
//! addresses), the DNS config's extra records, PTR records for tailnet
//! addresses, and **service records**: in a service zone such as
//! `eu-west-1.ts.net`, `<service>.<zone>` answers with every online node of
//! that cluster (peers and self) whose host name is `<service>` or
//! `<service>-<n>`. [`Zone::answer`] takes the bytes of one query and
//! returns the bytes of the response, or says the query must be forwarded
//! to an upstream resolver (the shell does that over the underlay).
//!
//! The rules, in the order they are checked, are listed on
//! [`Zone::answer`]; the facts behind them are in
//! `shared/protocol/magicdns.md` (Tailscale 1.90.9's quad-100 resolver).
//! Nothing here does I/O or keeps time; a zone is rebuilt on every netmap
//! change, and answering never panics on any input (`fuzz/fuzz_targets/
//! dns_query.rs`).

#![forbid(unsafe_code)]

mod client;
mod names;
mod zone;

pub use client::{build_query, parse_response, ClientError, ParsedResponse};
pub use hickory_proto::op::ResponseCode;
pub use hickory_proto::rr::RecordType;
pub use zone::{
    Answer, DnsOptions, Forward, Reply, ServiceZone, Transport, Zone, DEFAULT_CLUSTER_TAG_PREFIX,
    DEFAULT_HOST_TTL, DEFAULT_SERVICE_TTL, DEFAULT_SERVICE_ZONE_SUFFIX, QUAD_100_V4, QUAD_100_V6,
};

/// The size a UDP response may have over the node's virtual interface:
/// the netstack's 1280-byte MTU less the IPv6 and UDP headers (smoltcp
/// does not fragment).
pub const NETSTACK_UDP_MAX: u16 = 1280 - 40 - 8;

#[cfg(test)]
mod tests;
