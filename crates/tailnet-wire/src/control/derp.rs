//! The DERP map (`tailcfg/derpmap.go` at v1.90.9).

use super::serde_util::{is_false, is_zero_f64, is_zero_i32, null_as_default};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

// Decoded by Go's field-name rule (`go_json`): exact, then case-insensitive.
super::go_json::go_json_messages!(DerpMap);

/// The DERP relays a node may use (`tailcfg.DERPMap`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", remote = "Self")]
pub struct DerpMap {
    /// Tuning of the home-region choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_params: Option<DerpHomeParams>,
    /// Regions by ID (JSON object keys are the decimal IDs). `None` (JSON
    /// `null` or absent) in an update means "keep the previous regions".
    /// `null` region entries are dropped on decode, as the Go client does.
    #[serde(
        default,
        deserialize_with = "regions",
        skip_serializing_if = "Option::is_none"
    )]
    pub regions: Option<BTreeMap<i32, DerpRegion>>,
    /// Do not merge in Tailscale's default regions (lowercase JSON key).
    #[serde(
        rename = "omitDefaultRegions",
        default,
        skip_serializing_if = "is_false"
    )]
    pub omit_default_regions: bool,
}

fn regions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<i32, DerpRegion>>, D::Error> {
    let m = Option::<BTreeMap<i32, Option<DerpRegion>>>::deserialize(d)?;
    Ok(m.map(|m| m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()))
}

/// Home-region tuning (`tailcfg.DERPHomeParams`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpHomeParams {
    /// Latency multiplier per region ID; `None` = keep the previous scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_score: Option<BTreeMap<i32, f64>>,
}

/// One DERP region (`tailcfg.DERPRegion`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpRegion {
    /// Region ID (> 0; 900-999 are for self-hosters).
    #[serde(rename = "RegionID", default)]
    pub region_id: i32,
    /// Short code, e.g. `"nyc"`.
    #[serde(default)]
    pub region_code: String,
    /// Long name, e.g. `"New York City"`.
    #[serde(default)]
    pub region_name: String,
    /// Latitude.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub latitude: f64,
    /// Longitude.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub longitude: f64,
    /// Deprecated: avoid as home.
    #[serde(default, skip_serializing_if = "is_false")]
    pub avoid: bool,
    /// Never measure, never pick as home (capver ≥ 115).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_measure_no_home: bool,
    /// Relay servers in priority order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub nodes: Vec<DerpNode>,
}

/// One DERP (and/or STUN) server (`tailcfg.DERPNode`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpNode {
    /// Unique node name such as `"1b"` (not a host name).
    #[serde(default)]
    pub name: String,
    /// Must equal the region's ID.
    #[serde(rename = "RegionID", default)]
    pub region_id: i32,
    /// TLS server name and, without `ipv4`/`ipv6`, the DNS name to dial.
    #[serde(default)]
    pub host_name: String,
    /// Expected certificate name, or `"sha256-raw:<hex>"` to pin one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_name: String,
    /// IPv4 address to dial; a non-IP such as `"none"` disables IPv4.
    #[serde(rename = "IPv4", default, skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    /// IPv6 address to dial; a non-IP such as `"none"` disables IPv6.
    #[serde(rename = "IPv6", default, skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    /// STUN port: 0 = 3478, -1 = no STUN.
    #[serde(rename = "STUNPort", default, skip_serializing_if = "is_zero_i32")]
    pub stun_port: i32,
    /// Only STUN, no DERP.
    #[serde(rename = "STUNOnly", default, skip_serializing_if = "is_false")]
    pub stun_only: bool,
    /// DERP (HTTPS) port: 0 = 443.
    #[serde(rename = "DERPPort", default, skip_serializing_if = "is_zero_i32")]
    pub derp_port: i32,
    /// Skip TLS verification (tests only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_for_tests: bool,
    /// STUN target IP override (tests).
    #[serde(
        rename = "STUNTestIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stun_test_ip: String,
    /// Port 80 may be used for captive-portal checks.
    #[serde(default, skip_serializing_if = "is_false")]
    pub can_port80: bool,
}
