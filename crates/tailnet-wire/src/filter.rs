//! The ACL packet filter: `tailcfg.FilterRule`s compiled into a matcher,
//! and the per-packet decision for packets arriving from peers.
//!
//! Semantics follow the Go client (`wgengine/filter` at v1.90.9; facts in
//! `../shared/protocol/filter.md`):
//!
//! - Every rule is an independent *allow*; there is no deny and no order.
//! - Only **new inbound flows** are checked. TCP is stateless: a segment
//!   that is not a SYN without ACK always passes (replies of connections we
//!   opened, and the rest of connections a rule admitted). A SYN needs a
//!   rule for its protocol, source, destination address and port.
//! - UDP and SCTP: a packet passes if it belongs to a flow this node sent
//!   on (the reversed 5-tuple of an outbound packet, kept in an LRU of
//!   [`FLOW_TABLE_MAX`] entries that survives filter updates), or if a rule
//!   admits it.
//! - ICMP: echo replies and errors (unreachable, time exceeded, parameter
//!   problem, packet too big) always pass; other ICMP (echo requests) pass
//!   when any rule admits the source to the destination *address*,
//!   whatever its protocols and ports (so a TCP-only rule also allows
//!   ping, as in Go).
//! - Other protocols pass only if a rule lists the protocol, the source,
//!   and the destination with *all* ports. TSMP (99) always passes.
//! - Before any rule: an empty packet passes; unparseable packets,
//!   multicast and link-local destinations (but `169.254.169.254`) are
//!   dropped; non-first IPv4 fragments pass; a destination that is not one
//!   of the node's own addresses is dropped.
//! - Outbound packets are never filtered; outbound UDP/SCTP is recorded.
//!
//! Rule compilation is as forgiving as Go's: a bad address entry is
//! skipped (and reported in [`Rules::errors`]), the rest is kept; an
//! `IPProto` value outside 0..=255 is ignored; `cap:` sources never match
//! (this node knows no peer capabilities). The deprecated `SrcBits` or
//! `Bits` make the whole filter rejected: nothing matches, like Go.
//!
//! Everything here is sans-IO and panic-free on arbitrary input
//! (`fuzz/fuzz_targets/packet_filter.rs`).

use crate::control::{FilterRule, PortRange};
use crate::ip::{IpPacket, Protocol};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// Protocols a rule with an empty `IPProto` allows: TCP, UDP, ICMPv4, ICMPv6.
pub const DEFAULT_PROTOCOLS: [u8; 4] = [6, 17, 1, 58];

/// Outbound UDP/SCTP flows remembered for their replies (Go's `lruMax`).
pub const FLOW_TABLE_MAX: usize = 512;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_TSMP: u8 = 99;
const PROTO_SCTP: u8 = 132;

/// What to do with an inbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Hand it to the netstack.
    Accept,
    /// Drop it, for this reason.
    Drop(DropReason),
}

/// Why the filter dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// A new flow no rule allows (also: no filter received yet, or a
    /// filter with no rules).
    NoRule,
    /// Some rule allows the source to this destination and port, but not
    /// with this protocol.
    Protocol,
    /// The destination is not one of this node's addresses.
    NotLocal,
    /// Multicast or link-local destination.
    SpecialDestination,
    /// Not a parseable IP packet, or its transport header is cut short.
    Malformed,
}

impl DropReason {
    /// Every reason, for counters.
    pub const ALL: [DropReason; 5] = [
        DropReason::NoRule,
        DropReason::Protocol,
        DropReason::NotLocal,
        DropReason::SpecialDestination,
        DropReason::Malformed,
    ];

    /// A short stable name (`no_rule`, `protocol`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoRule => "no_rule",
            DropReason::Protocol => "protocol",
            DropReason::NotLocal => "not_local",
            DropReason::SpecialDestination => "special_destination",
            DropReason::Malformed => "malformed",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A part of a filter that was skipped while compiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// `SrcBits` or `Bits` present: the whole filter is rejected.
    #[error("deprecated SrcBits/Bits in rule {rule}: the whole filter is rejected")]
    DeprecatedBits {
        /// Index of the rule.
        rule: usize,
    },
    /// An address entry that is not `*`, an IP, a CIDR without host bits
    /// or an `a-b` range.
    #[error("rule {rule}: bad address {entry:?}")]
    BadAddress {
        /// Index of the rule.
        rule: usize,
        /// The entry (truncated to 64 characters).
        entry: String,
    },
    /// `cap:` is only allowed in `SrcIPs`.
    #[error("rule {rule}: capability {entry:?} in DstPorts")]
    CapInDestination {
        /// Index of the rule.
        rule: usize,
        /// The entry (truncated to 64 characters).
        entry: String,
    },
}

/// A set of addresses as sorted, merged inclusive ranges per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// Every IPv4 and IPv6 address (`"*"`).
    pub fn any() -> IpSet {
        IpSet {
            v4: vec![(0, u32::MAX)],
            v6: vec![(0, u128::MAX)],
        }
    }

    /// Exactly these addresses.
    pub fn of(addrs: &[IpAddr]) -> IpSet {
        let mut b = IpSetBuilder::default();
        for a in addrs {
            b.add_range(*a, *a);
        }
        b.build()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in the set (binary search).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }

    /// Parses one filter address entry: `*`, `a.b.c.d`, a CIDR with no
    /// host bits, or an inclusive `a-b` range of one family. `None` if it
    /// is none of these (`cap:` entries included).
    pub fn parse_entry(s: &str) -> Option<IpSet> {
        let mut b = IpSetBuilder::default();
        b.add_entry(s).then(|| b.build())
    }
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x.
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && ranges[i - 1].1 >= x
}

#[derive(Default)]
struct IpSetBuilder {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSetBuilder {
    /// Adds `lo..=hi` if both are of one family and `lo <= hi`.
    fn add_range(&mut self, lo: IpAddr, hi: IpAddr) -> bool {
        match (lo, hi) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => {
                self.v4.push((a.into(), b.into()));
                true
            }
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => {
                self.v6.push((a.into(), b.into()));
                true
            }
            _ => false,
        }
    }

    fn add_entry(&mut self, s: &str) -> bool {
        if s == "*" {
            self.v4.push((0, u32::MAX));
            self.v6.push((0, u128::MAX));
            return true;
        }
        if s.contains('/') {
            let Ok(net) = s.parse::<ipnet::IpNet>() else {
                return false;
            };
            if net.trunc() != net {
                // Host bits set: Go rejects "10.0.0.1/8".
                return false;
            }
            return self.add_range(net.network(), net.broadcast());
        }
        if let Some((a, b)) = s.split_once('-') {
            if b.contains('-') {
                return false;
            }
            return match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
                (Ok(a), Ok(b)) => self.add_range(a, b),
                _ => false,
            };
        }
        match s.parse::<IpAddr>() {
            Ok(a) => self.add_range(a, a),
            Err(_) => false,
        }
    }

    fn build(self) -> IpSet {
        IpSet {
            v4: merge(self.v4),
            v6: merge(self.v6),
        }
    }
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge<T: Ord + Copy + Step>(mut r: Vec<(T, T)>) -> Vec<(T, T)> {
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        if let Some(last) = out.last_mut() {
            if lo <= last.1 || last.1.next() == Some(lo) {
                if hi > last.1 {
                    last.1 = hi;
                }
                continue;
            }
        }
        out.push((lo, hi));
    }
    out
}

trait Step: Sized {
    fn next(self) -> Option<Self>;
}
impl Step for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}
impl Step for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// A set of protocol numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ProtoSet([u64; 4]);

impl ProtoSet {
    fn insert(&mut self, p: u8) {
        self.0[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    fn contains(&self, p: u8) -> bool {
        self.0[usize::from(p >> 6)] & (1 << (p & 63)) != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Match {
    protocols: ProtoSet,
    sources: IpSet,
    destinations: Vec<(IpSet, PortRange)>,
}

/// Compiled filter rules: the allow list a [`Filter`] checks new inbound
/// flows against. Cheap to share (`Arc`); immutable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    matches: Vec<Match>,
    errors: Vec<RuleError>,
}

/// At most this many compile errors are kept (the rest are counted only
/// by being absent; a hostile filter must not make us allocate per entry).
const MAX_ERRORS: usize = 16;

impl Rules {
    /// Rules that allow nothing (a filter of `[]`, or none received yet).
    pub fn deny_all() -> Rules {
        Rules::default()
    }

    /// Compiles `rules`. Never fails: what cannot be used is skipped and
    /// listed in [`errors`](Self::errors) (see the module docs).
    pub fn compile(rules: &[FilterRule]) -> Rules {
        let mut errors = Vec::new();
        let mut push = |e: RuleError| {
            if errors.len() < MAX_ERRORS {
                errors.push(e);
            }
        };
        if let Some(i) = rules.iter().position(FilterRule::uses_deprecated_bits) {
            push(RuleError::DeprecatedBits { rule: i });
            return Rules {
                matches: Vec::new(),
                errors,
            };
        }
        let mut matches = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let mut protocols = ProtoSet::default();
            if r.ip_proto.is_empty() {
                for p in DEFAULT_PROTOCOLS {
                    protocols.insert(p);
                }
            } else {
                for p in &r.ip_proto {
                    if let Ok(p) = u8::try_from(*p) {
                        protocols.insert(p);
                    }
                }
            }
            let mut src = IpSetBuilder::default();
            for s in &r.src_ips {
                if s.starts_with("cap:") {
                    // Peer capabilities are unknown here: never matches.
                    continue;
                }
                if !src.add_entry(s) {
                    push(RuleError::BadAddress {
                        rule: i,
                        entry: clip(s),
                    });
                }
            }
            let mut destinations = Vec::with_capacity(r.dst_ports.len());
            for d in &r.dst_ports {
                if d.ip.starts_with("cap:") {
                    push(RuleError::CapInDestination {
                        rule: i,
                        entry: clip(&d.ip),
                    });
                    continue;
                }
                let mut b = IpSetBuilder::default();
                if b.add_entry(&d.ip) {
                    destinations.push((b.build(), d.ports));
                } else {
                    push(RuleError::BadAddress {
                        rule: i,
                        entry: clip(&d.ip),
                    });
                }
            }
            matches.push(Match {
                protocols,
                sources: src.build(),
                destinations,
            });
        }
        Rules { matches, errors }
    }

    /// What compiling skipped (at most 16 entries).
    pub fn errors(&self) -> &[RuleError] {
        &self.errors
    }

    /// How many rules were compiled.
    pub fn len(&self) -> usize {
        self.matches.len()
    }

    /// Whether there are no rules (everything new is denied).
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }

    /// Full match: protocol, source, destination address and port.
    pub fn allows(&self, proto: u8, src: IpAddr, dst: IpAddr, port: u16) -> bool {
        self.matches.iter().any(|m| {
            m.protocols.contains(proto)
                && m.sources.contains(src)
                && m.destinations
                    .iter()
                    .any(|(net, ports)| ports.contains(port) && net.contains(dst))
        })
    }

    /// Source and destination address only (Go's `matchIPsOnly`, for ICMP).
    pub fn allows_ips(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.matches.iter().any(|m| {
            m.sources.contains(src) && m.destinations.iter().any(|(net, _)| net.contains(dst))
        })
    }

    /// Protocol and addresses, only through destinations open on every
    /// port (Go's `matchProtoAndIPsOnlyIfAllPorts`, for other protocols).
    pub fn allows_all_ports(&self, proto: u8, src: IpAddr, dst: IpAddr) -> bool {
        self.matches.iter().any(|m| {
            m.protocols.contains(proto)
                && m.sources.contains(src)
                && m.destinations
                    .iter()
                    .any(|(net, ports)| *ports == PortRange::ANY && net.contains(dst))
        })
    }

    /// Why a packet that matched nothing was dropped: [`DropReason::Protocol`]
    /// when a rule would admit it with another protocol.
    fn reason(&self, src: IpAddr, dst: IpAddr, port: Option<u16>) -> DropReason {
        let other_proto = self.matches.iter().any(|m| {
            m.sources.contains(src)
                && m.destinations
                    .iter()
                    .any(|(net, ports)| net.contains(dst) && port.is_none_or(|p| ports.contains(p)))
        });
        if other_proto {
            DropReason::Protocol
        } else {
            DropReason::NoRule
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// One UDP/SCTP flow from this node's side: (protocol, our address, our
/// port, peer address, peer port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol (17 or 132).
    pub protocol: u8,
    /// Our address.
    pub local: IpAddr,
    /// Our port.
    pub local_port: u16,
    /// The peer's address.
    pub remote: IpAddr,
    /// The peer's port.
    pub remote_port: u16,
}

/// A bounded LRU set of flows: touching a flow makes it the newest; a new
/// flow beyond the bound evicts the least recently used.
#[derive(Debug, Clone)]
pub struct FlowTable {
    max: usize,
    /// Flow → the stamp of its last use.
    flows: HashMap<FlowKey, u64>,
    /// Uses in order, oldest first; entries whose stamp no longer matches
    /// `flows` are stale and skipped (compacted when the queue grows).
    order: VecDeque<(FlowKey, u64)>,
    stamp: u64,
}

impl Default for FlowTable {
    fn default() -> Self {
        FlowTable::new(FLOW_TABLE_MAX)
    }
}

impl FlowTable {
    /// A table of at most `max` flows (at least 1).
    pub fn new(max: usize) -> FlowTable {
        FlowTable {
            max: max.max(1),
            flows: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
        }
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Records a use of `key` (inserting it, evicting the oldest if full).
    pub fn touch(&mut self, key: FlowKey) {
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some(s) = self.flows.get_mut(&key) {
            *s = stamp;
        } else {
            while self.flows.len() >= self.max {
                let Some((old, s)) = self.order.pop_front() else {
                    break;
                };
                if self.flows.get(&old) == Some(&s) {
                    self.flows.remove(&old);
                }
            }
            self.flows.insert(key, stamp);
        }
        self.order.push_back((key, stamp));
        if self.order.len() > 4 * self.max {
            let flows = &self.flows;
            self.order.retain(|(k, s)| flows.get(k) == Some(s));
        }
    }

    /// Whether `key` is held; a hit counts as a use.
    pub fn hit(&mut self, key: FlowKey) -> bool {
        if self.flows.contains_key(&key) {
            self.touch(key);
            true
        } else {
            false
        }
    }

    /// Whether `key` is held (no use recorded).
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.flows.contains_key(key)
    }
}

/// The filter of one node: its addresses, the current rules (or none:
/// allow everything) and the outbound flow table.
#[derive(Debug, Clone)]
pub struct Filter {
    rules: Option<Arc<Rules>>,
    local: IpSet,
    flows: FlowTable,
}

impl Filter {
    /// A filter that accepts everything and records nothing (a node
    /// without control).
    pub fn allow_all() -> Filter {
        Filter {
            rules: None,
            local: IpSet::default(),
            flows: FlowTable::default(),
        }
    }

    /// A filter for a node with addresses `local`: `rules` `None` accepts
    /// everything; `Some` checks new inbound flows against them.
    pub fn new(local: &[IpAddr], rules: Option<Arc<Rules>>) -> Filter {
        Filter {
            rules,
            local: IpSet::of(local),
            flows: FlowTable::default(),
        }
    }

    /// Replaces the rules; recorded flows are kept, so replies of flows
    /// opened under the old rules still pass.
    pub fn set_rules(&mut self, rules: Option<Arc<Rules>>) {
        self.rules = rules;
    }

    /// The current rules (`None`: everything is accepted).
    pub fn rules(&self) -> Option<&Arc<Rules>> {
        self.rules.as_ref()
    }

    /// Outbound flows remembered.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Notes an outbound packet (never filtered): UDP and SCTP flows are
    /// recorded so their replies pass. Does nothing while everything is
    /// accepted.
    pub fn outbound(&mut self, pkt: &[u8]) {
        if self.rules.is_none() {
            return;
        }
        let Ok(p) = IpPacket::parse(pkt) else {
            return;
        };
        let proto = proto_number(p.protocol);
        if p.is_fragment || (proto != PROTO_UDP && proto != PROTO_SCTP) {
            return;
        }
        if let Some((sport, dport)) = transport_ports(&p, proto) {
            self.flows.touch(FlowKey {
                protocol: proto,
                local: p.src,
                local_port: sport,
                remote: p.dst,
                remote_port: dport,
            });
        }
    }

    /// Decides on a packet a peer sent us (after decryption).
    pub fn inbound(&mut self, pkt: &[u8]) -> Verdict {
        let Some(rules) = &self.rules else {
            return Verdict::Accept;
        };
        if pkt.is_empty() {
            return Verdict::Accept;
        }
        let Ok(p) = IpPacket::parse(pkt) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if is_special_destination(p.dst) {
            return Verdict::Drop(DropReason::SpecialDestination);
        }
        if p.is_fragment {
            // Later fragments carry no transport header; the first one was
            // checked.
            return Verdict::Accept;
        }
        if !self.local.contains(p.dst) {
            return Verdict::Drop(DropReason::NotLocal);
        }
        let proto = proto_number(p.protocol);
        match proto {
            PROTO_ICMP | PROTO_ICMPV6 => {
                let Some(&[ty, code, ..]) = p.payload.get(..8) else {
                    return Verdict::Drop(DropReason::Malformed);
                };
                if is_icmp_reply_or_error(proto, ty, code) || rules.allows_ips(p.src, p.dst) {
                    Verdict::Accept
                } else {
                    Verdict::Drop(DropReason::NoRule)
                }
            }
            PROTO_TCP => {
                if p.payload.len() < 20 {
                    return Verdict::Drop(DropReason::Malformed);
                }
                if !p.is_tcp_syn() {
                    return Verdict::Accept;
                }
                let Some((_, dport)) = transport_ports(&p, proto) else {
                    return Verdict::Drop(DropReason::Malformed);
                };
                if rules.allows(proto, p.src, p.dst, dport) {
                    Verdict::Accept
                } else {
                    Verdict::Drop(rules.reason(p.src, p.dst, Some(dport)))
                }
            }
            PROTO_UDP | PROTO_SCTP => {
                let header = if proto == PROTO_UDP { 8 } else { 12 };
                if p.payload.len() < header {
                    return Verdict::Drop(DropReason::Malformed);
                }
                let Some((sport, dport)) = transport_ports(&p, proto) else {
                    return Verdict::Drop(DropReason::Malformed);
                };
                let flow = FlowKey {
                    protocol: proto,
                    local: p.dst,
                    local_port: dport,
                    remote: p.src,
                    remote_port: sport,
                };
                if self.flows.hit(flow) || rules.allows(proto, p.src, p.dst, dport) {
                    Verdict::Accept
                } else {
                    Verdict::Drop(rules.reason(p.src, p.dst, Some(dport)))
                }
            }
            PROTO_TSMP => Verdict::Accept,
            _ => {
                if rules.allows_all_ports(proto, p.src, p.dst) {
                    Verdict::Accept
                } else {
                    Verdict::Drop(rules.reason(p.src, p.dst, None))
                }
            }
        }
    }
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
        Protocol::Icmp => PROTO_ICMP,
        Protocol::Icmpv6 => PROTO_ICMPV6,
        Protocol::Other(n) => n,
    }
}

/// Source and destination port of TCP, UDP and SCTP (all start with them).
fn transport_ports(p: &IpPacket<'_>, proto: u8) -> Option<(u16, u16)> {
    if !matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) || p.is_fragment {
        return None;
    }
    let b = p.payload.get(0..4)?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ))
}

/// Multicast, or link-local unicast other than the cloud metadata address.
fn is_special_destination(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => {
            a.is_multicast() || (a.is_link_local() && a != Ipv4Addr::new(169, 254, 169, 254))
        }
        IpAddr::V6(a) => a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Echo replies and ICMP errors, which always pass.
fn is_icmp_reply_or_error(proto: u8, ty: u8, code: u8) -> bool {
    if proto == PROTO_ICMP {
        // Echo reply (0, code 0), unreachable 3, time exceeded 11,
        // parameter problem 12.
        (ty == 0 && code == 0) || matches!(ty, 3 | 11 | 12)
    } else {
        // Echo reply (129, code 0), unreachable 1, packet too big 2, time
        // exceeded 3, parameter problem 4.
        (ty == 129 && code == 0) || matches!(ty, 1..=4)
    }
}

#[cfg(test)]
mod tests;
