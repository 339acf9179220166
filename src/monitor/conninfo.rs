//! libpq `key=value` connection strings, as found in a replica's
//! `primary_conninfo`: read, change the upstream, write back. The rest
//! (user, password, application_name, sslmode, ...) is kept as it was.

/// Parses `key=value key='quoted value' ...`; `None` on anything else
/// (including the `postgresql://` URI form).
pub fn parse(text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if key.is_empty() || chars.next() != Some('=') {
            return None;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Writes pairs back, quoting every value.
pub fn format(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| {
            let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
            format!("{key}='{escaped}'")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `conninfo` pointed at `host:port` instead (a `hostaddr` is dropped: it
/// would override the new host).
pub fn with_upstream(conninfo: &str, host: &str, port: u16) -> Option<String> {
    let mut pairs: Vec<(String, String)> = parse(conninfo)?
        .into_iter()
        .filter(|(key, _)| !matches!(key.as_str(), "host" | "hostaddr" | "port"))
        .collect();
    pairs.insert(0, ("port".to_owned(), port.to_string()));
    pairs.insert(0, ("host".to_owned(), host.to_owned()));
    Some(format(&pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_but_the_upstream() {
        let old = "user=postgres password='pa ss\\'w' host=10.0.0.1 hostaddr=10.0.0.1 port=5432 application_name=pg2 sslmode=prefer";
        let new = with_upstream(old, "db2", 5433).unwrap();
        let pairs = parse(&new).unwrap();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("host"), Some("db2"));
        assert_eq!(get("port"), Some("5433"));
        assert_eq!(get("hostaddr"), None);
        assert_eq!(get("password"), Some("pa ss'w"));
        assert_eq!(get("application_name"), Some("pg2"));
        assert_eq!(get("sslmode"), Some("prefer"));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(parse("postgresql://u@h/db"), None);
        assert_eq!(parse("host='unterminated"), None);
        assert_eq!(parse(""), Some(Vec::new()));
        assert_eq!(
            parse(" a = 1  b='x y' "),
            Some(vec![("a".into(), "1".into()), ("b".into(), "x y".into())])
        );
    }
}
