//! `PrefixTable` against a naive model: a list of (prefix, value) searched
//! linearly for the longest prefix that covers an address.
//!
//! Input layout, read until the bytes run out:
//! - op byte `o`: `o % 8 == 7` is a `retain` that drops values divisible by
//!   the next byte (at least 2); otherwise an insert, `o & 1` choosing IPv6;
//! - for an insert: a length byte (taken modulo 33 or 129) and the address
//!   (4 or 16 bytes, zero-padded if the input ends);
//! - after each insert the new prefix's edges (its address, first and last
//!   address, and the addresses just outside) are looked up in both; after a
//!   `retain` the latest 64 probes are, and at the end every probe is.

#![no_main]

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tailnet_wire::PrefixTable;

/// Operations per input; keeps the quadratic model check fast.
const MAX_OPS: usize = 64;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for x in &mut a {
            *x = self.byte().unwrap_or(0);
        }
        a
    }
}

/// The model: insertion order kept, a re-inserted prefix replaces its value.
#[derive(Default)]
struct Naive(Vec<(IpNet, u32)>);

impl Naive {
    fn insert(&mut self, net: IpNet, v: u32) -> Option<u32> {
        let net = net.trunc();
        for e in &mut self.0 {
            if e.0 == net {
                return Some(std::mem::replace(&mut e.1, v));
            }
        }
        self.0.push((net, v));
        None
    }
    fn lookup(&self, addr: IpAddr) -> Option<u32> {
        self.0
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, v)| *v)
    }
}

/// Addresses at and just beyond the edges of `net`.
fn probes(net: &IpNet) -> Vec<IpAddr> {
    let mut out = vec![net.addr(), net.network(), net.broadcast()];
    match (net.network(), net.broadcast()) {
        (IpAddr::V4(lo), IpAddr::V4(hi)) => {
            out.push(Ipv4Addr::from(u32::from(lo).wrapping_sub(1)).into());
            out.push(Ipv4Addr::from(u32::from(hi).wrapping_add(1)).into());
        }
        (IpAddr::V6(lo), IpAddr::V6(hi)) => {
            out.push(Ipv6Addr::from(u128::from(lo).wrapping_sub(1)).into());
            out.push(Ipv6Addr::from(u128::from(hi).wrapping_add(1)).into());
        }
        _ => unreachable!("a prefix has one family"),
    }
    out
}

fn compare(table: &PrefixTable<u32>, naive: &Naive, addrs: &[IpAddr]) {
    assert_eq!(table.len(), naive.0.len());
    assert_eq!(table.is_empty(), naive.0.is_empty());
    for &a in addrs {
        assert_eq!(table.lookup(a).copied(), naive.lookup(a), "lookup {a}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let mut table = PrefixTable::new();
    let mut naive = Naive::default();
    let mut probe_set: Vec<IpAddr> = Vec::new();
    let mut next_value = 0u32;
    for _ in 0..MAX_OPS {
        let Some(op) = input.byte() else { break };
        if op % 8 == 7 {
            let d = u32::from(input.byte().unwrap_or(2).max(2));
            table.retain(|v| v % d != 0);
            naive.0.retain(|(_, v)| v % d != 0);
            // The latest probes now; all of them once, at the end.
            compare(
                &table,
                &naive,
                &probe_set[probe_set.len().saturating_sub(64)..],
            );
        } else {
            let len = input.byte().unwrap_or(0);
            let net = if op & 1 == 0 {
                let a = Ipv4Addr::from(input.array::<4>());
                IpNet::new(a.into(), len % 33).unwrap()
            } else {
                let a = Ipv6Addr::from(input.array::<16>());
                IpNet::new(a.into(), len % 129).unwrap()
            };
            let v = next_value;
            next_value += 1;
            assert_eq!(table.insert(net, v), naive.insert(net, v), "insert {net}");
            let new = probes(&net);
            compare(&table, &naive, &new);
            probe_set.extend(new);
        }
    }
    // Every earlier probe still answers as the model does.
    compare(&table, &naive, &probe_set);
});
