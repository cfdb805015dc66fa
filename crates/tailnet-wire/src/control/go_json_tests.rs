//! Go's field-name rule (`go_json`) on the control messages: JSON as
//! tailscale-rs 0.6.1 writes it (its serde types are `rename_all =
//! "PascalCase"`, so `HostInfo`, `IpnVersion`, `PreferredDerp`,
//! `DerpLatency`, `OsHasIpv6`), and hand-written cases of the rule.

use super::go_json::{equal_fold, match_field, GoKeys};
use super::*;
use serde::Deserialize;
use serde_json::{json, Value};

/// A map request as tailscale-rs 0.6.1 sends it (field names of
/// `ts_control_serde::MapRequest` / `HostInfo` / `NetInfo`).
const TSRS_MAP_REQUEST: &str = r#"{
  "Version": 130,
  "Compress": "zstd",
  "KeepAlive": true,
  "NodeKey": "nodekey:0101010101010101010101010101010101010101010101010101010101010101",
  "DiscoKey": "discokey:0202020202020202020202020202020202020202020202020202020202020202",
  "Stream": true,
  "HostInfo": {
    "IpnVersion": "0.6.1",
    "FrontendLogId": "",
    "BackendLogId": "",
    "Os": "linux",
    "OsVersion": "6.1",
    "Env": "",
    "App": "tailscale-rs",
    "Hostname": "tsrs-peer",
    "GoArch": "",
    "RequestTags": ["tag:tsrs"],
    "WolMacs": ["aa:bb:cc:dd:ee:ff"],
    "NetInfo": {
      "WorkingIpv6": false,
      "OsHasIpv6": true,
      "WorkingUdp": true,
      "Upnp": false,
      "PreferredDerp": 900,
      "LinkType": "wired",
      "DerpLatency": {"900-v4": 0.0012},
      "FirewallMode": ""
    },
    "SshHostKeys": ["ssh-ed25519 AAAA"],
    "ExitNodeId": "",
    "StateEncrypted": false
  },
  "Endpoints": ["192.0.2.1:41641"],
  "EndpointTypes": [1],
  "TKAHead": ""
}"#;

#[test]
fn a_tailscale_rs_map_request_keeps_its_hostinfo_and_home_derp() {
    let req: MapRequest = serde_json::from_str(TSRS_MAP_REQUEST).unwrap();
    assert_eq!(req.version, 130);
    assert_eq!(req.node_key.as_bytes(), &[1; 32]);
    assert!(req.stream);
    let h = req
        .hostinfo
        .as_ref()
        .expect("HostInfo decodes into Hostinfo");
    assert_eq!(h.ipn_version, "0.6.1");
    assert_eq!(h.os, "linux");
    assert_eq!(h.app, "tailscale-rs");
    assert_eq!(h.os_version, "6.1");
    assert_eq!(h.hostname, "tsrs-peer");
    assert_eq!(h.request_tags, ["tag:tsrs"]);
    assert_eq!(h.ssh_host_keys, ["ssh-ed25519 AAAA"]);
    let ni = h.net_info.as_ref().expect("NetInfo");
    assert_eq!(ni.preferred_derp, 900);
    assert_eq!(ni.derp_latency["900-v4"], 0.0012);
    assert_eq!(ni.os_has_ipv6, Some(true));
    assert_eq!(ni.working_udp, Some(true));
    assert_eq!(ni.working_ipv6, Some(false));
    assert_eq!(ni.link_type, "wired");
    assert_eq!(ni.upnp, Some(false));
    // Keys that match no modelled field stay as they came.
    assert!(h.other.contains_key("WolMacs") && h.other.contains_key("StateEncrypted"));

    // Encoded with Go's names, never the incoming spelling.
    let out = serde_json::to_value(&req).unwrap();
    assert_eq!(out["Hostinfo"]["IPNVersion"], "0.6.1");
    assert_eq!(out["Hostinfo"]["OSVersion"], "6.1");
    assert_eq!(out["Hostinfo"]["NetInfo"]["PreferredDERP"], 900);
    assert_eq!(out["Hostinfo"]["NetInfo"]["OSHasIPv6"], true);
    assert!(out.get("HostInfo").is_none());
    assert!(out["Hostinfo"].get("IpnVersion").is_none());
    assert!(out["Hostinfo"]["NetInfo"].get("PreferredDerp").is_none());
}

#[test]
fn a_tailscale_rs_register_request_keeps_its_auth_key_and_hostinfo() {
    // tailscale-rs leaves out unset options (`skip_serializing_if`).
    let j = json!({
        "Version": 130,
        "NodeKey": format!("nodekey:{}", "03".repeat(32)),
        "Auth": {"AuthKey": "tskey-auth-x"},
        "Hostinfo": {"Hostname": "tsrs-peer", "IpnVersion": "0.6.1", "Os": "linux"},
        "Ephemeral": true
    });
    let req: RegisterRequest = serde_json::from_value(j).unwrap();
    assert_eq!(req.node_key.as_bytes(), &[3; 32]);
    assert_eq!(req.auth.as_ref().unwrap().auth_key, "tskey-auth-x");
    assert!(req.ephemeral);
    let h = req.hostinfo.expect("HostInfo");
    assert_eq!(
        (h.hostname.as_str(), h.ipn_version.as_str()),
        ("tsrs-peer", "0.6.1")
    );
    assert_eq!(h.os, "linux");
}

#[test]
fn every_message_reads_keys_in_any_case_and_writes_gos() {
    // Re-case every struct key of Go-written JSON (not map keys) and the
    // value must decode the same.
    fn recase(v: &Value, f: &dyn Fn(&str) -> String, maps: &[&str]) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        let inner = if maps.contains(&k.as_str()) {
                            // A map: keep its keys, recase its values.
                            match x {
                                Value::Object(mm) => Value::Object(
                                    mm.iter()
                                        .map(|(kk, xx)| (kk.clone(), recase(xx, f, maps)))
                                        .collect(),
                                ),
                                other => other.clone(),
                            }
                        } else {
                            recase(x, f, maps)
                        };
                        (f(k), inner)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| recase(x, f, maps)).collect()),
            other => other.clone(),
        }
    }
    let derp_map = DerpMap {
        regions: Some(
            [(
                900,
                DerpRegion {
                    region_id: 900,
                    region_code: "inferadb".into(),
                    nodes: vec![DerpNode {
                        name: "900a".into(),
                        region_id: 900,
                        host_name: "relay.example".into(),
                        insecure_for_tests: true,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )]
            .into(),
        ),
        ..Default::default()
    };
    let resp = MapResponse {
        derp_map: Some(derp_map.clone()),
        node: Some(Node {
            id: 7,
            name: "a.example.".into(),
            hostinfo: Some(Hostinfo {
                ipn_version: "1.90.9".into(),
                net_info: Some(NetInfo {
                    preferred_derp: 900,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let go = serde_json::to_value(&resp).unwrap();
    let maps = [
        "Regions",
        "CapMap",
        "DERPLatency",
        "derplatency",
        "DERPLATENCY",
    ];
    for f in [
        &(|k: &str| k.to_ascii_lowercase()) as &dyn Fn(&str) -> String,
        &|k: &str| k.to_ascii_uppercase(),
    ] {
        let other = recase(&go, f, &maps);
        let back: MapResponse = serde_json::from_value(other.clone()).unwrap();
        assert_eq!(back, resp, "{other}");
        assert_eq!(serde_json::to_value(&back).unwrap(), go);
        let dm: DerpMap = serde_json::from_value(other["derpmap"].clone())
            .or_else(|_| serde_json::from_value(other["DERPMAP"].clone()))
            .unwrap();
        assert_eq!(dm, derp_map);
    }
    // The /key answer (lowercase in Go) and the register response too.
    let key: OverTlsPublicKeyResponse =
        serde_json::from_value(json!({"PublicKey": format!("mkey:{}", "04".repeat(32))})).unwrap();
    assert_eq!(key.public_key.as_bytes(), &[4; 32]);
    let r: RegisterResponse =
        serde_json::from_value(json!({"machineAuthorized": true, "authurl": "u"})).unwrap();
    assert!(r.machine_authorized);
    assert_eq!(r.auth_url, "u");
}

#[test]
fn an_exact_name_wins_over_a_folded_one_and_the_first_folded_field_wins() {
    #[derive(Debug, Deserialize, PartialEq)]
    struct T {
        #[serde(rename = "ID", default)]
        upper: i32,
        #[serde(rename = "Id", default)]
        mixed: i32,
        #[serde(rename = "Map", default)]
        map: std::collections::BTreeMap<String, i32>,
    }
    let de = |j: Value| T::deserialize(GoKeys(j)).unwrap();
    // Exact names go to their own fields.
    let t = de(json!({"ID": 1, "Id": 2}));
    assert_eq!((t.upper, t.mixed), (1, 2));
    // A key matching no field exactly goes to the first declared match.
    let t = de(json!({"id": 3}));
    assert_eq!((t.upper, t.mixed), (3, 0));
    // Exact beats folded even when the folded key comes first.
    let t = de(json!({"iD": 4, "Id": 5}));
    assert_eq!((t.upper, t.mixed), (4, 5));
    // Map keys are data: never folded.
    let t = de(json!({"MAP": {"ID": 1, "id": 2}}));
    assert_eq!(t.map.len(), 2);
    // Two keys landing on one field: refused (Go would keep the last).
    assert!(T::deserialize(GoKeys(json!({"id": 1, "ID": 2}))).is_err());
}

#[test]
fn folding_is_gos_equal_fold_on_ascii_names() {
    assert!(equal_fold("PreferredDERP", "PreferredDerp"));
    assert!(equal_fold("PreferredDERP", "preferredderp"));
    assert!(!equal_fold("PreferredDERP", "PreferredDER"));
    assert!(!equal_fold("PreferredDERP", "PreferredDERPs"));
    assert!(!equal_fold("OS", "O_S"));
    // Go's bytes.EqualFold: the Kelvin sign folds to k, the long s to s.
    assert!(equal_fold("Key", "\u{212A}ey"));
    assert!(equal_fold("OS", "O\u{017F}"));
    // No other non-ASCII rune reaches an ASCII letter.
    assert!(!equal_fold("Id", "\u{0130}d"));
    const F: &[&str] = &["Hostinfo", "HostName"];
    assert_eq!(match_field(F, "HostInfo"), Some("Hostinfo"));
    assert_eq!(match_field(F, "hostname"), Some("HostName"));
    assert_eq!(match_field(F, "Host"), None);
}

#[test]
fn hostinfo_folds_modelled_keys_and_keeps_the_rest() {
    let h: Hostinfo = serde_json::from_value(json!({
        "ipnversion": "x",
        "OSVERSION": "y",
        "Location": {"Country": "Canada"},
        "netinfo": {"preferredderp": 3}
    }))
    .unwrap();
    assert_eq!((h.ipn_version.as_str(), h.os_version.as_str()), ("x", "y"));
    assert_eq!(h.net_info.unwrap().preferred_derp, 3);
    assert_eq!(h.other.keys().collect::<Vec<_>>(), ["Location"]);
    assert!(serde_json::from_value::<Hostinfo>(json!({"OS": "a", "os": "b"})).is_err());
}
