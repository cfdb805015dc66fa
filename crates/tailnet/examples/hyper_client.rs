//! hyper's client over the tailnet by MagicDNS name, against hyper's
//! server on the tailnet; and what a failed dial says.
//!
//! Self-contained: an embedded coordinator on loopback, two nodes; exits
//! non-zero when an answer is wrong.
//!
//!     cargo run -p tailnet --example hyper_client

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;

/// Echoes the request body, prefixed by the method and path.
async fn echo(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let head = format!("{} {}\n", req.method(), req.uri().path());
    let body = req.into_body().collect().await?.to_bytes();
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Ok(Response::new(Full::new(Bytes::from(out))))
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let tailnet = common::Tailnet::start().await?;
    let server = tailnet.join("echo", &["tag:echo"]).await?;
    let client_node = tailnet.join("client", &["tag:client"]).await?;
    let name = common::fqdn(&server);

    // hyper's server: one task per connection on the tailnet listener.
    let listener = server.listen(8080)?;
    let serving = tokio::spawn(async move {
        loop {
            let Ok((stream, _caller)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(echo))
                    .await;
            });
        }
    });

    common::wait_for_peer(&client_node, &name).await?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .build(tailnet::http::Connector::new(client_node.clone()));

    let body = vec![b'x'; 256 * 1024];
    let req = Request::post(format!("http://{name}:8080/upload"))
        .body(Full::new(Bytes::from(body.clone())))?;
    let resp = client.request(req).await?;
    let got = resp.into_body().collect().await?.to_bytes();
    let expect_head = b"POST /upload\n";
    if !got.starts_with(expect_head) || got[expect_head.len()..] != body[..] {
        return Err(format!("echo came back wrong ({} bytes)", got.len()).into());
    }
    println!(
        "POST http://{name}:8080/upload: {} bytes echoed",
        body.len()
    );

    // The same client, by short name.
    let resp = client.get("http://echo:8080/short".parse()?).await?;
    let got = resp.into_body().collect().await?.to_bytes();
    if &got[..] != b"GET /short\n" {
        return Err(format!("short name: got {got:?}").into());
    }
    println!("GET http://echo:8080/short: ok");

    // A name MagicDNS does not know: the error says which step failed.
    let err = client
        .get("http://no-such-node:8080/".parse()?)
        .await
        .expect_err("an unknown name cannot connect");
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    let mut dial = None;
    while let Some(e) = source {
        if let Some(d) = e.downcast_ref::<tailnet::DialError>() {
            dial = Some(d);
        }
        source = e.source();
    }
    match dial {
        Some(d @ tailnet::DialError::UnknownName { .. }) => {
            println!("GET http://no-such-node:8080/: {d}")
        }
        other => {
            return Err(format!("expected an unknown-name error, got {other:?} ({err})").into())
        }
    }

    serving.abort();
    server.shutdown().await;
    client_node.shutdown().await;
    tailnet.shutdown().await;
    println!("ok");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .map_err(|_| "the example did not finish within 120 s")?
}
