//! WAL positions (`pg_lsn`) as plain `u64`s, so they fit in atomics and
//! compare with `<`, and their `X/Y` text form for users.

use tokio_postgres::types::PgLsn;

/// Reads `X/Y` (hexadecimal halves, as PostgreSQL prints an LSN).
pub fn parse(text: &str) -> Option<u64> {
    text.trim().parse::<PgLsn>().ok().map(u64::from)
}

/// Writes an LSN the way PostgreSQL does (`0/16B3748`).
pub fn format(lsn: u64) -> String {
    PgLsn::from(lsn).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_postgres_text_form() {
        assert_eq!(super::parse("0/16B3748"), Some(0x16B3748));
        assert_eq!(super::parse(" 1/0 "), Some(1 << 32));
        assert_eq!(super::format(0x1_0000_00A0), "1/A0");
        assert_eq!(super::parse("16B3748"), None);
        assert_eq!(super::parse("x/1"), None);
    }
}
