//! An axum server on the tailnet that authorises callers by ACL tag with
//! `whois`, and two clients calling it by MagicDNS name with hyper: one
//! tagged `tag:web` (allowed), one without the tag (refused, 403).
//!
//! Self-contained: it starts an embedded coordinator on loopback, joins
//! three nodes, checks the answers and exits (non-zero on a wrong one).
//!
//!     cargo run -p tailnet --features axum --example http_whois

mod common;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tailnet::Caller;

/// Only nodes tagged `tag:web` may call.
async fn whoami(ConnectInfo(caller): ConnectInfo<Caller>) -> (StatusCode, String) {
    match &caller.whois {
        Some(who) if who.has_tag("tag:web") => (
            StatusCode::OK,
            format!("hello {} ({})", who.name, who.tags.join(",")),
        ),
        Some(who) => (StatusCode::FORBIDDEN, format!("{} lacks tag:web", who.name)),
        None => (
            StatusCode::FORBIDDEN,
            format!("unknown caller {}", caller.addr),
        ),
    }
}

async fn get_text(
    client: &Client<tailnet::http::Connector, Empty<bytes::Bytes>>,
    url: &str,
) -> Result<(StatusCode, String), Box<dyn std::error::Error>> {
    let resp = client.get(url.parse()?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let tailnet = common::Tailnet::start().await?;
    let api = tailnet.join("api", &["tag:api"]).await?;
    let web = tailnet.join("web", &["tag:web"]).await?;
    let intruder = tailnet.join("intruder", &["tag:batch"]).await?;
    let api_name = common::fqdn(&api);

    let app = Router::new().route("/whoami", get(whoami));
    let listener = api.listen(80)?;
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<Caller>(),
        )
        .await
    });

    // The allowed caller, by FQDN.
    common::wait_for_peer(&web, &api_name).await?;
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<bytes::Bytes>>(tailnet::http::Connector::new(web.clone()));
    let (status, body) = get_text(&client, &format!("http://{api_name}/whoami")).await?;
    println!("web -> http://{api_name}/whoami: {status} {body}");
    if status != StatusCode::OK || !body.starts_with("hello web.") {
        return Err(format!("web should be allowed, got {status} {body}").into());
    }

    // The other caller, by short name: refused by tag.
    common::wait_for_peer(&intruder, &api_name).await?;
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<bytes::Bytes>>(tailnet::http::Connector::new(intruder.clone()));
    let (status, body) = get_text(&client, "http://api/whoami").await?;
    println!("intruder -> http://api/whoami: {status} {body}");
    if status != StatusCode::FORBIDDEN {
        return Err(format!("intruder should be refused, got {status} {body}").into());
    }

    server.abort();
    for n in [&api, &web, &intruder] {
        n.shutdown().await;
    }
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
