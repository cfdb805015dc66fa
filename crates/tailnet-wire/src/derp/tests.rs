use super::*;
use crate::PublicKey;

fn public(private: &[u8; 32]) -> PublicKey {
    PublicKey::from_bytes(x25519_dalek::x25519(
        *private,
        x25519_dalek::X25519_BASEPOINT_BYTES,
    ))
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

// The crypto_box vector of the NaCl distribution (tests/box.c, box.out;
// the same keys as RFC 7748 §6.1): Alice seals 131 bytes to Bob.
const ALICE_SK: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const ALICE_PK: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
const BOB_SK: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
const BOB_PK: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const NONCE: &str = "69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37";
const MESSAGE: &str = "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffc\
                       e5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb31\
                       0e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde\
                       048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f93776384864\
                       5e0705";
// NaCl's `crypto_box` output after its 16 zero bytes: the tag, then the
// ciphertext. Go's `box.Seal` (and so `SealTo`) writes exactly this.
const BOXED: &str = "f3ffc7703f9400e52a7dfb4b3d3305d9\
                     8e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186a\
                     c0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738\
                     b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da\
                     99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74\
                     e355a5";

#[test]
fn nacl_box_known_answer_has_the_tag_first() {
    let alice = hex32(ALICE_SK);
    let bob = hex32(BOB_SK);
    assert_eq!(public(&alice).as_bytes(), &hex32(ALICE_PK));
    assert_eq!(public(&bob).as_bytes(), &hex32(BOB_PK));
    let nonce: [u8; 24] = hex::decode(NONCE).unwrap().try_into().unwrap();
    let msg = hex::decode(MESSAGE.replace(' ', "")).unwrap();
    let boxed = hex::decode(BOXED.replace(' ', "")).unwrap();
    assert_eq!(msg.len(), 131);

    let sealed = seal_with_nonce(&alice, &public(&bob), nonce, &msg);
    assert_eq!(&sealed[..24], &nonce);
    assert_eq!(hex::encode(&sealed[24..]), hex::encode(&boxed));
    // Bob opens it with Alice's public key.
    assert_eq!(open(&bob, &public(&alice), &sealed).unwrap(), msg);
    let mut known = nonce.to_vec();
    known.extend_from_slice(&boxed);
    assert_eq!(open(&bob, &public(&alice), &known).unwrap(), msg);
}

#[test]
fn boxes_refuse_tampering_wrong_keys_and_short_input() {
    let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let sealed = seal(&a, &public(&b), b"hello");
    assert_eq!(sealed.len(), NONCE_LEN + BOX_TAG_LEN + 5);
    assert_eq!(open(&b, &public(&a), &sealed).unwrap(), b"hello");
    assert_eq!(open(&c, &public(&a), &sealed), Err(DerpError::BoxOpen));
    for i in [0, 24, 40, sealed.len() - 1] {
        let mut t = sealed.clone();
        t[i] ^= 0x80;
        assert_eq!(
            open(&b, &public(&a), &t),
            Err(DerpError::BoxOpen),
            "byte {i}"
        );
    }
    assert_eq!(
        open(&b, &public(&a), &sealed[..39]),
        Err(DerpError::BoxOpen)
    );
    assert_eq!(open(&b, &public(&a), &[]), Err(DerpError::BoxOpen));
    // Two seals of one message differ (random nonces).
    assert_ne!(seal(&a, &public(&b), b"x"), seal(&a, &public(&b), b"x"));
}

#[test]
fn info_json_is_what_go_sends() {
    assert_eq!(
        serde_json::to_string(&ClientInfo::ours()).unwrap(),
        r#"{"version":2,"CanAckPings":true}"#
    );
    assert_eq!(
        serde_json::to_string(&ServerInfo::ours()).unwrap(),
        r#"{"version":2}"#
    );
    let go: ClientInfo = serde_json::from_str(
        r#"{"meshKey":"abcd","version":2,"CanAckPings":true,"IsProber":true,"AppName":"x"}"#,
    )
    .unwrap();
    assert_eq!(go.mesh_key.as_deref(), Some("abcd"));
    assert!(go.is_prober && go.can_ack_pings);
    assert!(!format!("{go:?}").contains("abcd"));
    let si: ServerInfo =
        serde_json::from_str(r#"{"version":2,"TokenBucketBytesPerSecond":100}"#).unwrap();
    assert_eq!(si.token_bucket_bytes_per_second, 100);
}

#[test]
fn the_handshake_frames_open_on_the_other_side() {
    let (client, server) = ([7u8; 32], [9u8; 32]);
    let greeting = server_key_frame(&public(&server));
    assert_eq!(&greeting[..5], &[1, 0, 0, 0, 40]);
    assert_eq!(&greeting[5..13], &MAGIC);
    let Decoded::Frame {
        frame: Frame::ServerKey { key },
        len: 45,
    } = decode(&greeting, MAX_FRAME_LEN).unwrap()
    else {
        panic!("not a server key");
    };
    assert_eq!(key, public(&server));

    let ci = client_info_frame(&client, &key, &ClientInfo::ours());
    let Decoded::Frame {
        frame: Frame::ClientInfo { key: ck, sealed },
        ..
    } = decode(&ci, MAX_CLIENT_INFO_LEN).unwrap()
    else {
        panic!("not a client info");
    };
    assert_eq!(ck, public(&client));
    assert_eq!(
        open_client_info(&server, &ck, sealed).unwrap(),
        ClientInfo::ours()
    );
    // Someone else's key on the same box: refused.
    assert_eq!(
        open_client_info(&server, &public(&[8u8; 32]), sealed),
        Err(DerpError::BoxOpen)
    );
    assert_eq!(
        open_client_info(&server, &ck, &sealed[..23]),
        Err(DerpError::ClientInfoLength { len: 55 })
    );
    let big = vec![0u8; MAX_CLIENT_INFO_LEN];
    assert!(matches!(
        open_client_info(&server, &ck, &big),
        Err(DerpError::ClientInfoLength { .. })
    ));
    // A box that opens but holds no JSON.
    let junk = seal(&client, &public(&server), b"not json");
    assert!(matches!(
        open_client_info(&server, &ck, &junk),
        Err(DerpError::Json { .. })
    ));

    let si = server_info_frame(&server, &ck, &ServerInfo::ours());
    let Decoded::Frame {
        frame: Frame::ServerInfo { sealed },
        ..
    } = decode(&si, MAX_FRAME_LEN).unwrap()
    else {
        panic!("not a server info");
    };
    assert_eq!(
        open_server_info(&client, &public(&server), sealed).unwrap(),
        ServerInfo::ours()
    );
}

fn k(b: u8) -> PublicKey {
    PublicKey::from_bytes([b; 32])
}

fn every_frame() -> Vec<Frame<'static>> {
    vec![
        Frame::ServerKey { key: k(1) },
        Frame::ClientInfo {
            key: k(2),
            sealed: &[5; 40],
        },
        Frame::ServerInfo { sealed: &[6; 30] },
        Frame::SendPacket {
            dst: k(3),
            packet: b"wireguard",
        },
        Frame::RecvPacket {
            src: k(4),
            packet: b"",
        },
        Frame::KeepAlive,
        Frame::NotePreferred { preferred: true },
        Frame::NotePreferred { preferred: false },
        Frame::PeerGone {
            key: k(5),
            reason: PeerGoneReason::Disconnected,
        },
        Frame::PeerGone {
            key: k(5),
            reason: PeerGoneReason::NotHere,
        },
        Frame::PeerGone {
            key: k(5),
            reason: PeerGoneReason::Other(0xf0),
        },
        Frame::PeerPresent {
            key: k(6),
            endpoint: None,
            flags: None,
        },
        Frame::PeerPresent {
            key: k(6),
            endpoint: Some("192.0.2.1:41641".parse().unwrap()),
            flags: None,
        },
        Frame::PeerPresent {
            key: k(6),
            endpoint: Some("[2001:db8::1]:9".parse().unwrap()),
            flags: Some(PeerPresentFlags(1)),
        },
        Frame::ForwardPacket {
            src: k(7),
            dst: k(8),
            packet: b"fwd",
        },
        Frame::WatchConns,
        Frame::ClosePeer { key: k(9) },
        Frame::Ping { data: *b"pingping" },
        Frame::Pong { data: *b"pongpong" },
        Frame::Health { problem: b"dup" },
        Frame::Health { problem: b"" },
        Frame::Restarting {
            reconnect_in_ms: 1500,
            try_for_ms: 60_000,
        },
        Frame::Unknown {
            frame_type: 0x7f,
            payload: b"future",
        },
    ]
}

#[test]
fn every_frame_round_trips_and_arrives_byte_by_byte() {
    let frames = every_frame();
    let mut wire = Vec::new();
    for f in &frames {
        let before = wire.len();
        f.encode(&mut wire);
        let Decoded::Frame { frame, len } = decode(&wire[before..], MAX_FRAME_LEN).unwrap() else {
            panic!("{f:?} incomplete");
        };
        assert_eq!(&frame, f);
        assert_eq!(len, wire.len() - before);
        assert_eq!(frame.frame_type(), f.frame_type());
    }
    // One byte at a time through the reader.
    let mut r = FrameReader::new(MAX_FRAME_LEN);
    let mut got = Vec::new();
    for b in &wire {
        r.push(std::slice::from_ref(b));
        while let Some(f) = r.next_frame().unwrap() {
            got.push(f.to_vec());
        }
    }
    let want: Vec<Vec<u8>> = frames.iter().map(Frame::to_vec).collect();
    assert_eq!(got, want);
    assert_eq!(r.buffered(), 0);
    // And all at once.
    let mut r = FrameReader::new(MAX_FRAME_LEN);
    r.push(&wire);
    let mut n = 0;
    while r.next_frame().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, frames.len());
}

#[test]
fn wire_bytes_match_go() {
    // SendPacket: type 4, BE length 32 + 3, key, payload.
    let f = Frame::SendPacket {
        dst: k(0xaa),
        packet: b"abc",
    }
    .to_vec();
    assert_eq!(&f[..5], &[0x04, 0, 0, 0, 35]);
    assert_eq!(&f[5..37], &[0xaa; 32]);
    assert_eq!(&f[37..], b"abc");
    assert_eq!(
        Frame::PeerGone {
            key: k(1),
            reason: PeerGoneReason::NotHere
        }
        .to_vec()[..6],
        [0x08, 0, 0, 0, 33, 1]
    );
    assert_eq!(Frame::KeepAlive.to_vec(), [6, 0, 0, 0, 0]);
    assert_eq!(
        Frame::NotePreferred { preferred: true }.to_vec(),
        [7, 0, 0, 0, 1, 1]
    );
    assert_eq!(MAGIC, [0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91]);
    assert_eq!(&MAGIC, "DERP🔑".as_bytes());
    assert_eq!(&DISCO_MAGIC, "TS💬".as_bytes());
}

#[test]
fn lenient_where_go_is_lenient() {
    // A PeerGone without its reason byte is "disconnected".
    let mut f = vec![0x08, 0, 0, 0, 32];
    f.extend_from_slice(&[3; 32]);
    assert_eq!(
        decode(&f, MAX_FRAME_LEN).unwrap(),
        Decoded::Frame {
            frame: Frame::PeerGone {
                key: k(3),
                reason: PeerGoneReason::Disconnected
            },
            len: 37
        }
    );
    // A ServerKey with extra bytes, a Ping with a longer payload.
    let mut f = vec![0x01, 0, 0, 0, 44];
    f.extend_from_slice(&MAGIC);
    f.extend_from_slice(&[4; 32]);
    f.extend_from_slice(b"more");
    assert!(matches!(
        decode(&f, MAX_FRAME_LEN).unwrap(),
        Decoded::Frame {
            frame: Frame::ServerKey { .. },
            len: 49
        }
    ));
    let mut f = vec![0x12, 0, 0, 0, 12];
    f.extend_from_slice(b"12345678abcd");
    assert!(matches!(
        decode(&f, MAX_FRAME_LEN).unwrap(),
        Decoded::Frame {
            frame: Frame::Ping { data: [b'1', ..] },
            ..
        }
    ));
}

#[test]
fn malformed_frames_are_errors_and_skipped() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x04, 0, 0, 0, 3, 1, 2, 3], "short send"),
        (vec![0x05, 0, 0, 0, 0], "short recv"),
        (vec![0x07, 0, 0, 0, 2, 1, 1], "note preferred 2 bytes"),
        (vec![0x07, 0, 0, 0, 0], "note preferred empty"),
        (vec![0x12, 0, 0, 0, 4, 1, 2, 3, 4], "short ping"),
        (vec![0x13, 0, 0, 0, 1, 1], "short pong"),
        (vec![0x10, 0, 0, 0, 1, 0], "watch with payload"),
        (vec![0x11, 0, 0, 0, 1, 0], "close short"),
        (vec![0x15, 0, 0, 0, 4, 0, 0, 0, 0], "short restarting"),
        (vec![0x02, 0, 0, 0, 1, 0], "short client info"),
        (vec![0x03, 0, 0, 0, 1, 0], "short server info"),
        (vec![0x08, 0, 0, 0, 1, 0], "short peer gone"),
    ];
    for (bytes, what) in cases {
        let mut r = FrameReader::new(MAX_FRAME_LEN);
        r.push(&bytes);
        r.push(&Frame::KeepAlive.to_vec());
        assert!(
            matches!(r.next_frame(), Err(DerpError::Malformed { .. })),
            "{what}"
        );
        // In sync: the next frame reads.
        assert_eq!(r.next_frame().unwrap(), Some(Frame::KeepAlive), "{what}");
    }
    let mut bad_magic = vec![0x01, 0, 0, 0, 40];
    bad_magic.extend_from_slice(&[0; 40]);
    assert_eq!(decode(&bad_magic, MAX_FRAME_LEN), Err(DerpError::BadMagic));
    let mut ping = vec![0x12, 0, 0, 0x03, 0xe9];
    ping.extend_from_slice(&[0; 1001]);
    assert!(matches!(
        decode(&ping, MAX_FRAME_LEN),
        Err(DerpError::Malformed { .. })
    ));
}

#[test]
fn packet_and_frame_limits() {
    let max = vec![0u8; MAX_PACKET_SIZE];
    let f = Frame::SendPacket {
        dst: k(1),
        packet: &max,
    }
    .to_vec();
    assert!(decode(&f, MAX_FRAME_LEN).is_ok());
    let over = vec![0u8; MAX_PACKET_SIZE + 1];
    let f = Frame::SendPacket {
        dst: k(1),
        packet: &over,
    }
    .to_vec();
    assert_eq!(
        decode(&f, MAX_FRAME_LEN),
        Err(DerpError::PacketTooLarge {
            len: MAX_PACKET_SIZE + 1
        })
    );
    // A header announcing more than the limit fails at once, before the
    // payload arrives, and keeps failing.
    let mut r = FrameReader::new(MAX_FRAME_LEN);
    r.push(&[0x04, 0x00, 0x10, 0x00, 0x01]);
    for _ in 0..2 {
        assert_eq!(
            r.next_frame(),
            Err(DerpError::FrameTooLarge {
                len: (1 << 20) + 1,
                max: MAX_FRAME_LEN
            })
        );
    }
    assert_eq!(
        decode(&[0xff, 0xff, 0xff, 0xff, 0xff], 100),
        Err(DerpError::FrameTooLarge {
            len: u64::from(u32::MAX),
            max: 100
        })
    );
    // Unknown types within the limit are just frames to skip.
    assert_eq!(
        decode(&[0x99, 0, 0, 0, 1, 7], 100).unwrap(),
        Decoded::Frame {
            frame: Frame::Unknown {
                frame_type: 0x99,
                payload: &[7]
            },
            len: 6
        }
    );
    assert_eq!(decode(&[0x04, 0, 0], 100).unwrap(), Decoded::NeedMore(2));
    assert_eq!(
        decode(&[0x04, 0, 0, 0, 40, 1], 100).unwrap(),
        Decoded::NeedMore(39)
    );
}

#[test]
fn disco_packets_are_recognised() {
    let mut p = DISCO_MAGIC.to_vec();
    p.extend_from_slice(&[0; 56]);
    assert!(looks_like_disco(&p));
    assert!(!looks_like_disco(&p[..61]));
    p[0] = b'X';
    assert!(!looks_like_disco(&p));
    assert!(!looks_like_disco(&[1, 0, 0, 0]));
}

#[test]
fn upgrade_request_and_response() {
    let req = String::from_utf8(upgrade_request("127.0.0.1\r\nEvil: 1")).unwrap();
    assert!(req.starts_with("GET /derp HTTP/1.1\r\nHost: 127.0.0.1Evil:1\r\n"));
    assert!(req.contains("\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"));

    let key = [0xab; 32];
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\
         Derp-Version: 2\r\nDerp-Public-Key: {}\r\n\r\n",
        hex::encode(key)
    );
    let mut buf = head.clone().into_bytes();
    buf.extend_from_slice(&server_key_frame(&PublicKey::from_bytes(key)));
    for cut in [0, 10, head.len() - 1] {
        assert_eq!(parse_upgrade_response(&buf[..cut]).unwrap(), None);
    }
    let r = parse_upgrade_response(&buf).unwrap().unwrap();
    assert_eq!(r.head_len, head.len());
    assert_eq!(r.server_key, Some(PublicKey::from_bytes(key)));
    assert_eq!(r.version, Some(2));
    // hyper writes lower-case names; only the status matters anyway.
    let r = parse_upgrade_response(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: DERP\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!((r.server_key, r.version), (None, None));

    assert!(matches!(
        parse_upgrade_response(b"HTTP/1.1 426 Upgrade Required\r\n\r\nDERP requires"),
        Err(DerpError::Upgrade(_))
    ));
    assert!(parse_upgrade_response(b"SSH-2.0-x\r\n\r\n").is_err());
    assert!(parse_upgrade_response(&vec![b'a'; MAX_UPGRADE_HEAD]).is_err());
}
