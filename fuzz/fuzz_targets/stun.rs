//! The STUN subset on arbitrary bytes: parsing a request or a response
//! never panics; whatever `parse_binding_request` accepts is a binding
//! request we can answer, and our answer parses back to the sender.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use tailnet_wire::stun;

fuzz_target!(|data: &[u8]| {
    let tx: [u8; 12] = std::array::from_fn(|i| data.get(8 + i).copied().unwrap_or(0));
    let _ = stun::parse_binding_response(data, &tx);
    if let Ok(tx) = stun::parse_binding_request(data) {
        assert!(stun::is_stun(data));
        let from: SocketAddr = "192.0.2.7:41641".parse().unwrap();
        let resp = stun::binding_response(tx, from);
        assert_eq!(stun::parse_binding_response(&resp, &tx), Some(from));
    }
});
