//! `coordinator serve --derp-map` files on arbitrary bytes:
//! `parse_derp_map` never panics, and a map it accepts is one nodes can
//! use: at least one region, every region's ID its key and above 0, every
//! region with nodes of its own ID and something to dial, ports in range;
//! and it encodes to JSON that parses back to itself.

#![no_main]

use coordinator::server::parse_derp_map;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let map = match parse_derp_map(text) {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    let regions = map.regions.as_ref().expect("regions");
    assert!(!regions.is_empty());
    for (id, r) in regions {
        assert!(*id > 0 && r.region_id == *id);
        assert!(!r.nodes.is_empty());
        for n in &r.nodes {
            assert_eq!(n.region_id, *id);
            assert!(!n.name.is_empty());
            assert!(
                !n.host_name.is_empty()
                    || n.ipv4.parse::<std::net::IpAddr>().is_ok()
                    || n.ipv6.parse::<std::net::IpAddr>().is_ok()
            );
            assert!((-1..=65535).contains(&n.derp_port) && (-1..=65535).contains(&n.stun_port));
        }
    }
    let json = serde_json::to_string(&map).expect("encodes");
    assert_eq!(parse_derp_map(&json).as_ref(), Ok(&map), "{json}");
});
