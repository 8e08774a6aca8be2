//! Provider wire formats: how a callback body looks and how it is signed.
//!
//! - `agora` — Agora Chat / Shengwang-Easemob (SPEC §4.1, §4.2): signed JSON bodies.
//! - `tencent` — Tencent Cloud IM (SPEC §4.3): commands, query string, unsigned bodies.

pub mod agora;
pub mod tencent;

/// `url` with `query` appended (`?` or `&` as the URL needs).
pub fn with_query(url: &reqwest::Url, query: Option<&str>) -> reqwest::Url {
    let mut u = url.clone();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let joined = match u.query() {
            Some(existing) if !existing.is_empty() => format!("{existing}&{q}"),
            _ => q.to_string(),
        };
        u.set_query(Some(&joined));
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_appended_correctly() {
        let u = reqwest::Url::parse("http://h/cb").unwrap();
        assert_eq!(with_query(&u, Some("a=1")).as_str(), "http://h/cb?a=1");
        assert_eq!(with_query(&u, None).as_str(), "http://h/cb");
        let u = reqwest::Url::parse("http://h/cb?x=2").unwrap();
        assert_eq!(with_query(&u, Some("a=1")).as_str(), "http://h/cb?x=2&a=1");
        let u = reqwest::Url::parse("http://h/cb?").unwrap();
        assert_eq!(with_query(&u, Some("a=1")).as_str(), "http://h/cb?a=1");
    }
}
