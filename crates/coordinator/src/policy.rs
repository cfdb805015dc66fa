//! Access policy: a Tailscale-ACL-like policy file, validated, and compiled
//! per node into the packet filter the node enforces (`tailcfg.FilterRule`).
//!
//! # The file (a documented subset of Tailscale's policy file)
//!
//! ```json
//! {
//!   // HuJSON: comments and trailing commas are accepted.
//!   "hosts": { "db": "100.64.0.9", "lab": "10.1.0.0/16" },
//!   "tagOwners": { "tag:engine": ["autogroup:admin"] },   // accepted, ignored
//!   "acls": [
//!     { "action": "accept", "src": ["tag:engine"], "dst": ["tag:control:9090"] },
//!     { "action": "accept", "proto": "udp", "src": ["*"], "dst": ["db:53,5353", "*:1000-2000"] },
//!   ],
//! }
//! ```
//!
//! Top-level keys: `acls` (required), `hosts`, `tagOwners`. Keys starting
//! with `#` are ignored at every level (Tailscale's convention for notes).
//! Other Tailscale keys (`groups`, `grants`, `ssh`, `nodeAttrs`, `tests`, …)
//! are rejected by name rather than silently ignored, because ignoring a
//! rule-bearing key would change who may reach whom.
//!
//! An ACL entry: `action` (only `"accept"`), `src` (aliases), `dst`
//! (`alias:ports`), `proto` (optional). Aliases:
//!
//! | alias | matches |
//! |---|---|
//! | `*` | every tailnet address (as a source: Headscale's `100.64.0.0/10` minus the ChromeOS `100.115.92.0/23`, plus `fd7a:115c:a1e0::/48`; as a destination: any) |
//! | `tag:name` | nodes carrying the tag (`tag:[a-z0-9-]+`, as auth keys require) |
//! | `autogroup:tagged` / `autogroup:member` | nodes with any tag / with none |
//! | an IP or CIDR (`100.64.0.5`, `10.0.0.0/8`, no host bits) | those addresses |
//! | a `hosts` name | the IP or CIDR it names |
//!
//! Users (`alice@`), `group:` and other autogroups are rejected: nodes of
//! this coordinator have no users.
//!
//! Destination ports, after the **last** `:` (IPv6 may be written
//! `[addr]:port`): `*` (0-65535), `22`, `80,443`, `1000-2000`, or a comma
//! list of those. A single port must be ≥ 1. `proto`: `tcp`, `udp`, `icmp`
//! (1, IPv4 only), `ipv6-icmp` (58), `sctp`, `igmp`, `ipv4`/`ip-in-ip`,
//! `egp`, `igp`, `gre`, `esp`, `ah`, `fc`, or a number 1-255 without leading
//! zeros; absent means the client's default (TCP, UDP, ICMPv4, ICMPv6).
//! Protocols other than TCP, UDP and SCTP take only the `*` port.
//! These forms and names follow Headscale (`hscontrol/policy/v2`, see
//! `../shared/protocol/filter.md` §4).
//!
//! No policy at all is [`Policy::allow_all`]. A file with `"acls": []`
//! allows nothing; a file without `acls` is an error (Headscale treats it as
//! allow-all, which is too easy to get by accident).
//!
//! # Compilation ([`Policy::filter_for`])
//!
//! Rules say *who may reach me*, as Headscale compiles them: for the
//! destination node, every ACL entry and every `dst` alias that covers the
//! node gives one rule whose `SrcIPs` are the addresses of every node (and
//! IP) the `src` aliases match, and whose `DstPorts` are the node's own
//! addresses (or `*` for a `*` destination) times the port ranges. Rules
//! with equal `SrcIPs` and `IPProto` are merged. Sources print as a bare IP,
//! a CIDR, or an `a-b` range, like Headscale's `ipSetToStrings`. `SrcBits`
//! and `Bits`, which make the Go client reject the whole filter, are never
//! set.
//!
//! An empty result means *deny all inbound*: the server must send it as
//! `PacketFilter: []` (or `PacketFilters: {"base": []}`), never omit it,
//! since a missing filter means "unchanged".

use crate::Node;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use tailnet_wire::control::{FilterRule, NetPortRange, PortRange};

/// Largest policy file [`Policy::load`] reads.
pub const MAX_POLICY_BYTES: u64 = 4 << 20;

/// Why a policy could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("policy file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_POLICY_BYTES`].
    #[error("policy file {}: larger than {MAX_POLICY_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A parse or validation error in a named file.
    #[error("policy file {}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<PolicyError>,
    },
    /// Not JSON (after removing HuJSON comments and trailing commas).
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// Valid JSON, but not a valid policy. `path` names the offending
    /// value, e.g. `acls[2].dst[0]`.
    #[error("{path}: {message}")]
    Invalid {
        /// Where: `acls[2].dst[0]`, `hosts.db`, `tagOwners`, or `policy`
        /// for the top level.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl PolicyError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Where in the document the error is (`acls[2].dst[0]`), for
    /// validation errors.
    pub fn location(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { path, .. } => Some(path),
            PolicyError::InFile { source, .. } => source.location(),
            _ => None,
        }
    }
}

/// What the compiler needs to know about a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyNode {
    /// Its tailnet addresses (IPv4 and IPv6).
    pub addresses: Vec<IpAddr>,
    /// Its tags (`tag:name`).
    pub tags: Vec<String>,
    /// Its name (for diagnostics; not an alias).
    pub name: String,
}

impl From<&Node> for PolicyNode {
    fn from(n: &Node) -> Self {
        PolicyNode {
            addresses: vec![IpAddr::V4(n.ipv4), IpAddr::V6(n.ipv6)],
            tags: n.tags.clone(),
            name: n.given_name.clone(),
        }
    }
}

/// A validated policy, ready to compile per node.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `None` = allow all (no policy).
    acls: Option<Vec<Acl>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Acl {
    src: Vec<Alias>,
    dst: Vec<(Alias, Vec<PortRange>)>,
    proto: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Alias {
    Any,
    Prefix(Prefix),
    Tag(String),
    Tagged,
    Member,
}

/// An IP prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `a.b.c.d`, `a.b.c.d/n`, IPv6 likewise. `Err` says what is wrong.
    fn parse(s: &str) -> Result<Option<Prefix>, String> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let Ok(addr) = ip.parse::<IpAddr>() else {
            return Ok(None);
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && l.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("bad prefix length in {s:?}")),
            },
        };
        let p = Prefix { addr, len };
        if p.first() != bits(addr) {
            return Err(format!("{s:?} has host bits set"));
        }
        Ok(Some(p))
    }

    fn first(&self) -> u128 {
        let (v, width) = (bits(self.addr), width(self.addr));
        v & !host_mask(width, self.len)
    }

    fn last(&self) -> u128 {
        self.first() | host_mask(width(self.addr), self.len)
    }

    fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && (self.first()..=self.last()).contains(&bits(a))
    }
}

fn width(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The host part of a `len`-bit prefix of a `width`-bit address.
fn host_mask(width: u8, len: u8) -> u128 {
    let host = u32::from(width.saturating_sub(len));
    if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    }
}

fn from_bits(v4: bool, v: u128) -> IpAddr {
    if v4 {
        // Values come from IPv4 addresses, so they fit.
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

impl Policy {
    /// No policy: every node may reach every node on every port. Compiles
    /// to exactly `tailcfg.FilterAllowAll`.
    pub fn allow_all() -> Policy {
        Policy { acls: None }
    }

    /// Whether this is [`Policy::allow_all`].
    pub fn is_allow_all(&self) -> bool {
        self.acls.is_none()
    }

    /// Reads and parses a policy file.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
        use std::io::Read;
        let path = path.as_ref();
        let read_err = |source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        file.take(MAX_POLICY_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Policy::parse(&text).map_err(|e| PolicyError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Parses and validates a policy document (JSON or HuJSON).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let json = standardize(text)?;
        let value: Value = serde_json::from_str(&json).map_err(|e| PolicyError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let Value::Object(top) = value else {
            return Err(PolicyError::invalid(
                "policy",
                format!("expected an object, found {}", kind(&value)),
            ));
        };
        for key in top.keys() {
            match key.as_str() {
                "acls" | "hosts" | "tagOwners" => {}
                k if k.starts_with('#') => {}
                "groups" => {
                    return Err(PolicyError::invalid(
                        key_path(None, key),
                        "groups are not supported (nodes of this coordinator have no users)",
                    ))
                }
                "grants"
                | "ssh"
                | "nodeAttrs"
                | "autoApprovers"
                | "tests"
                | "sshTests"
                | "postures"
                | "ipsets"
                | "derpMap"
                | "disableIPv4"
                | "OneCGNATRoute"
                | "randomizeClientPort" => {
                    return Err(PolicyError::invalid(
                        key_path(None, key),
                        "not supported by this coordinator",
                    ))
                }
                _ => {
                    return Err(PolicyError::invalid(
                        key_path(None, key),
                        "unknown key (supported: acls, hosts, tagOwners)",
                    ))
                }
            }
        }
        let hosts = match top.get("hosts") {
            None => BTreeMap::new(),
            Some(v) => parse_hosts(v)?,
        };
        if let Some(v) = top.get("tagOwners") {
            check_tag_owners(v)?;
        }
        let acls = top
            .get("acls")
            .ok_or_else(|| {
                PolicyError::invalid(
                    "acls",
                    "missing (write \"acls\": [] to allow nothing; use no policy file to allow everything)",
                )
            })?
            .as_array()
            .ok_or_else(|| PolicyError::invalid("acls", "expected an array"))?;
        let acls = acls
            .iter()
            .enumerate()
            .map(|(i, v)| parse_acl(&format!("acls[{i}]"), v, &hosts))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { acls: Some(acls) })
    }

    /// The packet filter for `node`: who may reach it, on which ports.
    ///
    /// `all` is every node of the tailnet (it may include `node`); sources
    /// resolve against it. An empty result means deny all inbound and must
    /// be sent as an empty filter, not omitted.
    pub fn filter_for(&self, node: &PolicyNode, all: &[PolicyNode]) -> Vec<FilterRule> {
        let Some(acls) = &self.acls else {
            return vec![FilterRule::allow_all()];
        };
        let mut out: Vec<FilterRule> = Vec::new();
        for acl in acls {
            let mut dst_ports = Vec::new();
            for (alias, ports) in &acl.dst {
                let ips: Vec<String> = match alias {
                    Alias::Any => vec!["*".to_string()],
                    _ => node
                        .addresses
                        .iter()
                        .filter(|a| covers_address(alias, node, **a))
                        .map(|a| a.to_string())
                        .collect(),
                };
                for ip in ips {
                    for ports in ports {
                        let npr = NetPortRange {
                            ip: ip.clone(),
                            bits: None,
                            ports: *ports,
                        };
                        if !dst_ports.contains(&npr) {
                            dst_ports.push(npr);
                        }
                    }
                }
            }
            if dst_ports.is_empty() {
                continue;
            }
            let src_ips = resolve_sources(&acl.src, node, all);
            if src_ips.is_empty() {
                continue;
            }
            if let Some(rule) = out
                .iter_mut()
                .find(|r| r.src_ips == src_ips && r.ip_proto == acl.proto)
            {
                for d in dst_ports {
                    if !rule.dst_ports.contains(&d) {
                        rule.dst_ports.push(d);
                    }
                }
            } else {
                out.push(FilterRule {
                    src_ips,
                    dst_ports,
                    ip_proto: acl.proto.clone(),
                    ..FilterRule::default()
                });
            }
        }
        out
    }
}

/// Whether `alias` (a destination) covers address `a` of `node`.
fn covers_address(alias: &Alias, node: &PolicyNode, a: IpAddr) -> bool {
    match alias {
        Alias::Any => true,
        Alias::Prefix(p) => p.contains(a),
        Alias::Tag(t) => node.tags.contains(t),
        Alias::Tagged => !node.tags.is_empty(),
        Alias::Member => node.tags.is_empty(),
    }
}

/// The source aliases as Headscale prints an IP set: merged intervals,
/// IPv4 first, each a bare IP, a CIDR or `a-b`.
fn resolve_sources(src: &[Alias], node: &PolicyNode, all: &[PolicyNode]) -> Vec<String> {
    let mut v4: Vec<(u128, u128)> = Vec::new();
    let mut v6: Vec<(u128, u128)> = Vec::new();
    let mut add = |is_v4: bool, first: u128, last: u128| {
        if is_v4 {
            v4.push((first, last));
        } else {
            v6.push((first, last));
        }
    };
    let nodes = || all.iter().chain(std::iter::once(node));
    for alias in src {
        match alias {
            Alias::Any => {
                for (first, last) in ANY_V4 {
                    add(true, first, last);
                }
                add(false, ANY_V6.0, ANY_V6.1);
            }
            Alias::Prefix(p) => add(p.addr.is_ipv4(), p.first(), p.last()),
            Alias::Tag(_) | Alias::Tagged | Alias::Member => {
                for n in nodes().filter(|n| match alias {
                    Alias::Tag(t) => n.tags.contains(t),
                    Alias::Tagged => !n.tags.is_empty(),
                    _ => n.tags.is_empty(),
                }) {
                    for a in &n.addresses {
                        add(a.is_ipv4(), bits(*a), bits(*a));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for (is_v4, list) in [(true, v4), (false, v6)] {
        for (first, last) in merge(list) {
            out.push(interval_text(is_v4, first, last));
        }
    }
    out
}

/// `*` as a source, IPv4: `100.64.0.0/10` without the ChromeOS VM range
/// `100.115.92.0/23`, as Headscale resolves it (`crate::addr` never assigns
/// that range either).
const ANY_V4: [(u128, u128); 2] = [(0x6440_0000, 0x6473_5bff), (0x6473_5e00, 0x647f_ffff)];

/// `*` as a source, IPv6: `fd7a:115c:a1e0::/48`.
const ANY_V6: (u128, u128) = (
    0xfd7a_115c_a1e0_u128 << 80,
    (0xfd7a_115c_a1e0_u128 << 80) | ((1u128 << 80) - 1),
);

fn merge(mut list: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    list.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(list.len());
    for (first, last) in list {
        match out.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

fn interval_text(v4: bool, first: u128, last: u128) -> String {
    let a = from_bits(v4, first);
    if first == last {
        return a.to_string();
    }
    let size = last - first; // 2^k - 1 for an aligned prefix
    if size & size.wrapping_add(1) == 0 && first & size == 0 {
        let w: u32 = if v4 { 32 } else { 128 };
        return format!("{a}/{}", w - size.count_ones());
    }
    format!("{a}-{}", from_bits(v4, last))
}

/// `parent.key`, with the key JSON-quoted when it is empty or has
/// characters that would make the path ambiguous (`.`, `[`, `]`, quotes,
/// whitespace, control characters).
fn key_path(parent: Option<&str>, key: &str) -> String {
    let plain = !key.is_empty()
        && !key
            .chars()
            .any(|c| matches!(c, '.' | '[' | ']' | '"') || c.is_whitespace() || c.is_control());
    let key = if plain {
        key.to_string()
    } else {
        serde_json::Value::String(key.to_string()).to_string()
    };
    match parent {
        Some(p) => format!("{p}.{key}"),
        None => key,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_hosts(v: &Value) -> Result<BTreeMap<String, Prefix>, PolicyError> {
    let obj = v
        .as_object()
        .ok_or_else(|| PolicyError::invalid("hosts", "expected an object"))?;
    let mut out = BTreeMap::new();
    for (name, v) in obj {
        if name.starts_with('#') {
            continue;
        }
        let path = key_path(Some("hosts"), name);
        let ok_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && name.parse::<IpAddr>().is_err();
        if !ok_name {
            return Err(PolicyError::invalid(
                path,
                format!("bad host name {name:?} (letters, digits, '-', '_', '.')"),
            ));
        }
        let Some(s) = v.as_str() else {
            return Err(PolicyError::invalid(
                path,
                format!("expected an IP or CIDR string, found {}", kind(v)),
            ));
        };
        match Prefix::parse(s) {
            Ok(Some(p)) => {
                out.insert(name.clone(), p);
            }
            Ok(None) => {
                return Err(PolicyError::invalid(
                    path,
                    format!("{s:?} is not an IP or CIDR"),
                ))
            }
            Err(e) => return Err(PolicyError::invalid(path, e)),
        }
    }
    Ok(out)
}

/// `tagOwners` is accepted and ignored, but must have its shape: tags to
/// lists of strings.
fn check_tag_owners(v: &Value) -> Result<(), PolicyError> {
    let obj = v
        .as_object()
        .ok_or_else(|| PolicyError::invalid("tagOwners", "expected an object"))?;
    for (tag, owners) in obj {
        if tag.starts_with('#') {
            continue;
        }
        let path = key_path(Some("tagOwners"), tag);
        if crate::authkey::validate_tags(&[tag]).is_err() {
            return Err(PolicyError::invalid(
                path,
                format!("bad tag {tag:?} (tag:[a-z0-9-]+)"),
            ));
        }
        let ok = owners
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(PolicyError::invalid(path, "expected an array of strings"));
        }
    }
    Ok(())
}

fn string_list<'a>(
    entry: &'a Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Vec<(String, &'a str)>, PolicyError> {
    let path = format!("{path}.{key}");
    let v = entry
        .get(key)
        .ok_or_else(|| PolicyError::invalid(path.as_str(), "missing"))?;
    let list = v
        .as_array()
        .ok_or_else(|| PolicyError::invalid(path.as_str(), "expected an array of strings"))?;
    if list.is_empty() {
        return Err(PolicyError::invalid(path, "empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let p = format!("{path}[{i}]");
            match v.as_str() {
                Some(s) => Ok((p, s)),
                None => Err(PolicyError::invalid(
                    p,
                    format!("expected a string, found {}", kind(v)),
                )),
            }
        })
        .collect()
}

fn parse_acl(path: &str, v: &Value, hosts: &BTreeMap<String, Prefix>) -> Result<Acl, PolicyError> {
    let entry = v.as_object().ok_or_else(|| {
        PolicyError::invalid(path, format!("expected an object, found {}", kind(v)))
    })?;
    for key in entry.keys() {
        match key.as_str() {
            "action" | "src" | "dst" | "proto" => {}
            k if k.starts_with('#') => {}
            "users" | "ports" => {
                return Err(PolicyError::invalid(
                    key_path(Some(path), key),
                    "legacy key not supported (use src and dst)",
                ))
            }
            _ => {
                return Err(PolicyError::invalid(
                    key_path(Some(path), key),
                    "unknown key (supported: action, src, dst, proto)",
                ))
            }
        }
    }
    let action_path = format!("{path}.action");
    match entry.get("action") {
        None => return Err(PolicyError::invalid(action_path, "missing")),
        Some(Value::String(a)) if a == "accept" => {}
        Some(other) => {
            return Err(PolicyError::invalid(
                action_path,
                format!("only \"accept\" is supported, found {other}"),
            ))
        }
    }
    let (proto_name, proto) = match entry.get("proto") {
        None => (String::new(), Vec::new()),
        Some(Value::String(s)) => {
            let name = s.to_ascii_lowercase();
            let nums = proto_numbers(&name)
                .map_err(|m| PolicyError::invalid(format!("{path}.proto"), m))?;
            (name, nums)
        }
        Some(other) => {
            return Err(PolicyError::invalid(
                format!("{path}.proto"),
                format!("expected a string, found {}", kind(other)),
            ))
        }
    };
    let src = string_list(entry, path, "src")?
        .into_iter()
        .map(|(p, s)| parse_alias(&p, s, hosts))
        .collect::<Result<Vec<_>, _>>()?;
    let ports_allowed = matches!(
        proto_name.as_str(),
        "" | "tcp" | "udp" | "sctp" | "6" | "17" | "132"
    );
    let dst = string_list(entry, path, "dst")?
        .into_iter()
        .map(|(p, s)| {
            let (alias, ports) = parse_destination(&p, s, hosts)?;
            if !ports_allowed && ports != [PortRange::ANY] {
                return Err(PolicyError::invalid(
                    p,
                    format!("protocol {proto_name:?} takes no ports, only \"*\" (found {s:?})"),
                ));
            }
            Ok((alias, ports))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Acl { src, dst, proto })
}

/// IANA numbers for a `proto` value (already lowercased).
fn proto_numbers(name: &str) -> Result<Vec<i64>, String> {
    let n = match name {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" => 58,
        "sctp" => 132,
        "igmp" => 2,
        "ipv4" | "ip-in-ip" => 4,
        "egp" => 8,
        "igp" => 9,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "fc" => 133,
        _ => {
            let ok = !name.is_empty()
                && !name.starts_with('0')
                && name.bytes().all(|b| b.is_ascii_digit());
            match name.parse::<u8>() {
                Ok(n) if ok => i64::from(n),
                _ => {
                    return Err(format!(
                    "unknown protocol {name:?} (a name such as tcp, udp, icmp, or a number 1-255)"
                ))
                }
            }
        }
    };
    Ok(vec![n])
}

fn parse_alias(
    path: &str,
    s: &str,
    hosts: &BTreeMap<String, Prefix>,
) -> Result<Alias, PolicyError> {
    let bad = |m: String| PolicyError::invalid(path, m);
    if s == "*" {
        return Ok(Alias::Any);
    }
    match Prefix::parse(s) {
        Ok(Some(p)) => return Ok(Alias::Prefix(p)),
        Ok(None) => {}
        Err(e) => return Err(bad(e)),
    }
    if s.contains('@') {
        return Err(bad(format!(
            "user alias {s:?} is not supported (nodes of this coordinator have no users)"
        )));
    }
    if s.starts_with("group:") {
        return Err(bad(format!(
            "group alias {s:?} is not supported (nodes of this coordinator have no users)"
        )));
    }
    if s.starts_with("tag:") {
        return match crate::authkey::validate_tags(&[s]) {
            Ok(_) => Ok(Alias::Tag(s.to_string())),
            Err(_) => Err(bad(format!("bad tag {s:?} (tag:[a-z0-9-]+)"))),
        };
    }
    if let Some(group) = s.strip_prefix("autogroup:") {
        return match group {
            "tagged" => Ok(Alias::Tagged),
            "member" => Ok(Alias::Member),
            _ => Err(bad(format!(
                "{s:?} is not supported (autogroup:tagged and autogroup:member are)"
            ))),
        };
    }
    match hosts.get(s) {
        Some(p) => Ok(Alias::Prefix(*p)),
        None => Err(bad(format!(
            "unknown alias {s:?} (not a tag, IP, CIDR or hosts name)"
        ))),
    }
}

fn parse_destination(
    path: &str,
    s: &str,
    hosts: &BTreeMap<String, Prefix>,
) -> Result<(Alias, Vec<PortRange>), PolicyError> {
    let bad = |m: String| PolicyError::invalid(path, m);
    let (alias_text, ports_text): (String, &str) = if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(format!("unclosed '[' in {s:?}")))?;
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(bad(format!(
                "brackets are only for IPv6 addresses, in {s:?}"
            )));
        }
        let (len, ports) = after
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("missing ':ports' in {s:?}")))?;
        if !(len.is_empty() || len.starts_with('/')) || ports.is_empty() {
            return Err(bad(format!(
                "expected [addr]:ports or [addr]/len:ports, found {s:?}"
            )));
        }
        (format!("{addr}{len}"), ports)
    } else {
        let namespaced = ["tag:", "autogroup:", "group:"]
            .iter()
            .any(|ns| s.strip_prefix(ns).is_some_and(|rest| !rest.contains(':')));
        if namespaced {
            return Err(bad(format!(
                "missing ports in {s:?} (write \"{s}:*\" for all)"
            )));
        }
        match s.rsplit_once(':') {
            Some((a, p)) if !a.is_empty() && !p.is_empty() => (a.to_string(), p),
            _ => {
                return Err(bad(format!(
                    "expected alias:ports (e.g. \"tag:web:80,443\" or \"*:*\"), found {s:?}"
                )))
            }
        }
    };
    let alias = parse_alias(path, &alias_text, hosts)?;
    let ports = parse_ports(ports_text).map_err(bad)?;
    Ok((alias, ports))
}

fn parse_ports(text: &str) -> Result<Vec<PortRange>, String> {
    if text == "*" {
        return Ok(vec![PortRange::ANY]);
    }
    let port = |p: &str| -> Option<u16> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        let range = if let Some((a, b)) = part.split_once('-') {
            match (port(a), port(b)) {
                (Some(first), Some(last)) if first <= last => PortRange { first, last },
                (Some(_), Some(_)) => {
                    return Err(format!("bad port range {part:?}: first port is above last"))
                }
                _ => return Err(format!("bad port range {part:?}")),
            }
        } else {
            match port(part) {
                Some(0) => {
                    return Err(format!(
                        "bad port {part:?}: must be 1-65535, or '*' for all"
                    ))
                }
                Some(p) => PortRange { first: p, last: p },
                None => return Err(format!("bad port {part:?}")),
            }
        };
        if !out.contains(&range) {
            out.push(range);
        }
    }
    Ok(out)
}

/// HuJSON to JSON: comments (`//…`, `/*…*/`) and trailing commas become
/// spaces, so line and column numbers in JSON errors stay right.
fn standardize(src: &str) -> Result<String, PolicyError> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let mut pending_comma: Option<usize> = None;
    let mut prev = 0u8; // the last significant byte outside strings
    while i < b.len() {
        match b[i] {
            b'"' => {
                pending_comma = None;
                prev = b'"';
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = i;
                out[i] = b' ';
                out[i + 1] = b' ';
                i += 2;
                loop {
                    if i + 1 >= b.len() {
                        let line = 1 + b[..start].iter().filter(|&&c| c == b'\n').count();
                        let column = start
                            - b[..start]
                                .iter()
                                .rposition(|&c| c == b'\n')
                                .map_or(0, |p| p + 1)
                            + 1;
                        return Err(PolicyError::Syntax {
                            line,
                            column,
                            message: "unterminated /* comment".into(),
                        });
                    }
                    if b[i] == b'*' && b[i + 1] == b'/' {
                        out[i] = b' ';
                        out[i + 1] = b' ';
                        i += 2;
                        break;
                    }
                    if b[i] != b'\n' {
                        out[i] = b' ';
                    }
                    i += 1;
                }
            }
            c if c.is_ascii_whitespace() => i += 1,
            c => {
                if matches!(c, b']' | b'}') {
                    if let Some(p) = pending_comma {
                        out[p] = b' ';
                    }
                }
                // A comma is "trailing" only after a value: not in `[,]`.
                pending_comma = (c == b',' && !matches!(prev, b'[' | b'{' | b',')).then_some(i);
                prev = c;
                i += 1;
            }
        }
    }
    // Only ASCII bytes were replaced, each by a space, and whole comments
    // were blanked, so the result is still UTF-8; fall back to lossless
    // error reporting if that ever fails.
    String::from_utf8(out).map_err(|e| PolicyError::Syntax {
        line: 1,
        column: 1,
        message: format!("not UTF-8 after removing comments: {e}"),
    })
}

#[cfg(test)]
mod tests;
