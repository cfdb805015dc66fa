//! The MagicDNS responder on arbitrary query bytes: `Zone::answer` never
//! panics, and every response it produces parses with hickory, answers
//! the query's ID, is a response, and fits the transport's limit.

#![no_main]

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tailnet_dns::{Answer, DnsOptions, Transport, Zone};
use tailnet_wire::control::{DnsConfig, DnsRecord, Hostinfo, MapResponse, Netmap, Node, Resolver};

fn node(id: i64, host: &str, n: u8, tags: &[&str]) -> Node {
    Node {
        id,
        name: format!("{host}.tailnet.internal."),
        addresses: vec![
            format!("100.64.0.{n}/32").parse().expect("v4"),
            format!("fd7a:115c:a1e0::{n:x}/128").parse().expect("v6"),
        ],
        hostinfo: Some(Hostinfo {
            hostname: host.to_string(),
            ..Hostinfo::default()
        }),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        machine_authorized: true,
        ..Node::default()
    }
}

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let tag = ["tag:inferadb-eu-west-1"];
        let mut peers: Vec<Node> = (0..40)
            .map(|i| node(10 + i, &format!("inferadb-control-{i}"), 10 + i as u8, &tag))
            .collect();
        peers.push(node(2, "db", 2, &[]));
        let mut nm = Netmap::new();
        let mut dns = DnsConfig {
            domains: vec!["tailnet.internal".into()],
            proxied: true,
            resolvers: vec![Resolver::new("192.0.2.53")],
            extra_records: vec![DnsRecord {
                name: "x.example.internal".into(),
                record_type: "A".into(),
                value: "192.0.2.9".into(),
            }],
            ..DnsConfig::default()
        };
        dns.routes.insert("local.example".into(), vec![]);
        nm.apply(MapResponse {
            node: Some(node(1, "me", 1, &[])),
            peers,
            dns_config: Some(dns),
            ..MapResponse::default()
        })
        .expect("netmap");
        Zone::from_netmap(&nm, &DnsOptions::default())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, query)) = data.split_first() else {
        return;
    };
    let transport = match sel % 3 {
        0 => Transport::Tcp,
        1 => Transport::Udp { max: 1232 },
        _ => Transport::Udp { max: 512 },
    };
    match zone().answer(query, transport) {
        Answer::Response(r) => {
            let m = Message::from_vec(&r.bytes).expect("every response parses");
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(&m.metadata.id.to_be_bytes(), &query[..2]);
            assert_eq!(m.metadata.truncation, r.truncated);
            let limit = match transport {
                Transport::Tcp => 65535,
                Transport::Udp { max } => usize::from(max).max(512),
            };
            assert!(r.bytes.len() <= limit, "{} > {limit}", r.bytes.len());
            // The ID and rcode survive re-encoding too.
            let again = m.to_vec().expect("re-encodes");
            assert!(Message::from_vec(&again).is_ok());
        }
        Answer::Forward(f) => {
            assert_eq!(f.query, query);
            assert!(!f.upstreams.is_empty());
        }
        Answer::Drop => assert!(query.len() < 12 || query[2] & 0x80 != 0),
    }
});
