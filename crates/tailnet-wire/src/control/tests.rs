//! Tests of the control types against the JSON Go 1.90.9 writes and reads.

use super::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn nk(b: u8) -> NodePublic {
    NodePublic::from_bytes([b; 32])
}
fn dk(b: u8) -> DiscoPublic {
    DiscoPublic::from_bytes([b; 32])
}
fn mk(b: u8) -> MachinePublic {
    MachinePublic::from_bytes([b; 32])
}
fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The JSON object keys `v` serializes to.
fn keys_of<T: Serialize>(v: &T) -> BTreeSet<String> {
    match serde_json::to_value(v).unwrap() {
        Value::Object(m) => m.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Decode, encode, decode again: equal values and identical bytes.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let a = serde_json::to_vec(v).unwrap();
    let back: T = serde_json::from_slice(&a).unwrap();
    assert_eq!(&back, v);
    assert_eq!(serde_json::to_vec(&back).unwrap(), a);
}

fn full_hostinfo() -> Hostinfo {
    Hostinfo {
        ipn_version: "1.90.9-t".into(),
        frontend_log_id: "f".into(),
        backend_log_id: "b".into(),
        os: "linux".into(),
        os_version: "6.1".into(),
        container: Some(false),
        env: "e".into(),
        distro: "debian".into(),
        distro_version: "12".into(),
        distro_code_name: "bookworm".into(),
        app: "tsnet".into(),
        desktop: Some(true),
        package: "p".into(),
        device_model: "m".into(),
        hostname: "host".into(),
        shields_up: true,
        sharee_node: true,
        no_logs_no_support: true,
        wire_ingress: true,
        ingress_enabled: true,
        allows_update: true,
        machine: "x86_64".into(),
        go_arch: "amd64".into(),
        go_arch_var: "v1".into(),
        go_version: "go1.25".into(),
        routable_ips: vec!["10.0.0.0/8".parse().unwrap()],
        request_tags: vec!["tag:a".into()],
        services: vec![Service {
            proto: "peerapi4".into(),
            port: 1234,
            description: "d".into(),
        }],
        net_info: Some(NetInfo {
            mapping_varies_by_dest_ip: Some(false),
            hair_pinning: Some(false),
            working_ipv6: Some(true),
            os_has_ipv6: Some(true),
            working_udp: Some(true),
            working_icmpv4: Some(false),
            have_port_map: true,
            upnp: Some(false),
            pmp: Some(false),
            pcp: Some(false),
            preferred_derp: 900,
            link_type: "wired".into(),
            derp_latency: [("900-v4".to_string(), 0.0012)].into(),
            firewall_mode: "nftables".into(),
        }),
        ssh_host_keys: vec!["ssh-ed25519 AAAA".into()],
        cloud: "aws".into(),
        userspace: Some(true),
        userspace_router: Some(true),
        app_connector: Some(false),
        services_hash: "h".into(),
        exit_node_id: "nX".into(),
        other: [("WoLMACs".to_string(), json!(["aa:bb:cc:dd:ee:ff"]))].into(),
    }
}

fn full_node() -> Node {
    Node {
        id: 7,
        stable_id: "n7".into(),
        name: "a.tail.example.".into(),
        user: 1,
        sharer: 2,
        key: nk(1),
        key_expiry: Timestamp::ZERO,
        machine: mk(2),
        disco_key: dk(3),
        addresses: vec!["100.64.0.7/32".parse().unwrap()],
        allowed_ips: Some(vec!["100.64.0.7/32".parse().unwrap()]),
        endpoints: vec!["192.0.2.1:41641".parse().unwrap()],
        legacy_derp: "127.3.3.40:900".into(),
        home_derp: 900,
        hostinfo: Some(full_hostinfo()),
        created: ts("2025-01-02T03:04:05Z"),
        cap: 130,
        tags: vec!["tag:x".into()],
        primary_routes: vec!["10.0.0.0/8".parse().unwrap()],
        last_seen: Some(ts("2025-01-02T03:04:05Z")),
        online: Some(true),
        machine_authorized: true,
        capabilities: vec!["https://tailscale.com/cap/is-admin".into()],
        cap_map: [("https://tailscale.com/cap/file-sharing".to_string(), vec![])].into(),
        unsigned_peer_api_only: true,
        computed_name: "a".into(),
        computed_name_with_host: "a (host)".into(),
        data_plane_audit_log_id: "l".into(),
        expired: true,
        self_node_v4_masq_addr_for_this_peer: Some("100.64.9.9".parse().unwrap()),
        self_node_v6_masq_addr_for_this_peer: Some("fd7a::9".parse().unwrap()),
        is_wire_guard_only: true,
        is_jailed: true,
        exit_node_dns_resolvers: vec![Resolver::new("1.1.1.1")],
    }
}

// ---------------------------------------------------------------------------
// Field names, checked against tailcfg.go / derpmap.go / dnstype.go v1.90.9.

#[test]
fn node_field_names_are_gos() {
    assert_eq!(
        keys_of(&full_node()),
        set(&[
            "ID",
            "StableID",
            "Name",
            "User",
            "Sharer",
            "Key",
            "KeyExpiry",
            "Machine",
            "DiscoKey",
            "Addresses",
            "AllowedIPs",
            "Endpoints",
            "DERP",
            "HomeDERP",
            "Hostinfo",
            "Created",
            "Cap",
            "Tags",
            "PrimaryRoutes",
            "LastSeen",
            "Online",
            "MachineAuthorized",
            "Capabilities",
            "CapMap",
            "UnsignedPeerAPIOnly",
            "ComputedName",
            "ComputedNameWithHost",
            "DataPlaneAuditLogID",
            "Expired",
            "SelfNodeV4MasqAddrForThisPeer",
            "SelfNodeV6MasqAddrForThisPeer",
            "IsWireGuardOnly",
            "IsJailed",
            "ExitNodeDNSResolvers",
        ])
    );
    // Without omitempty in Go: always written.
    assert_eq!(
        keys_of(&Node::default()),
        set(&[
            "ID",
            "StableID",
            "Name",
            "User",
            "Key",
            "KeyExpiry",
            "Machine",
            "DiscoKey",
            "Addresses",
            "Created",
        ])
    );
    round_trip(&full_node());
}

#[test]
fn hostinfo_and_netinfo_field_names_are_gos() {
    let h = full_hostinfo();
    assert_eq!(
        keys_of(&h),
        set(&[
            "IPNVersion",
            "FrontendLogID",
            "BackendLogID",
            "OS",
            "OSVersion",
            "Container",
            "Env",
            "Distro",
            "DistroVersion",
            "DistroCodeName",
            "App",
            "Desktop",
            "Package",
            "DeviceModel",
            "Hostname",
            "ShieldsUp",
            "ShareeNode",
            "NoLogsNoSupport",
            "WireIngress",
            "IngressEnabled",
            "AllowsUpdate",
            "Machine",
            "GoArch",
            "GoArchVar",
            "GoVersion",
            "RoutableIPs",
            "RequestTags",
            "Services",
            "NetInfo",
            "sshHostKeys",
            "Cloud",
            "Userspace",
            "UserspaceRouter",
            "AppConnector",
            "ServicesHash",
            "ExitNodeID",
            "WoLMACs",
        ])
    );
    assert_eq!(
        keys_of(h.net_info.as_ref().unwrap()),
        set(&[
            "MappingVariesByDestIP",
            "HairPinning",
            "WorkingIPv6",
            "OSHasIPv6",
            "WorkingUDP",
            "WorkingICMPv4",
            "HavePortMap",
            "UPnP",
            "PMP",
            "PCP",
            "PreferredDERP",
            "LinkType",
            "DERPLatency",
            "FirewallMode",
        ])
    );
    assert_eq!(keys_of(&Hostinfo::default()), set(&[]));
    assert_eq!(keys_of(&NetInfo::default()), set(&["PreferredDERP"]));
    round_trip(&h);
}

#[test]
fn hostinfo_keeps_fields_it_does_not_model() {
    let j =
        r#"{"Hostname":"h","Location":{"Country":"Canada","Priority":3},"StateEncrypted":true}"#;
    let h: Hostinfo = serde_json::from_str(j).unwrap();
    assert_eq!(h.hostname, "h");
    assert_eq!(h.other["Location"]["Country"], "Canada");
    let back = serde_json::to_value(&h).unwrap();
    assert_eq!(back, serde_json::from_str::<Value>(j).unwrap());
}

#[test]
fn peer_change_field_names_are_gos() {
    let pc = PeerChange {
        node_id: 5,
        derp_region: 2,
        cap: 130,
        cap_map: Some(CapMap::new()),
        endpoints: Some(vec![]),
        key: Some(nk(1)),
        disco_key: Some(dk(2)),
        online: Some(false),
        last_seen: Some(Timestamp::UNIX_EPOCH),
        key_expiry: Some(Timestamp::ZERO),
    };
    assert_eq!(
        keys_of(&pc),
        set(&[
            "NodeID",
            "DERPRegion",
            "Cap",
            "CapMap",
            "Endpoints",
            "Key",
            "DiscoKey",
            "Online",
            "LastSeen",
            "KeyExpiry",
        ])
    );
    assert_eq!(keys_of(&PeerChange::default()), set(&["NodeID"]));
    round_trip(&pc);
}

#[test]
fn register_messages_field_names_are_gos() {
    let req = RegisterRequest {
        version: CAPABILITY_VERSION,
        node_key: nk(1),
        old_node_key: NodePublic::ZERO,
        auth: Some(RegisterAuth {
            auth_key: "tskey-abc".into(),
        }),
        expiry: Timestamp::ZERO,
        followup: String::new(),
        hostinfo: Some(Hostinfo::default()),
        ephemeral: true,
        tailnet: "t".into(),
    };
    assert_eq!(
        keys_of(&req),
        set(&[
            "Version",
            "NodeKey",
            "OldNodeKey",
            "Auth",
            "Expiry",
            "Followup",
            "Hostinfo",
            "Ephemeral",
            "Tailnet",
        ])
    );
    assert_eq!(
        keys_of(&RegisterRequest::default()),
        set(&["Version", "NodeKey", "OldNodeKey", "Expiry", "Followup"])
    );
    round_trip(&req);
    // The auth key never reaches logs through Debug.
    let dbg = format!("{req:?}");
    assert!(!dbg.contains("tskey-abc"), "{dbg}");
    assert!(dbg.contains("redacted"));

    assert_eq!(
        keys_of(&RegisterResponse::default()),
        set(&[
            "User",
            "Login",
            "NodeKeyExpired",
            "MachineAuthorized",
            "AuthURL",
            "Error"
        ])
    );
    assert_eq!(
        keys_of(&User::default()),
        set(&["ID", "DisplayName", "ProfilePicURL", "Created"])
    );
    assert_eq!(
        keys_of(&Login::default()),
        set(&[
            "ID",
            "Provider",
            "LoginName",
            "DisplayName",
            "ProfilePicURL"
        ])
    );
    assert_eq!(
        keys_of(&UserProfile::default()),
        set(&["ID", "LoginName", "DisplayName"])
    );
}

#[test]
fn map_request_field_names_are_gos() {
    let req = MapRequest {
        version: 130,
        compress: "zstd".into(),
        keep_alive: true,
        node_key: nk(1),
        disco_key: dk(2),
        stream: true,
        hostinfo: Some(Hostinfo::default()),
        map_session_handle: "h".into(),
        map_session_seq: 3,
        endpoints: vec!["[2001:db8::1]:41641".parse().unwrap()],
        endpoint_types: vec![endpoint_type::STUN],
        tka_head: "t".into(),
        read_only: true,
        omit_peers: true,
        debug_flags: vec!["d".into()],
        connection_handle_for_test: "c".into(),
    };
    assert_eq!(
        keys_of(&req),
        set(&[
            "Version",
            "Compress",
            "KeepAlive",
            "NodeKey",
            "DiscoKey",
            "Stream",
            "Hostinfo",
            "MapSessionHandle",
            "MapSessionSeq",
            "Endpoints",
            "EndpointTypes",
            "TKAHead",
            "ReadOnly",
            "OmitPeers",
            "DebugFlags",
            "ConnectionHandleForTest",
        ])
    );
    assert_eq!(
        keys_of(&MapRequest::default()),
        set(&[
            "Version",
            "Compress",
            "KeepAlive",
            "NodeKey",
            "DiscoKey",
            "Stream"
        ])
    );
    round_trip(&req);
}

#[test]
fn map_response_field_names_are_gos() {
    let resp = MapResponse {
        map_session_handle: "h".into(),
        seq: 1,
        keep_alive: true,
        ping_request: Some(PingRequest {
            url: "https://c/ping".into(),
            url_is_noise: true,
            log: true,
            types: "disco".into(),
            ip: Some("100.64.0.2".parse().unwrap()),
        }),
        pop_browser_url: "https://login".into(),
        node: Some(Node::default()),
        derp_map: Some(DerpMap::default()),
        peers: vec![Node::default()],
        peers_changed: vec![Node::default()],
        peers_removed: vec![3],
        peers_changed_patch: vec![PeerChange::default()],
        peer_seen_change: [(3, true)].into(),
        online_change: [(3, false)].into(),
        dns_config: Some(DnsConfig::default()),
        domain: "d".into(),
        collect_services: Some(true),
        packet_filter: Some(vec![]),
        packet_filters: [("*".to_string(), None)].into(),
        user_profiles: vec![UserProfile::default()],
        control_time: Some(Timestamp::UNIX_EPOCH),
    };
    assert_eq!(
        keys_of(&resp),
        set(&[
            "MapSessionHandle",
            "Seq",
            "KeepAlive",
            "PingRequest",
            "PopBrowserURL",
            "Node",
            "DERPMap",
            "Peers",
            "PeersChanged",
            "PeersRemoved",
            "PeersChangedPatch",
            "PeerSeenChange",
            "OnlineChange",
            "DNSConfig",
            "Domain",
            "CollectServices",
            "PacketFilter",
            "PacketFilters",
            "UserProfiles",
            "ControlTime",
        ])
    );
    assert_eq!(
        keys_of(resp.ping_request.as_ref().unwrap()),
        set(&["URL", "URLIsNoise", "Log", "Types", "IP"])
    );
    round_trip(&resp);
    // Everything is omitempty in Go's MapResponse.
    assert_eq!(
        serde_json::to_string(&MapResponse::default()).unwrap(),
        "{}"
    );
    assert_eq!(
        serde_json::to_string(&MapResponse::keep_alive()).unwrap(),
        r#"{"KeepAlive":true}"#
    );
    // Integer map keys are decimal strings; an empty filter is written
    // (deny all) and a deleted named filter is null.
    let v = serde_json::to_value(&resp).unwrap();
    assert_eq!(v["PeerSeenChange"], json!({"3": true}));
    assert_eq!(v["PacketFilter"], json!([]));
    assert_eq!(v["PacketFilters"], json!({"*": null}));
    // Go writes a zero netip.Addr as "".
    let p = PingRequest::default();
    assert_eq!(
        serde_json::to_value(&p).unwrap(),
        json!({"URL": "", "IP": ""})
    );
    assert_eq!(
        serde_json::from_value::<PingRequest>(json!({"URL": "", "IP": ""})).unwrap(),
        p
    );
}

#[test]
fn filter_dns_derp_field_names_are_gos() {
    let rule = FilterRule {
        src_ips: vec!["*".into()],
        src_bits: vec![32],
        dst_ports: vec![NetPortRange {
            ip: "*".into(),
            bits: Some(32),
            ports: PortRange::ANY,
        }],
        ip_proto: vec![6],
        cap_grant: vec![CapGrant {
            dsts: vec!["100.64.0.1/32".parse().unwrap()],
            caps: vec!["c".into()],
            cap_map: [("c".to_string(), vec![json!({"k": 1})])].into(),
        }],
    };
    assert_eq!(
        keys_of(&rule),
        set(&["SrcIPs", "SrcBits", "DstPorts", "IPProto", "CapGrant"])
    );
    assert_eq!(keys_of(&rule.dst_ports[0]), set(&["IP", "Bits", "Ports"]));
    assert_eq!(
        keys_of(&rule.cap_grant[0]),
        set(&["Dsts", "Caps", "CapMap"])
    );
    assert!(rule.uses_deprecated_bits());
    round_trip(&rule);
    // tailcfg.FilterAllowAll, byte for byte.
    assert_eq!(
        serde_json::to_string(&vec![FilterRule::allow_all()]).unwrap(),
        r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]"#
    );
    assert!(!FilterRule::allow_all().uses_deprecated_bits());

    let dns = DnsConfig {
        resolvers: vec![Resolver {
            addr: "https://dns.example/q".into(),
            bootstrap_resolution: vec!["192.0.2.53".parse().unwrap()],
            use_with_exit_node: true,
        }],
        routes: [("corp.example.".to_string(), vec![])].into(),
        fallback_resolvers: vec![Resolver::new("9.9.9.9")],
        domains: vec!["tail.example".into()],
        proxied: true,
        nameservers: vec!["1.1.1.1".parse().unwrap()],
        cert_domains: vec!["a.tail.example".into()],
        extra_records: vec![DnsRecord {
            name: "x.tail.example".into(),
            record_type: "A".into(),
            value: "100.64.0.9".into(),
        }],
        exit_node_filtered_set: vec![".local".into()],
    };
    assert_eq!(
        keys_of(&dns),
        set(&[
            "Resolvers",
            "Routes",
            "FallbackResolvers",
            "Domains",
            "Proxied",
            "Nameservers",
            "CertDomains",
            "ExtraRecords",
            "ExitNodeFilteredSet",
        ])
    );
    assert_eq!(
        keys_of(&dns.resolvers[0]),
        set(&["Addr", "BootstrapResolution", "UseWithExitNode"])
    );
    assert_eq!(
        keys_of(&dns.extra_records[0]),
        set(&["Name", "Type", "Value"])
    );
    assert_eq!(keys_of(&DnsConfig::default()), set(&[]));
    // A split-DNS route with no resolvers is written as [] (answer locally).
    assert_eq!(
        serde_json::to_value(&dns).unwrap()["Routes"],
        json!({"corp.example.": []})
    );
    round_trip(&dns);

    let node = DerpNode {
        name: "900a".into(),
        region_id: 900,
        host_name: "127.0.0.1".into(),
        cert_name: "sha256-raw:00".into(),
        ipv4: "127.0.0.1".into(),
        ipv6: "none".into(),
        stun_port: -1,
        stun_only: true,
        derp_port: 8443,
        insecure_for_tests: true,
        stun_test_ip: "127.0.0.1".into(),
        can_port80: true,
    };
    assert_eq!(
        keys_of(&node),
        set(&[
            "Name",
            "RegionID",
            "HostName",
            "CertName",
            "IPv4",
            "IPv6",
            "STUNPort",
            "STUNOnly",
            "DERPPort",
            "InsecureForTests",
            "STUNTestIP",
            "CanPort80",
        ])
    );
    let region = DerpRegion {
        region_id: 900,
        region_code: "local".into(),
        region_name: "Local".into(),
        latitude: 1.5,
        longitude: -2.25,
        avoid: true,
        no_measure_no_home: true,
        nodes: vec![node],
    };
    assert_eq!(
        keys_of(&region),
        set(&[
            "RegionID",
            "RegionCode",
            "RegionName",
            "Latitude",
            "Longitude",
            "Avoid",
            "NoMeasureNoHome",
            "Nodes",
        ])
    );
    let map = DerpMap {
        home_params: Some(DerpHomeParams {
            region_score: Some([(900, 0.5)].into()),
        }),
        regions: Some([(900, region)].into()),
        omit_default_regions: true,
    };
    assert_eq!(
        keys_of(&map),
        set(&["HomeParams", "Regions", "omitDefaultRegions"])
    );
    let v = serde_json::to_value(&map).unwrap();
    assert_eq!(v["HomeParams"], json!({"RegionScore": {"900": 0.5}}));
    assert!(v["Regions"]["900"].is_object());
    round_trip(&map);
}

// ---------------------------------------------------------------------------
// Decoding what Go and Headscale send.

#[test]
fn key_response_lowercase_and_headscale_form() {
    let pk = format!("mkey:{}", "11".repeat(32));
    let zero = format!("mkey:{}", "0".repeat(64));
    let go: OverTlsPublicKeyResponse = serde_json::from_str(&format!(
        r#"{{"legacyPublicKey":"{zero}","publicKey":"{pk}"}}"#
    ))
    .unwrap();
    assert_eq!(go.public_key, mk(0x11));
    assert!(go.legacy_public_key.is_zero());
    // Headscale sends only publicKey.
    let hs: OverTlsPublicKeyResponse =
        serde_json::from_str(&format!(r#"{{"publicKey":"{pk}"}}"#)).unwrap();
    assert_eq!(hs, go);
    assert_eq!(hs.noise_key(), Some(mk(0x11)));
    assert_eq!(OverTlsPublicKeyResponse::default().noise_key(), None);
    assert_eq!(
        serde_json::to_string(&go).unwrap(),
        format!(r#"{{"legacyPublicKey":"{zero}","publicKey":"{pk}"}}"#)
    );
}

#[test]
fn register_request_as_go_sends_it() {
    let j = format!(
        r#"{{"Version":130,"NodeKey":"nodekey:{n}","OldNodeKey":"nodekey:{z}",
            "NLKey":"nlpub:{n}","Auth":{{"AuthKey":"tskey-auth-x"}},
            "Expiry":"0001-01-01T00:00:00Z","Followup":"",
            "Hostinfo":{{"IPNVersion":"1.90.9","BackendLogID":"abc","OS":"linux","Hostname":"h",
              "App":"tsnet","Userspace":true,"NetInfo":{{"PreferredDERP":0,"WorkingUDP":null}}}},
            "NodeKeySignature":null,"Timestamp":null}}"#,
        n = "ab".repeat(32),
        z = "0".repeat(64)
    );
    let r: RegisterRequest = serde_json::from_str(&j).unwrap();
    assert_eq!(r.version, 130);
    assert_eq!(r.node_key, nk(0xab));
    assert!(r.old_node_key.is_zero());
    assert_eq!(r.auth.unwrap().auth_key, "tskey-auth-x");
    assert!(r.expiry.is_zero());
    let hi = r.hostinfo.unwrap();
    assert_eq!((hi.os.as_str(), hi.hostname.as_str()), ("linux", "h"));
    assert_eq!(hi.userspace, Some(true));
    assert_eq!(hi.net_info.unwrap().working_udp, None);
}

#[test]
fn register_response_example_from_the_sheet() {
    let j = r#"{"User":{"ID":1,"DisplayName":"u","ProfilePicURL":"","Created":"0001-01-01T00:00:00Z"},"Login":{"ID":1,"Provider":"p","LoginName":"u@x","DisplayName":"u","ProfilePicURL":""},"NodeKeyExpired":false,"MachineAuthorized":true,"AuthURL":"","NodeKeySignature":null,"Error":""}"#;
    let r: RegisterResponse = serde_json::from_str(j).unwrap();
    assert!(r.machine_authorized);
    assert_eq!(r.user.id, 1);
    assert_eq!(r.login.login_name, "u@x");
    // We write the same minus the unmodelled (null) signature.
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        j.replace(r#""NodeKeySignature":null,"#, "")
    );
}

#[test]
fn map_requests_as_go_sends_them() {
    let stream = format!(
        r#"{{"Version":130,"Compress":"zstd","KeepAlive":true,"NodeKey":"nodekey:{n}",
            "DiscoKey":"discokey:{d}","Stream":true,"Hostinfo":{{"Hostname":"h",
            "NetInfo":{{"PreferredDERP":900}}}},
            "Endpoints":["192.0.2.1:41641","[2001:db8::1]:41641"],"EndpointTypes":[2,1]}}"#,
        n = "01".repeat(32),
        d = "02".repeat(32)
    );
    let r: MapRequest = serde_json::from_str(&stream).unwrap();
    assert!(r.wants_zstd() && r.stream && !r.is_lite_update());
    assert_eq!(r.disco_key, dk(2));
    assert_eq!(r.endpoints[1], "[2001:db8::1]:41641".parse().unwrap());
    assert_eq!(
        r.endpoint_types,
        [endpoint_type::STUN, endpoint_type::LOCAL]
    );
    assert_eq!(r.hostinfo.unwrap().net_info.unwrap().preferred_derp, 900);
    assert_eq!(Compression::from_request(&r.compress), Compression::Zstd);

    let lite = r#"{"Version":130,"Compress":"zstd","KeepAlive":true,"Stream":false,
        "OmitPeers":true,"HardwareAttestationKey":"x","Hostinfo":null}"#;
    let r: MapRequest = serde_json::from_str(lite).unwrap();
    assert!(r.is_lite_update());
    assert!(r.node_key.is_zero() && r.hostinfo.is_none());
}

/// A first map response as Go 1.90.9's testcontrol / Headscale would
/// write it, written by hand from tailcfg.go's field list, with fields we
/// do not model sprinkled in.
const GO_MAP_RESPONSE: &str = r#"{
  "MapSessionHandle": "",
  "Node": {
    "ID": 1, "StableID": "nSELF1CNTRL", "Name": "self.tail.example.", "User": 1,
    "Key": "nodekey:0101010101010101010101010101010101010101010101010101010101010101",
    "KeyExpiry": "0001-01-01T00:00:00Z",
    "Machine": "mkey:0202020202020202020202020202020202020202020202020202020202020202",
    "DiscoKey": "discokey:0303030303030303030303030303030303030303030303030303030303030303",
    "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"],
    "AllowedIPs": null,
    "Endpoints": ["192.0.2.10:41641"],
    "HomeDERP": 900,
    "Hostinfo": {"Hostname": "self", "OS": "linux", "TPM": null},
    "Created": "2025-10-06T12:00:00.123456789Z",
    "Cap": 130,
    "Online": true,
    "MachineAuthorized": true,
    "CapMap": {"https://tailscale.com/cap/file-sharing": null, "magicdns-aaaa": [true]},
    "KeySignature": "AAEC",
    "SomeFutureField": {"x": 1}
  },
  "DERPMap": {
    "Regions": {
      "900": {"RegionID": 900, "RegionCode": "local", "RegionName": "Local",
        "Nodes": [{"Name": "900a", "RegionID": 900, "HostName": "127.0.0.1",
          "IPv4": "127.0.0.1", "IPv6": "none", "STUNPort": -1, "DERPPort": 8443,
          "InsecureForTests": true}]},
      "901": null
    },
    "omitDefaultRegions": true
  },
  "Peers": [{
    "ID": 2, "StableID": "nPEER2CNTRL", "Name": "peer.tail.example.", "User": 1,
    "Key": "nodekey:0404040404040404040404040404040404040404040404040404040404040404",
    "KeyExpiry": "2030-01-01T00:00:00Z",
    "Machine": "mkey:0505050505050505050505050505050505050505050505050505050505050505",
    "DiscoKey": "discokey:0606060606060606060606060606060606060606060606060606060606060606",
    "Addresses": ["100.64.0.2/32"],
    "AllowedIPs": ["100.64.0.2/32", "10.1.0.0/16"],
    "Endpoints": ["198.51.100.7:41641", "[2001:db8::7]:41641"],
    "DERP": "127.3.3.40:900",
    "Hostinfo": {"Hostname": "peer", "Services": [{"Proto": "peerapi4", "Port": 45678}]},
    "Created": "2025-10-06T12:00:01Z",
    "LastSeen": "2025-10-06T12:30:00Z",
    "Online": false,
    "Tags": ["tag:server"],
    "PrimaryRoutes": ["10.1.0.0/16"]
  }],
  "DNSConfig": {
    "Resolvers": [{"Addr": "1.1.1.1"}],
    "Routes": {"corp.example.": [{"Addr": "10.0.0.53"}], "tail.example.": null},
    "Domains": ["tail.example"],
    "Proxied": true,
    "ExtraRecords": [{"Name": "db.tail.example", "Type": "A", "Value": "100.64.0.9"},
                     {"Name": "v6.tail.example", "Value": "fd7a:115c:a1e0::9"}]
  },
  "Domain": "tail.example",
  "CollectServices": false,
  "PacketFilter": [{
    "SrcIPs": ["100.64.0.0-100.115.91.255", "fd7a:115c:a1e0::/48"],
    "DstPorts": [{"IP": "100.64.0.1", "Ports": {"First": 22, "Last": 22}},
                 {"IP": "*", "Ports": {"First": 8000, "Last": 8080}}],
    "IPProto": [6, 17]
  }],
  "UserProfiles": [{"ID": 1, "LoginName": "alice@example.com", "DisplayName": "Alice",
                    "Roles": []}],
  "SSHPolicy": {"rules": []},
  "Health": null,
  "TKAInfo": null,
  "ControlTime": "2025-10-06T12:34:56.5Z",
  "ClientVersion": {"RunningLatest": true},
  "DefaultAutoUpdate": false
}"#;

#[test]
fn decodes_a_realistic_go_map_response() {
    let r: MapResponse = serde_json::from_str(GO_MAP_RESPONSE).unwrap();
    assert!(!r.is_delta() && !r.is_keep_alive());

    let n = r.node.as_ref().unwrap();
    assert_eq!((n.id, n.stable_id.as_str()), (1, "nSELF1CNTRL"));
    assert_eq!(n.name, "self.tail.example.");
    assert_eq!(n.key, nk(1));
    assert_eq!(n.machine, mk(2));
    assert_eq!(n.disco_key, dk(3));
    assert!(n.key_expiry.is_zero());
    assert_eq!(
        n.addresses,
        vec![
            "100.64.0.1/32".parse::<ipnet::IpNet>().unwrap(),
            "fd7a:115c:a1e0::1/128".parse().unwrap()
        ]
    );
    assert_eq!(n.allowed_ips, None);
    assert_eq!(n.effective_allowed_ips(), &n.addresses[..]);
    assert_eq!(n.endpoints, vec!["192.0.2.10:41641".parse().unwrap()]);
    assert_eq!(n.home_derp, 900);
    assert_eq!(n.hostinfo.as_ref().unwrap().hostname, "self");
    assert_eq!(n.created.subsec_nanos(), 123_456_789);
    assert_eq!(
        (n.cap, n.online, n.machine_authorized),
        (130, Some(true), true)
    );
    assert!(n.has_cap("https://tailscale.com/cap/file-sharing"));
    assert_eq!(n.cap_map["magicdns-aaaa"], vec![json!(true)]);
    assert!(n.cap_map["https://tailscale.com/cap/file-sharing"].is_empty());

    let dm = r.derp_map.as_ref().unwrap();
    let regions = dm.regions.as_ref().unwrap();
    assert_eq!(regions.len(), 1, "the null region 901 is dropped");
    let reg = &regions[&900];
    assert_eq!((reg.region_code.as_str(), reg.nodes.len()), ("local", 1));
    let dn = &reg.nodes[0];
    assert_eq!((dn.ipv4.as_str(), dn.ipv6.as_str()), ("127.0.0.1", "none"));
    assert_eq!(
        (dn.stun_port, dn.derp_port, dn.insecure_for_tests),
        (-1, 8443, true)
    );
    assert!(dm.omit_default_regions);

    assert_eq!(r.peers.len(), 1);
    let p = &r.peers[0];
    assert_eq!(p.home_derp, 0);
    assert_eq!(p.home_derp_region(), 900, "legacy DERP string");
    assert_eq!(p.key_expiry, ts("2030-01-01T00:00:00Z"));
    assert_eq!(p.last_seen, Some(ts("2025-10-06T12:30:00Z")));
    assert_eq!(p.online, Some(false));
    assert_eq!(p.effective_allowed_ips().len(), 2);
    assert_eq!(p.endpoints[1], "[2001:db8::7]:41641".parse().unwrap());
    assert_eq!(p.hostinfo.as_ref().unwrap().services[0].port, 45678);
    assert_eq!(p.tags, ["tag:server"]);

    let dns = r.dns_config.as_ref().unwrap();
    assert_eq!(dns.resolvers[0].addr, "1.1.1.1");
    assert_eq!(dns.routes["corp.example."][0].addr, "10.0.0.53");
    assert!(
        dns.routes["tail.example."].is_empty(),
        "null route = answer locally"
    );
    assert!(dns.proxied);
    assert_eq!(dns.extra_records[0].record_type, "A");
    assert_eq!(dns.extra_records[1].record_type, "");
    assert_eq!(r.domain, "tail.example");
    assert_eq!(r.collect_services, Some(false));

    let pf = r.packet_filter.as_ref().unwrap();
    assert_eq!(pf.len(), 1);
    assert_eq!(pf[0].src_ips[1], "fd7a:115c:a1e0::/48");
    assert_eq!(pf[0].dst_ports[0].ip, "100.64.0.1");
    assert_eq!(
        pf[0].dst_ports[0].ports,
        PortRange {
            first: 22,
            last: 22
        }
    );
    assert!(pf[0].dst_ports[1].ports.contains(8080));
    assert_eq!(pf[0].ip_proto, [6, 17]);
    assert!(!pf[0].uses_deprecated_bits());

    assert_eq!(r.user_profiles[0].login_name, "alice@example.com");
    assert_eq!(r.control_time, Some(ts("2025-10-06T12:34:56.5Z")));
    round_trip(&r);
}

#[test]
fn go_nulls_decode_as_empty() {
    let j = r#"{"Node":{"Addresses":null,"Endpoints":null,"Tags":null,"CapMap":null,
        "Key":null,"KeyExpiry":null,"LastSeen":null,"Online":null,"Hostinfo":null},
        "Peers":null,"PeersChanged":null,"PeersRemoved":null,"PeerSeenChange":null,
        "DERPMap":{"Regions":null,"HomeParams":null},"PacketFilter":null,"PacketFilters":null,
        "DNSConfig":{"Resolvers":null,"Routes":null},"UserProfiles":null,"ControlTime":null}"#;
    let r: MapResponse = serde_json::from_str(j).unwrap();
    let n = r.node.as_ref().unwrap();
    assert!(n.addresses.is_empty() && n.key.is_zero() && n.key_expiry.is_zero());
    assert_eq!(
        (n.last_seen, n.online, n.hostinfo.is_none()),
        (None, None, true)
    );
    assert!(r.is_delta());
    assert_eq!(r.derp_map.as_ref().unwrap().regions, None);
    assert_eq!(r.packet_filter, None, "null PacketFilter = unchanged");
    assert!(r.dns_config.as_ref().unwrap().routes.is_empty());
    assert_eq!(r.control_time, None);
}

#[test]
fn empty_key_string_is_rejected_and_never_written() {
    let j = r#"{"Node":{"ID":1,"DiscoKey":""}}"#;
    assert!(serde_json::from_str::<MapResponse>(j).is_err());
    // Every key field of default (zero-key) values is written in full.
    fn check(v: &Value, n: &mut usize) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if ["Key", "Machine", "DiscoKey", "NodeKey", "OldNodeKey"].contains(&k.as_str())
                    {
                        let s = v.as_str().unwrap();
                        assert!(
                            s.ends_with(&"0".repeat(64)) && s.contains(':'),
                            "{k}: {s:?}"
                        );
                        *n += 1;
                    }
                    check(v, n);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| check(v, n)),
            _ => {}
        }
    }
    let mut n = 0;
    let resp = MapResponse {
        node: Some(Node::default()),
        peers_changed: vec![Node::default()],
        ..MapResponse::default()
    };
    check(&serde_json::to_value(&resp).unwrap(), &mut n);
    check(
        &serde_json::to_value(RegisterRequest::default()).unwrap(),
        &mut n,
    );
    check(
        &serde_json::to_value(MapRequest::default()).unwrap(),
        &mut n,
    );
    assert_eq!(n, 3 + 3 + 2 + 2);
}

#[test]
fn bare_ip_addresses_are_rejected_like_go() {
    // netip.Prefix needs the /bits; a bare IP fails the whole message.
    assert!(serde_json::from_str::<Node>(r#"{"Addresses":["100.64.0.1"]}"#).is_err());
}

// ---------------------------------------------------------------------------
// Netmap::apply, one rule at a time.

fn peer(id: NodeId) -> Node {
    Node {
        id,
        key: nk(id as u8),
        disco_key: dk(id as u8),
        addresses: vec![format!("100.64.0.{id}/32").parse().unwrap()],
        ..Node::default()
    }
}

fn self_node() -> Node {
    Node {
        machine_authorized: true,
        ..peer(1)
    }
}

fn first(peers: Vec<Node>) -> MapResponse {
    MapResponse {
        node: Some(self_node()),
        peers,
        ..MapResponse::default()
    }
}

fn ids(nm: &Netmap) -> Vec<NodeId> {
    nm.peers().map(|p| p.id).collect()
}

#[test]
fn netmap_first_message_needs_node_and_keepalives_change_nothing() {
    let mut nm = Netmap::new();
    let ch = nm.apply(MapResponse::keep_alive()).unwrap();
    assert!(ch.keep_alive);
    let no_node = MapResponse {
        control_time: Some(Timestamp::UNIX_EPOCH),
        peers: vec![peer(2)],
        ..MapResponse::default()
    };
    assert_eq!(nm.apply(no_node), Err(NetmapError::InitialLacksNode));
    assert_eq!(nm, Netmap::new(), "a refused message changes nothing");

    let ch = nm.apply(first(vec![peer(2), peer(3)])).unwrap();
    assert!(ch.self_node && ch.full_peers && ch.peers());
    assert_eq!(ch.peers_added, 2);
    assert_eq!(ids(&nm), [2, 3]);
    // Later messages may leave Node out.
    nm.apply(MapResponse::default()).unwrap();
    assert!(nm.self_node().unwrap().machine_authorized);

    // A keep-alive's other fields are ignored; its ControlTime is kept.
    let before = nm.clone();
    let ch = nm
        .apply(MapResponse {
            keep_alive: true,
            peers_removed: vec![2],
            packet_filter: Some(vec![]),
            control_time: Some(Timestamp::UNIX_EPOCH),
            ..MapResponse::default()
        })
        .unwrap();
    assert!(ch.keep_alive && !ch.peers());
    assert_eq!(ids(&nm), [2, 3]);
    assert_eq!(nm.packet_filter(), None);
    assert_eq!(nm.control_time(), Some(Timestamp::UNIX_EPOCH));
    assert_eq!(before.control_time(), None);
}

#[test]
fn netmap_full_peers_replace_and_ignore_deltas() {
    let mut nm = Netmap::new();
    nm.apply(first(vec![peer(2), peer(3)])).unwrap();
    let ch = nm
        .apply(MapResponse {
            peers: vec![peer(3), peer(4)],
            peers_removed: vec![3],
            peers_changed: vec![peer(9)],
            online_change: [(4, true)].into(),
            ..MapResponse::default()
        })
        .unwrap();
    assert_eq!(
        ids(&nm),
        [3, 4],
        "Peers replaces; the deltas beside it are ignored"
    );
    assert_eq!(
        (ch.peers_added, ch.peers_removed, ch.peers_changed),
        (1, 1, 1)
    );
    assert_eq!(nm.peer(4).unwrap().online, None);
}

#[test]
fn netmap_empty_peers_is_a_delta_not_zero_peers() {
    let mut nm = Netmap::new();
    nm.apply(first(vec![peer(2)])).unwrap();
    let r: MapResponse = serde_json::from_str(r#"{"Peers":[]}"#).unwrap();
    assert!(r.is_delta());
    let ch = nm.apply(r).unwrap();
    assert!(!ch.peers());
    assert_eq!(ids(&nm), [2]);
    // Zero peers is said with PeersRemoved.
    let ch = nm
        .apply(MapResponse {
            peers_removed: vec![2, 99],
            ..MapResponse::default()
        })
        .unwrap();
    assert_eq!(ch.peers_removed, 1);
    assert_eq!(nm.peers().len(), 0);
}

#[test]
fn netmap_peers_changed_upserts_whole_nodes() {
    let mut nm = Netmap::new();
    nm.apply(first(vec![peer(2)])).unwrap();
    let mut p2 = peer(2);
    p2.name = "renamed.".into();
    let ch = nm
        .apply(MapResponse {
            peers_changed: vec![p2, peer(5)],
            ..MapResponse::default()
        })
        .unwrap();
    assert_eq!((ch.peers_added, ch.peers_changed), (1, 1));
    assert_eq!(ids(&nm), [2, 5]);
    assert_eq!(nm.peer(2).unwrap().name, "renamed.");
    // Removal happens before upsert within one message.
    nm.apply(MapResponse {
        peers_removed: vec![5],
        peers_changed: vec![peer(5)],
        ..MapResponse::default()
    })
    .unwrap();
    assert_eq!(ids(&nm), [2, 5]);
}

#[test]
fn netmap_patches_change_only_the_fields_they_carry() {
    let mut nm = Netmap::new();
    let mut p = peer(2);
    p.endpoints = vec!["192.0.2.1:1".parse().unwrap()];
    p.home_derp = 1;
    p.cap = 100;
    nm.apply(first(vec![p])).unwrap();

    let ch = nm
        .apply(MapResponse {
            peers_changed_patch: vec![
                PeerChange {
                    node_id: 2,
                    derp_region: 900,
                    disco_key: Some(dk(0x77)),
                    online: Some(true),
                    ..PeerChange::default()
                },
                PeerChange {
                    node_id: 404,
                    derp_region: 5,
                    ..PeerChange::default()
                },
            ],
            ..MapResponse::default()
        })
        .unwrap();
    assert_eq!(ch.peers_changed, 1, "unknown IDs are ignored");
    let p = nm.peer(2).unwrap();
    assert_eq!(
        (p.home_derp, p.disco_key, p.online),
        (900, dk(0x77), Some(true))
    );
    assert_eq!(
        (p.cap, p.endpoints.len(), p.key),
        (100, 1, nk(2)),
        "untouched"
    );

    nm.apply(MapResponse {
        peers_changed_patch: vec![PeerChange {
            node_id: 2,
            cap: 130,
            endpoints: Some(vec![]),
            key: Some(nk(0x55)),
            key_expiry: Some(ts("2031-01-01T00:00:00Z")),
            last_seen: Some(Timestamp::UNIX_EPOCH),
            cap_map: Some([("c".to_string(), vec![])].into()),
            ..PeerChange::default()
        }],
        ..MapResponse::default()
    })
    .unwrap();
    let p = nm.peer(2).unwrap();
    assert_eq!((p.cap, p.key), (130, nk(0x55)));
    assert!(p.endpoints.is_empty(), "an empty endpoint list is applied");
    assert_eq!(p.key_expiry, ts("2031-01-01T00:00:00Z"));
    assert_eq!(p.last_seen, Some(Timestamp::UNIX_EPOCH));
    assert!(p.has_cap("c"));
    assert_eq!(p.home_derp, 900);
}

#[test]
fn netmap_seen_and_online_changes() {
    let mut nm = Netmap::new();
    nm.apply(first(vec![peer(2), peer(3)])).unwrap();
    // No clock known yet: "seen now" cannot be dated, "gone" clears.
    nm.apply(MapResponse {
        peer_seen_change: [(2, true)].into(),
        ..MapResponse::default()
    })
    .unwrap();
    assert_eq!(nm.peer(2).unwrap().last_seen, None);

    let t = ts("2025-10-06T00:00:00Z");
    nm.apply(MapResponse {
        peer_seen_change: [(2, true), (3, true)].into(),
        online_change: [(3, true), (77, true)].into(),
        control_time: Some(t),
        ..MapResponse::default()
    })
    .unwrap();
    assert_eq!(nm.peer(2).unwrap().last_seen, Some(t));
    assert_eq!(nm.peer(3).unwrap().online, Some(true));
    assert!(nm.peer(77).is_none());

    nm.apply(MapResponse {
        peer_seen_change: [(2, false)].into(),
        online_change: [(3, false)].into(),
        ..MapResponse::default()
    })
    .unwrap();
    assert_eq!(nm.peer(2).unwrap().last_seen, None);
    assert_eq!(nm.peer(3).unwrap().online, Some(false));

    // The caller's clock wins over ControlTime.
    let now = ts("2026-01-01T00:00:00Z");
    nm.apply_at(
        MapResponse {
            peer_seen_change: [(3, true)].into(),
            ..MapResponse::default()
        },
        Some(now),
    )
    .unwrap();
    assert_eq!(nm.peer(3).unwrap().last_seen, Some(now));
}

#[test]
fn netmap_packet_filter_missing_is_unchanged_and_empty_denies_all() {
    let mut nm = Netmap::new();
    nm.apply(first(vec![])).unwrap();
    assert_eq!(nm.packet_filter(), None, "never sent: no rules at all");

    let ch = nm
        .apply(MapResponse {
            packet_filter: Some(vec![FilterRule::allow_all()]),
            ..MapResponse::default()
        })
        .unwrap();
    assert!(ch.packet_filter);
    assert_eq!(nm.packet_filter(), Some(&[FilterRule::allow_all()][..]));

    let ch = nm
        .apply(serde_json::from_str(r#"{"Domain":"x"}"#).unwrap())
        .unwrap();
    assert!(!ch.packet_filter);
    assert_eq!(
        nm.packet_filter().map(<[_]>::len),
        Some(1),
        "missing = unchanged"
    );

    let ch = nm
        .apply(serde_json::from_str(r#"{"PacketFilter":[]}"#).unwrap())
        .unwrap();
    assert!(ch.packet_filter);
    assert_eq!(nm.packet_filter(), Some(&[][..]), "[] = deny all");
}

#[test]
fn netmap_named_packet_filters() {
    let rule = |src: &str| FilterRule {
        src_ips: vec![src.into()],
        ..FilterRule::default()
    };
    let mut nm = Netmap::new();
    nm.apply(first(vec![])).unwrap();
    // PacketFilter is "base"; names concatenate in sorted order.
    nm.apply(MapResponse {
        packet_filter: Some(vec![rule("base")]),
        packet_filters: [
            ("zeta".to_string(), Some(vec![rule("z")])),
            ("alpha".to_string(), Some(vec![rule("a")])),
        ]
        .into(),
        ..MapResponse::default()
    })
    .unwrap();
    let srcs = |nm: &Netmap| -> Vec<String> {
        nm.packet_filter()
            .unwrap()
            .iter()
            .map(|r| r.src_ips[0].clone())
            .collect()
    };
    assert_eq!(srcs(&nm), ["a", "base", "z"]);

    // null deletes one name.
    nm.apply(serde_json::from_str(r#"{"PacketFilters":{"alpha":null}}"#).unwrap())
        .unwrap();
    assert_eq!(srcs(&nm), ["base", "z"]);

    // "*": null clears everything first, including base set in the same
    // message (PacketFilter is applied before PacketFilters).
    nm.apply(MapResponse {
        packet_filter: Some(vec![rule("base2")]),
        packet_filters: [
            ("*".to_string(), None),
            ("beta".to_string(), Some(vec![rule("b")])),
        ]
        .into(),
        ..MapResponse::default()
    })
    .unwrap();
    assert_eq!(srcs(&nm), ["b"]);

    // Headscale's form: {"base": []} is deny all.
    nm.apply(serde_json::from_str(r#"{"PacketFilters":{"*":null,"base":[]}}"#).unwrap())
        .unwrap();
    assert_eq!(nm.packet_filter(), Some(&[][..]));
}

#[test]
fn netmap_derp_map_merges_like_go() {
    let region = |id: i32| DerpRegion {
        region_id: id,
        ..DerpRegion::default()
    };
    let mut nm = Netmap::new();
    nm.apply(MapResponse {
        derp_map: Some(DerpMap {
            home_params: Some(DerpHomeParams {
                region_score: Some([(900, 2.0)].into()),
            }),
            regions: Some([(900, region(900))].into()),
            omit_default_regions: true,
        }),
        ..first(vec![])
    })
    .unwrap();

    // Regions absent: keep the old ones (and omitDefaultRegions); HomeParams
    // present without RegionScore: keep the old scores.
    let ch = nm
        .apply(MapResponse {
            derp_map: Some(DerpMap {
                home_params: Some(DerpHomeParams { region_score: None }),
                ..DerpMap::default()
            }),
            ..MapResponse::default()
        })
        .unwrap();
    assert!(ch.derp_map);
    let dm = nm.derp_map().unwrap();
    assert_eq!(
        dm.regions.as_ref().unwrap().keys().collect::<Vec<_>>(),
        [&900]
    );
    assert!(dm.omit_default_regions);
    assert_eq!(
        dm.home_params.as_ref().unwrap().region_score,
        Some([(900, 2.0)].into())
    );

    // Regions present: replace.
    nm.apply(MapResponse {
        derp_map: Some(DerpMap {
            regions: Some([(901, region(901))].into()),
            ..DerpMap::default()
        }),
        ..MapResponse::default()
    })
    .unwrap();
    let dm = nm.derp_map().unwrap();
    assert_eq!(
        dm.regions.as_ref().unwrap().keys().collect::<Vec<_>>(),
        [&901]
    );
    assert!(!dm.omit_default_regions);
    assert!(dm.home_params.is_some(), "absent HomeParams keep the old");
}

#[test]
fn netmap_other_fields() {
    let mut nm = Netmap::new();
    let mut s = self_node();
    s.legacy_derp = "127.3.3.40:901".into();
    s.capabilities = vec!["old-cap".into()];
    nm.apply(MapResponse {
        node: Some(s),
        dns_config: Some(DnsConfig {
            proxied: true,
            ..DnsConfig::default()
        }),
        domain: "tail.example".into(),
        collect_services: Some(true),
        user_profiles: vec![UserProfile {
            id: 1,
            login_name: "a@x".into(),
            ..UserProfile::default()
        }],
        ..MapResponse::default()
    })
    .unwrap();
    let me = nm.self_node().unwrap();
    assert_eq!(
        (me.home_derp, me.legacy_derp.as_str()),
        (901, ""),
        "upgraded"
    );
    assert_eq!(me.allowed_ips.as_deref(), Some(&me.addresses[..]));
    assert!(me.cap_map.contains_key("old-cap"));
    assert!(nm.dns_config().unwrap().proxied);
    assert_eq!(nm.domain(), "tail.example");
    assert!(nm.collect_services());

    // Absent / empty = unchanged; profiles accumulate.
    let ch = nm
        .apply(MapResponse {
            user_profiles: vec![UserProfile {
                id: 2,
                ..UserProfile::default()
            }],
            ..MapResponse::default()
        })
        .unwrap();
    assert!(!ch.domain && !ch.dns_config && ch.user_profiles);
    assert_eq!(nm.domain(), "tail.example");
    assert!(nm.dns_config().is_some() && nm.collect_services());
    assert_eq!(nm.user_profiles().len(), 2);

    let ch = nm
        .apply(MapResponse {
            dns_config: Some(DnsConfig::default()),
            collect_services: Some(false),
            ..MapResponse::default()
        })
        .unwrap();
    assert!(ch.dns_config);
    assert!(!nm.dns_config().unwrap().proxied && !nm.collect_services());
}

#[test]
fn netmap_applies_the_realistic_go_response() {
    let mut nm = Netmap::new();
    let ch = nm
        .apply(serde_json::from_str(GO_MAP_RESPONSE).unwrap())
        .unwrap();
    assert!(ch.self_node && ch.full_peers && ch.derp_map && ch.dns_config);
    assert!(ch.packet_filter && ch.domain && ch.user_profiles);
    let p = nm.peer(2).unwrap();
    assert_eq!(p.home_derp, 900, "legacy DERP upgraded");
    assert_eq!(
        nm.self_node().unwrap().allowed_ips.as_ref().unwrap().len(),
        2,
        "AllowedIPs null = Addresses"
    );
    assert_eq!(nm.control_time(), Some(ts("2025-10-06T12:34:56.5Z")));
}

// ---------------------------------------------------------------------------
// Map stream framing.

fn frames_of(dec: &mut MapStreamDecoder, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, MapStreamError> {
    let mut out = Vec::new();
    for c in chunks {
        dec.push(c);
        while let Some(f) = dec.next_frame()? {
            out.push(f);
        }
    }
    Ok(out)
}

#[test]
fn stream_round_trips_zstd_frames_fed_a_byte_at_a_time() {
    let msgs: Vec<Vec<u8>> = vec![
        br#"{"KeepAlive":true}"#.to_vec(),
        GO_MAP_RESPONSE.as_bytes().to_vec(),
        serde_json::to_vec(&MapResponse::keep_alive()).unwrap(),
    ];
    let mut enc = MapStreamEncoder::new(Compression::Zstd);
    let mut wire = Vec::new();
    for m in &msgs {
        enc.encode_into(m, &mut wire).unwrap();
    }
    // Little-endian length of the first frame.
    let len = u32::from_le_bytes(wire[..4].try_into().unwrap()) as usize;
    assert_eq!(&wire[4..8], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    assert!(len < 64);

    let chunks: Vec<&[u8]> = wire.chunks(1).collect();
    let mut dec = MapStreamDecoder::new(Compression::Zstd);
    assert_eq!(frames_of(&mut dec, &chunks).unwrap(), msgs);
    assert_eq!(dec.buffered(), 0);
    dec.finish().unwrap();

    // All at once, too.
    let mut dec = MapStreamDecoder::new(Compression::Zstd);
    assert_eq!(frames_of(&mut dec, &[&wire]).unwrap(), msgs);

    // And the typed path.
    let frame = enc.encode_message(&MapResponse::keep_alive()).unwrap();
    let mut dec = MapStreamDecoder::new(Compression::Zstd);
    let got = frames_of(&mut dec, &[&frame]).unwrap();
    let r: MapResponse = serde_json::from_slice(&got[0]).unwrap();
    assert!(r.is_keep_alive());
}

#[test]
fn stream_reads_concatenated_zstd_frames_in_one_payload() {
    let mut payload = zstd::bulk::compress(b"{\"Domain\":", 3).unwrap();
    payload.extend(zstd::bulk::compress(b"\"x\"}", 1).unwrap());
    let mut wire = (payload.len() as u32).to_le_bytes().to_vec();
    wire.extend(&payload);
    let mut dec = MapStreamDecoder::new(Compression::Zstd);
    assert_eq!(
        frames_of(&mut dec, &[&wire]).unwrap(),
        vec![br#"{"Domain":"x"}"#.to_vec()]
    );
}

#[test]
fn stream_uncompressed_mode() {
    let mut enc = MapStreamEncoder::new(Compression::None);
    let wire = enc.encode(b"{}").unwrap();
    assert_eq!(wire, [2, 0, 0, 0, b'{', b'}']);
    let mut dec = MapStreamDecoder::new(Compression::None);
    assert_eq!(
        frames_of(&mut dec, &[&wire[..3], &wire[3..]]).unwrap(),
        vec![b"{}".to_vec()]
    );
}

#[test]
fn stream_rejects_oversized_frames_from_the_header_alone() {
    let limits = FrameLimits {
        max_wire: 100,
        max_decoded: 1000,
    };
    let mut dec = MapStreamDecoder::with_limits(Compression::Zstd, limits);
    // Only the header has arrived; the frame is refused already.
    let err = frames_of(&mut dec, &[&101u32.to_le_bytes()]).unwrap_err();
    assert_eq!(err, MapStreamError::FrameTooLarge { len: 101, max: 100 });
    // The error is final, and later bytes are dropped.
    dec.push(&[0; 10]);
    assert_eq!(dec.next_frame().unwrap_err(), err);
    assert_eq!(dec.finish().unwrap_err(), err);
    assert_eq!(dec.buffered(), 0);

    let mut dec = MapStreamDecoder::with_limits(Compression::None, limits);
    let mut wire = 60u32.to_le_bytes().to_vec();
    wire.extend([b' '; 60]);
    assert!(frames_of(&mut dec, &[&wire]).is_ok());
    let mut dec = MapStreamDecoder::with_limits(
        Compression::None,
        FrameLimits {
            max_wire: 100,
            max_decoded: 50,
        },
    );
    assert_eq!(
        frames_of(&mut dec, &[&wire]).unwrap_err(),
        MapStreamError::DecodedTooLarge { max: 50 }
    );
}

#[test]
fn stream_refuses_a_zstd_bomb() {
    let json = vec![b' '; 1 << 20];
    let bomb = zstd::bulk::compress(&json, 19).unwrap();
    assert!(bomb.len() < 1000);
    let mut wire = (bomb.len() as u32).to_le_bytes().to_vec();
    wire.extend(&bomb);
    let mut dec = MapStreamDecoder::with_limits(
        Compression::Zstd,
        FrameLimits {
            max_wire: 4096,
            max_decoded: 64 << 10,
        },
    );
    let err = frames_of(&mut dec, &[&wire]).unwrap_err();
    assert!(
        matches!(
            err,
            MapStreamError::DecodedTooLarge { .. } | MapStreamError::Zstd(_)
        ),
        "{err:?}"
    );
    // Exactly at the limit is fine.
    let mut dec = MapStreamDecoder::with_limits(
        Compression::Zstd,
        FrameLimits {
            max_wire: 4096,
            max_decoded: 1 << 20,
        },
    );
    assert_eq!(frames_of(&mut dec, &[&wire]).unwrap(), vec![json]);
}

#[test]
fn stream_bad_zstd_and_truncation() {
    let mut dec = MapStreamDecoder::new(Compression::Zstd);
    let err = frames_of(&mut dec, &[&[4, 0, 0, 0, 1, 2, 3, 4]]).unwrap_err();
    assert!(matches!(err, MapStreamError::Zstd(_)), "{err:?}");

    let mut dec = MapStreamDecoder::new(Compression::None);
    assert!(frames_of(&mut dec, &[&[9, 0, 0, 0, b'{']])
        .unwrap()
        .is_empty());
    assert_eq!(dec.finish(), Err(MapStreamError::Truncated { buffered: 5 }));
}

#[test]
fn encoder_enforces_limits() {
    let limits = FrameLimits {
        max_wire: 8,
        max_decoded: 16,
    };
    let mut enc = MapStreamEncoder::with_limits(Compression::None, limits);
    assert_eq!(
        enc.encode(&[b' '; 17]).unwrap_err(),
        MapEncodeError::MessageTooLarge { len: 17, max: 16 }
    );
    assert_eq!(
        enc.encode(&[b' '; 9]).unwrap_err(),
        MapEncodeError::FrameTooLarge { len: 9, max: 8 }
    );
    assert_eq!(enc.encode(&[b' '; 8]).unwrap().len(), 12);
}
