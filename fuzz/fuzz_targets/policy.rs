//! Policy files on arbitrary bytes: `Policy::parse` never panics, errors
//! always say where, and whatever parses compiles for every node of a small
//! tailnet into rules the Go client accepts: no `SrcBits`/`Bits`, no empty
//! `SrcIPs` or `DstPorts`, destinations that are `*` or the node's own
//! addresses, sane port ranges, and JSON that decodes back to the same rules.

#![no_main]

use coordinator::policy::{Policy, PolicyError, PolicyNode};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use tailnet_wire::control::FilterRule;

fn node(name: &str, v4: &str, v6: &str, tags: &[&str]) -> PolicyNode {
    PolicyNode {
        addresses: vec![
            v4.parse::<IpAddr>().expect("v4"),
            v6.parse::<IpAddr>().expect("v6"),
        ],
        tags: tags.iter().map(|t| t.to_string()).collect(),
        name: name.into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::parse(text) {
        Ok(p) => p,
        Err(PolicyError::Invalid { path, message }) => {
            assert!(!path.is_empty() && !message.is_empty());
            return;
        }
        Err(PolicyError::Syntax { line, column, .. }) => {
            assert!(line >= 1 && column <= text.len() + 1);
            return;
        }
        Err(e) => panic!("parse gave a file error: {e}"),
    };
    assert_eq!(
        Policy::parse(text).ok().as_ref(),
        Some(&policy),
        "not deterministic"
    );

    let all = [
        node(
            "engine",
            "100.64.0.1",
            "fd7a:115c:a1e0:ab12:4843:cd96:6240:1",
            &["tag:engine"],
        ),
        node(
            "control",
            "100.64.0.2",
            "fd7a:115c:a1e0:ab12:4843:cd96:6240:2",
            &["tag:control", "tag:x"],
        ),
        node(
            "plain",
            "100.64.0.3",
            "fd7a:115c:a1e0:ab12:4843:cd96:6240:3",
            &[],
        ),
        node(
            "chromeos",
            "100.115.92.7",
            "fd7a:115c:a1e0:ab12:4843:cd96:6273:5c07",
            &[],
        ),
    ];
    for me in &all {
        let rules = policy.filter_for(me, &all);
        for r in &rules {
            assert!(!r.uses_deprecated_bits());
            assert!(!r.src_ips.is_empty() && r.src_ips.iter().all(|s| !s.is_empty()));
            assert!(!r.dst_ports.is_empty());
            assert!(r.cap_grant.is_empty());
            assert!(r.ip_proto.iter().all(|p| (1..=255).contains(p)));
            for d in &r.dst_ports {
                assert!(d.ports.first <= d.ports.last);
                assert!(
                    d.ip == "*" || me.addresses.iter().any(|a| a.to_string() == d.ip),
                    "destination {} is not this node's",
                    d.ip
                );
            }
        }
        let json = serde_json::to_string(&rules).expect("rules encode");
        assert!(!json.contains("Bits"), "{json}");
        let back: Vec<FilterRule> = serde_json::from_str(&json).expect("rules decode");
        assert_eq!(back, rules);
    }
});
