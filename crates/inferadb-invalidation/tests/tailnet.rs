//! Control and an engine as tailnet nodes joined to our coordinator in
//! this process: the webhook travels through the tunnel.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

mod common;

use common::{secret, within};
use coordinator::admin::{authkey_create, AuthKeyCreateArgs};
use coordinator::server::Server;
use coordinator::Store;
use inferadb_invalidation::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailnet::Node;

async fn join(url: &str, key: &str, host: &str, state: &Path) -> Node {
    Node::builder()
        .control_url(url)
        .hostname(host)
        .state_dir(state)
        .auth_key(key)
        .listen("127.0.0.1:0".parse().unwrap())
        .timeout(Duration::from_secs(20))
        .up()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_over_the_tailnet() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("coord");
    let store = Arc::new(Store::open(&cdir).unwrap());
    let coord = Server::builder(store)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", coord.local_addr());
    let key = authkey_create(
        &Store::open(&cdir).unwrap(),
        &AuthKeyCreateArgs {
            reusable: true,
            ephemeral: false,
            tags: vec!["tag:inferadb-test".into()],
            expiry: Some("1h".into()),
        },
        SystemTime::now(),
    )
    .unwrap()
    .key;

    let (cstate, estate) = (dir.path().join("c"), dir.path().join("e"));
    let (control, engine) = within(60, "two nodes joining", async {
        tokio::join!(
            join(&url, &key, "control", &cstate),
            join(&url, &key, "engine", &estate)
        )
    })
    .await;
    // Wait until control's netmap lists the engine.
    let mut rx = control.watch_netmap().unwrap();
    within(60, "control seeing the engine", async {
        loop {
            let seen = rx
                .borrow()
                .peers()
                .any(|p| p.hostinfo.as_ref().is_some_and(|h| h.hostname == "engine"));
            if seen {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;

    let rec = Recorder::new();
    let receiver = Receiver::new(
        ReceiverConfig::new(secret()),
        rec.clone(),
        ReceiverMetrics::unregistered(),
    );
    // The listener that names callers serves the receiver as well.
    let _server = receiver.serve(engine.listen(8080).unwrap());
    let target = SocketAddr::new(engine.ipv4().unwrap(), 8080);

    let sender = Sender::new(
        control.clone(),
        secret(),
        Targets::fixed([Target::new("eu-west-1", target)]),
        SenderConfig::from_seed(5000, 2),
        SenderMetrics::unregistered(),
    );
    for vault in ["12345", "12346"] {
        let ev = Invalidation::vault_created(vault).with_origin("us-west-1");
        let report = within(30, "a delivery over the tailnet", sender.send(&ev))
            .await
            .unwrap();
        assert!(report.all_delivered(), "{report:#?}");
        assert_eq!(rec.count_of(&ev.id), 1);
    }
    assert_eq!(
        rec.events()
            .iter()
            .map(|e| e.vault_id.as_str())
            .collect::<Vec<_>>(),
        ["12345", "12346"]
    );

    // A forged webhook over the tunnel is refused too.
    let forger = Sender::new(
        control.clone(),
        Secret::from_text("a-guess-at-the-secret-123456").unwrap(),
        Targets::fixed([Target::new("eu-west-1", target)]),
        SenderConfig::from_seed(5000, 2),
        SenderMetrics::unregistered(),
    );
    let report = forger
        .send(&Invalidation::vault_created("1"))
        .await
        .unwrap();
    assert!(matches!(
        report.deliveries[0].result,
        Err(AttemptError::Status(s)) if s.as_u16() == 401
    ));
    assert_eq!(rec.events().len(), 2);

    // An engine address no peer has: the attempt fails at once with the
    // reason (no route), not after the 5 s send timeout.
    let nowhere = SocketAddr::new("100.64.250.250".parse().unwrap(), 8080);
    let lost = Sender::new(
        control.clone(),
        secret(),
        Targets::fixed([Target::new("nowhere", nowhere)]),
        SenderConfig::from_seed(5000, 0),
        SenderMetrics::unregistered(),
    );
    let started = std::time::Instant::now();
    let report = lost.send(&Invalidation::vault_created("2")).await.unwrap();
    match &report.deliveries[0].result {
        Err(AttemptError::Connect(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::HostUnreachable, "{e}");
            assert!(e.to_string().contains("no route to 100.64.250.250"), "{e}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    control.shutdown().await;
    engine.shutdown().await;
}
