//! Small serde helpers that make our decoding behave like Go's
//! `encoding/json` where the Tailscale peers rely on it.
//!
//! Go writes a nil slice, map or pointer without `omitempty` as `null`, and
//! decoding `null` into any field leaves it at its zero value. serde instead
//! rejects `null` for a `Vec` or a `BTreeMap`; the helpers below accept it.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// `null` (or a missing field, with `#[serde(default)]`) becomes `T::default()`.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A map whose values may be `null` (Go: a nil slice as a map value);
/// `null` values become `V::default()` and a `null` map becomes empty.
pub(crate) fn map_null_values<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de> + Default,
{
    Ok(opt_map_null_values(d)?.unwrap_or_default())
}

/// Like [`map_null_values`], but a `null` or missing map stays `None`, for
/// fields where "absent" and "empty" mean different things.
pub(crate) fn opt_map_null_values<'de, D, K, V>(d: D) -> Result<Option<BTreeMap<K, V>>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de> + Default,
{
    let m = Option::<BTreeMap<K, Option<V>>>::deserialize(d)?;
    Ok(m.map(|m| {
        m.into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect()
    }))
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

pub(crate) fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

pub(crate) fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}
