//! `tailcfg.FilterRule` and its parts (tailcfg.go L1479-1736 at v1.90.9).
//!
//! These are the JSON shapes only; matching packets against them is the
//! packet filter's job. Two facts from `filter.md` the types cannot
//! enforce: a non-empty `SrcBits` or any `Bits` makes the Go client reject
//! the *whole* filter, so a coordinator must never send them; and an empty
//! `IPProto` means TCP, UDP, ICMPv4 and ICMPv6.

use super::node::CapMap;
use super::serde_util::{map_null_values, null_as_default};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One allow rule (`tailcfg.FilterRule`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterRule {
    /// Sources: `"*"`, an IP, a CIDR, `"a-b"` range, or `"cap:<cap>"`.
    #[serde(rename = "SrcIPs", default, deserialize_with = "null_as_default")]
    pub src_ips: Vec<String>,
    /// Deprecated (pre-capver 7). Non-empty makes the Go client reject the
    /// whole filter; never send it.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub src_bits: Vec<i64>,
    /// Destinations and their port ranges.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dst_ports: Vec<NetPortRange>,
    /// IANA protocol numbers; empty = TCP, UDP, ICMPv4, ICMPv6. Values
    /// outside 0..=255 are reserved and ignored by clients.
    #[serde(
        rename = "IPProto",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_proto: Vec<i64>,
    /// Application capabilities granted to the sources (no network access;
    /// exclusive with `dst_ports`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cap_grant: Vec<CapGrant>,
}

impl FilterRule {
    /// The allow-all rule, `tailcfg.FilterAllowAll`'s only entry:
    /// `{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}`.
    pub fn allow_all() -> Self {
        FilterRule {
            src_ips: vec!["*".into()],
            dst_ports: vec![NetPortRange {
                ip: "*".into(),
                bits: None,
                ports: PortRange::ANY,
            }],
            ..FilterRule::default()
        }
    }

    /// Whether the Go client would reject the whole filter because of this
    /// rule (deprecated `SrcBits` or `Bits` present).
    pub fn uses_deprecated_bits(&self) -> bool {
        !self.src_bits.is_empty() || self.dst_ports.iter().any(|d| d.bits.is_some())
    }
}

/// Destinations of a rule (`tailcfg.NetPortRange`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetPortRange {
    /// `"*"`, an IP, a CIDR or an `"a-b"` range.
    #[serde(rename = "IP", default)]
    pub ip: String,
    /// Deprecated; present makes the Go client reject the whole filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<i64>,
    /// Inclusive port range.
    #[serde(default)]
    pub ports: PortRange,
}

/// An inclusive port range (`tailcfg.PortRange`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortRange {
    /// First port.
    #[serde(default)]
    pub first: u16,
    /// Last port (inclusive).
    #[serde(default)]
    pub last: u16,
}

impl PortRange {
    /// Every port, 0-65535.
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: 65535,
    };

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// Capabilities granted by a rule (`tailcfg.CapGrant`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapGrant {
    /// Destination prefixes the grant applies to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub dsts: Vec<IpNet>,
    /// Deprecated capability names.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub caps: Vec<String>,
    /// Capabilities and their values.
    #[serde(
        default,
        deserialize_with = "map_null_values",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub cap_map: CapMap,
}
