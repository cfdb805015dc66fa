use super::*;

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

// NaCl's classic crypto_box vector (tests/box.c, box2.c; also RFC 7748's
// X25519 keys): Alice seals 131 bytes to Bob under this nonce.
const ALICE_SK: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const ALICE_PK: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
const BOB_SK: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
const BOB_PK: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const NONCE: &str = "69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37";
const M: &str = "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ec\
baaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb310e3be8250c46f06dceea3a\
7fa1348057e2f6556ad6b1318a024a838f21af1fde048977eb48f59ffd4924ca1c60902e52f0a089bc\
76897040e082f93776384864 5e0705";
/// NaCl's output after its 16 zero bytes: the tag, then the ciphertext.
const C: &str = "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332e\
a7164d96a4476fb8c531a1186ac0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb8\
63d51738b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da99832b61ca\
01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74e355a5";

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

#[test]
fn nacl_crypto_box_vector_tag_first() {
    let alice = PrivateKey::from_bytes(hex32(ALICE_SK));
    let bob = PrivateKey::from_bytes(hex32(BOB_SK));
    assert_eq!(public_of(&alice), PublicKey::from_bytes(hex32(ALICE_PK)));
    assert_eq!(public_of(&bob), PublicKey::from_bytes(hex32(BOB_PK)));
    let b = DiscoBox::new(&alice, &PublicKey::from_bytes(hex32(BOB_PK)));
    let nonce: [u8; 24] = unhex(NONCE).try_into().unwrap();
    let m = unhex(M);
    let c = unhex(C);
    assert_eq!(m.len(), 131);
    assert_eq!(c.len(), 16 + 131);

    // Our sealing puts exactly NaCl's box (tag first) after the header.
    let mut packet = Vec::new();
    packet.extend_from_slice(&MAGIC);
    packet.extend_from_slice(public_of(&alice).as_bytes());
    packet.extend_from_slice(&nonce);
    packet.extend_from_slice(&[0u8; TAG_LEN]);
    packet.extend_from_slice(&m);
    b.seal_in_place(&mut packet, nonce);
    assert_eq!(&packet[BOX_OFFSET..], &c[..], "box = tag ‖ ciphertext");

    // Bob opens Alice's NaCl box with the key derived the other way round.
    let bob_box = DiscoBox::new(&bob, &public_of(&alice));
    let mut plain = Vec::new();
    bob_box.open_into(&packet, &mut plain).unwrap();
    assert_eq!(plain, m);
}

#[test]
fn layout_of_a_sealed_ping() {
    let a = PrivateKey::generate();
    let b = PrivateKey::generate();
    let ab = DiscoBox::new(&a, &public_of(&b));
    let ba = DiscoBox::new(&b, &public_of(&a));
    let node = PublicKey::from_bytes([9; 32]);
    let ping = Message::Ping(Ping {
        tx_id: [1; 12],
        node_key: Some(node),
        padding: 0,
    });
    let pkt = ab.seal(&ping, [7; 24]);
    // 6 + 32 + 24 + 16 + 2 + 44 (Go's discoPingSize).
    assert_eq!(pkt.len(), 124);
    assert_eq!(&pkt[..6], &[0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC]);
    assert_eq!(&pkt[6..38], public_of(&a).as_bytes());
    assert_eq!(&pkt[38..62], &[7; 24]);
    assert_eq!(sender_key(&pkt), Some(public_of(&a)));
    assert_eq!(classify_datagram(&pkt), DatagramKind::Disco);
    assert_eq!(ba.open(&pkt).unwrap(), ping);
    // The sealer cannot open its own packet as if from the peer.
    assert_eq!(ab.open(&pkt), Err(DiscoError::BadBox));
}

#[test]
fn tampering_and_truncation_fail_to_open() {
    let a = PrivateKey::generate();
    let b = PrivateKey::generate();
    let ab = DiscoBox::new(&a, &public_of(&b));
    let ba = DiscoBox::new(&b, &public_of(&a));
    let pkt = ab.seal_random(&Message::CallMeMaybe(CallMeMaybe {
        endpoints: vec!["192.0.2.1:41641".parse().unwrap()],
    }));
    for i in BOX_OFFSET - NONCE_LEN..pkt.len() {
        let mut bad = pkt.clone();
        bad[i] ^= 0x40;
        assert_eq!(ba.open(&bad), Err(DiscoError::BadBox), "byte {i}");
    }
    assert_eq!(ba.open(&pkt[..OVERHEAD - 1]), Err(DiscoError::NotDisco));
    assert_eq!(ba.open(&pkt[..pkt.len() - 1]), Err(DiscoError::BadBox));
    let mut wrong_sender = pkt.clone();
    wrong_sender[6] ^= 1;
    assert_eq!(ba.open(&wrong_sender), Err(DiscoError::BadBox));
}

#[test]
fn messages_round_trip() {
    let msgs = [
        Message::Ping(Ping {
            tx_id: [3; 12],
            node_key: None,
            padding: 0,
        }),
        Message::Ping(Ping {
            tx_id: [3; 12],
            node_key: Some(PublicKey::from_bytes([4; 32])),
            padding: 100,
        }),
        Message::Pong(Pong {
            tx_id: [5; 12],
            src: "192.0.2.7:41641".parse().unwrap(),
        }),
        Message::Pong(Pong {
            tx_id: [5; 12],
            src: "[2001:db8::1]:7".parse().unwrap(),
        }),
        Message::CallMeMaybe(CallMeMaybe {
            endpoints: vec![
                "10.0.0.1:1".parse().unwrap(),
                "[2001:db8::2]:65535".parse().unwrap(),
            ],
        }),
        Message::CallMeMaybe(CallMeMaybe::default()),
    ];
    for m in msgs {
        let mut b = Vec::new();
        m.encode(&mut b);
        assert_eq!(b.len(), m.encoded_len());
        assert_eq!(Message::parse(&b).unwrap(), m);
    }
}

#[test]
fn pong_bytes_are_v4_mapped() {
    let mut b = Vec::new();
    Message::Pong(Pong {
        tx_id: [0xAA; 12],
        src: "1.2.3.4:258".parse().unwrap(),
    })
    .encode(&mut b);
    let mut want = vec![0x02, 0x00];
    want.extend_from_slice(&[0xAA; 12]);
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4, 1, 2]);
    assert_eq!(b, want);
    assert_eq!(b.len(), 32);
}

#[test]
fn parse_rules_match_go() {
    // Trailing bytes are ignored.
    let mut pong = vec![0x02, 0x00];
    pong.extend_from_slice(&[1; 30]);
    pong.extend_from_slice(b"extra");
    assert!(matches!(Message::parse(&pong), Ok(Message::Pong(_))));
    // A short pong is an error.
    assert_eq!(Message::parse(&pong[..31]), Err(DiscoError::Short));
    // The version byte is not checked for ping and pong.
    pong[1] = 7;
    assert!(matches!(Message::parse(&pong), Ok(Message::Pong(_))));
    // Ping: 12 bytes suffice; 12..43 give no node key; more is padding.
    let mut ping = vec![0x01, 0x00];
    ping.extend_from_slice(&[2; 12]);
    assert_eq!(
        Message::parse(&ping),
        Ok(Message::Ping(Ping {
            tx_id: [2; 12],
            node_key: None,
            padding: 0
        }))
    );
    assert_eq!(Message::parse(&ping[..13]), Err(DiscoError::Short));
    ping.extend_from_slice(&[3; 31]);
    assert!(matches!(
        Message::parse(&ping),
        Ok(Message::Ping(Ping { node_key: None, .. }))
    ));
    ping.extend_from_slice(&[3; 11]);
    assert_eq!(
        Message::parse(&ping),
        Ok(Message::Ping(Ping {
            tx_id: [2; 12],
            node_key: Some(PublicKey::from_bytes([3; 32])),
            padding: 10
        }))
    );
    // CallMeMaybe: odd length, empty body or version != 0 → empty list.
    let mut cmm = vec![0x03, 0x00];
    cmm.extend_from_slice(&[0; 18]);
    cmm[2 + 10] = 0xff;
    cmm[2 + 11] = 0xff;
    cmm[2 + 12] = 10;
    let Ok(Message::CallMeMaybe(m)) = Message::parse(&cmm) else {
        panic!("cmm")
    };
    assert_eq!(m.endpoints, vec!["10.0.0.0:0".parse().unwrap()]);
    cmm.push(0);
    assert_eq!(
        Message::parse(&cmm),
        Ok(Message::CallMeMaybe(CallMeMaybe::default()))
    );
    cmm.pop();
    cmm[1] = 1;
    assert_eq!(
        Message::parse(&cmm),
        Ok(Message::CallMeMaybe(CallMeMaybe::default()))
    );
    // Unknown types and short headers are errors.
    assert_eq!(Message::parse(&[0x09, 0]), Err(DiscoError::UnknownType(9)));
    assert_eq!(Message::parse(&[0x01]), Err(DiscoError::Short));
    assert_eq!(Message::parse(&[]), Err(DiscoError::Short));
}

#[test]
fn classification_in_go_order() {
    let stun = crate::stun::binding_request([1; 12]);
    assert_eq!(classify_datagram(&stun), DatagramKind::Stun);
    // A STUN response (byte 1 = 0x01 too).
    let mut resp = stun.clone();
    resp[0] = 0x01;
    assert_eq!(classify_datagram(&resp), DatagramKind::Stun);
    // STUN-shaped but not a binding message: not STUN.
    let mut other = stun.clone();
    other[1] = 0x11;
    assert_ne!(classify_datagram(&other), DatagramKind::Stun);
    let mut geneve = vec![0u8; 24];
    geneve[2..4].copy_from_slice(&0x7A12u16.to_be_bytes());
    assert_eq!(classify_datagram(&geneve), DatagramKind::Geneve);
    let mut disco = MAGIC.to_vec();
    disco.resize(HEADER_LEN, 0);
    assert_eq!(classify_datagram(&disco), DatagramKind::Disco);
    assert_eq!(
        classify_datagram(&disco[..HEADER_LEN - 1]),
        DatagramKind::WireGuard
    );
    let mut wg = vec![0u8; 148];
    wg[0] = 1;
    assert_eq!(classify_datagram(&wg), DatagramKind::WireGuard);
    let mut data = vec![0u8; 32];
    data[0] = 4;
    assert_eq!(classify_datagram(&data), DatagramKind::WireGuard);
    assert_eq!(classify_datagram(&[]), DatagramKind::WireGuard);
}
