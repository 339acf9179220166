//! PostgreSQL's md5 password scheme. `pg_authid` stores
//! `"md5" || hex(md5(password || user))`, and a login answers the server's
//! 4-byte salt with `"md5" || hex(md5(that hex || salt))`. The stored hash
//! is therefore all it takes both to check a client's answer and to answer
//! a server, which is why operators who keep md5 hashes (PgBouncer's
//! `userlist.txt`, an old `pg_authid`) can hand them to pgsplit.

use std::fmt::Write;

use ::md5::{Digest, Md5};

/// How a stored md5 hash begins.
pub const MD5_PREFIX: &str = "md5";

/// The 32 lowercase hex digits of a stored md5 hash (without the prefix).
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Hash(String);

impl std::fmt::Debug for Md5Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Md5Hash(<redacted>)")
    }
}

impl Md5Hash {
    /// What `password_encryption = md5` would store for `user`'s `password`.
    pub fn of_password(user: &str, password: &str) -> Md5Hash {
        let mut digest = Md5::new();
        digest.update(password.as_bytes());
        digest.update(user.as_bytes());
        Md5Hash(hex(&digest.finalize()))
    }

    /// A stored hash, recognised the way PostgreSQL does: `md5` and exactly
    /// 32 lowercase hex digits. Any other string is a password.
    pub fn parse(stored: &str) -> Option<Md5Hash> {
        let digits = stored.strip_prefix(MD5_PREFIX)?;
        let is_hash = digits.len() == 32
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        is_hash.then(|| Md5Hash(digits.to_owned()))
    }

    /// The answer to an md5 challenge with `salt`, as a client sends it.
    pub fn salted(&self, salt: [u8; 4]) -> String {
        let mut digest = Md5::new();
        digest.update(self.0.as_bytes());
        digest.update(salt);
        format!("{MD5_PREFIX}{}", hex(&digest.finalize()))
    }
}

/// Lowercase hex, as PostgreSQL writes digests.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut out, b| {
            // Writing to a String cannot fail.
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_what_libpq_computes_from_the_password() {
        let salt = [1, 2, 0xfe, 0xff];
        let from_password = Md5Hash::of_password("alice", "s3cret");
        let expected = postgres_protocol::authentication::md5_hash(b"alice", b"s3cret", salt);
        assert_eq!(from_password.salted(salt), expected);
        // The stored form round-trips through the parser.
        let stored = format!("md5{}", from_password.0);
        assert_eq!(Md5Hash::parse(&stored), Some(from_password));
    }

    #[test]
    fn only_md5_and_32_lowercase_hex_digits_are_a_hash() {
        let digits = "0123456789abcdef0123456789abcdef";
        assert!(Md5Hash::parse(&format!("md5{digits}")).is_some());
        for password in [
            digits.to_owned(),
            format!("md5{}", digits.to_uppercase()),
            format!("md5{}", &digits[1..]),
            format!("md5{digits}0"),
            format!("md5{}g", &digits[1..]),
            "md5".to_owned(),
        ] {
            assert!(Md5Hash::parse(&password).is_none(), "{password}");
        }
    }
}
