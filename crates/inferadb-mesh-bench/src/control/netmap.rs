//! The netmap part: synthetic but realistic netmaps of N peers, and the
//! in-process decode / apply / status timings.

use super::*;

pub(crate) fn key(tag: u8, i: usize) -> PublicKey {
    let mut b = [tag; 32];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PublicKey::from_bytes(b)
}

pub(crate) fn v4(i: usize) -> Ipv4Addr {
    // 100.64.0.0/10 holds 4M addresses; i stays far below that.
    let n = 0x6440_0000u32 | (i as u32 & 0x003f_ffff);
    Ipv4Addr::from(n)
}

/// A peer as a coordinator sends it (ID `i + 1`).
pub fn synthetic_node(i: usize) -> Node {
    let id = i as i64 + 1;
    let a4 = v4(i + 1);
    let a6 = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, (i >> 16) as u16, i as u16);
    let mut cap_map = CapMap::new();
    cap_map.insert("https://inferadb.com/cap/replica".into(), Vec::new());
    Node {
        id,
        stable_id: format!("n{id}CNTRL"),
        name: format!("db-{i}.mesh.example."),
        user: 1,
        key: key(2, i).into(),
        key_expiry: Timestamp::from_unix(1_900_000_000, 0).unwrap_or(Timestamp::ZERO),
        machine: key(3, i).into(),
        disco_key: key(4, i).into(),
        addresses: vec![
            ipnet::IpNet::from(IpAddr::V4(a4)),
            ipnet::IpNet::from(IpAddr::V6(a6)),
        ],
        allowed_ips: None,
        endpoints: vec![
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 250) as u8)),
                41641,
            ),
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)),
                41641,
            ),
        ],
        home_derp: 1 + (i % 3) as i32,
        hostinfo: Some(Hostinfo {
            hostname: format!("db-{i}"),
            os: "linux".into(),
            ..Hostinfo::default()
        }),
        created: Timestamp::from_unix(1_700_000_000, 0).unwrap_or(Timestamp::ZERO),
        cap: 130,
        tags: vec![format!("tag:inferadb-region-{}", i % 3)],
        online: Some(true),
        machine_authorized: true,
        cap_map,
        ..Node::default()
    }
}

/// The first message of a map session for a tailnet of `peers` peers.
pub fn synthetic_map_response(peers: usize) -> MapResponse {
    let mut me = synthetic_node(peers + 1);
    me.name = "self.mesh.example.".into();
    MapResponse {
        node: Some(me),
        peers: (0..peers).map(synthetic_node).collect(),
        domain: "mesh.example".into(),
        packet_filter: Some(vec![FilterRule {
            src_ips: vec!["100.64.0.0/10".into(), "fd7a:115c:a1e0::/48".into()],
            dst_ports: vec![NetPortRange {
                ip: "*".into(),
                bits: None,
                ports: PortRange {
                    first: 0,
                    last: 65535,
                },
            }],
            ..FilterRule::default()
        }]),
        user_profiles: vec![UserProfile {
            id: 1,
            login_name: "tagged-devices".into(),
            display_name: "Tagged devices".into(),
            ..UserProfile::default()
        }],
        control_time: Timestamp::from_unix(1_750_000_000, 0),
        ..MapResponse::default()
    }
}

/// A typical later message: one peer went offline, one moved, one was
/// replaced (a node key rotation).
pub fn synthetic_delta(peers: usize, round: usize) -> MapResponse {
    let n = peers.max(1);
    let a = round % n;
    let b = (round + n / 2) % n;
    let c = (round + n / 3) % n;
    let mut replaced = synthetic_node(c);
    replaced.key = key(5, round).into();
    MapResponse {
        online_change: BTreeMap::from([(a as i64 + 1, round.is_multiple_of(2))]),
        peers_changed_patch: vec![PeerChange {
            node_id: b as i64 + 1,
            endpoints: Some(vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, (round % 250) as u8)),
                41641,
            )]),
            ..PeerChange::default()
        }],
        peers_changed: vec![replaced],
        ..MapResponse::default()
    }
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The `p` quantile of `sorted` (nearest rank), rounded to nanoseconds.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    (sorted[idx.min(sorted.len() - 1)] * 1000.0).round() / 1000.0
}

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Measures one size.
pub fn measure(peers: usize, iterations: Option<usize>) -> Result<ControlCase, ControlBenchError> {
    if peers == 0 || peers > MAX_PEERS {
        return Err(ControlBenchError::Size(peers, MAX_PEERS));
    }
    let iters = iterations
        .unwrap_or_else(|| (20_000 / peers).clamp(5, 200))
        .max(1);
    let resp = synthetic_map_response(peers);
    let json = serde_json::to_vec(&resp)?;

    let mut decode = Vec::with_capacity(iters);
    let mut full = Vec::with_capacity(iters);
    let mut status = Vec::with_capacity(iters);
    let mut netmap = Netmap::new();
    for _ in 0..iters {
        let t = Instant::now();
        let decoded: MapResponse = serde_json::from_slice(&json)?;
        decode.push(micros(t.elapsed()));
        std::hint::black_box(&decoded);

        let input = resp.clone();
        let mut nm = Netmap::new();
        let t = Instant::now();
        nm.apply(input)?;
        full.push(micros(t.elapsed()));

        let t = Instant::now();
        let view: Vec<PeerStatus> = nm.peers().map(PeerStatus::from_control_node).collect();
        status.push(micros(t.elapsed()));
        std::hint::black_box(view);
        netmap = nm;
    }

    let mut delta = Vec::with_capacity(iters);
    for round in 0..iters {
        let d = synthetic_delta(peers, round);
        let t = Instant::now();
        netmap.apply(d)?;
        delta.push(micros(t.elapsed()));
    }
    std::hint::black_box(&netmap);

    let full = sorted(full);
    Ok(ControlCase {
        peers,
        iterations: iters,
        map_bytes: json.len(),
        decode_us: percentile(&sorted(decode), 0.5),
        apply_full_us: percentile(&full, 0.5),
        apply_full_p99_us: percentile(&full, 0.99),
        apply_delta_us: percentile(&sorted(delta), 0.5),
        status_us: percentile(&sorted(status), 0.5),
        join_ms: None,
        rss_mib: None,
    })
}

/// Measures every size in `opts` (the netmap part alone).
pub fn run_control(opts: &ControlOptions) -> Result<ControlReport, ControlBenchError> {
    let cases = opts
        .sizes
        .iter()
        .map(|&n| measure(n, opts.iterations))
        .collect::<Result<_, _>>()?;
    Ok(ControlReport {
        cases,
        ..ControlReport::default()
    })
}
