//! Disco packets and messages from arbitrary bytes: classification, the
//! sender key, opening a box, and parsing never panic; whatever parses
//! encodes back to bytes that parse to the same message; a message sealed
//! to a peer opens at that peer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tailnet_wire::disco::{self, DiscoBox, Message};
use tailnet_wire::PrivateKey;

struct Boxes {
    a_to_b: DiscoBox,
    b_from_a: DiscoBox,
}

fn boxes() -> &'static Boxes {
    static B: OnceLock<Boxes> = OnceLock::new();
    B.get_or_init(|| {
        let a = PrivateKey::from_bytes([0x11; 32]);
        let b = PrivateKey::from_bytes([0x22; 32]);
        Boxes {
            a_to_b: DiscoBox::new(&a, &disco::public_of(&b)),
            b_from_a: DiscoBox::new(&b, &disco::public_of(&a)),
        }
    })
}

fn check_message(m: &Message) {
    let mut enc = Vec::new();
    m.encode(&mut enc);
    assert_eq!(enc.len(), m.encoded_len());
    let again = Message::parse(&enc).expect("an encoded message parses");
    assert_eq!(&again, m);
}

fuzz_target!(|data: &[u8]| {
    let b = boxes();
    // Whatever arrives on the socket.
    let _ = disco::classify_datagram(data);
    let _ = disco::sender_key(data);
    if let Ok(m) = b.b_from_a.open(data) {
        check_message(&m);
    }
    // The bytes as a decrypted message.
    if let Ok(m) = Message::parse(data) {
        check_message(&m);
        // Sealed to the peer, it opens there and nowhere else.
        let pkt = b.a_to_b.seal(&m, [7; 24]);
        assert_eq!(disco::classify_datagram(&pkt), disco::DatagramKind::Disco);
        assert_eq!(b.b_from_a.open(&pkt).as_ref(), Ok(&m));
        assert!(b.a_to_b.open(&pkt).is_err());
    }
});
