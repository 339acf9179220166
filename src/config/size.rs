//! Byte sizes: an integer, or a string such as `"64MiB"`, `"16MB"`, `"512kB"`.
//! As in PostgreSQL, `kB`/`MB`/`GB`/`TB` are powers of 1024 (like `KiB`...).

use std::fmt;

use serde::de::{self, Deserializer, Unexpected, Visitor};

const UNITS: &str = "B, kB, MB, GB, TB, KiB, MiB, GiB, TiB";

/// Parses a byte size such as `"64MiB"` or `"1048576"`.
pub(super) fn parse(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "invalid size {text:?}: expected a whole number optionally followed by a unit ({UNITS}), e.g. \"64MiB\""
        ));
    }
    if unit.starts_with(['.', ',']) {
        return Err(format!(
            "invalid size {text:?}: must be a whole number of bytes or units"
        ));
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "kib" => 1 << 10,
        "mb" | "mib" => 1 << 20,
        "gb" | "gib" => 1 << 30,
        "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {:?} (expected one of {UNITS})",
                unit.trim_start()
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// `deserialize_with` helper for byte-size fields.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    deserializer.deserialize_any(SizeVisitor)
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size in bytes or a string such as \"64MiB\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
        usize::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        let bytes = parse(v).map_err(E::custom)?;
        usize::try_from(bytes).map_err(|_| E::custom(format!("invalid size {v:?}: too large")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_sizes() {
        let cases = [
            ("64MiB", 64 << 20),
            ("16MB", 16 << 20),
            ("512kB", 512 << 10),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("1GB", 1 << 30),
            ("2048", 2048),
            ("2048B", 2048),
            (" 8 MB ", 8 << 20),
            ("1TB", 1 << 40),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_sizes() {
        for text in [
            "",
            "MB",
            "1.5MB",
            "-1",
            "10XB",
            "64 M i B",
            "99999999999999999999",
        ] {
            assert!(parse(text).is_err(), "{text:?} should fail");
        }
        assert!(parse("10XB").unwrap_err().contains("unknown unit \"XB\""));
        assert!(parse("20000000TB").unwrap_err().contains("too large"));
        assert!(parse("1.5MB").unwrap_err().contains("whole number"));
    }
}
