//! The filter against the examples and rules of `filter.md`.

use super::*;
use crate::control::{FilterRule, NetPortRange};

const ME: &str = "100.64.0.5";
const ME6: &str = "fd7a:115c:a1e0::5";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rules_json(json: &str) -> Rules {
    let r: Vec<FilterRule> = serde_json::from_str(json).unwrap();
    Rules::compile(&r)
}

fn filter(json: &str) -> Filter {
    Filter::new(&[ip(ME), ip(ME6)], Some(Arc::new(rules_json(json))))
}

/// An IPv4 or IPv6 packet with `payload` as its transport part.
fn packet(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0u8; 20];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(20 + payload.len() as u16).to_be_bytes());
            p[8] = 64;
            p[9] = proto;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            p.extend_from_slice(payload);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            p[6] = proto;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
            p.extend_from_slice(payload);
            p
        }
        _ => panic!("mixed families"),
    }
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    packet(src, dst, 6, &t)
}

fn syn(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    tcp(src, 40000, dst, dport, crate::ip::tcp_flags::SYN)
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let mut u = vec![0u8; 12];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    packet(src, dst, 17, &u)
}

fn icmp(src: &str, dst: &str, ty: u8) -> Vec<u8> {
    let proto = if ip(src).is_ipv4() { 1 } else { 58 };
    packet(src, dst, proto, &[ty, 0, 0, 0, 0, 1, 0, 1, b'p'])
}

const ACCEPT: Verdict = Verdict::Accept;
const NO_RULE: Verdict = Verdict::Drop(DropReason::NoRule);

/// filter.md §1's example rule.
const EXAMPLE: &str = r#"[{"SrcIPs":["100.64.0.1","fd7a:115c:a1e0::/48","100.64.0.0-100.115.91.255"],
  "DstPorts":[{"IP":"100.64.0.5","Ports":{"First":80,"Last":80}},
              {"IP":"*","Ports":{"First":0,"Last":65535}}],
  "IPProto":[6,17]}]"#;

#[test]
fn the_example_rule_admits_its_sources_on_tcp_and_udp() {
    let mut f = filter(EXAMPLE);
    assert_eq!(f.inbound(&syn("100.64.0.1", ME, 80)), ACCEPT);
    assert_eq!(f.inbound(&syn("100.64.0.1", ME, 22)), ACCEPT, "* any port");
    assert_eq!(
        f.inbound(&syn("100.100.0.9", ME, 443)),
        ACCEPT,
        "in the range"
    );
    assert_eq!(
        f.inbound(&syn("100.115.91.255", ME, 1)),
        ACCEPT,
        "range end"
    );
    assert_eq!(
        f.inbound(&syn("100.115.92.0", ME, 80)),
        NO_RULE,
        "past the range"
    );
    assert_eq!(f.inbound(&syn("fd7a:115c:a1e0::77", ME6, 80)), ACCEPT);
    assert_eq!(f.inbound(&syn("fd7a:115c:a1e1::1", ME6, 80)), NO_RULE);
    assert_eq!(f.inbound(&udp("100.64.0.1", 5000, ME, 53)), ACCEPT);
    // ICMP is not in IPProto, but ICMP matches on addresses only.
    assert_eq!(f.inbound(&icmp("100.64.0.1", ME, 8)), ACCEPT);
    // SCTP is not listed: the rule would fit but for the protocol.
    let mut sctp = vec![0u8; 12];
    sctp[2..4].copy_from_slice(&80u16.to_be_bytes());
    assert_eq!(
        f.inbound(&packet("100.64.0.1", ME, 132, &sctp)),
        Verdict::Drop(DropReason::Protocol)
    );
}

#[test]
fn headscale_star_skips_the_chromeos_range() {
    let mut f = filter(
        r#"[{"SrcIPs":["100.64.0.0-100.115.91.255","100.115.94.0-100.127.255.255","fd7a:115c:a1e0::/48"],
             "DstPorts":[{"IP":"100.64.0.5","Ports":{"First":22,"Last":22}}]}]"#,
    );
    assert_eq!(f.inbound(&syn("100.64.0.9", ME, 22)), ACCEPT);
    assert_eq!(f.inbound(&syn("100.115.92.7", ME, 22)), NO_RULE);
    assert_eq!(f.inbound(&syn("100.115.93.255", ME, 22)), NO_RULE);
    assert_eq!(f.inbound(&syn("100.115.94.0", ME, 22)), ACCEPT);
    assert_eq!(f.inbound(&syn("100.128.0.0", ME, 22)), NO_RULE);
    assert_eq!(
        f.inbound(&syn("100.64.0.9", ME, 23)),
        Verdict::Drop(DropReason::NoRule)
    );
}

#[test]
fn allow_all_rule_and_no_rules() {
    let all = serde_json::to_string(&[FilterRule::allow_all()]).unwrap();
    let mut f = filter(&all);
    assert_eq!(f.inbound(&syn("10.1.2.3", ME, 9)), ACCEPT);
    assert_eq!(f.inbound(&syn("2001:db8::1", ME6, 9)), ACCEPT);
    assert_eq!(f.inbound(&udp("10.1.2.3", 1, ME, 2)), ACCEPT);
    // Default protocols only: SCTP is not among them.
    assert_eq!(
        f.inbound(&packet("10.1.2.3", ME, 132, &[0; 12])),
        Verdict::Drop(DropReason::Protocol)
    );

    // `[]` (and no filter received, which the node treats the same):
    // nothing new gets in, replies still do.
    let mut none = filter("[]");
    assert_eq!(none.inbound(&syn("100.64.0.1", ME, 80)), NO_RULE);
    assert_eq!(none.inbound(&udp("100.64.0.1", 1, ME, 2)), NO_RULE);
    assert_eq!(none.inbound(&icmp("100.64.0.1", ME, 8)), NO_RULE);
    assert_eq!(
        none.inbound(&tcp("100.64.0.1", 80, ME, 40000, 0x12)),
        ACCEPT,
        "SYN-ACK"
    );
    assert_eq!(
        none.inbound(&icmp("100.64.0.1", ME, 0)),
        ACCEPT,
        "echo reply"
    );
    assert_eq!(none.inbound(&icmp("fd7a:115c:a1e0::1", ME6, 129)), ACCEPT);

    // No rules at all (a node without control): everything.
    let mut open = Filter::allow_all();
    assert_eq!(open.inbound(&syn("1.2.3.4", "5.6.7.8", 1)), ACCEPT);
    assert_eq!(open.inbound(b"garbage"), ACCEPT);
}

#[test]
fn tcp_is_stateless_only_syn_is_checked() {
    let mut f = filter(
        r#"[{"SrcIPs":["100.64.0.1"],"DstPorts":[{"IP":"*","Ports":{"First":9090,"Last":9090}}],"IPProto":[6]}]"#,
    );
    use crate::ip::tcp_flags::{ACK, FIN, RST, SYN};
    assert_eq!(f.inbound(&syn("100.64.0.1", ME, 9090)), ACCEPT);
    assert_eq!(f.inbound(&syn("100.64.0.1", ME, 9091)), NO_RULE);
    assert_eq!(f.inbound(&syn("100.64.0.2", ME, 9090)), NO_RULE);
    for flags in [ACK, SYN | ACK, FIN | ACK, RST, 0] {
        assert_eq!(
            f.inbound(&tcp("100.64.0.2", 1, ME, 9091, flags)),
            ACCEPT,
            "{flags:#x}"
        );
    }
    // A TCP header cut short is not given the benefit of the doubt.
    let short = packet("100.64.0.2", ME, 6, &[0; 10]);
    assert_eq!(f.inbound(&short), Verdict::Drop(DropReason::Malformed));
}

#[test]
fn udp_replies_pass_through_the_flow_table() {
    let mut f = filter("[]");
    let peer = "100.64.0.9";
    assert_eq!(f.inbound(&udp(peer, 53, ME, 40001)), NO_RULE);
    f.outbound(&udp(ME, 40001, peer, 53));
    assert_eq!(f.inbound(&udp(peer, 53, ME, 40001)), ACCEPT);
    // Only that exact flow.
    assert_eq!(f.inbound(&udp(peer, 54, ME, 40001)), NO_RULE);
    assert_eq!(f.inbound(&udp(peer, 53, ME, 40002)), NO_RULE);
    assert_eq!(f.inbound(&udp("100.64.0.8", 53, ME, 40001)), NO_RULE);
    // A new rule set keeps the flows.
    f.set_rules(Some(Arc::new(Rules::deny_all())));
    assert_eq!(f.inbound(&udp(peer, 53, ME, 40001)), ACCEPT);
    // IPv6 too.
    f.outbound(&udp(ME6, 7, "fd7a:115c:a1e0::9", 8));
    assert_eq!(f.inbound(&udp("fd7a:115c:a1e0::9", 8, ME6, 7)), ACCEPT);
}

#[test]
fn the_flow_table_is_a_bounded_lru() {
    let mut f = filter("[]");
    let peer = "100.64.0.9";
    f.outbound(&udp(ME, 1, peer, 1));
    for port in 2..=FLOW_TABLE_MAX as u16 {
        f.outbound(&udp(ME, port, peer, 1));
    }
    assert_eq!(f.flows().len(), FLOW_TABLE_MAX);
    // A reply makes flow 1 the newest, so flow 2 is evicted next.
    assert_eq!(f.inbound(&udp(peer, 1, ME, 1)), ACCEPT);
    f.outbound(&udp(ME, 9999, peer, 1));
    assert_eq!(f.flows().len(), FLOW_TABLE_MAX);
    assert_eq!(f.inbound(&udp(peer, 1, ME, 1)), ACCEPT);
    assert_eq!(f.inbound(&udp(peer, 1, ME, 2)), NO_RULE, "evicted");
    assert_eq!(f.inbound(&udp(peer, 1, ME, 3)), ACCEPT);

    // Many uses of few flows keep the queue bounded.
    let mut t = FlowTable::new(4);
    let key = |p| FlowKey {
        protocol: 17,
        local: ip(ME),
        local_port: p,
        remote: ip(peer),
        remote_port: 1,
    };
    for i in 0..10_000u16 {
        t.touch(key(i % 3));
    }
    assert!(t.order.len() <= 16);
    assert_eq!(t.len(), 3);
    for i in 10..20 {
        t.touch(key(i));
    }
    assert_eq!(t.len(), 4);
    assert!(t.contains(&key(19)) && !t.contains(&key(0)));
}

#[test]
fn icmp_echo_requests_follow_address_rules_replies_and_errors_pass() {
    let mut f = filter(
        r#"[{"SrcIPs":["100.64.0.1"],"DstPorts":[{"IP":"100.64.0.5","Ports":{"First":22,"Last":22}}],"IPProto":[6]}]"#,
    );
    assert_eq!(
        f.inbound(&icmp("100.64.0.1", ME, 8)),
        ACCEPT,
        "TCP-only rule allows ping"
    );
    assert_eq!(f.inbound(&icmp("100.64.0.2", ME, 8)), NO_RULE);
    for ty in [0, 3, 11, 12] {
        assert_eq!(f.inbound(&icmp("100.64.0.2", ME, ty)), ACCEPT, "type {ty}");
    }
    for ty in [129, 1, 2, 3, 4] {
        assert_eq!(
            f.inbound(&icmp("fd7a:115c:a1e0::2", ME6, ty)),
            ACCEPT,
            "v6 type {ty}"
        );
    }
    assert_eq!(f.inbound(&icmp("fd7a:115c:a1e0::2", ME6, 128)), NO_RULE);
    let short = packet("100.64.0.2", ME, 1, &[0, 0, 0]);
    assert_eq!(f.inbound(&short), Verdict::Drop(DropReason::Malformed));
}

#[test]
fn other_protocols_need_the_protocol_and_all_ports() {
    let gre = |f: &mut Filter| f.inbound(&packet("100.64.0.1", ME, 47, &[0; 8]));
    let mut f = filter(
        r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}],"IPProto":[47]}]"#,
    );
    assert_eq!(gre(&mut f), ACCEPT);
    let mut f = filter(
        r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":1,"Last":65535}}],"IPProto":[47]}]"#,
    );
    assert_eq!(gre(&mut f), Verdict::Drop(DropReason::Protocol));
    let mut f =
        filter(r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]"#);
    assert_eq!(gre(&mut f), Verdict::Drop(DropReason::Protocol));
    // TSMP always passes.
    assert_eq!(f.inbound(&packet("100.64.0.1", ME, 99, &[0; 8])), ACCEPT);
}

#[test]
fn ipproto_out_of_range_is_ignored_not_defaulted() {
    let mut f = filter(
        r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}],"IPProto":[-1,256]}]"#,
    );
    assert_eq!(
        f.inbound(&syn("100.64.0.1", ME, 80)),
        Verdict::Drop(DropReason::Protocol)
    );
    let mut f = filter(
        r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}],"IPProto":[300,17]}]"#,
    );
    assert_eq!(f.inbound(&udp("100.64.0.1", 1, ME, 2)), ACCEPT);
    assert_eq!(
        f.inbound(&syn("100.64.0.1", ME, 80)),
        Verdict::Drop(DropReason::Protocol)
    );
}

#[test]
fn deprecated_bits_reject_the_whole_filter() {
    let mut rules: Vec<FilterRule> = vec![FilterRule::allow_all(), FilterRule::allow_all()];
    rules[1].src_bits = vec![32];
    let r = Rules::compile(&rules);
    assert!(r.is_empty());
    assert_eq!(r.errors(), &[RuleError::DeprecatedBits { rule: 1 }]);
    rules[1].src_bits.clear();
    rules[0].dst_ports[0].bits = Some(0);
    assert!(Rules::compile(&rules).is_empty());
}

#[test]
fn bad_entries_are_skipped_and_the_rest_kept() {
    let r = rules_json(
        r#"[{"SrcIPs":["10.0.0.1/8","bogus","100.64.0.9-100.64.0.1","100.64.0.1-fd7a::1","cap:funnel","100.64.0.3"],
             "DstPorts":[{"IP":"cap:x","Ports":{"First":0,"Last":65535}},
                         {"IP":"100.64.0.0/10","Ports":{"First":80,"Last":90}},
                         {"IP":"1.2.3.4-","Ports":{"First":0,"Last":65535}}]}]"#,
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r.errors().len(), 6, "{:?}", r.errors());
    assert!(r.allows(6, ip("100.64.0.3"), ip(ME), 85));
    assert!(!r.allows(6, ip("10.0.0.1"), ip(ME), 85));
    assert!(!r.allows(6, ip("100.64.0.3"), ip(ME), 91));
    assert!(!r.allows(6, ip("100.64.0.3"), ip("100.128.0.1"), 85));
}

#[test]
fn ip_sets_parse_every_form() {
    let s = |e: &str| IpSet::parse_entry(e);
    assert!(s("*").unwrap().contains(ip("255.255.255.255")));
    assert!(s("*").unwrap().contains(ip("::")));
    let net = s("100.64.0.0/10").unwrap();
    assert!(net.contains(ip("100.127.255.255")) && !net.contains(ip("100.128.0.0")));
    assert!(s("100.64.0.1/10").is_none(), "host bits");
    let r = s("fd7a::1-fd7a::ff").unwrap();
    assert!(r.contains(ip("fd7a::80")) && !r.contains(ip("fd7a::100")));
    assert!(!r.contains(ip("100.64.0.1")));
    assert!(s("100.64.0.1").unwrap().contains(ip("100.64.0.1")));
    assert!(s("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    assert!(s("::/0").unwrap().contains(ip("2001:db8::1")));
    for bad in [
        "",
        "-",
        "1.2.3.4-5.6.7.8-9.9.9.9",
        "cap:x",
        "1.2.3.4/33",
        "a/b",
    ] {
        assert!(s(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn pre_checks_before_any_rule() {
    let all = serde_json::to_string(&[FilterRule::allow_all()]).unwrap();
    let mut f = filter(&all);
    assert_eq!(f.inbound(&[]), ACCEPT, "keep-alive");
    assert_eq!(f.inbound(&[0x45; 10]), Verdict::Drop(DropReason::Malformed));
    assert_eq!(
        f.inbound(&syn("100.64.0.1", "100.64.0.6", 80)),
        Verdict::Drop(DropReason::NotLocal)
    );
    for dst in ["224.0.0.1", "169.254.1.1", "ff02::1", "fe80::1"] {
        let p = if dst.contains(':') {
            udp("fd7a:115c:a1e0::1", 1, dst, 2)
        } else {
            udp("100.64.0.1", 1, dst, 2)
        };
        assert_eq!(
            f.inbound(&p),
            Verdict::Drop(DropReason::SpecialDestination),
            "{dst}"
        );
    }
    // The metadata address is not special (and not ours).
    assert_eq!(
        f.inbound(&udp("100.64.0.1", 1, "169.254.169.254", 2)),
        Verdict::Drop(DropReason::NotLocal)
    );
    // A later fragment passes even under a deny-all filter.
    let mut none = filter("[]");
    let mut frag = udp("100.64.0.1", 1, ME, 2);
    frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
    assert_eq!(none.inbound(&frag), ACCEPT);
}

#[test]
fn outbound_records_only_under_rules_and_only_udp_and_sctp() {
    let mut open = Filter::allow_all();
    open.outbound(&udp(ME, 1, "100.64.0.9", 2));
    assert!(open.flows().is_empty());
    let mut f = filter("[]");
    f.outbound(&syn(ME, "100.64.0.9", 80));
    f.outbound(&icmp(ME, "100.64.0.9", 8));
    f.outbound(b"\x45junk");
    assert!(f.flows().is_empty());
    let mut sctp = vec![0u8; 12];
    sctp[0..2].copy_from_slice(&5u16.to_be_bytes());
    sctp[2..4].copy_from_slice(&6u16.to_be_bytes());
    f.outbound(&packet(ME, "100.64.0.9", 132, &sctp));
    assert_eq!(f.flows().len(), 1);
    let mut reply = vec![0u8; 12];
    reply[0..2].copy_from_slice(&6u16.to_be_bytes());
    reply[2..4].copy_from_slice(&5u16.to_be_bytes());
    assert_eq!(f.inbound(&packet("100.64.0.9", ME, 132, &reply)), ACCEPT);
}

#[test]
fn coordinator_shaped_rules_engine_to_control_9090() {
    // What our coordinator sends control for "tag:engine → tag:control:9090".
    let control_rules = vec![FilterRule {
        src_ips: vec!["100.64.0.1".into(), "fd7a:115c:a1e0::1".into()],
        dst_ports: vec![
            NetPortRange {
                ip: ME.into(),
                bits: None,
                ports: PortRange {
                    first: 9090,
                    last: 9090,
                },
            },
            NetPortRange {
                ip: ME6.into(),
                bits: None,
                ports: PortRange {
                    first: 9090,
                    last: 9090,
                },
            },
        ],
        ip_proto: vec![6],
        ..FilterRule::default()
    }];
    let mut f = Filter::new(
        &[ip(ME), ip(ME6)],
        Some(Arc::new(Rules::compile(&control_rules))),
    );
    assert_eq!(f.inbound(&syn("100.64.0.1", ME, 9090)), ACCEPT);
    assert_eq!(f.inbound(&syn("fd7a:115c:a1e0::1", ME6, 9090)), ACCEPT);
    assert_eq!(f.inbound(&syn("100.64.0.1", ME, 9091)), NO_RULE);
    assert_eq!(
        f.inbound(&udp("100.64.0.1", 1, ME, 9090)),
        Verdict::Drop(DropReason::Protocol)
    );
}
