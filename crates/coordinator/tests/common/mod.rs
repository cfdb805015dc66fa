//! A small ts2021 test client: the `/ts2021` upgrade over loopback TCP, the
//! Noise handshake (`tailnet_wire::noise::ClientHandshake`), then hyper's
//! HTTP/2 client over `NoiseStream`. Only for tests; the production control
//! client lives in `tailnet-control`.

#![allow(dead_code)]

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tailnet_control::NoiseStream;
use tailnet_wire::control::{
    Compression, MachinePublic, MapRequest, MapResponse, MapStreamDecoder, NodePublic,
    RegisterAuth, RegisterRequest, RegisterResponse,
};
use tailnet_wire::noise::{reply_len, ClientHandshake};
use tailnet_wire::PrivateKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for any one message.
pub const WAIT: Duration = Duration::from_secs(10);

/// The public key of a Curve25519 private key.
pub fn public_of(k: &PrivateKey) -> [u8; 32] {
    x25519_dalek::x25519(*k.as_bytes(), x25519_dalek::X25519_BASEPOINT_BYTES)
}

/// Sends the upgrade request for `initiation` and reads the head and the
/// Noise reply, byte by byte so nothing after the reply is consumed.
/// Returns the TCP stream positioned at the first Noise record.
pub async fn upgrade(addr: SocketAddr, initiation: &[u8]) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut tcp = TcpStream::connect(addr).await?;
    // As the real client: without it a request's HEADERS and DATA records
    // wait out the server's delayed ACK (40 ms a request).
    tcp.set_nodelay(true)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(initiation);
    let req = format!(
        "POST /ts2021 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: upgrade\r\n\
         Upgrade: tailscale-control-protocol\r\nX-Tailscale-Handshake: {b64}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await?);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(format!("no upgrade: {head}")));
    }
    let mut reply = vec![0u8; 3];
    tcp.read_exact(&mut reply).await?;
    let need = reply_len(&reply)
        .map_err(std::io::Error::other)?
        .ok_or_else(|| std::io::Error::other("short reply"))?;
    reply.resize(need, 0);
    tcp.read_exact(&mut reply[3..]).await?;
    Ok((tcp, reply))
}

/// One ts2021 connection with HTTP/2 on top, as one machine.
pub struct Client {
    pub machine: PrivateKey,
    send: SendRequest<Full<Bytes>>,
}

impl Client {
    /// Connects to the coordinator at `addr` as `machine`.
    pub async fn connect(addr: SocketAddr, control: MachinePublic, machine: PrivateKey) -> Client {
        let (hs, initiation) =
            ClientHandshake::start(*machine.as_bytes(), *control.as_bytes(), 130).expect("start");
        let (tcp, reply) = upgrade(addr, &initiation).await.expect("upgrade");
        let transport = hs.finish(&reply).expect("finish handshake");
        let io = TokioIo::new(NoiseStream::new(transport, tcp));
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client { machine, send }
    }

    /// A new machine key.
    pub async fn new_machine(addr: SocketAddr, control: MachinePublic) -> Client {
        Self::connect(addr, control, PrivateKey::generate()).await
    }

    pub fn machine_public(&self) -> [u8; 32] {
        public_of(&self.machine)
    }

    /// Sends `body` to `path`; returns the status and the response body
    /// (still streaming).
    pub async fn post_raw(&mut self, path: &str, body: Vec<u8>) -> (StatusCode, Incoming) {
        self.send.ready().await.expect("h2 ready");
        let req = Request::post(format!("http://127.0.0.1{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let resp = tokio::time::timeout(WAIT, self.send.send_request(req))
            .await
            .expect("response in time")
            .expect("response");
        (resp.status(), resp.into_body())
    }

    /// Sends `body` to `path`; returns the status and the whole body.
    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
        let (status, body) = self.post_raw(path, body).await;
        let bytes = tokio::time::timeout(WAIT, body.collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes();
        (status, bytes)
    }

    /// Registers node key `node` with `auth_key` and hostname `host`.
    pub async fn register(
        &mut self,
        node: &PrivateKey,
        auth_key: Option<&str>,
        host: &str,
    ) -> RegisterResponse {
        let req = RegisterRequest {
            version: 130,
            node_key: NodePublic::from_bytes(public_of(node)),
            auth: auth_key.map(|k| RegisterAuth {
                auth_key: k.to_string(),
            }),
            hostinfo: Some(tailnet_wire::control::Hostinfo {
                hostname: host.to_string(),
                ..Default::default()
            }),
            ..RegisterRequest::default()
        };
        let (status, body) = self
            .post("/machine/register", serde_json::to_vec(&req).expect("json"))
            .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("register response")
    }

    /// Opens a map stream for `req` (forced to `Stream: true`).
    pub async fn stream(&mut self, mut req: MapRequest) -> MapStream {
        req.stream = true;
        let (status, body) = self
            .post_raw("/machine/map", serde_json::to_vec(&req).expect("json"))
            .await;
        assert_eq!(status, StatusCode::OK);
        MapStream {
            body,
            decoder: MapStreamDecoder::new(Compression::Zstd),
        }
    }
}

/// A map request as Go 1.90.9 sends it for node key `node`.
pub fn map_request(node: &PrivateKey) -> MapRequest {
    MapRequest {
        version: 130,
        compress: "zstd".into(),
        keep_alive: true,
        node_key: NodePublic::from_bytes(public_of(node)),
        stream: true,
        ..MapRequest::default()
    }
}

/// The client side of a map stream.
pub struct MapStream {
    body: Incoming,
    decoder: MapStreamDecoder,
}

impl MapStream {
    /// The next message, `None` when the stream ended.
    pub async fn next(&mut self) -> Option<MapResponse> {
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("valid frame") {
                return Some(serde_json::from_slice(&frame).expect("MapResponse JSON"));
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("a map message in time");
            match frame {
                None | Some(Err(_)) => return None,
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.decoder.push(&data);
                    }
                }
            }
        }
    }

    /// The next message that is not a keep-alive.
    pub async fn next_change(&mut self) -> MapResponse {
        loop {
            let m = self.next().await.expect("stream still open");
            if !m.keep_alive {
                return m;
            }
        }
    }

    /// Skips messages until `pred` holds.
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&MapResponse) -> bool) -> MapResponse {
        loop {
            let m = self.next_change().await;
            if pred(&m) {
                return m;
            }
        }
    }
}
