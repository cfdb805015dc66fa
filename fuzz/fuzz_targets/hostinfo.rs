//! Hostinfo limits (`coordinator::hostinfo`) on arbitrary JSON: the check
//! never panics, whatever it accepts is within the total size limit, and
//! it decides the same way twice. Both what a node sends (the typed
//! `Hostinfo`, as register and map requests parse it) and any JSON value.

#![no_main]

use coordinator::hostinfo::{check_hostinfo, HostinfoError, MAX_HOSTINFO_BYTES};
use libfuzzer_sys::fuzz_target;
use tailnet_wire::control::Hostinfo;

fn check(v: &serde_json::Value) {
    let r = check_hostinfo(v);
    assert_eq!(r, check_hostinfo(v), "not deterministic");
    match r {
        Ok(()) => {
            let size = serde_json::to_vec(v).expect("encodes").len();
            assert!(size <= MAX_HOSTINFO_BYTES, "{size} bytes accepted");
        }
        Err(HostinfoError::TooLarge { size, limit }) => assert!(size > limit),
        Err(HostinfoError::StringTooLong { len, limit, .. })
        | Err(HostinfoError::ListTooLong { len, limit, .. }) => assert!(len > limit),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = serde_json::from_slice::<Hostinfo>(data) {
        if let Ok(v) = serde_json::to_value(&h) {
            check(&v);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        check(&v);
    }
});
