//! The local proxies' request parsers (`tailnet_listen::proxy`): any bytes
//! give a request, "need more" or an error without panicking; a parsed
//! message is self-delimiting (its own bytes alone parse to the same
//! value); a forwarded HTTP head never carries the proxy's credentials
//! and always ends `Connection: close`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_listen::proxy::{http, socks5};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((offers, n))) = socks5::greeting(data) {
        assert!(n <= data.len());
        assert_eq!(socks5::greeting(&data[..n]), Ok(Some((offers, n))));
    }
    if let Ok(Some((req, n))) = socks5::request(data) {
        assert!(n <= data.len());
        assert_eq!(socks5::request(&data[..n]), Ok(Some((req.clone(), n))));
        // What the server dials is host:port as Node::dial parses it.
        let text = req.target.to_string();
        assert!(text.rsplit_once(':').is_some(), "{text}");
    }
    match http::request(data) {
        Ok(Some((req, n))) => {
            assert!(n <= data.len() && n <= http::MAX_HEAD);
            assert_eq!(http::request(&data[..n]), Ok(Some((req.clone(), n))));
            if let http::Request::Forward { head, .. } = req {
                assert!(head.ends_with(b"Connection: close\r\n\r\n"));
                let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(!lower.contains("\r\nproxy-authorization:"), "credentials forwarded");
            }
        }
        Ok(None) => assert!(data.len() < http::MAX_HEAD),
        Err(e) => assert!([400, 431, 501].contains(&e.status())),
    }
});
