//! MagicDNS names.
//!
//! Each node has a *given name*, one DNS label derived from its hostname when
//! it first registers ([`label_from_hostname`]) and unique in the tailnet
//! (the second `web` becomes `web-1`, then `web-2`, …: [`candidate`]). Its
//! FQDN is `<label>.<base domain>`; in `tailcfg.Node.Name` it carries a
//! trailing dot, and clients take the MagicDNS suffix from their own name
//! (`../shared/protocol/magicdns.md` §4), so every node shares one base
//! domain.
//!
//! The base domain is a setting stored in the database
//! ([`crate::Store::base_domain`]). The default is [`DEFAULT_BASE_DOMAIN`],
//! `tailnet.internal`: `.internal` is the top-level domain ICANN reserved for
//! private use, so the default can never shadow a real name or leak
//! queries to a real zone. A deployment that mirrors the seed guide's
//! per-cluster Tailscale domains sets it to e.g. `us-west-1.ts.net`, and
//! `inferadb-control.eu-west-1.ts.net`-style names then resolve the same way
//! they do on Tailscale.
//!
//! A node keeps its given name when it re-registers, even if its hostname
//! changed: names other services use must not move under them.

use std::fmt;

/// The base domain used until one is configured.
pub const DEFAULT_BASE_DOMAIN: &str = "tailnet.internal";

/// The label given to a node whose hostname has no usable character.
pub const FALLBACK_LABEL: &str = "node";

/// The longest DNS label.
pub const MAX_LABEL: usize = 63;

/// The MagicDNS label for `hostname`: lowercased, every character outside
/// `[a-z0-9-]` replaced by `-`, leading and trailing `-` trimmed (a DNS label
/// must start and end with a letter or digit), at most 63 characters.
/// A hostname with nothing usable gets [`FALLBACK_LABEL`].
pub fn label_from_hostname(hostname: &str) -> String {
    let mapped: String = hostname
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = trim_to(&mapped, MAX_LABEL);
    if trimmed.is_empty() {
        FALLBACK_LABEL.to_string()
    } else {
        trimmed.to_string()
    }
}

/// `s` (ASCII) cut to `max` bytes, with `-` trimmed from both ends.
fn trim_to(s: &str, max: usize) -> &str {
    let s = s.trim_matches('-');
    s.get(..max.min(s.len())).unwrap_or(s).trim_end_matches('-')
}

/// The `n`th name to try for `label`: `label` itself for 0, then `label-1`,
/// `label-2`, …, with `label` shortened so the result stays a valid label.
pub fn candidate(label: &str, n: u32) -> String {
    if n == 0 {
        return label.to_string();
    }
    let suffix = format!("-{n}");
    let base = trim_to(label, MAX_LABEL - suffix.len());
    let base = if base.is_empty() {
        FALLBACK_LABEL
    } else {
        base
    };
    format!("{base}{suffix}")
}

/// A prefix of every [`candidate`] for `label` (the label cut to leave room
/// for the longest suffix, `-4294967295`), so one prefix query finds every
/// name a new node could collide with.
pub fn candidates_prefix(label: &str) -> String {
    let longest = candidate(label, u32::MAX);
    match longest.rsplit_once('-') {
        Some((base, _)) if label.starts_with(base) => base.to_string(),
        _ => String::new(),
    }
}

/// A validated MagicDNS base domain: lowercase labels of `[a-z0-9-]` (not
/// starting or ending with `-`), at least two of them, at most 190
/// characters in all so a 63-character node label still fits in a 253-byte
/// name. A trailing dot is accepted and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseDomain(String);

/// A base domain that [`BaseDomain::parse`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid base domain {0:?}: use two or more dot-separated labels of a-z, 0-9 and '-', \
     e.g. tailnet.internal"
)]
pub struct BaseDomainError(pub String);

impl BaseDomain {
    /// Validates `text` (case-insensitive; stored lowercase).
    pub fn parse(text: &str) -> Result<Self, BaseDomainError> {
        let bad = || BaseDomainError(text.to_string());
        let lower = text.trim().to_ascii_lowercase();
        let d = lower.strip_suffix('.').unwrap_or(&lower);
        if d.is_empty() || d.len() > 190 {
            return Err(bad());
        }
        let mut labels = 0;
        for label in d.split('.') {
            let ok = !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(bad());
            }
            labels += 1;
        }
        if labels < 2 {
            return Err(bad());
        }
        Ok(BaseDomain(d.to_string()))
    }

    /// The domain without a trailing dot, e.g. `tailnet.internal`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The FQDN of the node labelled `label`, without a trailing dot
    /// (`web.tailnet.internal`): the form for display, `DNSConfig.Domains`
    /// and certificates.
    pub fn fqdn(&self, label: &str) -> String {
        format!("{label}.{}", self.0)
    }

    /// The FQDN with a trailing dot (`web.tailnet.internal.`): the form of
    /// `tailcfg.Node.Name`.
    pub fn node_name(&self, label: &str) -> String {
        format!("{label}.{}.", self.0)
    }
}

impl Default for BaseDomain {
    fn default() -> Self {
        BaseDomain(DEFAULT_BASE_DOMAIN.to_string())
    }
}

impl fmt::Display for BaseDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BaseDomain {
    type Err = BaseDomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BaseDomain::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label_from_hostname("web"), "web");
        assert_eq!(label_from_hostname("Web-01"), "web-01");
        assert_eq!(label_from_hostname("my.host.local"), "my-host-local");
        assert_eq!(
            label_from_hostname("inferadb engine_0"),
            "inferadb-engine-0"
        );
        assert_eq!(label_from_hostname("--x--"), "x");
        assert_eq!(label_from_hostname("café"), "caf");
        assert_eq!(label_from_hostname(""), FALLBACK_LABEL);
        assert_eq!(label_from_hostname("...___"), FALLBACK_LABEL);
        let long = "a".repeat(100);
        assert_eq!(label_from_hostname(&long), "a".repeat(63));
        // Trimming to 63 does not leave a trailing '-'.
        let edge = format!("{}-b", "a".repeat(62));
        assert_eq!(label_from_hostname(&edge), "a".repeat(62));
    }

    #[test]
    fn candidates() {
        assert_eq!(candidate("web", 0), "web");
        assert_eq!(candidate("web", 1), "web-1");
        assert_eq!(candidate("web", 12), "web-12");
        let long = "a".repeat(63);
        let c = candidate(&long, 1);
        assert_eq!(c.len(), 63);
        assert!(c.ends_with("a-1"));
        assert_eq!(candidate(&long, 100).len(), 63);
    }

    #[test]
    fn every_candidate_starts_with_the_prefix() {
        let labels = [
            "web".to_string(),
            "a".repeat(63),
            format!("{}-{}", "a".repeat(50), "b".repeat(12)),
            format!("{}--{}", "a".repeat(51), "b".repeat(10)),
            format!("{}-{}", "a".repeat(54), "b".repeat(8)),
            format!("x{}", "-y".repeat(31)),
        ];
        for label in &labels {
            let label = label_from_hostname(label);
            let prefix = candidates_prefix(&label);
            assert!(!prefix.is_empty(), "{label}");
            for n in (0..100).chain([999, 10_000, 99_999_999, u32::MAX - 1, u32::MAX]) {
                let c = candidate(&label, n);
                assert!(c.starts_with(&prefix), "{label} {n}: {c} vs {prefix}");
                assert!(c.len() <= MAX_LABEL && !c.ends_with('-') || n > 0, "{c}");
            }
        }
        // A label that would be all fallback still gets a usable prefix.
        assert_eq!(candidates_prefix("-"), "");
    }

    #[test]
    fn base_domains() {
        assert_eq!(BaseDomain::default().as_str(), "tailnet.internal");
        let d = BaseDomain::parse("Eu-West-1.TS.net.").expect("valid");
        assert_eq!(d.as_str(), "eu-west-1.ts.net");
        assert_eq!(d.fqdn("web"), "web.eu-west-1.ts.net");
        assert_eq!(d.node_name("web"), "web.eu-west-1.ts.net.");
        for bad in [
            "",
            ".",
            "internal",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "a.b/c",
            "é.b",
            &format!("{}.b", "a".repeat(64)),
            &format!("{}.b", "a.".repeat(100)),
        ] {
            assert!(BaseDomain::parse(bad).is_err(), "{bad:?}");
        }
        assert!(BaseDomain::parse("x.y").is_ok());
    }
}
