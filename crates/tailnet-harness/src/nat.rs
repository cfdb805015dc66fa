//! Two sites behind NATs of their own and the "internet" between them, in
//! network namespaces ([`NatLab`]); reached as `netns::NatLab` too.

use crate::netns::{find_in_path, netns_ready, run, run_quiet, SKIP_ENV};
use std::net::Ipv4Addr;

/// Two sites, each a network namespace behind a NAT of its own, and the
/// "internet" between them: a router namespace with a veth to each site.
/// Site 0 is 198.51.100.2/24 behind router address 198.51.100.1, site 1
/// 203.0.113.2/24 behind 203.0.113.1; each site's default route is the
/// router, which forwards between them. Nothing touches the host's links
/// or routes. [`NatLab::nat_udp`] puts a site's UDP port behind a NAT.
/// `Drop` deletes the namespaces (stop the processes inside first).
pub struct NatLab {
    /// The router namespace (run servers every site reaches here).
    pub router: String,
    /// The sites, 0 and 1.
    pub sites: [NatSite; 2],
}

/// One site of a [`NatLab`].
pub struct NatSite {
    /// The site's namespace.
    pub ns: String,
    /// The site's public address (its veth end).
    pub ip: Ipv4Addr,
    /// The router's address on the site's link.
    pub gateway: Ipv4Addr,
}

impl NatLab {
    /// Creates the three namespaces and links. `tag` (one lowercase
    /// letter) tells this process's labs apart.
    pub fn create(tag: char) -> NatLab {
        assert!(tag.is_ascii_lowercase());
        let base = format!("tailnet-nat-{}-{tag}", std::process::id());
        let mut lab = NatLab {
            router: format!("{base}-r"),
            sites: [
                NatSite {
                    ns: format!("{base}-0"),
                    ip: Ipv4Addr::new(198, 51, 100, 2),
                    gateway: Ipv4Addr::new(198, 51, 100, 1),
                },
                NatSite {
                    ns: format!("{base}-1"),
                    ip: Ipv4Addr::new(203, 0, 113, 2),
                    gateway: Ipv4Addr::new(203, 0, 113, 1),
                },
            ],
        };
        // Leftovers of an earlier run with this pid go first.
        for ns in lab.namespaces() {
            let _ = run_quiet(&["ip", "netns", "del", &ns]);
        }
        run(&["ip", "netns", "add", &lab.router]);
        run(&["ip", "-n", &lab.router, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            &lab.router,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ]);
        for (i, site) in lab.sites.iter_mut().enumerate() {
            let (r_end, s_end) = (format!("r{i}"), format!("s{i}"));
            run(&["ip", "netns", "add", &site.ns]);
            run(&["ip", "-n", &site.ns, "link", "set", "lo", "up"]);
            // Made inside the router namespace, the far end moved straight
            // to the site: the host's own links never change.
            run(&[
                "ip",
                "-n",
                &lab.router,
                "link",
                "add",
                &r_end,
                "type",
                "veth",
                "peer",
                "name",
                &s_end,
                "netns",
                &site.ns,
            ]);
            let gw = format!("{}/24", site.gateway);
            let ip = format!("{}/24", site.ip);
            run(&["ip", "-n", &lab.router, "addr", "add", &gw, "dev", &r_end]);
            run(&["ip", "-n", &lab.router, "link", "set", &r_end, "up"]);
            run(&["ip", "-n", &site.ns, "addr", "add", &ip, "dev", &s_end]);
            run(&["ip", "-n", &site.ns, "link", "set", &s_end, "up"]);
            run(&[
                "ip",
                "-n",
                &site.ns,
                "route",
                "add",
                "default",
                "via",
                &site.gateway.to_string(),
            ]);
        }
        lab
    }

    fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.router.clone()];
        v.extend(self.sites.iter().map(|s| s.ns.clone()));
        v
    }

    /// Puts UDP `port` of site `i` (every UDP port when `None`: for a
    /// program whose port is random) behind a NAT with an endpoint-
    /// independent mapping to `mapped` (what a STUN server sees, from
    /// anywhere) and a stateful firewall: nothing new comes in, to any
    /// port; only replies to what the site sent (so a peer gets through
    /// once the site has sent to it: hole punching). The site's own
    /// address and port are then unreachable from outside.
    pub fn nat_udp(&self, i: usize, port: Option<u16>, mapped: u16) {
        let site = &self.sites[i];
        let sport = match port {
            Some(p) => format!("udp sport {p}"),
            None => "meta l4proto udp".to_string(),
        };
        let rules = format!(
            "table ip nat {{\n\
             \tchain pre {{ type nat hook prerouting priority -100; }}\n\
             \tchain post {{ type nat hook postrouting priority 100; \
             oifname \"s{i}\" {sport} snat to {ip}:{mapped}; }}\n\
             }}\n\
             table ip filter {{\n\
             \tchain input {{ type filter hook input priority 0; policy drop; \
             iifname \"lo\" accept; ct state established,related accept; }}\n\
             }}\n",
            ip = site.ip,
        );
        self.nft(&site.ns, &rules);
    }

    /// Loads nftables `rules` (`nft -f` syntax) into namespace `ns`.
    pub fn nft(&self, ns: &str, rules: &str) {
        let path = std::env::temp_dir().join(format!("{ns}-{}.nft", std::process::id()));
        std::fs::write(&path, rules).expect("write nft rules");
        let file = path.to_str().expect("utf-8 path");
        run(&["ip", "netns", "exec", ns, "nft", "-f", file]);
        let _ = std::fs::remove_file(&path);
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            let _ = run_quiet(&["ip", "netns", "del", &ns]);
        }
    }
}

/// Checks that this process can build a [`NatLab`]: what
/// [`netns_ready`] checks (skipping without root), and `nft` (Debian
/// package nftables: missing, it panics unless `TAILNET_SKIP_INTEROP=1`).
pub fn nat_ready(test: &str) -> bool {
    if !netns_ready(test) {
        return false;
    }
    if find_in_path("nft").is_none() {
        let what =
            "`nft` on PATH (Debian package nftables; scripts/install-test-deps.sh installs it)";
        if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
            println!("SKIPPED {test}: missing {what} ({SKIP_ENV}=1 is set)");
            return false;
        }
        panic!("{test} cannot run: missing {what}; set {SKIP_ENV}=1 to skip it");
    }
    true
}
