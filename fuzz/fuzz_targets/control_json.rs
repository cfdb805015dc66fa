//! Control JSON on arbitrary bytes: `MapResponse`, `RegisterRequest`,
//! `MapRequest` and the `/key` response never panic on decode, and what
//! decodes re-encodes to JSON that decodes to the same value (and encodes
//! to the same bytes again). Decoded map responses are also applied to a
//! `Netmap`, which must not panic and must honour the full-`Peers` rule.
//! Every message decodes field names by Go's rule (`control::go_json`:
//! exact, then case-insensitive); decoding the same JSON from bytes and
//! from a `serde_json::Value` (two different inner deserializers under the
//! key folding) must agree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use tailnet_wire::control::{
    MapRequest, MapResponse, Netmap, Node, OverTlsPublicKeyResponse, RegisterRequest,
    RegisterResponse,
};

fn round_trip<T>(data: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let v: T = serde_json::from_slice(data).ok()?;
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        // Duplicate keys collapse in a Value, so only a success must agree.
        if let Ok(w) = serde_json::from_value::<T>(value) {
            assert_eq!(w, v, "from_value and from_slice disagree");
        }
    }
    let a = serde_json::to_vec(&v).expect("a decoded value encodes");
    let back: T = serde_json::from_slice(&a)
        .unwrap_or_else(|e| panic!("re-decode failed: {e}\n{}", String::from_utf8_lossy(&a)));
    assert_eq!(back, v, "{}", String::from_utf8_lossy(&a));
    let b = serde_json::to_vec(&back).expect("encodes");
    assert_eq!(a, b, "encoding is not stable");
    Some(v)
}

fn apply(nm: &mut Netmap, resp: MapResponse) {
    let full: Option<BTreeSet<i64>> = (!resp.keep_alive && !resp.peers.is_empty())
        .then(|| resp.peers.iter().map(|p| p.id).collect());
    let before = nm.clone();
    match nm.apply(resp) {
        Ok(ch) => {
            if let Some(ids) = full {
                assert!(ch.full_peers);
                let now: BTreeSet<i64> = nm.peers().map(|p| p.id).collect();
                assert_eq!(now, ids, "Peers replaces the peer set");
            }
            // Every node in the map has been upgraded.
            let nodes = nm.self_node().into_iter().chain(nm.peers());
            for n in nodes {
                assert!(n.legacy_derp.is_empty() && n.allowed_ips.is_some());
            }
        }
        Err(_) => assert_eq!(*nm, before, "a refused response changes nothing"),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(resp) = round_trip::<MapResponse>(data) {
        let _ = resp.is_delta();
        let mut nm = Netmap::new();
        apply(&mut nm, resp.clone());
        // Once more on top of itself, and after a map with a self node.
        apply(&mut nm, resp.clone());
        let mut nm = Netmap::new();
        apply(
            &mut nm,
            MapResponse {
                node: Some(Node::default()),
                ..MapResponse::default()
            },
        );
        apply(&mut nm, resp);
    }
    round_trip::<RegisterRequest>(data);
    round_trip::<RegisterResponse>(data);
    round_trip::<MapRequest>(data);
    round_trip::<OverTlsPublicKeyResponse>(data);
});
