use super::*;
use tailnet_wire::noise::{reply_len, ClientHandshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Harness {
    addr: std::net::SocketAddr,
    public: MachinePublic,
    _dir: tempfile::TempDir,
    store: Arc<Store>,
}

/// The handler the upgrade tests use: reads one record, answers
/// `pong:<plaintext>` in one record, then stops.
async fn echo_handler(mut conn: NoiseConn) {
    let mut buf = vec![0u8; 8192];
    let mut plain = Vec::new();
    while plain.is_empty() {
        let n = match conn.io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if conn.transport.open_into(&buf[..n], &mut plain).is_err() {
            return;
        }
    }
    let mut reply = b"pong:".to_vec();
    reply.extend_from_slice(&plain);
    reply.extend_from_slice(format!(":v{}", conn.protocol_version).as_bytes());
    reply.extend_from_slice(conn.machine_key.as_bytes());
    let rec = conn.transport.seal(&reply).expect("seal");
    let _ = conn.io.write_all(&rec).await;
    let _ = conn.io.flush().await;
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path()).expect("open store"));
    let public = ControlKey::load(&store).expect("key").public();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, store.clone(), echo_handler));
    Harness {
        addr,
        public,
        _dir: dir,
        store,
    }
}

/// Sends `request` and reads until the end of the response head. Returns
/// the head and whatever bytes came after it.
async fn exchange_head(stream: &mut TcpStream, request: &[u8]) -> (String, Vec<u8>) {
    stream.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end + 4].to_vec()).expect("utf8 head");
            return (head, buf[end + 4..].to_vec());
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "EOF before the end of the response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn simple(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let (head, mut rest) = exchange_head(&mut s, request.as_bytes()).await;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("length"))
        })
        .unwrap_or(0);
    while rest.len() < len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.expect("read body");
        assert!(n > 0);
        rest.extend_from_slice(&chunk[..n]);
    }
    (head, String::from_utf8(rest).expect("utf8 body"))
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

fn upgrade_request(header: &str) -> String {
    format!(
        "POST /ts2021 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Length: 0\r\nConnection: upgrade\r\nUpgrade: tailscale-control-protocol\r\n\
         X-Tailscale-Handshake: {header}\r\n\r\n"
    )
}

fn nodes_stored(store: &Store) -> usize {
    crate::admin::nodes_list(store, SystemTime::now())
        .map(|n| n.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn key_returns_the_coordinator_noise_key() {
    let h = start().await;
    let (head, body) = simple(
        h.addr,
        "GET /key?v=130 HTTP/1.1\r\nHost: x\r\nUser-Agent: Go-http-client/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(status(&head), 200, "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let hex: String = h
        .public
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        body,
        format!(
            "{{\"legacyPublicKey\":\"mkey:{}\",\"publicKey\":\"mkey:{hex}\"}}",
            "0".repeat(64)
        )
    );
    let parsed: OverTlsPublicKeyResponse = serde_json::from_str(&body).expect("parse");
    assert_eq!(parsed.noise_key(), Some(h.public));
    // The same key after a reload: it is persistent.
    assert_eq!(ControlKey::load(&h.store).expect("key").public(), h.public);
}

#[tokio::test]
async fn unknown_path_404_and_bad_method_405() {
    let h = start().await;
    let (head, _) = simple(h.addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&head), 404, "{head}");
    let (head, _) = simple(
        h.addr,
        "POST /key HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&head), 405, "{head}");
    let (head, _) = simple(h.addr, "GET /ts2021 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&head), 405, "{head}");
}

#[tokio::test]
async fn ts2021_upgrade_handshake_and_one_record_each_way() {
    let h = start().await;
    let machine_private = tailnet_wire::PrivateKey::generate();
    let machine_public = x25519_dalek::x25519(
        *machine_private.as_bytes(),
        x25519_dalek::X25519_BASEPOINT_BYTES,
    );
    let (client, initiation) =
        ClientHandshake::start(*machine_private.as_bytes(), *h.public.as_bytes(), 130)
            .expect("start");
    assert_eq!(initiation.len(), 101);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&initiation);

    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let (head, mut rest) = exchange_head(&mut s, upgrade_request(&b64).as_bytes()).await;
    assert_eq!(status(&head), 101, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("upgrade: tailscale-control-protocol"),
        "{head}"
    );
    assert!(lower.contains("connection: upgrade"), "{head}");

    // The 51-byte response (no early payload follows).
    let need = loop {
        if let Some(n) = reply_len(&rest).expect("reply header") {
            if rest.len() >= n {
                break n;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "EOF in the Noise response");
        rest.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(need, 51);
    let mut transport = client.finish(&rest[..need]).expect("finish");
    assert_eq!(rest.len(), need, "nothing follows the response");

    let rec = transport.seal(b"ping").expect("seal");
    s.write_all(&rec).await.expect("write record");
    let mut plain = Vec::new();
    let mut chunk = [0u8; 4096];
    while plain.is_empty() {
        let n = s.read(&mut chunk).await.expect("read record");
        assert!(n > 0, "EOF before the reply record");
        transport.open_into(&chunk[..n], &mut plain).expect("open");
    }
    let mut want = b"pong:ping:v130".to_vec();
    want.extend_from_slice(&machine_public);
    assert_eq!(plain, want);
    assert_eq!(nodes_stored(&h.store), 0);
}

#[tokio::test]
async fn garbage_or_missing_handshake_header_is_400() {
    let h = start().await;
    for header in ["!!!not base64!!!", &"QUFB".repeat(400)] {
        let (head, body) = simple(h.addr, &upgrade_request(header)).await;
        assert_eq!(status(&head), 400, "{header}: {head}");
        assert!(!body.is_empty() && body.len() < 100, "{body}");
    }
    let req = "POST /ts2021 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\
               Connection: upgrade\r\nUpgrade: tailscale-control-protocol\r\n\r\n";
    let (head, _) = simple(h.addr, req).await;
    assert_eq!(status(&head), 400, "{head}");
    let req = "POST /ts2021 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\
               X-Tailscale-Handshake: AAAA\r\n\r\n";
    let (head, _) = simple(h.addr, req).await;
    assert_eq!(status(&head), 400, "{head}");
    assert_eq!(nodes_stored(&h.store), 0);
}

#[tokio::test]
async fn wrong_size_initiation_gets_go_error_frame_after_101() {
    let h = start().await;
    let b64 = base64::engine::general_purpose::STANDARD.encode([0u8; 10]);
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let (head, mut rest) = exchange_head(&mut s, upgrade_request(&b64).as_bytes()).await;
    assert_eq!(status(&head), 101, "{head}");
    s.read_to_end(&mut rest).await.expect("read to EOF");
    assert_eq!(rest, error_frame("wrong handshake initiation size"));
}

#[tokio::test]
async fn undecryptable_initiation_gets_101_then_close() {
    let h = start().await;
    // A valid initiation for another control key fails to decrypt here.
    let other = tailnet_wire::PrivateKey::generate();
    let other_pub = x25519_dalek::x25519(*other.as_bytes(), x25519_dalek::X25519_BASEPOINT_BYTES);
    let (_c, initiation) = ClientHandshake::start(
        *tailnet_wire::PrivateKey::generate().as_bytes(),
        other_pub,
        130,
    )
    .expect("start");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&initiation);
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let (head, mut rest) = exchange_head(&mut s, upgrade_request(&b64).as_bytes()).await;
    assert_eq!(status(&head), 101, "{head}");
    s.read_to_end(&mut rest).await.expect("read to EOF");
    assert!(rest.is_empty(), "{rest:?}");
}
