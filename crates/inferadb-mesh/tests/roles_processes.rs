//! The roles as a user runs them: separate processes of the real binary.
//!
//! `inferadb-mesh coordinator serve`, a tagged key per region from
//! `coordinator authkey create`, then `inferadb-mesh control --config FILE`
//! (us-west-1) and two `inferadb-mesh engine --config FILE` (us-west-1 and
//! eu-west-1), each configured partly by its YAML file and partly by the
//! multi-region guide's environment variables
//! (`INFERADB__AUTH__DISCOVERY__MODE__…`, `INFERADB_CTRL__…`). Each prints
//! its ready line (with the OS address of its HTTP server, `http.listen`
//! being `127.0.0.1:0`) and answers `/readyz` 200; `POST /v1/vaults` on
//! control (bearer token) makes both engines log
//! `Vault cache invalidation received vault_id=<id>` exactly once;
//! `inferadb-mesh status --json` against a role's state directory answers
//! the guide's `jq '.Peer[] | {Name, CurAddr, Relay}'`; every metric the
//! Grafana dashboard (`docs/observability/grafana-tailscale-discovery.json`)
//! queries is in the live `/metrics` of the processes, which `promtool check
//! metrics` accepts (when promtool is installed); SIGTERM stops each process
//! with exit status 0 in bounded time.
//!
//! Every child is killed when the test fails (a guard's `Drop`), and every
//! wait is bounded.

#![allow(clippy::unwrap_used)] // a test file: its helpers unwrap too

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_inferadb-mesh");
const SECRET: &str = "a webhook secret of more than 16 bytes";
const TOKEN: &str = "process-test-bearer-token";
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/observability/grafana-tailscale-discovery.json"
);

/// A running child: killed (and reaped) when dropped, its output lines
/// kept (stderr is the log).
struct Proc {
    name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if std::thread::panicking() {
                eprintln!("--- {} (killed) stdout, then the end of stderr:", self.name);
                for l in self.stdout.lock().unwrap().iter() {
                    eprintln!("  {l}");
                }
                for l in self.stderr.lock().unwrap().iter().rev().take(40).rev() {
                    eprintln!("  {l}");
                }
            }
        }
    }
}

/// Removes terminal colour sequences (`ESC [ … letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn collect(
    r: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    tx: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let line = strip_ansi(&line);
            into.lock().unwrap().push(line.clone());
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}

impl Proc {
    fn spawn(name: &str, args: &[&str], env: &[(String, String)]) -> Proc {
        Proc::spawn_logging(name, args, env, None)
    }

    /// [`Proc::spawn`]; with `log`, stderr goes to that file, as a
    /// container runtime keeps it for `kubectl logs`, and the log filter
    /// and format are the binary's defaults unless `env` sets them.
    fn spawn_logging(
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        log: Option<&Path>,
    ) -> Proc {
        let mut cmd = Command::new(EXE);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
        match log {
            Some(path) => {
                cmd.env_remove("INFERADB_MESH_LOG")
                    .env_remove("INFERADB_MESH_LOG_FORMAT")
                    .env_remove("NO_COLOR")
                    .stderr(std::fs::File::create(path).expect("log file"));
            }
            None => {
                cmd.env("INFERADB_MESH_LOG", "info").stderr(Stdio::piped());
            }
        }
        // Nothing of the test runner's environment configures the roles.
        for (k, _) in std::env::vars() {
            if k.starts_with("INFERADB__") || k.starts_with("INFERADB_CTRL__") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn inferadb-mesh");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        collect(child.stdout.take().unwrap(), stdout.clone(), Some(tx));
        if let Some(err) = child.stderr.take() {
            collect(err, stderr.clone(), None);
        }
        Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            lines,
        }
    }

    /// The first stdout line containing `marker`, within `secs`.
    fn line_with(&mut self, marker: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(marker) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no stdout line with {marker:?} within {secs} s (exited: {:?}); stderr:\n{}",
                    self.name,
                    self.child.try_wait().ok().flatten(),
                    self.stderr.lock().unwrap().join("\n")
                ),
            }
        }
    }

    fn log(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status within `secs` (a panic otherwise; the
    /// guard then kills it).
    fn terminate(&mut self, secs: u64) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {}", self.name);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, t0.elapsed());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "{} still running {secs} s after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run inferadb-mesh")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// One HTTP/1.1 request over loopback; (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let raw = text(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked bodies not expected: {head}"
    );
    (status, body.to_string())
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`wait_for`], printing what `f` last left in `last` when time is up.
fn wait_for_or<T, L: std::fmt::Debug>(
    secs: u64,
    what: &str,
    last: &mut L,
    mut f: impl FnMut(&mut L) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f(last) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s; last: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A role process and the OS address of its HTTP server.
struct Role {
    proc: Proc,
    http: SocketAddr,
    state_dir: PathBuf,
}

/// Spawns `inferadb-mesh <role> --config FILE` and reads its ready line.
fn start_role(
    name: &str,
    role: &str,
    config: &Path,
    state_dir: &Path,
    env: &[(String, String)],
) -> Role {
    let mut proc = Proc::spawn(name, &[role, "--config", p(config)], env);
    let line = proc.line_with("\"state\":\"Running\"", 40);
    let ready: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
    assert_eq!(ready["role"], role, "{line}");
    let http = ready["http"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name}: no http address in {line}"));
    Role {
        proc,
        http,
        state_dir: state_dir.to_path_buf(),
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The mesh + http part of a role's file; the rest comes from `extra` and
/// the environment.
fn mesh_yaml(url: &str, key_file: &Path, state: &Path, tag: &str) -> String {
    format!(
        "mesh:\n  control_url: {url}\n  auth_key_file: {}\n  state_dir: {}\n  tags: [{tag}]\n  listen: 127.0.0.1:0\nhttp:\n  listen: 127.0.0.1:0\n",
        key_file.display(),
        state.display()
    )
}

// ---------------------------------------------------------------------------
// /metrics and the dashboard

/// A scrape: family name → type, and every sample name.
#[derive(Default, Debug)]
struct Scrape {
    families: BTreeMap<String, String>,
    samples: BTreeSet<String>,
}

fn parse_scrape(body: &str, into: &mut Scrape) {
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some(t)) = (it.next(), it.next()) {
                into.families.insert(n.to_string(), t.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let value = line.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<f64>().is_ok(), "not a sample line: {line:?}");
            into.samples.insert(name);
        }
    }
}

/// Whether `name` (as a query writes it) is exported by `scrape`: a family
/// with samples, or the `_bucket` / `_sum` / `_count` series of a histogram
/// (`_sum` / `_count` of a summary) that has samples.
fn exported(scrape: &Scrape, name: &str) -> bool {
    if scrape.families.contains_key(name) {
        return scrape.samples.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| scrape.samples.contains(&format!("{name}{s}")));
    }
    for (suffix, types) in [
        ("_bucket", &["histogram"][..]),
        ("_sum", &["histogram", "summary"][..]),
        ("_count", &["histogram", "summary"][..]),
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            if scrape
                .families
                .get(base)
                .is_some_and(|t| types.contains(&t.as_str()))
            {
                return scrape.samples.contains(name);
            }
        }
    }
    false
}

/// PromQL words that are not metric names.
const PROMQL_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// The metric names a PromQL expression (or a Grafana `label_values(…)`
/// variable query) selects: identifiers left after removing string
/// literals, label matchers `{…}`, ranges `[…]`, grouping lists
/// `by (…)` / `without (…)` / `on (…)` / `ignoring (…)` / `group_left
/// (…)` / `group_right (…)`, function and aggregation calls (an identifier
/// followed by `(`), keywords and numbers.
fn promql_metric_names(expr: &str) -> Vec<String> {
    // label_values(metric, label): only the first argument is a selector.
    let expr = expr.trim();
    let expr = match expr
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        Some(args) => match args.rsplit_once(',') {
            Some((sel, _label)) => sel.to_string(),
            None => String::new(), // label_values(label): no metric
        },
        None => expr.to_string(),
    };
    // Strings, {…} and […] out.
    let mut flat = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let q = c;
                while let Some(d) = chars.next() {
                    if d == '\\' && q != '`' {
                        chars.next();
                    } else if d == q {
                        break;
                    }
                }
                flat.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                let mut in_quote = false;
                while let Some(d) = chars.next() {
                    if in_quote {
                        if d == '\\' {
                            chars.next();
                        } else if d == '"' {
                            in_quote = false;
                        }
                    } else if d == '"' {
                        // a quoted '}' inside a matcher
                        in_quote = true;
                    } else if d == close {
                        break;
                    }
                }
                flat.push(' ');
            }
            _ => flat.push(c),
        }
    }
    // Tokens: identifiers, with what follows them.
    let bytes: Vec<char> = flat.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            let mut j = i;
            while j < bytes.len() && bytes[j].is_whitespace() {
                j += 1;
            }
            // A call: `f(`, or an aggregation with its grouping first,
            // `sum by (x) (…)` / `sum without (x) (…)`.
            let next: String = bytes[j..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .collect();
            let call = (j < bytes.len() && bytes[j] == '(')
                || ["by", "without"].contains(&next.to_ascii_lowercase().as_str());
            let lower = word.to_ascii_lowercase();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
            {
                skip_group = true;
                continue;
            }
            if call || PROMQL_KEYWORDS.contains(&lower.as_str()) {
                continue;
            }
            // A duration like 5m after `offset`, or a number's exponent.
            if start > 0 && bytes[start - 1].is_ascii_digit() {
                continue;
            }
            names.push(word);
        } else if c == '(' && skip_group {
            // The grouping list: labels, not metrics.
            while i < bytes.len() && bytes[i] != ')' {
                i += 1;
            }
            skip_group = false;
            i += 1;
        } else if c.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every (where, expr) of the dashboard: panel targets (nested rows too) and
/// query variables.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((format!("panel {title:?}"), e.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = match &v["query"] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("query").and_then(Value::as_str).map(String::from),
            _ => None,
        };
        if let Some(q) = q {
            out.push((format!("variable {}", v["name"]), q));
        }
    }
    out
}

#[test]
fn promql_names_are_extracted() {
    let cases: &[(&str, &[&str])] = &[
        (
            "sum(rate(inferadb_a_total{result=\"success\",pod=~\"$pod\"}[5m]))\n/\nsum(rate(inferadb_a_total{pod=~\"$pod\"}[5m]))",
            &["inferadb_a_total", "inferadb_a_total"],
        ),
        ("sum by (cluster, reason) (rate(x_total{pod=~\"a}b\"}[5m]))", &["x_total"]),
        ("time() - max by (peer) (inferadb_ts{pod=~\"$pod\"})", &["inferadb_ts"]),
        (
            "histogram_quantile(0.99, sum by (le, cluster) (rate(h_bucket[5m])))",
            &["h_bucket"],
        ),
        ("count by (path) (g == 1)", &["g"]),
        ("a / on (x) group_left (y) b offset 5m", &["a", "b"]),
        ("label_values(inferadb_c_total, pod)", &["inferadb_c_total"]),
        ("label_values(pod)", &[]),
        ("sum without (instance) (up) or vector(0)", &["up"]),
        ("rate(x[1e3s]) > 1.5e+3", &["x"]),
    ];
    for (expr, want) in cases {
        assert_eq!(promql_metric_names(expr), *want, "{expr}");
    }
}

/// `promtool check metrics` on `body`, when promtool is installed (CI
/// installs it); a panic on lint problems.
fn promtool_check(what: &str, body: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("promtool not run ({e}): skipped for {what}");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {what}'s /metrics ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------

#[test]
fn roles_as_processes_with_the_guides_config() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord_dir = d.join("coordinator");
    let mut coord = Proc::spawn(
        "coordinator",
        &[
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            p(&coord_dir),
        ],
        &[],
    );
    let line = coord.line_with("coordinator listening on", 20);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL in the listening line")
        .to_string();

    // One reusable tagged key per region, as the guide makes them.
    let mut key_files = BTreeMap::new();
    for region in ["us-west-1", "eu-west-1"] {
        let out = run(&[
            "coordinator",
            "authkey",
            "create",
            "--state-dir",
            p(&coord_dir),
            "--reusable",
            "--tags",
            &format!("tag:inferadb-{region}"),
            "--expiry",
            "1h",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let key = text(&out.stdout).trim().to_string();
        assert!(key.starts_with("tskey-auth-"), "{key}");
        let f = d.join(format!("authkey-{region}"));
        std::fs::write(&f, format!("{key}\n")).unwrap();
        key_files.insert(region, f);
    }
    let secret_file = d.join("webhook-secret");
    std::fs::write(&secret_file, SECRET).unwrap();

    // Two engines: node and webhook secret from the file, discovery (of
    // control, port 9090) from the guide's variables only, the host name
    // from the variable the chart sets.
    let mut engines = Vec::new();
    for (region, other) in [("us-west-1", "eu-west-1"), ("eu-west-1", "us-west-1")] {
        let state = d.join(format!("engine-{region}"));
        let file = d.join(format!("engine-{region}.yaml"));
        std::fs::write(
            &file,
            format!(
                "{}cache_invalidation:\n  webhook_secret_file: {}\n",
                mesh_yaml(
                    &url,
                    &key_files[region],
                    &state,
                    &format!("tag:inferadb-{region}")
                ),
                secret_file.display()
            ),
        )
        .unwrap();
        let domain = format!("{other}.ts.net");
        let env = vars(&[
            ("INFERADB__AUTH__DISCOVERY__MODE__TYPE", "tailscale"),
            ("INFERADB__AUTH__DISCOVERY__MODE__LOCAL_CLUSTER", region),
            (
                "INFERADB__AUTH__DISCOVERY__MODE__REMOTE_CLUSTERS__0__NAME",
                other,
            ),
            (
                "INFERADB__AUTH__DISCOVERY__MODE__REMOTE_CLUSTERS__0__TAILSCALE_DOMAIN",
                &domain,
            ),
            (
                "INFERADB__AUTH__DISCOVERY__MODE__REMOTE_CLUSTERS__0__SERVICE_NAME",
                "inferadb-control",
            ),
            (
                "INFERADB__AUTH__DISCOVERY__MODE__REMOTE_CLUSTERS__0__PORT",
                "9090",
            ),
            ("INFERADB__MESH__HOSTNAME", "inferadb-engine-0"),
        ]);
        engines.push((
            region,
            start_role(&format!("engine {region}"), "engine", &file, &state, &env),
        ));
    }

    // Control in us-west-1: the guide's cache_invalidation block in the
    // file (eu-west-1 only: no ap-southeast-1 runs here), the mode's type
    // and local cluster from the guide's control variables, health checks
    // and a short cache TTL from variables of the same form.
    let control_state = d.join("control-us-west-1");
    let control_file = d.join("control.yaml");
    std::fs::write(
        &control_file,
        format!(
            "{}api:\n  token: {TOKEN}\ncache_invalidation:\n  discovery:\n    mode:\n      remote_clusters:\n        - name: \"eu-west-1\"\n          tailscale_domain: \"eu-west-1.ts.net\"\n          service_name: \"inferadb-engine\"\n          port: 8080\n  http_endpoints: [] # Leave empty when using discovery\n  timeout_ms: 5000\n  retry_attempts: 2\n  webhook_secret_file: {}\n",
            mesh_yaml(&url, &key_files["us-west-1"], &control_state, "tag:inferadb-us-west-1"),
            secret_file.display()
        ),
    )
    .unwrap();
    let env = vars(&[
        (
            "INFERADB_CTRL__CACHE_INVALIDATION__DISCOVERY__MODE__TYPE",
            "tailscale",
        ),
        (
            "INFERADB_CTRL__CACHE_INVALIDATION__DISCOVERY__MODE__LOCAL_CLUSTER",
            "us-west-1",
        ),
        (
            "INFERADB_CTRL__CACHE_INVALIDATION__DISCOVERY__CACHE_TTL_SECONDS",
            "1",
        ),
        (
            "INFERADB_CTRL__CACHE_INVALIDATION__DISCOVERY__HEALTH_CHECK__INTERVAL_MS",
            "500",
        ),
        (
            "INFERADB_CTRL__CACHE_INVALIDATION__DISCOVERY__HEALTH_CHECK__TIMEOUT_MS",
            "2000",
        ),
        ("INFERADB_CTRL__MESH__HOSTNAME", "inferadb-control-0"),
    ]);
    let mut control = start_role(
        "control us-west-1",
        "control",
        &control_file,
        &control_state,
        &env,
    );

    // Ready: /readyz 200 on each.
    for (name, r) in [("control", &control)]
        .into_iter()
        .chain(engines.iter().map(|(n, r)| (*n, r)))
    {
        wait_for(30, &format!("{name} /readyz 200"), || {
            let (s, _) = http(r.http, "GET", "/readyz", None, "");
            (s == 200).then_some(())
        });
        assert_eq!(http(r.http, "GET", "/healthz", None, "").0, 200);
    }

    // Control has discovered one engine in each cluster (its gauge).
    wait_for(30, "control discovers both engines", || {
        let (_, m) = http(control.http, "GET", "/metrics", None, "");
        let one = |c: &str| {
            m.lines().any(|l| {
                l == format!("inferadb_tailscale_discovered_endpoints{{cluster=\"{c}\"}} 1")
            })
        };
        (one("us-west-1") && one("eu-west-1")).then_some(())
    });
    let discovered = control
        .proc
        .log()
        .iter()
        .any(|l| l.contains("Discovered Tailscale endpoints across clusters"));
    assert!(discovered, "control logs the guide's discovery line");

    // The guide's vault: no token refused; with it, both engines hear of it
    // once.
    let body = r#"{"name": "test-vault"}"#;
    assert_eq!(http(control.http, "POST", "/v1/vaults", None, body).0, 401);
    let (status, resp) = http(control.http, "POST", "/v1/vaults", Some(TOKEN), body);
    assert_eq!(status, 201, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    let id = v["id"].as_str().expect("vault id").to_string();
    assert_eq!(v["invalidation"]["targets"], 2, "{resp}");
    assert_eq!(v["invalidation"]["delivered"], 2, "{resp}");
    let want = format!("Vault cache invalidation received vault_id={id}");
    let is_it = |l: &String| l.ends_with(&want) || l.contains(&format!("{want} "));
    for (region, e) in &engines {
        wait_for(10, &format!("engine {region} logs {want:?}"), || {
            e.proc.log().iter().any(is_it).then_some(())
        });
    }
    // Exactly once, also after the retries' time has passed.
    std::thread::sleep(Duration::from_millis(1500));
    for (region, e) in &engines {
        let n = e.proc.log().iter().filter(|l| is_it(l)).count();
        assert_eq!(n, 1, "engine {region} logged the invalidation {n} times");
        let line = e.proc.log().into_iter().find(is_it).unwrap();
        assert!(line.contains("INFO"), "{line}");
    }

    // status --json against a role's state directory: the guide's
    // `.Peer[] | {Name, CurAddr, Relay}`.
    let st: Value = wait_for(
        20,
        "status --json lists control and the other engine",
        || {
            let out = run(&[
                "status",
                "--json",
                "--state-dir",
                p(&engines[0].1.state_dir),
            ]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let st: Value = serde_json::from_slice(&out.stdout).unwrap();
            let names: BTreeSet<&str> = st["Peer"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, p)| p["Name"].as_str())
                .collect();
            // The second `inferadb-engine-0` on the tailnet (eu-west-1) is
            // registered by the coordinator as `inferadb-engine-0-1`.
            (names.contains("inferadb-control-0")
                && names.iter().any(|n| n.starts_with("inferadb-engine-0")))
            .then(|| st.clone())
        },
    );
    assert_eq!(st["BackendState"], "Running", "{st}");
    assert_eq!(st["Self"]["Name"], "inferadb-engine-0");
    assert_eq!(
        st["Self"]["Tags"][0], "tag:inferadb-us-west-1",
        "{}",
        st["Self"]
    );
    for (key, peer) in st["Peer"].as_object().unwrap() {
        for f in ["Name", "CurAddr", "Relay"] {
            assert!(peer.get(f).is_some(), "Peer {key} lacks {f}: {peer}");
        }
        assert!(
            peer["CurAddr"].is_string() && peer["Relay"].is_string(),
            "{peer}"
        );
    }
    // The same through jq, as the guide runs it, when jq is installed.
    if let Ok(mut jq) = Command::new("jq")
        .args(["-c", ".Peer[] | {Name, CurAddr, Relay}"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        let out = run(&["status", "--json", "--state-dir", p(&control.state_dir)]);
        jq.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let out = jq.wait_with_output().unwrap();
        assert!(out.status.success());
        let rows: Vec<Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(rows.len() >= 2, "{rows:?}");
        assert!(
            rows.iter().all(|r| r["Name"]
                .as_str()
                .is_some_and(|n| n.starts_with("inferadb-engine-0"))),
            "{rows:?}"
        );
    }

    // The dashboard against the live scrapes of control and an engine.
    // The engine in us-west-1 looks for a control in eu-west-1, where none
    // runs: its `inferadb_tailscale_cluster_discovery_failures_total` has
    // samples (`not_found`), as in a deployment with a region down. Control
    // found every cluster, so its own scrape has no such samples (the
    // counter's children are made on the first failure).
    let mut scrape = Scrape::default();
    for (what, r) in [("control", &control), ("engine us-west-1", &engines[0].1)] {
        let (s, body) = http(r.http, "GET", "/metrics", None, "");
        assert_eq!(s, 200);
        let mut own = Scrape::default();
        parse_scrape(&body, &mut own);
        eprintln!(
            "{what} exports {:?}",
            own.families.keys().collect::<Vec<_>>()
        );
        parse_scrape(&body, &mut scrape);
        promtool_check(what, &body);
    }
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 10, "{} queries", queries.len());
    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for (where_, expr) in &queries {
        let names = promql_metric_names(expr);
        assert!(!names.is_empty(), "{where_}: no metric in {expr:?}");
        for n in names {
            if !exported(&scrape, &n) {
                missing.push(format!("{where_}: {n}"));
            }
            used.insert(n);
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard metrics not in the live /metrics of control + engine:\n  {}\nexported: {:?}",
        missing.join("\n  "),
        scrape.families.keys().collect::<Vec<_>>()
    );
    // The check is not vacuous: a misspelt name, or a histogram suffix on
    // a counter, is caught.
    let (_, first) = queries
        .iter()
        .find(|(_, e)| e.contains("inferadb_tailscale_dns_resolutions_total"))
        .expect("a query of the DNS resolutions");
    let typo = first.replace("dns_resolutions_total", "dns_resolution_total");
    assert!(promql_metric_names(&typo)
        .iter()
        .any(|n| !exported(&scrape, n)));
    assert!(!exported(&scrape, "inferadb_tailnet_peers_bucket"));
    assert!(!exported(
        &scrape,
        "inferadb_tailscale_dns_resolutions_total_count"
    ));
    assert!(exported(
        &scrape,
        "inferadb_cache_invalidation_delivery_duration_seconds_count"
    ));
    for seed in [
        "inferadb_tailscale_dns_resolutions_total",
        "inferadb_tailscale_discovered_endpoints",
        "inferadb_tailscale_cluster_discovery_failures_total",
        "inferadb_tailscale_clusters_total",
    ] {
        assert!(used.contains(seed), "the dashboard has no panel of {seed}");
    }

    // SIGTERM: each exits 0, promptly; control first, the coordinator last.
    let (s, took) = control.proc.terminate(10);
    assert!(s.success(), "control exited {s}");
    eprintln!("control stopped in {took:?}");
    for (region, e) in &mut engines {
        let (s, took) = e.proc.terminate(10);
        assert!(s.success(), "engine {region} exited {s}");
        eprintln!("engine {region} stopped in {took:?}");
    }
    let (s, _) = coord.terminate(10);
    assert!(s.success(), "coordinator exited {s}");
    eprintln!("whole test: {:?}", t0.elapsed());
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------
// The guide's verification section, as an operator runs it in the pods

/// Runs `grep ARGS FILE` (the tool, as the guide does); (exit code, stdout).
fn grep(args: &[&str], file: &Path) -> (i32, String) {
    let out = Command::new("grep")
        .args(args)
        .arg(file)
        .output()
        .expect("run grep");
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

/// The JSON log lines of `file`, each parsed (a panic on any other line).
fn json_log(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

fn ready_address(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    v["addresses"][0].as_str().expect("an address").to_string()
}

/// docs/tailscale-multi-region.md, "Verification" and "Step 3", against
/// role processes as the chart runs them (logs on stderr into a file, as
/// `kubectl logs` reads them, at the binary's default level): a us-west-1
/// control logging JSON (`INFERADB_MESH_LOG_FORMAT=json`) and an eu-west-1
/// engine logging text. The guide's greps find their lines in the files
/// (no colour codes in between), `dns query` and `status --json` and
/// `ping` work against each role's state directory, the vault's
/// invalidation reaches the engine's log, and `/metrics` carries
/// `inferadb_build_info` and the process metrics. Then the coordinator
/// stops: `status` names the lost control in Health, the metrics say so,
/// and the peers still answer on the last netmap.
#[test]
fn the_guides_verification_steps_against_role_processes() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord_dir = d.join("coordinator");
    let mut coord = Proc::spawn(
        "coordinator",
        &[
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            p(&coord_dir),
        ],
        &[],
    );
    let line = coord.line_with("coordinator listening on", 20);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL in the listening line")
        .to_string();
    let mut key_files = BTreeMap::new();
    for region in ["us-west-1", "eu-west-1"] {
        let out = run(&[
            "coordinator",
            "authkey",
            "create",
            "--state-dir",
            p(&coord_dir),
            "--reusable",
            "--tags",
            &format!("tag:inferadb-{region}"),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let f = d.join(format!("authkey-{region}"));
        std::fs::write(&f, text(&out.stdout)).unwrap();
        key_files.insert(region, f);
    }
    let secret_file = d.join("webhook-secret");
    std::fs::write(&secret_file, SECRET).unwrap();

    // Control, us-west-1, JSON logs.
    let control_state = d.join("control");
    let control_file = d.join("control.yaml");
    std::fs::write(
        &control_file,
        format!(
            "{}api:\n  token: {TOKEN}\ncache_invalidation:\n  discovery:\n    mode:\n      type: tailscale\n      local_cluster: us-west-1\n      remote_clusters:\n        - name: eu-west-1\n          tailscale_domain: eu-west-1.ts.net\n          service_name: inferadb-engine\n          port: 8080\n  webhook_secret_file: {}\n",
            mesh_yaml(&url, &key_files["us-west-1"], &control_state, "tag:inferadb-us-west-1"),
            secret_file.display()
        ),
    )
    .unwrap();
    let control_log = d.join("control.log");
    let mut control = Proc::spawn_logging(
        "control",
        &["control", "--config", p(&control_file)],
        &vars(&[
            ("INFERADB_CTRL__MESH__HOSTNAME", "inferadb-control-0"),
            ("INFERADB_MESH_LOG_FORMAT", "json"),
        ]),
        Some(&control_log),
    );
    let control_ready = control.line_with("\"state\":\"Running\"", 40);
    let control_ip = ready_address(&control_ready);
    let control_http: SocketAddr = serde_json::from_str::<Value>(&control_ready).unwrap()["http"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Engine, eu-west-1, text logs; discovery from the guide's variables.
    let engine_state = d.join("engine");
    let engine_file = d.join("engine.yaml");
    std::fs::write(
        &engine_file,
        format!(
            "{}cache_invalidation:\n  webhook_secret_file: {}\n",
            mesh_yaml(
                &url,
                &key_files["eu-west-1"],
                &engine_state,
                "tag:inferadb-eu-west-1"
            ),
            secret_file.display()
        ),
    )
    .unwrap();
    let engine_log = d.join("engine.log");
    let mut engine = Proc::spawn_logging(
        "engine",
        &["engine", "--config", p(&engine_file)],
        &vars(&[
            ("INFERADB__AUTH__DISCOVERY__MODE__TYPE", "tailscale"),
            (
                "INFERADB__AUTH__DISCOVERY__MODE__LOCAL_CLUSTER",
                "eu-west-1",
            ),
            (
                "INFERADB__AUTH__DISCOVERY__MODE__REMOTE_CLUSTERS__0__NAME",
                "us-west-1",
            ),
            (
                "INFERADB__AUTH__DISCOVERY__MODE__REMOTE_CLUSTERS__0__TAILSCALE_DOMAIN",
                "us-west-1.ts.net",
            ),
            (
                "INFERADB__AUTH__DISCOVERY__MODE__REMOTE_CLUSTERS__0__SERVICE_NAME",
                "inferadb-control",
            ),
            (
                "INFERADB__AUTH__DISCOVERY__MODE__REMOTE_CLUSTERS__0__PORT",
                "9090",
            ),
            ("INFERADB__MESH__HOSTNAME", "inferadb-engine-0"),
        ]),
        Some(&engine_log),
    );
    let engine_ready = engine.line_with("\"state\":\"Running\"", 40);
    let engine_ip = ready_address(&engine_ready);
    let engine_http: SocketAddr = serde_json::from_str::<Value>(&engine_ready).unwrap()["http"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Test Cross-Cluster Discovery: `kubectl logs … | grep "Discovered
    // Tailscale endpoints"`, and the seed's key=value greps.
    let want = "Discovered Tailscale endpoints across clusters cluster=us-west-1 endpoint_count=1";
    wait_for(
        30,
        "the engine's log has the guide's discovery line",
        || {
            grep(&["-F", want], &engine_log)
                .1
                .contains(want)
                .then_some(())
        },
    );
    let (rc, found) = grep(&["Discovered Tailscale endpoints"], &engine_log);
    assert_eq!(rc, 0);
    assert!(found.lines().all(|l| l.contains(" INFO ")), "{found}");
    let (rc, n) = grep(&["-c", "cluster=eu-west-1"], &engine_log);
    assert_eq!(rc, 0, "grep -c cluster=eu-west-1 found nothing");
    assert!(n.trim().parse::<u32>().unwrap() >= 1, "{n}");
    let raw = std::fs::read_to_string(&engine_log).unwrap();
    assert!(
        !raw.contains('\u{1b}'),
        "colour codes in a log file:\n{raw}"
    );
    // Expected start-up noise (control's own region has no engine yet) is
    // not WARN.
    assert!(
        !raw.lines().any(|l| l.contains(" WARN ")),
        "WARN lines in a healthy start:\n{raw}"
    );
    // The same lines in JSON: the text as the message, each field a key.
    wait_for(30, "control's JSON log has the discovery line", || {
        json_log(&control_log)
            .iter()
            .any(|v| {
                v["message"] == "Discovered Tailscale endpoints across clusters"
                    && v["cluster"] == "eu-west-1"
                    && v["endpoint_count"] == 1
                    && v["level"] == "INFO"
            })
            .then_some(())
    });

    // Test MagicDNS Resolution, in both pods.
    for (state, name, ip) in [
        (
            &engine_state,
            "inferadb-control.us-west-1.ts.net",
            &control_ip,
        ),
        (
            &control_state,
            "inferadb-engine.eu-west-1.ts.net",
            &engine_ip,
        ),
    ] {
        let out = run(&["dns", "query", name, "--state-dir", p(state)]);
        let o = text(&out.stdout);
        assert!(out.status.success(), "{name}: {o}{}", text(&out.stderr));
        assert!(o.contains(";; status: NOERROR"), "{o}");
        assert!(
            o.lines()
                .any(|l| l.starts_with(&format!("{name}.")) && l.ends_with(&format!("A\t{ip}"))),
            "{name} → {ip}: {o}"
        );
    }
    let out = run(&[
        "dns",
        "query",
        "inferadb-control.eu-west-1.ts.net",
        "--state-dir",
        p(&engine_state),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(";; status: NXDOMAIN"),
        "{}",
        text(&out.stdout)
    );

    // "High Latency": ping (like tailscale ping, it stops at the first
    // direct pong: disco has found the path), then Step 3's status --json
    // | jq '.Peer[] | {Name, CurAddr, Relay}' shows it, with no health
    // warning.
    let out = run(&[
        "ping",
        "inferadb-control-0",
        "--state-dir",
        p(&engine_state),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!(
            "pong from inferadb-control-0 ({control_ip}) via 127.0.0.1:"
        )),
        "{}",
        text(&out.stdout)
    );
    let mut last = Value::Null;
    let st: Value = wait_for_or(30, "a direct path and no Health entry", &mut last, |last| {
        let out = run(&["status", "--json", "--state-dir", p(&engine_state)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        *last = st.clone();
        let direct = st["Peer"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(_, p)| p["Name"] == "inferadb-control-0" && p["CurAddr"] != "");
        let healthy = st["Health"].as_array().is_none_or(|h| h.is_empty());
        (direct && healthy).then_some(st)
    });
    assert_eq!(st["BackendState"], "Running");
    assert_eq!(st["Self"]["Name"], "inferadb-engine-0");

    // Test Cross-Cluster Cache Invalidation: the engine's log file.
    let (status, resp) = http(
        control_http,
        "POST",
        "/v1/vaults",
        Some(TOKEN),
        r#"{"name": "test-vault"}"#,
    );
    assert_eq!(status, 201, "{resp}");
    let id = serde_json::from_str::<Value>(&resp).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let want = format!("Vault cache invalidation received vault_id={id}");
    wait_for(10, "the engine logs the invalidation", || {
        (grep(&["-c", "Vault cache invalidation"], &engine_log)
            .1
            .trim()
            == "1"
            && grep(&["-F", &want], &engine_log).0 == 0)
            .then_some(())
    });
    assert!(json_log(&control_log).iter().any(|v| v["message"]
        == "Vault created; invalidating engine caches"
        && v["vault_id"] == id.as_str()));

    // The guide's debug node: `up` with JSON logs (every stderr line an
    // object, its progress lines included), asked through its socket.
    let ops_state = d.join("ops-0");
    let ops_log = d.join("ops-0.log");
    let mut ops = Proc::spawn_logging(
        "ops-0",
        &[
            "up",
            "--log-format",
            "json",
            "--control-url",
            &url,
            "--auth-key-file",
            p(&key_files["us-west-1"]),
            "--hostname",
            "ops-0",
            "--state-dir",
            p(&ops_state),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        Some(&ops_log),
    );
    ops.line_with("\"state\":\"Running\"", 40);
    let out = run(&[
        "dns",
        "query",
        "inferadb-engine.eu-west-1.ts.net",
        "--state-dir",
        p(&ops_state),
    ]);
    assert!(
        text(&out.stdout).contains(&format!("A\t{engine_ip}")),
        "{}",
        text(&out.stdout)
    );
    let (s, _) = ops.terminate(10);
    assert!(s.success(), "up exited {s}");
    let lines = json_log(&ops_log);
    assert!(
        lines.iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("joining the tailnet at "))),
        "{lines:?}"
    );

    // Every role's /metrics: build info, process metrics, control health.
    for (role, addr) in [("engine", engine_http), ("control", control_http)] {
        let (_, m) = http(addr, "GET", "/metrics", None, "");
        let version = env!("CARGO_PKG_VERSION");
        for want in [
            format!("inferadb_build_info{{role=\"{role}\",version=\"{version}\"}} 1"),
            "inferadb_tailnet_control_connected 1".to_string(),
            "inferadb_tailnet_health_warnings{kind=\"control\"} 0".to_string(),
        ] {
            assert!(m.lines().any(|l| l == want), "{role}: no {want:?} in\n{m}");
        }
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                m.lines().any(|l| l.starts_with(&format!("{family} "))),
                "{role}: no {family}"
            );
        }
        promtool_check(role, &m);
    }

    // The coordinator goes away: the engine says so (Health, the table,
    // metrics, a WARN line) and keeps forwarding on its last netmap.
    coord.child.kill().unwrap();
    coord.child.wait().unwrap();
    let st: Value = wait_for(20, "Health names the lost control", || {
        let out = run(&["status", "--json", "--state-dir", p(&engine_state)]);
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        st["Health"]
            .as_array()
            .is_some_and(|h| {
                h.iter().any(|m| {
                    m.as_str()
                        .is_some_and(|m| m.starts_with("not connected to control since "))
                })
            })
            .then_some(st)
    });
    assert_eq!(st["BackendState"], "Running", "forwarding goes on: {st}");
    let table = text(&run(&["status", "--state-dir", p(&engine_state)]).stdout);
    assert!(
        table.contains("# health: not connected to control since "),
        "{table}"
    );
    let (_, m) = http(engine_http, "GET", "/metrics", None, "");
    for want in [
        "inferadb_tailnet_control_connected 0",
        "inferadb_tailnet_health_warnings{kind=\"control\"} 1",
    ] {
        assert!(m.lines().any(|l| l == want), "no {want:?} in\n{m}");
    }
    assert!(
        grep(&["-c", "WARN .*lost the control connection"], &engine_log)
            .1
            .trim()
            != "0",
        "losing control is a WARN"
    );
    let out = run(&[
        "ping",
        "inferadb-control-0",
        "--state-dir",
        p(&engine_state),
    ]);
    assert!(
        out.status.success(),
        "peers answer without control: {}",
        text(&out.stdout)
    );

    for (name, proc) in [("control", &mut control), ("engine", &mut engine)] {
        let (s, _) = proc.terminate(10);
        assert!(s.success(), "{name} exited {s}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(90),
        "took {:?}",
        t0.elapsed()
    );
}
