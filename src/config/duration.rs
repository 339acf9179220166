//! Durations written as `<number><unit>`: `250ms`, `1.5s`, `10m`, `1h`, `1d`, `500us`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

const UNITS: &str = "us, ms, s, m, h, d";

/// Parses a duration such as `"250ms"` or `"1.5s"`; a unit is mandatory.
pub(super) fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim_start();
    let invalid = || {
        format!("invalid duration {text:?}: expected a number followed by a unit ({UNITS}), e.g. \"15s\"")
    };
    if number.is_empty() {
        return Err(invalid());
    }
    let unit_nanos: u128 = match unit {
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        "" => return Err(unit_required(number)),
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (expected one of {UNITS})"
            ))
        }
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() || frac.contains('.') || (number.contains('.') && frac.is_empty()) {
        return Err(invalid());
    }
    let too_large = || format!("invalid duration {text:?}: too large");
    let int: u128 = int.parse().map_err(|_| too_large())?;
    // Digits beyond 20 contribute less than a nanosecond even for days.
    let frac = &frac[..frac.len().min(20)];
    let frac_nanos = if frac.is_empty() {
        0
    } else {
        let digits: u128 = frac.parse().map_err(|_| invalid())?;
        digits * unit_nanos / 10u128.pow(frac.len() as u32)
    };
    let nanos = int
        .checked_mul(unit_nanos)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_large())?;
    let subsec = u32::try_from(nanos % 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(secs, subsec))
}

fn unit_required(number: impl fmt::Display) -> String {
    format!("duration {number} needs a unit ({UNITS}), e.g. \"{number}s\" for seconds")
}

/// `deserialize_with` helper for [`Duration`] fields.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a duration such as \"15s\" or \"250ms\" (units: {UNITS})"
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(unit_required(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(unit_required(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(unit_required(v)))
    }
}

/// Writes a duration back the way it is configured (`500ms`, `3s`), for
/// the effective config pgsplit shows.
pub(super) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*value))
}

/// The shortest exact spelling of `value` with one of the units.
pub(super) fn format(value: Duration) -> String {
    let nanos = value.as_nanos();
    for (unit, size) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
    ] {
        if nanos >= size && nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    if nanos == 0 {
        return "0s".to_owned();
    }
    format!("{}us", value.as_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_durations() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("500us", Duration::from_micros(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25m", Duration::from_secs(15)),
            ("0.001s", Duration::from_millis(1)),
            (" 10 s ", Duration::from_secs(10)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations() {
        for text in [
            "", "s", "15", "1.5", "abc", "1x", "1.s", ".5s", "1.2.3s", "-1s", "1 2s",
        ] {
            assert!(parse(text).is_err(), "{text:?} should fail");
        }
        assert!(parse("15").unwrap_err().contains("needs a unit"));
        assert!(parse("1w").unwrap_err().contains("unknown unit \"w\""));
        assert!(parse("99999999999999999999999999d")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_back_to_the_shortest_unit() {
        for (text, expected) in [
            ("500ms", "500ms"),
            ("3s", "3s"),
            ("1.5s", "1500ms"),
            ("90s", "90s"),
            ("2h", "2h"),
            ("0s", "0s"),
            ("250us", "250us"),
        ] {
            assert_eq!(format(parse(text).unwrap()), expected);
        }
    }
}
