//! Unsigned integer fields that also accept numeric strings, so that
//! `port: ${PG_PORT:-5432}` works after interpolation (which yields a string).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// Unsigned integer types usable with [`deserialize`].
pub(super) trait Unsigned: TryFrom<u64> {
    /// Type name used in "expected ..." messages.
    const NAME: &'static str;
}

impl Unsigned for u16 {
    const NAME: &'static str = "u16";
}
impl Unsigned for u32 {
    const NAME: &'static str = "u32";
}
impl Unsigned for usize {
    const NAME: &'static str = "usize";
}

/// `deserialize_with` helper: an integer, or a string holding one.
pub(super) fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Unsigned,
{
    deserializer.deserialize_any(UnsignedVisitor(PhantomData))
}

struct UnsignedVisitor<T>(PhantomData<T>);

impl<T: Unsigned> Visitor<'_> for UnsignedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::NAME)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
    }
}
