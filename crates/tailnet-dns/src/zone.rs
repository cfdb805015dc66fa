//! The zone: what the node answers for itself, built from a netmap, and
//! the responder that turns query bytes into response bytes.

use crate::names::{first_label, key, resolver_addr, reverse_key, tailnet_reverse_zones, under};
use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tailnet_wire::control::{Netmap, Node};

/// TTL of node names, extra records and PTR records: Tailscale 1.90.9's
/// `defaultTTL` (`magicdns.md` §3). A node keeps its addresses for its
/// whole life, so caching them long is right.
pub const DEFAULT_HOST_TTL: u32 = 600;

/// TTL of service records. Their membership changes whenever a pod comes,
/// goes or goes offline, and discovery must see that within seconds, so
/// they use the short TTL Tailscale moved all its records to after 1.90
/// (5 s, `magicdns.md` §3 "HEAD"). Queries to the in-process responder
/// cost microseconds, so a short TTL costs nothing.
pub const DEFAULT_SERVICE_TTL: u32 = 5;

/// Tags `tag:inferadb-<cluster>` make the default service zones.
pub const DEFAULT_CLUSTER_TAG_PREFIX: &str = "tag:inferadb-";

/// Default service zones are `<cluster>.ts.net`.
pub const DEFAULT_SERVICE_ZONE_SUFFIX: &str = "ts.net";

/// The resolver's IPv4 address (`tsaddr.TailscaleServiceIP`).
pub const QUAD_100_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);

/// The resolver's IPv6 address (`tsaddr.TailscaleServiceIPv6`).
pub const QUAD_100_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x53);

/// The name Tailscale's resolver answers with its own addresses.
const SELF_NAME: &str = "magicdns.localhost-tailscale-daemon";

/// Largest TCP DNS message.
const TCP_MAX: usize = 65535;

/// One configured service zone: the nodes carrying `tag` form the cluster
/// whose services answer under `zone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceZone {
    /// The zone, e.g. `eu-west-1.ts.net` (trailing dot optional).
    pub zone: String,
    /// The ACL tag of the cluster's nodes, e.g. `tag:inferadb-eu-west-1`.
    pub tag: String,
}

/// What the responder adds to the netmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOptions {
    /// Explicit service zones (zone → tag).
    pub service_zones: Vec<ServiceZone>,
    /// Every tag `tag:inferadb-<cluster>` found on a node of the netmap
    /// yields the zone `<cluster>.ts.net` (default on).
    pub default_service_zones: bool,
    /// TTL of node names, extra records and PTR ([`DEFAULT_HOST_TTL`]).
    pub host_ttl: u32,
    /// TTL of service records ([`DEFAULT_SERVICE_TTL`]).
    pub service_ttl: u32,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            service_zones: Vec::new(),
            default_service_zones: true,
            host_ttl: DEFAULT_HOST_TTL,
            service_ttl: DEFAULT_SERVICE_TTL,
        }
    }
}

/// How the query arrived, which bounds the response's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram; `max` is the most this path carries. The response is
    /// also bounded by the client's EDNS0 size (512 without EDNS0), and is
    /// truncated (TC bit, no records) when it does not fit.
    Udp {
        /// Largest datagram the server sends on this path.
        max: u16,
    },
    /// A TCP stream (2-byte length framing): up to 65535 bytes.
    Tcp,
}

/// A response to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The encoded message.
    pub bytes: Vec<u8>,
    /// Its response code.
    pub rcode: ResponseCode,
    /// Whether the TC bit is set (the client should retry over TCP).
    pub truncated: bool,
}

/// A query for a name outside the tailnet's zones, to be sent as is to
/// one of `upstreams` (in order) and the upstream's reply relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The client's query bytes.
    pub query: Vec<u8>,
    /// The query's ID (the reply must carry it).
    pub id: u16,
    /// Where to send it: a split-DNS route's resolvers, else the default.
    pub upstreams: Vec<SocketAddr>,
}

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this back.
    Response(Reply),
    /// Forward to an upstream resolver.
    Forward(Forward),
    /// Send nothing: fewer than 12 bytes (no header to answer) or the
    /// message is itself a response.
    Drop,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    ttl: u32,
}

impl Entry {
    fn add(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) if !self.v4.contains(&a) => self.v4.push(a),
            IpAddr::V6(a) if !self.v6.contains(&a) => self.v6.push(a),
            _ => {}
        }
    }
}

/// Everything the node answers for itself; rebuilt on every netmap.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// Forward names (keys) → addresses.
    names: HashMap<String, Entry>,
    /// Reverse names (keys) → the FQDN and TTL.
    ptrs: HashMap<String, (Name, u32)>,
    /// Authoritative zones: unknown names below them are NXDOMAIN.
    zones: Vec<String>,
    /// The service zones among them.
    service_zones: Vec<String>,
    /// Names that exist only because names below them do (and zone
    /// apexes): NOERROR with no records, never NXDOMAIN (RFC 8020).
    nonterminals: HashSet<String>,
    /// Search domains, tried for names found nowhere else.
    search: Vec<String>,
    /// Split DNS: suffix → resolvers, longest suffix first.
    routes: Vec<(String, Vec<SocketAddr>)>,
    /// Default upstream resolvers.
    upstreams: Vec<SocketAddr>,
}

/// The result of looking a name up.
enum Resolution {
    Records(Vec<RData>, u32),
    Empty,
    NxDomain,
    Forward(Vec<SocketAddr>),
    Refused,
}

fn addresses(n: &Node) -> impl Iterator<Item = IpAddr> + '_ {
    n.addresses.iter().map(|p| p.addr())
}

/// The host name a node runs under: `Hostinfo.Hostname` (its first label),
/// else the first label of its MagicDNS name. Lowercase.
fn host_of(n: &Node) -> Option<String> {
    let from_hostinfo = n
        .hostinfo
        .as_ref()
        .map(|h| h.hostname.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty());
    let h = match from_hostinfo {
        Some(h) => first_label(&h).to_string(),
        None => first_label(&key(&n.name)?).to_string(),
    };
    crate::names::valid_label(&h).then_some(h)
}

/// `inferadb-control-0` → `inferadb-control`; `None` without a numeric
/// suffix.
fn service_stem(host: &str) -> Option<&str> {
    let (stem, n) = host.rsplit_once('-')?;
    (!stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(stem)
}

impl Zone {
    /// Builds the zone of `netmap` (see the crate docs for what it holds).
    ///
    /// - Node names: the self node's and every peer's `Name` → its
    ///   addresses (all of them, IPv4 and IPv6), and the reverse names of
    ///   those addresses → the name.
    /// - The MagicDNS suffix is the self node's name less its first label.
    ///   With `DNSConfig.Proxied` (MagicDNS on) it is authoritative, and so
    ///   are the reverse zones of 100.64.0.0/10 and fd7a:115c:a1e0::/48.
    /// - `ExtraRecords` of type `""`, `A` or `AAAA` whose value parses as
    ///   an address of that family; their reverse names unless a node owns
    ///   the address.
    /// - `Routes` with no resolvers are authoritative zones; the others are
    ///   split DNS. `Resolvers` (else `FallbackResolvers`) are the default
    ///   upstreams; only plain `IP` / `IP:port` resolvers are used.
    /// - `Domains` (and the MagicDNS suffix) are the search domains.
    /// - Service zones (always authoritative): see [`DnsOptions`]. A member
    ///   is the self node or a peer carrying the zone's tag that control
    ///   has not marked offline and whose key has not expired; it answers
    ///   under `<host>.<zone>`, and under `<stem>.<zone>` when its host
    ///   name is `<stem>-<n>`.
    pub fn from_netmap(netmap: &Netmap, opts: &DnsOptions) -> Zone {
        let mut z = Zone::default();
        let dns = netmap.dns_config().cloned().unwrap_or_default();
        let nodes: Vec<&Node> = netmap
            .self_node()
            .into_iter()
            .chain(netmap.peers())
            .collect();

        for n in &nodes {
            let Some(k) = key(&n.name).filter(|k| !k.is_empty()) else {
                continue;
            };
            let Ok(fqdn) = Name::from_ascii(format!("{k}.")) else {
                continue;
            };
            let e = z.names.entry(k).or_default();
            e.ttl = opts.host_ttl;
            for ip in addresses(n) {
                e.add(ip);
                z.ptrs
                    .entry(reverse_key(ip))
                    .or_insert_with(|| (fqdn.clone(), opts.host_ttl));
            }
        }

        let suffix = netmap
            .self_node()
            .and_then(|me| key(&me.name))
            .map(|k| match k.split_once('.') {
                Some((_, rest)) => rest.to_string(),
                None => k,
            })
            .filter(|s| !s.is_empty());
        if dns.proxied {
            z.zones.extend(suffix.iter().cloned());
            z.zones.extend(tailnet_reverse_zones());
        }

        for r in &dns.extra_records {
            let Some(k) = key(&r.name).filter(|k| !k.is_empty()) else {
                continue;
            };
            let Ok(ip) = r.value.trim().parse::<IpAddr>() else {
                continue;
            };
            let ok = match r.record_type.as_str() {
                "" => true,
                "A" => ip.is_ipv4(),
                "AAAA" => ip.is_ipv6(),
                _ => false,
            };
            let Ok(fqdn) = Name::from_ascii(format!("{k}.")) else {
                continue;
            };
            if !ok {
                continue;
            }
            let e = z.names.entry(k).or_default();
            e.ttl = opts.host_ttl;
            e.add(ip);
            z.ptrs
                .entry(reverse_key(ip))
                .or_insert((fqdn, opts.host_ttl));
        }

        for (suffix, resolvers) in &dns.routes {
            let Some(k) = key(suffix).filter(|k| !k.is_empty()) else {
                continue;
            };
            if resolvers.is_empty() {
                z.zones.push(k);
            } else {
                let ups: Vec<SocketAddr> = resolvers
                    .iter()
                    .filter_map(|r| resolver_addr(&r.addr))
                    .collect();
                if !ups.is_empty() {
                    z.routes.push((k, ups));
                }
            }
        }
        z.routes.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        let defaults = if dns.resolvers.is_empty() {
            &dns.fallback_resolvers
        } else {
            &dns.resolvers
        };
        z.upstreams = defaults
            .iter()
            .filter_map(|r| resolver_addr(&r.addr))
            .collect();

        for d in &dns.domains {
            if let Some(k) = key(d).filter(|k| !k.is_empty()) {
                if !z.search.contains(&k) {
                    z.search.push(k);
                }
            }
        }
        if let Some(s) = suffix {
            if !z.search.contains(&s) {
                z.search.push(s);
            }
        }

        z.add_services(&nodes, netmap, opts);
        z.zones.sort();
        z.zones.dedup();
        z.fill_nonterminals();
        z
    }

    fn add_services(&mut self, nodes: &[&Node], netmap: &Netmap, opts: &DnsOptions) {
        let mut rules: Vec<(String, String)> = opts
            .service_zones
            .iter()
            .filter_map(|s| {
                let zone = key(&s.zone).filter(|k| !k.is_empty())?;
                Some((zone, s.tag.trim().to_ascii_lowercase()))
            })
            .collect();
        if opts.default_service_zones {
            for n in nodes {
                for t in &n.tags {
                    let t = t.to_ascii_lowercase();
                    let Some(cluster) = t.strip_prefix(DEFAULT_CLUSTER_TAG_PREFIX) else {
                        continue;
                    };
                    if crate::names::valid_label(cluster) {
                        let zone = format!("{cluster}.{DEFAULT_SERVICE_ZONE_SUFFIX}");
                        rules.push((zone, t.clone()));
                    }
                }
            }
        }
        rules.sort();
        rules.dedup();
        let self_id = netmap.self_node().map(|n| n.id);
        for (zone, tag) in rules {
            for n in nodes {
                let is_self = Some(n.id) == self_id;
                let member = n.tags.iter().any(|t| t.eq_ignore_ascii_case(&tag))
                    && (is_self || (n.online != Some(false) && !n.expired));
                if !member {
                    continue;
                }
                let Some(host) = host_of(n) else { continue };
                let mut keys = vec![format!("{host}.{zone}")];
                if let Some(stem) = service_stem(&host) {
                    keys.push(format!("{stem}.{zone}"));
                }
                for k in keys {
                    if key(&k).is_none() {
                        continue;
                    }
                    let e = self.names.entry(k).or_default();
                    e.ttl = if e.ttl == 0 {
                        opts.service_ttl
                    } else {
                        e.ttl.min(opts.service_ttl)
                    };
                    for ip in addresses(n) {
                        e.add(ip);
                    }
                }
            }
            if !self.service_zones.contains(&zone) {
                self.service_zones.push(zone.clone());
            }
            self.zones.push(zone);
        }
    }

    fn fill_nonterminals(&mut self) {
        let mut ents = HashSet::new();
        for z in &self.zones {
            ents.insert(z.clone());
        }
        for name in self.names.keys().chain(self.ptrs.keys()) {
            let Some(zone) = self
                .zones
                .iter()
                .filter(|z| under(name, z))
                .max_by_key(|z| z.len())
            else {
                continue;
            };
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if !under(parent, zone) {
                    break;
                }
                ents.insert(parent.to_string());
                rest = parent;
            }
        }
        self.nonterminals = ents;
    }

    /// The authoritative zones (MagicDNS suffix, reverse zones, local
    /// routes, service zones), as keys.
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// The service zones, as keys.
    pub fn service_zones(&self) -> &[String] {
        &self.service_zones
    }

    /// The search domains, as keys.
    pub fn search_domains(&self) -> &[String] {
        &self.search
    }

    /// The default upstream resolvers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Answers one query.
    ///
    /// - Fewer than 12 bytes, or a message with QR set: [`Answer::Drop`].
    /// - Not decodable: FORMERR (ID, opcode and RD copied from the bytes).
    /// - Opcode other than QUERY: NOTIMP. Not exactly one question:
    ///   FORMERR. EDNS version above 0: BADVERS. Class other than IN or
    ///   ANY: REFUSED.
    /// - Names are compared in ASCII lowercase without the trailing dot;
    ///   answers carry the question's name as asked (0x20 survives).
    /// - In order: `magicdns.localhost-tailscale-daemon` (the resolver's
    ///   own addresses); a reverse name we know (PTR); a name we know (A →
    ///   its IPv4 addresses, AAAA → IPv6, ANY → both, other types NOERROR
    ///   with no records); an empty non-terminal or zone apex (NOERROR,
    ///   none); inside an authoritative zone (NXDOMAIN); the name with a
    ///   search domain appended, if that is a name we know; else forwarded
    ///   to the longest matching split-DNS route or the default upstreams,
    ///   or REFUSED when there are none.
    /// - Local answers set AA, RA = RD, carry no SOA, and include an OPT
    ///   record when the query had one. Over UDP a response larger than
    ///   `min(client's EDNS size or 512, max)` goes out with TC and no
    ///   records.
    pub fn answer(&self, query: &[u8], transport: Transport) -> Answer {
        if query.len() < 12 || query[2] & 0x80 != 0 {
            return Answer::Drop;
        }
        let msg = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => return formerr_from_bytes(query),
        };
        let id = msg.metadata.id;
        let client_size = msg
            .edns
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload().max(512)));
        let (limit, our_size) = match transport {
            Transport::Udp { max } => (client_size.min(usize::from(max)), max),
            Transport::Tcp => (TCP_MAX, 4096),
        };
        let mut resp = Message::response(id, msg.metadata.op_code);
        resp.metadata.recursion_desired = msg.metadata.recursion_desired;
        resp.metadata.recursion_available = msg.metadata.recursion_desired;
        resp.metadata.checking_disabled = msg.metadata.checking_disabled;
        resp.queries = msg.queries.clone();
        if msg.edns.is_some() {
            let mut e = Edns::new();
            e.set_max_payload(our_size.max(512));
            resp.edns = Some(e);
        }

        let rcode_only = |mut resp: Message, rcode: ResponseCode| {
            resp.metadata.response_code = rcode;
            finish(resp, limit)
        };
        if msg.metadata.op_code != OpCode::Query {
            return rcode_only(resp, ResponseCode::NotImp);
        }
        let [q] = msg.queries.as_slice() else {
            return rcode_only(resp, ResponseCode::FormErr);
        };
        if msg.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return rcode_only(resp, ResponseCode::BADVERS);
        }
        if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
            return rcode_only(resp, ResponseCode::Refused);
        }
        let qkey = query_key(q.name());
        match self.resolve(&qkey, q.query_type()) {
            Resolution::Records(data, ttl) => {
                resp.metadata.authoritative = true;
                resp.answers = data
                    .into_iter()
                    .map(|d| Record::from_rdata(q.name().clone(), ttl, d))
                    .collect();
                finish(resp, limit)
            }
            Resolution::Empty => {
                resp.metadata.authoritative = true;
                finish(resp, limit)
            }
            Resolution::NxDomain => {
                resp.metadata.authoritative = true;
                rcode_only(resp, ResponseCode::NXDomain)
            }
            Resolution::Refused => rcode_only(resp, ResponseCode::Refused),
            Resolution::Forward(upstreams) => Answer::Forward(Forward {
                query: query.to_vec(),
                id,
                upstreams,
            }),
        }
    }

    fn resolve(&self, k: &str, qtype: RecordType) -> Resolution {
        if k == SELF_NAME {
            let e = Entry {
                v4: vec![QUAD_100_V4],
                v6: vec![QUAD_100_V6],
                ttl: DEFAULT_HOST_TTL,
            };
            return records_of(&e, qtype);
        }
        if let Some((target, ttl)) = self.ptrs.get(k) {
            return if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                Resolution::Records(vec![RData::PTR(PTR(target.clone()))], *ttl)
            } else {
                Resolution::Empty
            };
        }
        if let Some(e) = self.names.get(k) {
            return records_of(e, qtype);
        }
        if self.nonterminals.contains(k) {
            return Resolution::Empty;
        }
        if self.zones.iter().any(|z| under(k, z)) {
            return Resolution::NxDomain;
        }
        if !k.is_empty() && !k.ends_with(".arpa") {
            for d in &self.search {
                if let Some(e) = self.names.get(&format!("{k}.{d}")) {
                    return records_of(e, qtype);
                }
            }
        }
        if let Some((_, ups)) = self.routes.iter().find(|(r, _)| under(k, r)) {
            return Resolution::Forward(ups.clone());
        }
        if self.upstreams.is_empty() {
            Resolution::Refused
        } else {
            Resolution::Forward(self.upstreams.clone())
        }
    }
}

fn records_of(e: &Entry, qtype: RecordType) -> Resolution {
    let v4 = e.v4.iter().map(|a| RData::A(A(*a)));
    let v6 = e.v6.iter().map(|a| RData::AAAA(AAAA(*a)));
    let data: Vec<RData> = match qtype {
        RecordType::A => v4.collect(),
        RecordType::AAAA => v6.collect(),
        RecordType::ANY => v4.chain(v6).collect(),
        _ => Vec::new(),
    };
    if data.is_empty() {
        Resolution::Empty
    } else {
        Resolution::Records(data, e.ttl)
    }
}

/// The query name as a key: ASCII lowercase, no trailing dot. Not
/// validated: a name no zone holds simply matches nothing.
fn query_key(name: &Name) -> String {
    let s = name.to_lowercase().to_ascii();
    match s.strip_suffix('.') {
        Some(t) => t.to_string(),
        None => s,
    }
}

/// Encodes `resp`, truncating to `limit` (TC, no records) if needed. A
/// message hickory cannot encode becomes SERVFAIL; one that still cannot
/// be encoded is dropped.
fn finish(mut resp: Message, limit: usize) -> Answer {
    let rcode = resp.metadata.response_code;
    match resp.to_vec() {
        Ok(bytes) if bytes.len() <= limit => {
            return Answer::Response(Reply {
                bytes,
                rcode,
                truncated: false,
            })
        }
        Ok(_) => {
            resp.answers.clear();
            resp.authorities.clear();
            resp.additionals.clear();
            resp.metadata.truncation = true;
        }
        Err(_) => {
            resp.answers.clear();
            resp.authorities.clear();
            resp.additionals.clear();
            resp.metadata.response_code = ResponseCode::ServFail;
        }
    }
    let rcode = resp.metadata.response_code;
    let truncated = resp.metadata.truncation;
    match resp.to_vec() {
        Ok(bytes) if bytes.len() <= limit.max(512) => Answer::Response(Reply {
            bytes,
            rcode,
            truncated,
        }),
        _ => {
            // Even the bare header and question do not fit (a huge name
            // and a tiny limit): answer with the header alone.
            resp.queries.clear();
            resp.edns = None;
            match resp.to_vec() {
                Ok(bytes) => Answer::Response(Reply {
                    bytes,
                    rcode,
                    truncated,
                }),
                Err(_) => Answer::Drop,
            }
        }
    }
}

/// FORMERR for bytes hickory could not decode: the header's ID, opcode
/// and RD, no question.
fn formerr_from_bytes(query: &[u8]) -> Answer {
    let id = u16::from_be_bytes([query[0], query[1]]);
    let op = OpCode::from_u8((query[2] >> 3) & 0x0f);
    let mut resp = Message::response(id, op);
    resp.metadata.recursion_desired = query[2] & 1 != 0;
    resp.metadata.recursion_available = resp.metadata.recursion_desired;
    resp.metadata.response_code = ResponseCode::FormErr;
    finish(resp, 512)
}

impl Zone {
    /// SERVFAIL for `query` (an upstream did not answer in time). `None`
    /// when the query cannot be decoded.
    pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
        let msg = Message::from_vec(query).ok()?;
        let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
        resp.metadata.recursion_desired = msg.metadata.recursion_desired;
        resp.metadata.recursion_available = msg.metadata.recursion_desired;
        resp.metadata.response_code = ResponseCode::ServFail;
        resp.queries = msg.queries;
        resp.to_vec().ok()
    }

    /// An upstream's `response` to relay over UDP to a client of `query`:
    /// as it is when it fits the client's size (EDNS0 or 512) and `max`,
    /// else cut to the header and question with TC set. `None` when a
    /// response too large cannot be decoded.
    pub fn fit_udp(query: &[u8], response: &[u8], max: u16) -> Option<Vec<u8>> {
        let client = Message::from_vec(query)
            .ok()
            .and_then(|m| m.edns.map(|e| usize::from(e.max_payload().max(512))))
            .unwrap_or(512);
        let limit = client.min(usize::from(max));
        if response.len() <= limit {
            return Some(response.to_vec());
        }
        let mut m = Message::from_vec(response).ok()?;
        m.answers.clear();
        m.authorities.clear();
        m.additionals.clear();
        m.metadata.truncation = true;
        m.to_vec().ok().filter(|b| b.len() <= limit.max(512))
    }
}
