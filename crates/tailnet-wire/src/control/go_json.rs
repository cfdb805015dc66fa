//! Field-name matching the way Go's `encoding/json` does it.
//!
//! Go decodes an object key into a struct field by exact name first and,
//! failing that, into the first field whose name matches case-insensitively
//! (`bytes.EqualFold`): a Go control server reads `"HostInfo"`,
//! `"PreferredDerp"` or `"IpnVersion"` (what tailscale-rs writes, its serde
//! types being `rename_all = "PascalCase"`) into `Hostinfo`,
//! `PreferredDERP` and `IPNVersion`. See `vendor-notes/ts2021.md`
//! ("JSON field names") for the Go source.
//!
//! The rule lives here, once: [`GoKeys`] wraps any serde `Deserializer`
//! and, for every struct the wrapped value asks for (at any depth), maps an
//! incoming key to the declared field name it matches under that rule
//! before the derived code sees it. Map keys (`BTreeMap`) are never
//! touched, as in Go. The top-level control messages route their
//! `Deserialize` through it (`go_json_messages!`), so every decode path
//! (`serde_json::from_slice`, `from_value`, nested fields) behaves alike.
//! Encoding is unchanged: the exact Go names.
//!
//! Differences from Go that remain: a key that appears twice (after folding)
//! is refused as a duplicate field where Go lets the last one win; enum
//! payloads are not folded (the control JSON has no struct-carrying enums).

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use std::fmt;

/// Go's `bytes.EqualFold(field, key)` for an ASCII `field` name: ASCII
/// letters match either case, and the two non-ASCII runes whose case
/// folding reaches ASCII match too (U+212A KELVIN SIGN ~ `k`, U+017F LATIN
/// SMALL LETTER LONG S ~ `s`), as they do in Go.
pub fn equal_fold(field: &str, key: &str) -> bool {
    let mut k = key.chars();
    for f in field.chars() {
        let Some(c) = k.next() else {
            return false;
        };
        let same = c == f
            || (c.is_ascii() && f.is_ascii() && c.eq_ignore_ascii_case(&f))
            || (c == '\u{212A}' && f.eq_ignore_ascii_case(&'k'))
            || (c == '\u{017F}' && f.eq_ignore_ascii_case(&'s'));
        if !same {
            return false;
        }
    }
    k.next().is_none()
}

/// The declared field a JSON object key decodes into, by Go's rule: the
/// field named exactly `key`, else the first field (in declaration order)
/// whose name equals `key` case-insensitively, else `None` (an unknown key,
/// ignored).
pub fn match_field(fields: &'static [&'static str], key: &str) -> Option<&'static str> {
    if let Some(f) = fields.iter().find(|f| **f == key) {
        return Some(f);
    }
    fields.iter().copied().find(|f| equal_fold(f, key))
}

/// A `Deserializer` that decodes struct field names the way Go does (see
/// the module docs); everything else passes through unchanged.
pub struct GoKeys<D>(pub D);

/// A visitor (or seed, or access) wrapped so that what it reaches is
/// wrapped too; `fields` is the struct's declared names, empty for
/// anything that is not a struct.
struct Wrap<V> {
    inner: V,
    fields: &'static [&'static str],
}

impl<V> Wrap<V> {
    fn new(inner: V) -> Self {
        Wrap { inner, fields: &[] }
    }
}

macro_rules! forward {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method(Wrap::new(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for GoKeys<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, Wrap::new(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(name, Wrap::new(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, Wrap::new(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .deserialize_tuple_struct(name, len, Wrap::new(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_struct(
            name,
            fields,
            Wrap {
                inner: visitor,
                fields,
            },
        )
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, Wrap::new(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! visit_forward {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit_forward!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(GoKeys(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(GoKeys(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(Wrap::new(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(Wrap {
            inner: map,
            fields: self.fields,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(data)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Wrap::new(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if self.fields.is_empty() {
            // A map (or a struct with no fields): keys are data, not names.
            self.inner.next_key_seed(seed)
        } else {
            self.inner.next_key_seed(FieldName {
                seed,
                fields: self.fields,
            })
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(Wrap::new(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.inner.deserialize(GoKeys(d))
    }
}

/// Reads an object key of a struct and hands the derived field visitor the
/// declared name it matches (or the key itself when it matches none).
struct FieldName<K> {
    seed: K,
    fields: &'static [&'static str],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for FieldName<K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for FieldName<K> {
    type Value = K::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<K::Value, E> {
        let name = match_field(self.fields, key).unwrap_or(key);
        self.seed.deserialize(name.into_deserializer())
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<K::Value, E> {
        match std::str::from_utf8(key) {
            Ok(s) => self.visit_str(s),
            Err(_) => self
                .seed
                .deserialize(de::value::BytesDeserializer::new(key)),
        }
    }
}

/// The declared (serialized) field names of a struct whose `Deserialize`
/// is derived, by asking its derived code: `f` is called with a
/// deserializer that records the names passed to `deserialize_struct` and
/// then fails.
pub(crate) fn struct_fields<T>(
    f: impl FnOnce(FieldsProbe) -> Result<T, de::value::Error>,
) -> &'static [&'static str] {
    let seen = std::cell::Cell::new(None);
    let _ = f(FieldsProbe(&seen));
    seen.get().unwrap_or(&[])
}

/// See [`struct_fields`].
pub(crate) struct FieldsProbe<'a>(&'a std::cell::Cell<Option<&'static [&'static str]>>);

impl<'de> Deserializer<'de> for FieldsProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.set(Some(fields));
        Err(de::Error::custom("probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Gives each listed type (declared `#[serde(remote = "Self")]`, which
/// turns its derived impls into inherent functions) `Serialize` as derived
/// and `Deserialize` through [`GoKeys`].
macro_rules! go_json_messages {
    ($($t:ty),* $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$t>::deserialize($crate::control::go_json::GoKeys(d))
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }
    )*};
}
pub(crate) use go_json_messages;
