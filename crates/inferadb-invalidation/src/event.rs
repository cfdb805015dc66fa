//! The invalidation event: the JSON body of a webhook.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::time::SystemTime;

/// Longest accepted event id.
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted vault id.
pub const MAX_VAULT_ID_LEN: usize = 256;

/// What changed. Unknown kinds (from a newer sender) still invalidate the
/// named vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidationKind {
    VaultCreated,
    VaultUpdated,
    VaultDeleted,
    #[serde(other)]
    Unknown,
}

impl InvalidationKind {
    /// The wire name (`vault_created`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidationKind::VaultCreated => "vault_created",
            InvalidationKind::VaultUpdated => "vault_updated",
            InvalidationKind::VaultDeleted => "vault_deleted",
            InvalidationKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for InvalidationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invalidation, e.g.
/// `{"id":"9f…","kind":"vault_created","vault_id":"12345","origin_cluster":"us-west-1","issued_at_ms":1700000000000}`.
///
/// `id` names the event: every retry and every target carries the same
/// one, and receivers apply an id at most once within their dedupe window.
/// `vault_id` may arrive as a JSON string or integer; it is kept as text.
/// Unknown fields are ignored (newer senders may add some).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    pub id: String,
    pub kind: InvalidationKind,
    #[serde(deserialize_with = "string_or_integer")]
    pub vault_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_cluster: Option<String>,
    /// Milliseconds since the Unix epoch when the change happened.
    #[serde(default)]
    pub issued_at_ms: u64,
}

impl Invalidation {
    /// A new event about `vault_id` with a fresh random id (128 bits, hex).
    pub fn new(kind: InvalidationKind, vault_id: impl Into<String>) -> Invalidation {
        Invalidation {
            id: new_event_id(),
            kind,
            vault_id: vault_id.into(),
            origin_cluster: None,
            issued_at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// A `vault_created` event.
    pub fn vault_created(vault_id: impl Into<String>) -> Invalidation {
        Invalidation::new(InvalidationKind::VaultCreated, vault_id)
    }

    /// Sets the cluster the change came from.
    pub fn with_origin(mut self, cluster: impl Into<String>) -> Invalidation {
        self.origin_cluster = Some(cluster.into());
        self
    }

    /// Checks what receivers rely on: ids non-empty, bounded, and free of
    /// control characters (they are logged and used as keys).
    pub fn validate(&self) -> Result<(), EventError> {
        check_text("id", &self.id, MAX_ID_LEN)?;
        check_text("vault_id", &self.vault_id, MAX_VAULT_ID_LEN)?;
        if let Some(c) = &self.origin_cluster {
            check_text("origin_cluster", c, MAX_VAULT_ID_LEN)?;
        }
        Ok(())
    }
}

fn check_text(field: &'static str, v: &str, max: usize) -> Result<(), EventError> {
    if v.is_empty() {
        return Err(EventError::Empty(field));
    }
    if v.len() > max {
        return Err(EventError::TooLong { field, max });
    }
    if v.chars().any(char::is_control) {
        return Err(EventError::ControlChar(field));
    }
    Ok(())
}

/// An event that fails [`Invalidation::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("{0} contains control characters")]
    ControlChar(&'static str),
}

/// 128 random bits as 32 lowercase hex digits.
pub fn new_event_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn string_or_integer<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        U(u64),
        I(i64),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::U(u) => u.to_string(),
        Id::I(i) => i.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_forms() {
        let e = Invalidation::vault_created("12345").with_origin("us-west-1");
        assert_eq!(e.id.len(), 32);
        let j = serde_json::to_string(&e).unwrap();
        assert!(j.contains(r#""kind":"vault_created""#), "{j}");
        assert!(j.contains(r#""vault_id":"12345""#), "{j}");
        assert_eq!(serde_json::from_str::<Invalidation>(&j).unwrap(), e);

        let n: Invalidation = serde_json::from_str(
            r#"{"id":"a","kind":"vault_renamed","vault_id":12345,"extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(n.vault_id, "12345");
        assert_eq!(n.kind, InvalidationKind::Unknown);
        assert_eq!(n.origin_cluster, None);
        n.validate().unwrap();
        assert_ne!(Invalidation::vault_created("1").id, e.id);
    }

    #[test]
    fn validation() {
        let mut e = Invalidation::vault_created("v");
        e.vault_id = String::new();
        assert_eq!(e.validate(), Err(EventError::Empty("vault_id")));
        e.vault_id = "a\nINFO forged".into();
        assert_eq!(e.validate(), Err(EventError::ControlChar("vault_id")));
        e.vault_id = "v".into();
        e.id = "x".repeat(129);
        assert!(matches!(
            e.validate(),
            Err(EventError::TooLong { field: "id", .. })
        ));
    }
}
