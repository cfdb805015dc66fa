use super::*;

fn node(name: &str, v4: [u8; 4], tags: &[&str]) -> PolicyNode {
    let v4 = Ipv4Addr::from(v4);
    PolicyNode {
        addresses: vec![IpAddr::V4(v4), IpAddr::V6(crate::addr::v6_for_v4(v4))],
        tags: tags.iter().map(|t| t.to_string()).collect(),
        name: name.into(),
    }
}

fn json(rules: &[FilterRule]) -> String {
    serde_json::to_string(rules).expect("rules encode")
}

fn err(text: &str) -> String {
    match Policy::parse(text) {
        Ok(p) => panic!("expected an error, parsed {p:?}"),
        Err(e) => e.to_string(),
    }
}

const ENGINE_TO_CONTROL: &str = r#"{
  "tagOwners": {"tag:engine": [], "tag:control": []},
  "acls": [
    {"action": "accept", "src": ["tag:engine"], "dst": ["tag:control:9090"]}
  ]
}"#;

#[test]
fn engine_reaches_control_on_9090_only() {
    let p = Policy::parse(ENGINE_TO_CONTROL).expect("parses");
    let engine = node("engine", [100, 64, 0, 1], &["tag:engine"]);
    let control = node("control", [100, 64, 0, 2], &["tag:control"]);
    let all = [engine.clone(), control.clone()];

    let to_control = p.filter_for(&control, &all);
    assert_eq!(
        json(&to_control),
        r#"[{"SrcIPs":["100.64.0.1","fd7a:115c:a1e0:ab12:4843:cd96:6240:1"],"DstPorts":[{"IP":"100.64.0.2","Ports":{"First":9090,"Last":9090}},{"IP":"fd7a:115c:a1e0:ab12:4843:cd96:6240:2","Ports":{"First":9090,"Last":9090}}]}]"#
    );
    // Nothing may reach the engine: an empty filter (deny all inbound).
    assert!(p.filter_for(&engine, &all).is_empty());
}

#[test]
fn allow_all_is_filter_allow_all() {
    let p = Policy::allow_all();
    assert!(p.is_allow_all());
    let n = node("a", [100, 64, 0, 1], &[]);
    assert_eq!(
        json(&p.filter_for(&n, std::slice::from_ref(&n))),
        r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]"#
    );
}

#[test]
fn star_source_is_headscales_tailnet_ranges() {
    let p = Policy::parse(r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#)
        .expect("parses");
    let n = node("a", [100, 64, 0, 1], &[]);
    assert_eq!(
        json(&p.filter_for(&n, &[])),
        r#"[{"SrcIPs":["100.64.0.0-100.115.91.255","100.115.94.0-100.127.255.255","fd7a:115c:a1e0::/48"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]"#
    );
}

#[test]
fn hosts_ips_protocols_and_port_lists() {
    let text = r##"
    // HuJSON: comments and trailing commas.
    {
      "hosts": {"db": "100.64.0.9", "lab": "10.1.0.0/16",},
      /* notes
         over lines */
      "acls": [
        {"action": "accept", "proto": "udp", "src": ["lab", "100.64.0.5"],
         "dst": ["db:53,5353", "db:1000-2000"], "#note": "ignored"},
        {"action": "accept", "proto": "tcp", "src": ["lab"], "dst": ["100.64.0.0/10:22"]},
        {"action": "accept", "src": ["autogroup:tagged"], "dst": ["[fd7a:115c:a1e0:ab12:4843:cd96:6240:9]:443"]},
        {"action": "accept", "proto": "icmp", "src": ["100.64.0.5/32"], "dst": ["db:*"]},
      ],
    }"##;
    let p = Policy::parse(text).expect("parses");
    let db = node("db", [100, 64, 0, 9], &[]);
    let web = node("web", [100, 64, 0, 7], &["tag:web"]);
    let rules = p.filter_for(&db, &[db.clone(), web.clone()]);
    let want = serde_json::json!([
        {"SrcIPs": ["10.1.0.0/16", "100.64.0.5"],
         "DstPorts": [
            {"IP": "100.64.0.9", "Ports": {"First": 53, "Last": 53}},
            {"IP": "100.64.0.9", "Ports": {"First": 5353, "Last": 5353}},
            {"IP": "100.64.0.9", "Ports": {"First": 1000, "Last": 2000}}],
         "IPProto": [17]},
        {"SrcIPs": ["10.1.0.0/16"],
         "DstPorts": [{"IP": "100.64.0.9", "Ports": {"First": 22, "Last": 22}}],
         "IPProto": [6]},
        {"SrcIPs": ["100.64.0.7", "fd7a:115c:a1e0:ab12:4843:cd96:6240:7"],
         "DstPorts": [{"IP": "fd7a:115c:a1e0:ab12:4843:cd96:6240:9", "Ports": {"First": 443, "Last": 443}}]},
        {"SrcIPs": ["100.64.0.5"],
         "DstPorts": [{"IP": "100.64.0.9", "Ports": {"First": 0, "Last": 65535}}],
         "IPProto": [1]},
    ]);
    assert_eq!(serde_json::to_value(&rules).expect("encodes"), want);
    // The web node is covered only by the /10 rule.
    let rules = p.filter_for(&web, &[db, web.clone()]);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].dst_ports[0].ip, "100.64.0.7");
}

#[test]
fn rules_with_equal_sources_and_protocols_merge() {
    let p = Policy::parse(
        r#"{"acls":[
            {"action":"accept","src":["tag:a"],"dst":["tag:b:80"]},
            {"action":"accept","src":["tag:a"],"dst":["tag:b:443","tag:b:80"]},
            {"action":"accept","src":["tag:a"],"proto":"udp","dst":["tag:b:53"]}]}"#,
    )
    .expect("parses");
    let a = node("a", [100, 64, 0, 1], &["tag:a"]);
    let b = PolicyNode {
        addresses: vec!["100.64.0.2".parse().expect("ip")],
        ..node("b", [100, 64, 0, 2], &["tag:b"])
    };
    let rules = p.filter_for(&b, &[a, b.clone()]);
    assert_eq!(rules.len(), 2);
    let ports: Vec<u16> = rules[0].dst_ports.iter().map(|d| d.ports.first).collect();
    assert_eq!(ports, [80, 443]);
    assert_eq!(rules[1].ip_proto, [17]);
}

#[test]
fn adjacent_sources_become_ranges() {
    let p = Policy::parse(
        r#"{"acls":[{"action":"accept","src":["autogroup:member","100.64.0.3"],"dst":["*:80"]}]}"#,
    )
    .expect("parses");
    let nodes: Vec<PolicyNode> = (1..=2)
        .map(|i| PolicyNode {
            addresses: vec![IpAddr::V4(Ipv4Addr::new(100, 64, 0, i))],
            ..PolicyNode::default()
        })
        .collect();
    let rules = p.filter_for(&nodes[0], &nodes);
    assert_eq!(rules[0].src_ips, ["100.64.0.1-100.64.0.3"]);
}

#[test]
fn sources_matching_no_node_give_no_rule() {
    let p = Policy::parse(r#"{"acls":[{"action":"accept","src":["tag:ghost"],"dst":["*:*"]}]}"#)
        .expect("parses");
    let n = node("a", [100, 64, 0, 1], &[]);
    assert!(p.filter_for(&n, std::slice::from_ref(&n)).is_empty());
}

#[test]
fn empty_acls_allow_nothing() {
    let p = Policy::parse(r#"{"acls":[]}"#).expect("parses");
    assert!(!p.is_allow_all());
    let n = node("a", [100, 64, 0, 1], &[]);
    assert!(p.filter_for(&n, std::slice::from_ref(&n)).is_empty());
}

#[test]
fn never_emits_bits() {
    for text in [
        ENGINE_TO_CONTROL,
        r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#,
    ] {
        let p = Policy::parse(text).expect("parses");
        let n = node("c", [100, 64, 0, 2], &["tag:control"]);
        let e = node("e", [100, 64, 0, 1], &["tag:engine"]);
        for rule in p.filter_for(&n, &[e, n.clone()]) {
            assert!(!rule.uses_deprecated_bits());
            assert!(!json(&[rule]).contains("Bits"));
        }
    }
}

#[test]
fn errors_name_the_offending_path() {
    let acl = |dst: &str| {
        format!(
            r#"{{"acls":[{{"action":"accept","src":["*"],"dst":["*:*"]}},{{"action":"accept","src":["*"],"dst":["*:*"]}},{{"action":"accept","src":["*"],"dst":[{dst}]}}]}}"#
        )
    };
    assert_eq!(
        err(&acl(r#""tag:x:90-""#)),
        r#"acls[2].dst[0]: bad port range "90-""#
    );
    assert_eq!(
        err(&acl(r#""tag:x:90-80""#)),
        r#"acls[2].dst[0]: bad port range "90-80": first port is above last"#
    );
    assert_eq!(
        err(&acl(r#""tag:x:0""#)),
        r#"acls[2].dst[0]: bad port "0": must be 1-65535, or '*' for all"#
    );
    assert_eq!(
        err(&acl(r#""tag:x:70000""#)),
        r#"acls[2].dst[0]: bad port "70000""#
    );
    assert!(err(&acl(r#""tag:x""#)).starts_with("acls[2].dst[0]: missing ports in \"tag:x\""));
    assert!(err(&acl(r#""nohost:80""#)).starts_with(r#"acls[2].dst[0]: unknown alias "nohost""#));
    assert!(err(&acl(r#""tag:Bad:80""#)).starts_with(r#"acls[2].dst[0]: bad tag "tag:Bad""#));
    assert!(err(&acl(r#""10.0.0.1/8:80""#))
        .starts_with("acls[2].dst[0]: \"10.0.0.1/8\" has host bits set"));
    assert!(err(&acl(r#""*:80", 5"#)).starts_with("acls[2].dst[1]: expected a string"));
    assert!(err(&acl(r#""[10.0.0.1]:80""#)).starts_with("acls[2].dst[0]: brackets"));

    assert!(
        err(r#"{"acls":[{"action":"deny","src":["*"],"dst":["*:*"]}]}"#)
            .starts_with("acls[0].action: only \"accept\"")
    );
    assert!(
        err(r#"{"acls":[{"action":"accept","src":["group:eng"],"dst":["*:*"]}]}"#)
            .starts_with("acls[0].src[0]: group alias")
    );
    assert!(
        err(r#"{"acls":[{"action":"accept","src":["alice@"],"dst":["*:*"]}]}"#)
            .starts_with("acls[0].src[0]: user alias")
    );
    assert!(
        err(r#"{"acls":[{"action":"accept","src":["autogroup:self"],"dst":["*:*"]}]}"#)
            .starts_with("acls[0].src[0]: \"autogroup:self\" is not supported")
    );
    assert!(
        err(r#"{"acls":[{"action":"accept","src":[],"dst":["*:*"]}]}"#)
            .starts_with("acls[0].src: empty")
    );
    assert!(
        err(r#"{"acls":[{"action":"accept","dst":["*:*"]}]}"#).starts_with("acls[0].src: missing")
    );
    assert!(
        err(r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"],"prot":"tcp"}]}"#)
            .starts_with("acls[0].prot: unknown key")
    );
    assert!(
        err(r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"],"proto":"tpc"}]}"#)
            .starts_with("acls[0].proto: unknown protocol \"tpc\"")
    );
    assert!(
        err(r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"],"proto":"017"}]}"#)
            .starts_with("acls[0].proto: unknown protocol")
    );
    assert!(
        err(r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:22"],"proto":"icmp"}]}"#)
            .starts_with("acls[0].dst[0]: protocol \"icmp\" takes no ports")
    );
    assert!(err(r#"{"hosts":{"db":"db.example"},"acls":[]}"#)
        .starts_with("hosts.db: \"db.example\" is not an IP"));
    assert!(
        err(r#"{"hosts":{"a:b":"100.64.0.1"},"acls":[]}"#).starts_with("hosts.a:b: bad host name")
    );
    assert!(err(r#"{"tagOwners":{"tag:x":"me"},"acls":[]}"#)
        .starts_with("tagOwners.tag:x: expected an array"));
    assert!(err(r#"{"groups":{},"acls":[]}"#).starts_with("groups: groups are not supported"));
    assert!(err(r#"{"grants":[],"acls":[]}"#).starts_with("grants: not supported"));
    assert!(err(r#"{"acl":[]}"#).starts_with("acl: unknown key"));
    assert!(err(r#"{"":[]}"#).starts_with(r#""": unknown key"#));
    assert!(
        err(r#"{"hosts":{"a.b c":"x"},"acls":[]}"#).starts_with(r#"hosts."a.b c": bad host name"#)
    );
    assert!(err(r#"{}"#).starts_with("acls: missing"));
    assert!(err(r#"[]"#).starts_with("policy: expected an object"));
    let e =
        Policy::parse("{\"acls\": [\n  {\"action\": \"accept\",\n  }\n  oops").expect_err("bad");
    assert!(matches!(e, PolicyError::Syntax { line: 4, .. }), "{e}");
    let e = Policy::parse("{\"acls\": []} /* open").expect_err("bad");
    assert!(e.to_string().contains("unterminated"), "{e}");
    let e = Policy::parse(&acl(r#""tag:x:90-""#)).expect_err("bad");
    assert_eq!(e.location(), Some("acls[2].dst[0]"));
}

#[test]
fn hujson_leaves_strings_alone() {
    // `//` and `,]` inside strings are content, not comments or commas.
    let p = Policy::parse(r##"{"hosts":{"#x":"a // b ,]"},"acls":[],}"##).expect("parses");
    assert!(p.filter_for(&PolicyNode::default(), &[]).is_empty());
    // A leading comma is not a trailing one.
    assert!(matches!(
        Policy::parse(r#"{"acls":[,]}"#),
        Err(PolicyError::Syntax { .. })
    ));
    assert!(matches!(
        Policy::parse(r#"{"acls":[],,}"#),
        Err(PolicyError::Syntax { .. })
    ));
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.hujson");
    std::fs::write(&path, ENGINE_TO_CONTROL).expect("write");
    assert_eq!(
        Policy::load(&path).expect("loads"),
        Policy::parse(ENGINE_TO_CONTROL).expect("parses")
    );
    std::fs::write(
        &path,
        r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:90-"]}]}"#,
    )
    .expect("write");
    let e = Policy::load(&path).expect_err("bad");
    assert_eq!(e.location(), Some("acls[0].dst[0]"));
    assert!(
        e.to_string()
            .contains("policy.hujson: acls[0].dst[0]: bad port range"),
        "{e}"
    );
    let e = Policy::load(dir.path().join("missing")).expect_err("missing");
    assert!(matches!(e, PolicyError::Read { .. }), "{e}");
}
