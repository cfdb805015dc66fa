//! One test per rule of [`Zone::answer`], on a small netmap: self node
//! `me`, peers `inferadb-control-0/-1` (tag:inferadb-eu-west-1, one of
//! them offline in some tests), `inferadb-engine-0` (tag:inferadb-us-east-1)
//! and `db`, MagicDNS on under `tailnet.internal`.

use super::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{DNSClass, Name, RData};
use std::net::{IpAddr, SocketAddr};
use tailnet_wire::control::{DnsConfig, DnsRecord, Hostinfo, MapResponse, Netmap, Node, Resolver};

fn node(id: i64, name: &str, host: &str, n: u8, tags: &[&str], online: Option<bool>) -> Node {
    Node {
        id,
        name: format!("{name}.tailnet.internal."),
        addresses: vec![
            format!("100.64.0.{n}/32").parse().unwrap(),
            format!("fd7a:115c:a1e0::{n:x}/128").parse().unwrap(),
        ],
        hostinfo: Some(Hostinfo {
            hostname: host.to_string(),
            ..Hostinfo::default()
        }),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        online,
        machine_authorized: true,
        ..Node::default()
    }
}

fn dns() -> DnsConfig {
    DnsConfig {
        domains: vec!["tailnet.internal".into()],
        proxied: true,
        extra_records: vec![
            DnsRecord {
                name: "Grafana.Example.Internal.".into(),
                record_type: "A".into(),
                value: "100.64.9.9".into(),
            },
            DnsRecord {
                name: "v6only.example.internal".into(),
                record_type: String::new(),
                value: "fd7a:115c:a1e0::99".into(),
            },
            DnsRecord {
                name: "bad.example.internal".into(),
                record_type: "AAAA".into(),
                value: "100.64.9.8".into(),
            },
        ],
        ..DnsConfig::default()
    }
}

fn netmap_with(dns: DnsConfig, peers: Vec<Node>) -> Netmap {
    let mut nm = Netmap::new();
    nm.apply(MapResponse {
        node: Some(node(1, "me", "me", 1, &[], None)),
        peers,
        dns_config: Some(dns),
        domain: "tailnet.internal".into(),
        ..MapResponse::default()
    })
    .unwrap();
    nm
}

fn peers() -> Vec<Node> {
    vec![
        node(
            2,
            "inferadb-control-0",
            "inferadb-control-0",
            2,
            &["tag:inferadb-eu-west-1"],
            Some(true),
        ),
        node(
            3,
            "inferadb-control-1",
            "inferadb-control-1",
            3,
            &["tag:inferadb-eu-west-1"],
            None,
        ),
        node(
            4,
            "inferadb-engine-0",
            "inferadb-engine-0",
            4,
            &["tag:inferadb-us-east-1"],
            Some(true),
        ),
        node(5, "db", "db", 5, &[], Some(true)),
    ]
}

fn zone() -> Zone {
    Zone::from_netmap(&netmap_with(dns(), peers()), &DnsOptions::default())
}

fn query_msg(name: &str, t: RecordType) -> Message {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

fn q(name: &str, t: RecordType) -> Vec<u8> {
    query_msg(name, t).to_vec().unwrap()
}

fn ask(z: &Zone, bytes: &[u8], transport: Transport) -> Message {
    match z.answer(bytes, transport) {
        Answer::Response(r) => {
            let m = Message::from_vec(&r.bytes).expect("response parses");
            assert_eq!(u16::from(m.metadata.response_code), u16::from(r.rcode));
            assert_eq!(m.metadata.truncation, r.truncated);
            m
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

const UDP: Transport = Transport::Udp { max: 1232 };

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn node_names_answer_a_and_aaaa_with_the_host_ttl() {
    let z = zone();
    let m = ask(&z, &q("db.tailnet.internal.", RecordType::A), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(m.metadata.recursion_available);
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.queries.len(), 1);
    assert_eq!(addrs(&m), vec![ip("100.64.0.5")]);
    assert_eq!(m.answers[0].ttl, DEFAULT_HOST_TTL);
    let m = ask(&z, &q("db.tailnet.internal.", RecordType::AAAA), UDP);
    assert_eq!(addrs(&m), vec![ip("fd7a:115c:a1e0::5")]);
    let m = ask(&z, &q("me.tailnet.internal.", RecordType::A), UDP);
    assert_eq!(addrs(&m), vec![ip("100.64.0.1")]);
    let m = ask(&z, &q("db.tailnet.internal.", RecordType::ANY), UDP);
    assert_eq!(addrs(&m).len(), 2);
}

#[test]
fn names_are_case_insensitive_and_the_dot_optional_and_0x20_survives() {
    let z = zone();
    let m = ask(&z, &q("DB.TailNet.Internal", RecordType::A), UDP);
    assert_eq!(addrs(&m), vec![ip("100.64.0.5")]);
    assert_eq!(m.answers[0].name.to_ascii(), "DB.TailNet.Internal.");
}

#[test]
fn short_names_use_the_search_domains() {
    let z = zone();
    let m = ask(&z, &q("db.", RecordType::A), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&m), vec![ip("100.64.0.5")]);
    assert_eq!(m.answers[0].name.to_ascii(), "db.");
    let m = ask(&z, &q("inferadb-control-0", RecordType::A), UDP);
    assert_eq!(addrs(&m), vec![ip("100.64.0.2")]);
}

#[test]
fn extra_records_answer_and_bad_ones_are_skipped() {
    let z = zone();
    let m = ask(&z, &q("grafana.example.internal", RecordType::A), UDP);
    assert_eq!(addrs(&m), vec![ip("100.64.9.9")]);
    let m = ask(&z, &q("v6only.example.internal", RecordType::AAAA), UDP);
    assert_eq!(addrs(&m), vec![ip("fd7a:115c:a1e0::99")]);
    let m = ask(&z, &q("v6only.example.internal", RecordType::A), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // Type AAAA with an IPv4 value is ignored: the name is unknown and,
    // outside every zone with no upstream, refused.
    let m = ask(&z, &q("bad.example.internal", RecordType::A), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn ptr_for_tailnet_addresses_v4_and_v6() {
    let z = zone();
    let m = ask(&z, &q("5.0.64.100.in-addr.arpa.", RecordType::PTR), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    match &m.answers[0].data {
        RData::PTR(PTR(n)) => assert_eq!(n.to_ascii(), "db.tailnet.internal."),
        other => panic!("{other:?}"),
    }
    let v6 = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa";
    let m = ask(&z, &q(v6, RecordType::PTR), UDP);
    assert_eq!(m.answers.len(), 1);
    // Extra records have PTRs too.
    let m = ask(&z, &q("9.9.64.100.in-addr.arpa", RecordType::PTR), UDP);
    match &m.answers[0].data {
        RData::PTR(PTR(n)) => assert_eq!(n.to_ascii(), "grafana.example.internal."),
        other => panic!("{other:?}"),
    }
    // Unknown tailnet address: NXDOMAIN (authoritative reverse zone).
    let m = ask(&z, &q("77.0.64.100.in-addr.arpa", RecordType::PTR), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // An empty non-terminal of the reverse zone: NOERROR, nothing.
    let m = ask(&z, &q("0.64.100.in-addr.arpa", RecordType::PTR), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // Outside the tailnet ranges, no upstream: REFUSED.
    let m = ask(&z, &q("1.1.168.192.in-addr.arpa", RecordType::PTR), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn unknown_names_in_tailnet_domains_are_nxdomain() {
    let z = zone();
    for name in [
        "nope.tailnet.internal",
        "a.b.tailnet.internal",
        "nope.eu-west-1.ts.net",
    ] {
        let m = ask(&z, &q(name, RecordType::A), UDP);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
    }
}

#[test]
fn zone_apexes_are_noerror_empty() {
    let z = zone();
    for name in ["tailnet.internal", "eu-west-1.ts.net"] {
        let m = ask(&z, &q(name, RecordType::A), UDP);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty());
    }
}

#[test]
fn known_name_with_another_type_is_noerror_empty() {
    let z = zone();
    for t in [
        RecordType::MX,
        RecordType::TXT,
        RecordType::SOA,
        RecordType::PTR,
    ] {
        let m = ask(&z, &q("db.tailnet.internal", t), UDP);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(m.answers.is_empty());
    }
    let m = ask(&z, &q("5.0.64.100.in-addr.arpa", RecordType::A), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn service_records_answer_every_online_member_with_the_service_ttl() {
    let z = zone();
    assert_eq!(z.service_zones(), ["eu-west-1.ts.net", "us-east-1.ts.net"]);
    let m = ask(
        &z,
        &q("inferadb-control.eu-west-1.ts.net", RecordType::A),
        UDP,
    );
    assert_eq!(addrs(&m), vec![ip("100.64.0.2"), ip("100.64.0.3")]);
    assert!(m.answers.iter().all(|r| r.ttl == DEFAULT_SERVICE_TTL));
    let m = ask(
        &z,
        &q("inferadb-control.eu-west-1.ts.net", RecordType::AAAA),
        UDP,
    );
    assert_eq!(
        addrs(&m),
        vec![ip("fd7a:115c:a1e0::2"), ip("fd7a:115c:a1e0::3")]
    );
    // One pod by its own name.
    let m = ask(
        &z,
        &q("inferadb-control-1.eu-west-1.ts.net", RecordType::A),
        UDP,
    );
    assert_eq!(addrs(&m), vec![ip("100.64.0.3")]);
    // Another cluster's service is not in this zone.
    let m = ask(
        &z,
        &q("inferadb-engine.eu-west-1.ts.net", RecordType::A),
        UDP,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask(
        &z,
        &q("inferadb-engine.us-east-1.ts.net", RecordType::A),
        UDP,
    );
    assert_eq!(addrs(&m), vec![ip("100.64.0.4")]);
}

#[test]
fn offline_peers_leave_the_service_and_self_joins_it() {
    let mut ps = peers();
    ps[0].online = Some(false);
    let mut nm = Netmap::new();
    let mut me = node(
        1,
        "me",
        "inferadb-control-2",
        1,
        &["tag:inferadb-eu-west-1"],
        None,
    );
    me.online = None;
    nm.apply(MapResponse {
        node: Some(me),
        peers: ps,
        dns_config: Some(dns()),
        ..MapResponse::default()
    })
    .unwrap();
    let z = Zone::from_netmap(&nm, &DnsOptions::default());
    let m = ask(
        &z,
        &q("inferadb-control.eu-west-1.ts.net", RecordType::A),
        UDP,
    );
    assert_eq!(addrs(&m), vec![ip("100.64.0.1"), ip("100.64.0.3")]);
}

#[test]
fn configured_zone_rules_and_no_defaults() {
    let opts = DnsOptions {
        service_zones: vec![ServiceZone {
            zone: "Control.Example.".into(),
            tag: "tag:inferadb-eu-west-1".into(),
        }],
        default_service_zones: false,
        ..DnsOptions::default()
    };
    let z = Zone::from_netmap(&netmap_with(dns(), peers()), &opts);
    assert_eq!(z.service_zones(), ["control.example"]);
    let m = ask(
        &z,
        &q("inferadb-control.control.example", RecordType::A),
        UDP,
    );
    assert_eq!(addrs(&m).len(), 2);
    // Without the default rule, eu-west-1.ts.net is not ours.
    let m = ask(
        &z,
        &q("inferadb-control.eu-west-1.ts.net", RecordType::A),
        UDP,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn outside_names_forward_to_routes_then_default_or_are_refused() {
    let z = zone();
    let m = ask(&z, &q("example.com", RecordType::A), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative);

    let mut d = dns();
    d.resolvers = vec![
        Resolver::new("192.0.2.53"),
        Resolver::new("https://doh.example/q"),
    ];
    d.routes.insert(
        "corp.example.".into(),
        vec![Resolver::new("192.0.2.1:5353")],
    );
    d.routes.insert("local.example".into(), vec![]);
    let z = Zone::from_netmap(&netmap_with(d, peers()), &DnsOptions::default());
    let bytes = q("example.com", RecordType::A);
    match z.answer(&bytes, UDP) {
        Answer::Forward(f) => {
            assert_eq!(f.query, bytes);
            assert_eq!(f.id, 0x1234);
            assert_eq!(
                f.upstreams,
                vec!["192.0.2.53:53".parse::<SocketAddr>().unwrap()]
            );
        }
        other => panic!("{other:?}"),
    }
    match z.answer(&q("a.Corp.Example", RecordType::A), UDP) {
        Answer::Forward(f) => {
            assert_eq!(
                f.upstreams,
                vec!["192.0.2.1:5353".parse::<SocketAddr>().unwrap()]
            )
        }
        other => panic!("{other:?}"),
    }
    // A route with no resolvers is answered locally: NXDOMAIN.
    let m = ask(&z, &q("x.local.example", RecordType::A), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn without_proxied_the_magicdns_suffix_is_not_authoritative() {
    let mut d = dns();
    d.proxied = false;
    let z = Zone::from_netmap(&netmap_with(d, peers()), &DnsOptions::default());
    let m = ask(&z, &q("db.tailnet.internal", RecordType::A), UDP);
    assert_eq!(addrs(&m), vec![ip("100.64.0.5")]);
    let m = ask(&z, &q("nope.tailnet.internal", RecordType::A), UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn edns_size_is_respected_and_large_udp_answers_are_truncated() {
    let ps: Vec<Node> = (0..60)
        .map(|i| {
            node(
                10 + i,
                &format!("inferadb-control-{i}"),
                &format!("inferadb-control-{i}"),
                (10 + i) as u8,
                &["tag:inferadb-eu-west-1"],
                Some(true),
            )
        })
        .collect();
    let z = Zone::from_netmap(&netmap_with(dns(), ps), &DnsOptions::default());
    let name = "inferadb-control.eu-west-1.ts.net";
    // No EDNS: 512 bytes; 60 A records need ~1 KB.
    let m = ask(&z, &q(name, RecordType::A), UDP);
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    assert_eq!(m.queries.len(), 1);
    // EDNS 4096 but a 1232-byte path: still too big for AAAA (60 * 40).
    let mut qm = query_msg(name, RecordType::AAAA);
    let mut e = Edns::new();
    e.set_max_payload(4096);
    qm.set_edns(e.clone());
    let m = ask(&z, &qm.to_vec().unwrap(), UDP);
    assert!(m.metadata.truncation);
    assert!(m.edns.is_some(), "OPT echoed");
    // EDNS 4096 on a 4096 path: the A answer fits.
    let mut qm = query_msg(name, RecordType::A);
    qm.set_edns(e.clone());
    let m = ask(&z, &qm.to_vec().unwrap(), Transport::Udp { max: 4096 });
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    // TCP: everything.
    let m = ask(&z, &q(name, RecordType::AAAA), Transport::Tcp);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
}

#[test]
fn malformed_and_odd_queries() {
    let z = zone();
    assert_eq!(z.answer(b"", UDP), Answer::Drop);
    assert_eq!(z.answer(&[0u8; 11], UDP), Answer::Drop);
    // A response is never answered.
    let mut resp = query_msg("db.tailnet.internal", RecordType::A);
    resp.metadata.message_type = MessageType::Response;
    assert_eq!(z.answer(&resp.to_vec().unwrap(), UDP), Answer::Drop);
    // Garbage after a header: FORMERR with the ID.
    let mut junk = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xff; 7]);
    let m = ask(&z, &junk, UDP);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 0xabcd);
    // No question: FORMERR. Two questions: FORMERR.
    let none = Message::new(7, MessageType::Query, OpCode::Query);
    assert_eq!(
        ask(&z, &none.to_vec().unwrap(), UDP).metadata.response_code,
        ResponseCode::FormErr
    );
    let mut two = query_msg("db.tailnet.internal", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("me.tailnet.internal").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        ask(&z, &two.to_vec().unwrap(), UDP).metadata.response_code,
        ResponseCode::FormErr
    );
    // Another opcode: NOTIMP.
    let mut st = query_msg("db.tailnet.internal", RecordType::A);
    st.metadata.op_code = OpCode::Status;
    assert_eq!(
        ask(&z, &st.to_vec().unwrap(), UDP).metadata.response_code,
        ResponseCode::NotImp
    );
    // EDNS version 1: BADVERS.
    let mut v1 = query_msg("db.tailnet.internal", RecordType::A);
    let mut e = Edns::new();
    e.set_version(1);
    v1.set_edns(e);
    // BADVERS is 16, which hickory decodes as BADSIG (the same number).
    let rc = ask(&z, &v1.to_vec().unwrap(), UDP).metadata.response_code;
    assert_eq!(u16::from(rc), 16);
    // Class CH: REFUSED.
    let mut ch = query_msg("version.bind", RecordType::TXT);
    ch.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        ask(&z, &ch.to_vec().unwrap(), UDP).metadata.response_code,
        ResponseCode::Refused
    );
}

#[test]
fn the_resolver_knows_its_own_name() {
    let z = zone();
    let m = ask(
        &z,
        &q("magicdns.localhost-tailscale-daemon.", RecordType::A),
        UDP,
    );
    assert_eq!(addrs(&m), vec![IpAddr::V4(QUAD_100_V4)]);
}

#[test]
fn servfail_and_fit_udp() {
    let bytes = q("example.com", RecordType::A);
    let sf = Message::from_vec(&Zone::servfail(&bytes).unwrap()).unwrap();
    assert_eq!(sf.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(sf.metadata.id, 0x1234);
    let small = Zone::servfail(&bytes).unwrap();
    assert_eq!(Zone::fit_udp(&bytes, &small, 1232).unwrap(), small);
    let mut big = Message::from_vec(&small).unwrap();
    big.metadata.response_code = ResponseCode::NoError;
    for i in 0..100u8 {
        big.add_answer(hickory_proto::rr::Record::from_rdata(
            Name::from_ascii("example.com.").unwrap(),
            60,
            RData::A(hickory_proto::rr::rdata::A([10, 0, 0, i].into())),
        ));
    }
    let fitted = Zone::fit_udp(&bytes, &big.to_vec().unwrap(), 1232).unwrap();
    let m = Message::from_vec(&fitted).unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty());
}

#[test]
fn client_helpers_round_trip() {
    let z = zone();
    let bytes = build_query("inferadb-control.eu-west-1.ts.net", RecordType::A, 77).unwrap();
    let Answer::Response(r) = z.answer(&bytes, UDP) else {
        panic!()
    };
    let p = parse_response(&r.bytes, 77).unwrap();
    assert_eq!(p.rcode, ResponseCode::NoError);
    assert_eq!(p.addresses, vec![ip("100.64.0.2"), ip("100.64.0.3")]);
    assert_eq!(parse_response(&r.bytes, 78), Err(ClientError::Mismatch));
    assert!(build_query("a..b", RecordType::A, 1).is_err());
}
