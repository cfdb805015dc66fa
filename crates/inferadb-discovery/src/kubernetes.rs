//! The `kubernetes` mode: a Service's ready endpoints from its
//! EndpointSlices (`discovery.k8s.io/v1`), by list then watch, with plain
//! `reqwest` + serde and in-cluster service-account auth
//! (`vendor-notes/kubernetes.md`).
//!
//! ```text
//! GET {api}/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io/service-name={svc}
//! GET …&watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=…   (JSON lines)
//! ```
//!
//! A watch that ends is resumed from the last resource version; one that
//! fails or says 410 Gone leads to a new list, after a backoff on errors.

use crate::config::{KubernetesConfig, PortSelector};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The service account's files, mounted in every pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How long one watch request lasts before it is renewed.
const WATCH_SECONDS: u64 = 290;

/// What can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// Not enough to find or trust the API server.
    #[error("kubernetes discovery: {0}")]
    Config(String),
    /// A service-account file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TLS setup (the CA bundle).
    #[error("kubernetes API TLS: {0}")]
    Tls(String),
    /// The request failed.
    #[error("kubernetes API request: {0}")]
    Http(#[from] reqwest::Error),
    /// The API server answered with an error status.
    #[error("kubernetes API answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The `Status` object's message, if any.
        message: String,
    },
    /// The answer did not parse.
    #[error("kubernetes API answer: {0}")]
    Decode(#[from] serde_json::Error),
}

// --- The API objects (only the fields used). ---

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ObjectMeta {
    name: String,
    resource_version: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ListMeta {
    resource_version: String,
}

/// `discovery.k8s.io/v1` EndpointSlice.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSlice {
    #[serde(skip)]
    name: String,
    address_type: String,
    #[serde(deserialize_with = "null_default")]
    endpoints: Vec<SliceEndpoint>,
    #[serde(deserialize_with = "null_default")]
    ports: Vec<SlicePort>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
struct SliceEndpoint {
    #[serde(deserialize_with = "null_default")]
    addresses: Vec<String>,
    conditions: Conditions,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
struct Conditions {
    ready: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
struct SlicePort {
    name: Option<String>,
    port: Option<i32>,
    protocol: Option<String>,
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct RawSlice {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(flatten)]
    slice: EndpointSlice,
}

#[derive(Deserialize)]
struct SliceList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default, deserialize_with = "null_default")]
    items: Vec<RawSlice>,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ApiStatus {
    message: String,
    code: u16,
}

/// Parses the answer to a list request (an `EndpointSliceList`): the
/// slices by name and the list's `resourceVersion` to watch from.
pub fn parse_slice_list(
    body: &[u8],
) -> Result<(BTreeMap<String, EndpointSlice>, String), serde_json::Error> {
    let list: SliceList = serde_json::from_slice(body)?;
    let slices = list
        .items
        .into_iter()
        .map(|r| {
            let mut s = r.slice;
            s.name = r.metadata.name;
            (s.name.clone(), s)
        })
        .collect();
    Ok((slices, list.metadata.resource_version))
}

/// Applies one line of a watch stream (a `WatchEvent` as JSON; blank lines
/// are skipped) to `slices`, moving `rv` to the event's
/// `resourceVersion`. True if `slices` changed. An `ERROR` event is
/// [`KubeError::Status`] (410: the version is gone, list again); a line
/// that does not parse is [`KubeError::Decode`] and changes nothing.
pub fn apply_watch_line(
    line: &[u8],
    rv: &mut String,
    slices: &mut BTreeMap<String, EndpointSlice>,
) -> Result<bool, KubeError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(false);
    }
    let ev: WatchEvent = serde_json::from_slice(line)?;
    match ev.kind.as_str() {
        "ERROR" => {
            let st: ApiStatus = serde_json::from_value(ev.object).unwrap_or_default();
            Err(KubeError::Status {
                status: st.code,
                message: st.message,
            })
        }
        "BOOKMARK" => {
            let raw: RawSlice = serde_json::from_value(ev.object)?;
            *rv = raw.metadata.resource_version;
            Ok(false)
        }
        kind => {
            let raw: RawSlice = serde_json::from_value(ev.object)?;
            if !raw.metadata.resource_version.is_empty() {
                rv.clone_from(&raw.metadata.resource_version);
            }
            let mut s = raw.slice;
            s.name = raw.metadata.name;
            if kind == "DELETED" {
                Ok(slices.remove(&s.name).is_some())
            } else {
                let changed = slices.get(&s.name) != Some(&s);
                slices.insert(s.name.clone(), s);
                Ok(changed)
            }
        }
    }
}

/// The ready endpoints of `slices` on the selected port, sorted, without
/// duplicates. An endpoint whose `ready` is unset counts as ready (the
/// API's rule).
pub fn endpoints_of<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: Option<&PortSelector>,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in slices {
        if s.address_type == "FQDN" {
            continue;
        }
        let p = match port {
            Some(PortSelector::Number(n)) => Some(i32::from(*n)),
            Some(PortSelector::Name(name)) => s
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| p.port),
            None => s
                .ports
                .iter()
                .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP" && p.port.is_some())
                .and_then(|p| p.port),
        }
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0);
        let Some(p) = p else { continue };
        for e in &s.endpoints {
            if e.conditions.ready == Some(false) {
                continue;
            }
            for a in &e.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    out.push(SocketAddr::new(ip, p));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A client for one Service's EndpointSlices.
#[derive(Debug, Clone)]
pub struct KubeClient {
    http: reqwest::Client,
    base: String,
    namespace: String,
    service: String,
    token_file: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String, KubeError> {
    std::fs::read_to_string(path).map_err(|source| KubeError::File {
        path: path.to_path_buf(),
        source,
    })
}

impl KubeClient {
    /// A client as `config` says, filling the rest from the pod's
    /// environment: the API server from `KUBERNETES_SERVICE_HOST` /
    /// `KUBERNETES_SERVICE_PORT`, token, CA and namespace from
    /// [`SERVICE_ACCOUNT_DIR`].
    pub fn from_config(config: &KubernetesConfig) -> Result<Self, KubeError> {
        let sa = Path::new(SERVICE_ACCOUNT_DIR);
        let base = match &config.api_url {
            Some(u) => u.clone(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    KubeError::Config(
                        "KUBERNETES_SERVICE_HOST is not set (not in a pod?); set api_url".into(),
                    )
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let namespace = match &config.namespace {
            Some(n) => n.clone(),
            None => read(&sa.join("namespace"))?.trim().to_string(),
        };
        // The token: the configured file must exist; the default one may
        // be absent only for a plain-http API (a test server).
        let token_file = match &config.token_file {
            Some(f) => Some(f.clone()),
            None if base.starts_with("https://") || sa.join("token").exists() => {
                Some(sa.join("token"))
            }
            None => None,
        };
        if let Some(f) = &token_file {
            read(f)?;
        }
        let mut roots = rustls::RootCertStore::empty();
        if base.starts_with("https://") {
            use rustls::pki_types::pem::PemObject;
            let ca = config.ca_file.clone().unwrap_or_else(|| sa.join("ca.crt"));
            let pem = std::fs::read(&ca).map_err(|source| KubeError::File {
                path: ca.clone(),
                source,
            })?;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| KubeError::Tls(format!("{}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| KubeError::Tls(format!("{}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(KubeError::Tls(format!("{}: no certificates", ca.display())));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(KubeClient {
            http,
            base,
            namespace,
            service: config.service_name.clone(),
            token_file,
        })
    }

    fn url(&self, extra: &str) -> String {
        format!(
            "{}/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{}{}",
            self.base, self.namespace, self.service, extra
        )
    }

    async fn get(&self, url: &str, timeout: Duration) -> Result<reqwest::Response, KubeError> {
        let mut req = self.http.get(url).timeout(timeout);
        if let Some(f) = &self.token_file {
            // Re-read every time: projected tokens are rotated in place.
            let token = read(f)?;
            req = req.bearer_auth(token.trim());
        }
        let resp = req.send().await?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap_or_default();
            let message = serde_json::from_slice::<ApiStatus>(&body)
                .map(|s| s.message)
                .unwrap_or_default();
            return Err(KubeError::Status { status, message });
        }
        Ok(resp)
    }

    /// Lists the Service's slices: by name, and the list's resource
    /// version.
    pub async fn list(&self) -> Result<(BTreeMap<String, EndpointSlice>, String), KubeError> {
        let resp = self.get(&self.url(""), Duration::from_secs(30)).await?;
        let body = resp.bytes().await?;
        Ok(parse_slice_list(&body)?)
    }

    /// Watches from `rv`, applying events to `slices` and calling
    /// `changed` after each one that changed them. Returns when the watch
    /// ends normally (`Ok(rv)` to resume from) or fails; `Err` with status
    /// 410 means the version is gone and a new list is needed.
    pub async fn watch(
        &self,
        rv: &str,
        slices: &mut BTreeMap<String, EndpointSlice>,
        mut changed: impl FnMut(&BTreeMap<String, EndpointSlice>),
    ) -> Result<String, KubeError> {
        let url = self.url(&format!(
            "&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={rv}"
        ));
        let mut resp = self
            .get(&url, Duration::from_secs(WATCH_SECONDS + 30))
            .await?;
        let mut rv = rv.to_string();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if apply_watch_line(&line, &mut rv, slices)? {
                    changed(slices);
                }
            }
        }
        Ok(rv)
    }
}

/// The latest endpoints the watcher knows: `None` before the first list.
pub(crate) type KubeState = Option<Result<Vec<SocketAddr>, String>>;

/// Lists and watches for ever, publishing the endpoints into `tx`.
pub(crate) async fn run(
    client: KubeClient,
    port: Option<PortSelector>,
    tx: watch::Sender<KubeState>,
) {
    let publish = |slices: &BTreeMap<String, EndpointSlice>| {
        let eps = endpoints_of(slices.values(), port.as_ref());
        tx.send_if_modified(|cur| {
            let new = Some(Ok(eps));
            if *cur == new {
                false
            } else {
                *cur = new;
                true
            }
        });
    };
    let mut failures = 0u32;
    loop {
        match client.list().await {
            Ok((mut slices, mut rv)) => {
                failures = 0;
                publish(&slices);
                loop {
                    match client.watch(&rv, &mut slices, publish).await {
                        Ok(next) => rv = next,
                        Err(KubeError::Status { status: 410, .. }) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "Kubernetes EndpointSlice watch failed; listing again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, "Kubernetes EndpointSlice list failed");
                tx.send_replace(Some(Err(e.to_string())));
                let backoff = Duration::from_millis(500) * 2u32.saturating_pow(failures.min(6));
                tokio::time::sleep(backoff.min(Duration::from_secs(30))).await;
            }
        }
    }
}
