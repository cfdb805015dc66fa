//! `tailcfg.DNSConfig` (tailcfg.go L1738-1823 at v1.90.9) and
//! `dnstype.Resolver` (`types/dnstype/dnstype.go`).

use super::serde_util::{is_false, map_null_values, null_as_default};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// DNS settings for a node (`tailcfg.DNSConfig`). Every field is
/// `omitempty` in Go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    /// Default upstream resolvers ("override local DNS").
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resolvers: Vec<Resolver>,
    /// Split DNS: name suffix → resolvers. An empty list means "answer
    /// locally at 100.100.100.100" (authoritative, e.g. for `extra_records`).
    #[serde(
        default,
        deserialize_with = "map_null_values",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub routes: BTreeMap<String, Vec<Resolver>>,
    /// Resolvers used only when split DNS needs a default and none is set.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub fallback_resolvers: Vec<Resolver>,
    /// Search domains, FQDNs without a trailing dot.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub domains: Vec<String>,
    /// Turns MagicDNS on (the name is historical).
    #[serde(default, skip_serializing_if = "is_false")]
    pub proxied: bool,
    /// Deprecated (capver 9-13): global name servers.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nameservers: Vec<IpAddr>,
    /// Names control can get TLS certificates for (no trailing dot).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cert_domains: Vec<String>,
    /// Extra A/AAAA records served by MagicDNS.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub extra_records: Vec<DnsRecord>,
    /// Suffixes an exit node's DNS proxy must not answer.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exit_node_filtered_set: Vec<String>,
}

/// One DNS resolver (`dnstype.Resolver`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resolver {
    /// `"1.1.1.1"` (port 53), `"1.1.1.1:5353"`, or a DoH `"https://…"` URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// Suggested addresses of a DoH/DoT server named by host name.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bootstrap_resolution: Vec<IpAddr>,
    /// Keep using this resolver while an exit node is in use.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_with_exit_node: bool,
}

impl Resolver {
    /// A plain resolver at `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        Resolver {
            addr: addr.into(),
            ..Resolver::default()
        }
    }
}

/// An extra MagicDNS record (`tailcfg.DNSRecord`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsRecord {
    /// Fully qualified name; the trailing dot is optional.
    #[serde(default)]
    pub name: String,
    /// `""` (inferred from the value), `"A"` or `"AAAA"`; other types are
    /// ignored by clients.
    #[serde(rename = "Type", default, skip_serializing_if = "String::is_empty")]
    pub record_type: String,
    /// The IP address, as text.
    #[serde(default)]
    pub value: String,
}
