//! A DERP map from a file (`coordinator serve --derp-map`): Tailscale's
//! `DERPMap` JSON, the shape of `tailcfg.DERPMap` and of the `derpMap` key
//! of a Tailscale policy file, checked so that a typo is an error naming
//! the region and field instead of nodes that silently cannot relay.

use std::path::{Path, PathBuf};
use tailnet_wire::control::DerpMap;

/// Largest DERP map file read.
const MAX_BYTES: u64 = 1 << 20;

/// Why a DERP map file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DerpMapError {
    /// It could not be read.
    #[error("DERP map {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It is not a DERP map.
    #[error("DERP map {path}: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the region and field.
        detail: String,
    },
}

/// Reads and checks the DERP map in `path`.
pub fn load_derp_map(path: &Path) -> Result<DerpMap, DerpMapError> {
    use std::io::Read;
    let read_err = |source| DerpMapError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    let invalid = |detail: String| DerpMapError::Invalid {
        path: path.to_path_buf(),
        detail,
    };
    if text.len() as u64 > MAX_BYTES {
        return Err(invalid(format!("larger than {MAX_BYTES} bytes")));
    }
    parse_derp_map(&text).map_err(invalid)
}

/// Parses and checks a DERP map: at least one region; each region's
/// `RegionID` its key (filled in when 0) and above 0, with at least one
/// node; each node of its region (`RegionID` filled in when 0), named,
/// with an address or host name to dial, and ports in range.
pub fn parse_derp_map(text: &str) -> Result<DerpMap, String> {
    let mut map: DerpMap = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let regions = map
        .regions
        .as_mut()
        .filter(|r| !r.is_empty())
        .ok_or("Regions: no regions")?;
    for (id, region) in regions.iter_mut() {
        let at = format!("Regions.{id}");
        if *id <= 0 {
            return Err(format!("{at}: region IDs are above 0"));
        }
        match region.region_id {
            0 => region.region_id = *id,
            r if r != *id => return Err(format!("{at}.RegionID: {r}, not the key {id}")),
            _ => {}
        }
        if region.nodes.is_empty() {
            return Err(format!("{at}.Nodes: no nodes"));
        }
        for (i, node) in region.nodes.iter_mut().enumerate() {
            let at = format!("{at}.Nodes[{i}]");
            match node.region_id {
                0 => node.region_id = *id,
                r if r != *id => return Err(format!("{at}.RegionID: {r}, not the region {id}")),
                _ => {}
            }
            if node.name.is_empty() {
                return Err(format!("{at}.Name: empty"));
            }
            let ip_ok =
                |s: &str| s.is_empty() || s == "none" || s.parse::<std::net::IpAddr>().is_ok();
            if !ip_ok(&node.ipv4) || !ip_ok(&node.ipv6) {
                return Err(format!(
                    "{at}: IPv4/IPv6 must be an address, \"none\" or absent"
                ));
            }
            if node.host_name.is_empty()
                && node.ipv4.parse::<std::net::IpAddr>().is_err()
                && node.ipv6.parse::<std::net::IpAddr>().is_err()
            {
                return Err(format!("{at}: no HostName, IPv4 or IPv6 to reach it at"));
            }
            for (field, port) in [("DERPPort", node.derp_port), ("STUNPort", node.stun_port)] {
                if !(-1..=65535).contains(&port) {
                    return Err(format!("{at}.{field}: {port} is not a port"));
                }
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_region_map_loads_with_ids_filled_in() {
        let map = parse_derp_map(
            r#"{"Regions":{
                "900":{"RegionCode":"a","Nodes":[{"Name":"900a","HostName":"derp-a.example","STUNPort":3478}]},
                "901":{"RegionID":901,"RegionCode":"b","Nodes":[{"Name":"901a","RegionID":901,"IPv4":"192.0.2.1","IPv6":"none","DERPPort":8443}]}
            }}"#,
        )
        .unwrap();
        let r = map.regions.unwrap();
        assert_eq!((r[&900].region_id, r[&900].nodes[0].region_id), (900, 900));
        assert_eq!(r[&901].nodes[0].derp_port, 8443);
    }

    #[test]
    fn mistakes_name_the_region_and_field() {
        let cases = [
            ("{}", "Regions: no regions"),
            (r#"{"Regions":{}}"#, "Regions: no regions"),
            (
                r#"{"Regions":{"1":{"Nodes":[]}}}"#,
                "Regions.1.Nodes: no nodes",
            ),
            (
                r#"{"Regions":{"1":{"RegionID":2,"Nodes":[{"Name":"a","HostName":"h"}]}}}"#,
                "Regions.1.RegionID: 2",
            ),
            (
                r#"{"Regions":{"1":{"Nodes":[{"Name":"a"}]}}}"#,
                "Regions.1.Nodes[0]: no HostName",
            ),
            (
                r#"{"Regions":{"1":{"Nodes":[{"HostName":"h"}]}}}"#,
                "Regions.1.Nodes[0].Name: empty",
            ),
            (
                r#"{"Regions":{"1":{"Nodes":[{"Name":"a","IPv4":"derp.example"}]}}}"#,
                "Regions.1.Nodes[0]: IPv4/IPv6",
            ),
            (
                r#"{"Regions":{"1":{"Nodes":[{"Name":"a","HostName":"h","STUNPort":70000}]}}}"#,
                "Regions.1.Nodes[0].STUNPort: 70000",
            ),
            (
                r#"{"Regions":{"0":{"Nodes":[{"Name":"a","HostName":"h"}]}}}"#,
                "Regions.0: region IDs are above 0",
            ),
            ("[1]", "invalid type"),
        ];
        for (text, want) in cases {
            let err = parse_derp_map(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
