//! The embedding API against the embedded coordinator on loopback: dial
//! by name (FQDN, short name, IPv4, IPv6) with errors that name the step
//! that failed, and `whois` on accepted connections.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use coordinator::admin::{authkey_create, AuthKeyCreateArgs};
use coordinator::server::{Server, ServerHandle};
use coordinator::Store;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet::{DialError, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} took over 60 s"))
}

async fn coordinator(dir: &std::path::Path) -> (ServerHandle, Arc<Store>) {
    let store = Arc::new(Store::open(dir).unwrap());
    let h = Server::builder(store.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (h, store)
}

async fn join(h: &ServerHandle, store: &Store, host: &str, tags: &[&str]) -> Node {
    let args = AuthKeyCreateArgs {
        reusable: false,
        ephemeral: true,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        expiry: Some("1h".into()),
    };
    let key = authkey_create(store, &args, SystemTime::now()).unwrap().key;
    Node::builder()
        .control_url(format!("http://{}", h.local_addr()))
        .auth_key(key)
        .hostname(host)
        .ephemeral(true)
        .listen("127.0.0.1:0".parse().unwrap())
        .timeout(Duration::from_secs(30))
        .up()
        .await
        .unwrap_or_else(|e| panic!("{host} joins: {e}"))
}

fn fqdn(node: &Node) -> String {
    let nm = node.watch_netmap().unwrap();
    let name = nm.borrow().self_node().unwrap().name.clone();
    name.trim_end_matches('.').to_string()
}

async fn wait_for_peers(node: &Node, n: usize) {
    let mut rx = node.watch_netmap().unwrap();
    within("the netmap update", async {
        while rx.borrow().peers().len() < n {
            rx.changed().await.unwrap();
        }
    })
    .await;
}

/// One round trip on a fresh connection (the server echoes a line).
async fn hello(s: &mut tailnet::TcpStream) {
    s.write_all(b"ping\n").await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_by_name_and_whois_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let (h, store) = coordinator(dir.path()).await;
    let server = join(&h, &store, "api", &["tag:api"]).await;
    let client = join(&h, &store, "web", &["tag:web", "tag:frontend"]).await;
    wait_for_peers(&client, 1).await;
    wait_for_peers(&server, 1).await;

    // The server names each caller; it echoes one line and reports who
    // called.
    let listener = server.listen(80).unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let serving = tokio::spawn(async move {
        loop {
            let (mut s, caller) = listener.accept().await.unwrap();
            let _ = seen_tx.send(caller);
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(&buf).await;
                }
            });
        }
    });

    let name = fqdn(&server);
    let v6 = server
        .addresses()
        .iter()
        .copied()
        .find(IpAddr::is_ipv6)
        .expect("an IPv6 tailnet address");
    let v4 = server.ipv4().expect("an IPv4 tailnet address");
    for target in [
        format!("{name}:80"),
        format!("{name}.:80"),
        "api:80".to_string(),
        format!("{v4}:80"),
        format!("[{v6}]:80"),
    ] {
        let mut s = within(&target, client.dial(&target))
            .await
            .unwrap_or_else(|e| panic!("dial {target}: {e}"));
        hello(&mut s).await;
        let caller = within("the caller", seen_rx.recv()).await.unwrap();
        assert_eq!(caller.addr, s.local_addr(), "{target}");
        let who = caller.whois.expect("the caller is in the netmap");
        assert_eq!(who.name, fqdn(&client));
        assert_eq!(who.host_name, "web");
        assert!(
            who.has_tag("tag:web") && who.has_tag("tag:frontend"),
            "{who:?}"
        );
        assert!(!who.has_tag("tag:api"));
        assert_eq!(who.node_key, client.public_key());
        assert_eq!(who.addresses, client.addresses().to_vec());
        assert_eq!(who.os, std::env::consts::OS, "the OS the node reported");
        assert!(who.user.is_none(), "a tagged node belongs to no user");
        // The same from a plain accept's peer address.
        assert_eq!(server.whois(caller.addr).as_ref(), Some(&*who));
    }
    // An address nobody has.
    assert!(server.whois("100.64.250.250:1".parse().unwrap()).is_none());

    // Each failed step says so.
    let e = client.dial("no-such-node:80").await.unwrap_err();
    assert!(
        matches!(e, DialError::UnknownName { ref name, .. } if name == "no-such-node"),
        "{e}"
    );
    let e = client
        .dial(&format!("nope.{}:80", name.split_once('.').unwrap().1))
        .await
        .unwrap_err();
    assert!(matches!(e, DialError::UnknownName { .. }), "{e}");
    let e = client.dial("100.64.250.250:80").await.unwrap_err();
    assert!(
        matches!(e, DialError::NoRoute(ip) if ip.to_string() == "100.64.250.250"),
        "{e}"
    );
    let e = client.dial("api").await.unwrap_err();
    assert!(matches!(e, DialError::BadAddress(_)), "{e}");
    let e = within("a refused dial", client.dial("api:81"))
        .await
        .unwrap_err();
    assert!(matches!(e, DialError::Refused(a) if a.port() == 81), "{e}");
    assert_eq!(
        std::io::Error::from(e).kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    // The server's filter drops new flows: the SYN goes unanswered.
    server.set_packet_filter(Some(vec![])).await.unwrap();
    let e = client
        .dial_timeout("api:80", Duration::from_millis(800))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DialError::TimedOut { addr, .. } if addr.port() == 80),
        "{e}"
    );

    serving.abort();
    server.shutdown().await;
    client.shutdown().await;
    h.shutdown().await;
}

/// A CA and a leaf certificate for `ip` signed by it, made by the
/// `openssl` command (webpki refuses a self-signed certificate as the
/// server's own).
fn ca_and_leaf(
    dir: &std::path::Path,
    ip: IpAddr,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    let subj = format!("/CN={ip}");
    csr.extend(["-subj", &subj, "-keyout", "leaf.key", "-out", "leaf.csr"]);
    run(&csr);
    std::fs::write(
        dir.join("leaf.ext"),
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// `listen_tls` with the application's certificate: a client that trusts
/// it completes the handshake and talks, the server names it; a client
/// that never starts its handshake holds up nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_a_caller_certificate() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let dir = tempfile::tempdir().unwrap();
    let (h, store) = coordinator(dir.path()).await;
    let server = join(&h, &store, "tls-api", &["tag:api"]).await;
    let client = join(&h, &store, "tls-web", &["tag:web"]).await;
    wait_for_peers(&client, 1).await;
    let ip = server.ipv4().unwrap();
    let (ca_pem, leaf_pem, leaf_key) = ca_and_leaf(dir.path(), ip);
    let cert = CertificateDer::from_pem_file(&leaf_pem).unwrap();
    let ca = CertificateDer::from_pem_file(&ca_pem).unwrap();
    let key = PrivateKeyDer::from_pem_file(&leaf_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut listener = server.listen_tls(443, Arc::new(config)).unwrap();

    // A client that connects and says nothing.
    let _silent = client.dial("tls-api:443").await.unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let cconfig = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cconfig));
    let tcp = client.dial("tls-api:443").await.unwrap();
    let local = tcp.local_addr();
    let client_side = async {
        let mut tls = connector
            .connect(ServerName::IpAddress(ip.into()), tcp)
            .await
            .unwrap();
        tls.write_all(b"ping\n").await.unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        buf
    };
    let server_side = async {
        let (mut tls, caller) = listener.accept().await.unwrap();
        assert_eq!(caller.addr, local);
        assert!(caller.has_tag("tag:web"));
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(&buf).await.unwrap();
        tls.flush().await.unwrap();
        tls
    };
    let (echo, _tls) = within("TLS exchange", async {
        tokio::join!(client_side, server_side)
    })
    .await;
    assert_eq!(&echo, b"ping\n");

    server.shutdown().await;
    client.shutdown().await;
    h.shutdown().await;
}

/// A statically configured node: `whois` names a peer by key from its
/// allowed IPs, and dial errors need no control server.
#[tokio::test]
async fn static_node_whois_and_dial_errors() {
    use tailnet::{NodeConfig, PeerConfig, PrivateKey};
    let peer = NodeConfig::new(PrivateKey::generate(), vec!["100.64.0.2".parse().unwrap()]);
    let mut config = NodeConfig::new(PrivateKey::generate(), vec!["100.64.0.1".parse().unwrap()]);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.peers.push(PeerConfig {
        public_key: peer.public_key(),
        endpoint: None,
        allowed_ips: vec!["100.64.0.2/32".parse().unwrap()],
        persistent_keepalive: None,
        disco_key: None,
        home_derp: 0,
        endpoints: Vec::new(),
    });
    let node = Node::start(config).await.unwrap();
    let who = node.whois("100.64.0.2:5".parse().unwrap()).unwrap();
    assert_eq!(who.node_key, peer.public_key());
    assert!(who.name.is_empty() && who.tags.is_empty());
    assert!(node.whois("100.64.0.3:5".parse().unwrap()).is_none());

    let e = node.dial("somename:80").await.unwrap_err();
    assert!(
        matches!(
            e,
            DialError::Resolve {
                source: tailnet::ResolveError::NoMagicDns,
                ..
            }
        ),
        "{e}"
    );
    let e = node.dial("[fd7a:115c:a1e0::2]:80").await.unwrap_err();
    assert!(matches!(e, DialError::AddressFamily(_)), "{e}");
    let e = node.dial("100.64.0.3:80").await.unwrap_err();
    assert!(matches!(e, DialError::NoRoute(_)), "{e}");
    // The peer set changes what routes.
    node.set_peers(Vec::new()).await.unwrap();
    let e = node.dial("100.64.0.2:80").await.unwrap_err();
    assert!(matches!(e, DialError::NoRoute(_)), "{e}");
    assert!(node.whois("100.64.0.2:5".parse().unwrap()).is_none());
    node.shutdown().await;
}
