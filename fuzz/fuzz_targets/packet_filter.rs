//! The ACL packet filter on arbitrary rules and packets: compiling any
//! `[FilterRule]` JSON and running any packets through it never panics, the
//! flow table stays bounded, and the decisions keep the filter's promises:
//! no rules = accept everything, TCP that is not a new connection always
//! passes, and an allow-all rule never drops a well-formed TCP/UDP packet
//! for one of our addresses for want of a rule.
//!
//! Input: u16 (LE) length of the rule JSON, the JSON, then packet records:
//! a control byte (bit 0 outbound, bit 1 rewrite the destination (inbound)
//! or source (outbound) to one of our addresses, bit 2 swap to the
//! allow-all rule set, bit 3 back to the fuzzed one), u16 (LE) length, the
//! packet.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::Arc;
use tailnet_wire::control::FilterRule;
use tailnet_wire::filter::{DropReason, Filter, Rules, Verdict, FLOW_TABLE_MAX};
use tailnet_wire::IpPacket;

const ME4: [u8; 4] = [100, 64, 0, 1];
const ME6: [u8; 16] = [
    0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Some(head)
}

/// Writes one of our addresses into the address field at `at` (12 source,
/// 16 destination for IPv4; 8 / 24 for IPv6).
fn rewrite(pkt: &mut [u8], v4_at: usize, v6_at: usize) {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= v4_at + 4 => pkt[v4_at..v4_at + 4].copy_from_slice(&ME4),
        Some(6) if pkt.len() >= v6_at + 16 => pkt[v6_at..v6_at + 16].copy_from_slice(&ME6),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let Some(len) = take(&mut data, 2) else {
        return;
    };
    let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    let Some(json) = take(&mut data, len) else {
        return;
    };
    let rules: Vec<FilterRule> = serde_json::from_slice(json).unwrap_or_default();
    let fuzzed = Arc::new(Rules::compile(&rules));
    assert!(fuzzed.errors().len() <= 16);
    let allow_all = Arc::new(Rules::compile(&[FilterRule::allow_all()]));
    let me = [IpAddr::from(ME4), IpAddr::from(ME6)];
    let mut filter = Filter::new(&me, Some(fuzzed.clone()));
    let mut open = Filter::allow_all();
    let mut under_allow_all = false;

    while let Some(ctl) = take(&mut data, 1) {
        let ctl = ctl[0];
        let Some(n) = take(&mut data, 2) else {
            return;
        };
        let n = usize::from(u16::from_le_bytes([n[0], n[1]]));
        let n = n.min(data.len());
        let Some(pkt) = take(&mut data, n) else {
            return;
        };
        let mut pkt = pkt.to_vec();
        if ctl & 4 != 0 {
            filter.set_rules(Some(allow_all.clone()));
            under_allow_all = true;
        }
        if ctl & 8 != 0 {
            filter.set_rules(Some(fuzzed.clone()));
            under_allow_all = false;
        }
        if ctl & 1 != 0 {
            if ctl & 2 != 0 {
                rewrite(&mut pkt, 12, 8);
            }
            filter.outbound(&pkt);
            open.outbound(&pkt);
            assert!(open.flows().is_empty(), "allow-all records nothing");
        } else {
            if ctl & 2 != 0 {
                rewrite(&mut pkt, 16, 24);
            }
            let verdict = filter.inbound(&pkt);
            assert_eq!(open.inbound(&pkt), Verdict::Accept);
            if let Ok(p) = IpPacket::parse(&pkt) {
                let ours = p.dst == me[0] || p.dst == me[1];
                let tcp_ok = p.tcp_flags().is_some() && !p.is_tcp_syn();
                if ours && tcp_ok {
                    assert_eq!(verdict, Verdict::Accept, "TCP non-SYN to us");
                }
                if under_allow_all && ours {
                    assert_ne!(verdict, Verdict::Drop(DropReason::NoRule));
                    if p.ports().is_some() && p.tcp_flags().is_some() {
                        assert_eq!(verdict, Verdict::Accept, "allow-all TCP");
                    }
                }
            }
        }
        assert!(filter.flows().len() <= FLOW_TABLE_MAX);
    }
});
