//! [`CallbackUrl`]: where a rule's callbacks go, parsed once into what every attempt sends,
//! and shown everywhere with its password masked ([`mask_password`]).

use std::borrow::Cow;
use std::fmt;

use serde::{Serialize, Serializer};

use super::DomainError;

/// An absolute `http://` or `https://` URL with a host: where callbacks go.
///
/// Parsed once: besides the URL as written (stored, and sent), it keeps what every attempt
/// sends — the request URI, without the `user:password@` part, which becomes an
/// `Authorization: Basic` header instead (as HTTP clients do, reqwest before us) — and, for
/// `http://` (always HTTP/1.1), the `Host` header.
///
/// A password in it is never shown (docs/behaviour.md §4): `Display`, `Debug` and `Serialize`
/// give the URL with the password as `***` (`http://user:***@host/`), which is what logs, the
/// REST answers and error messages carry. [`expose`](Self::expose) gives the URL as written,
/// for the few places that send it or keep it to send later (the exception store).
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackUrl {
    url: reqwest::Url,
    /// The URL as shown: `url` with its password, if any, masked.
    shown: Box<str>,
    uri: http::Uri,
    authorization: Option<http::HeaderValue>,
    host: Option<http::HeaderValue>,
}

impl CallbackUrl {
    /// Validates a URL: `http://` or `https://` (any case), a host, and no `#fragment`. An
    /// error quotes the text with its password masked.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let lower = s.to_ascii_lowercase();
        let quoted = || mask_password(s);
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(DomainError(format!(
                "must start with http:// or https://, got {:?}",
                quoted()
            )));
        }
        let url =
            reqwest::Url::parse(s).map_err(|e| DomainError(format!("is not a valid URL ({e}): {:?}", quoted())))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(DomainError(format!("has no host: {:?}", quoted())));
        }
        if url.fragment().is_some() {
            return Err(DomainError(format!(
                "must not have a #fragment (it is never sent): {:?}",
                quoted()
            )));
        }
        let mut bare = url.clone();
        let authorization = take_credentials(&mut bare);
        let uri = http::Uri::try_from(bare.as_str())
            .map_err(|e| DomainError(format!("is not a valid request URI ({e}): {:?}", quoted())))?;
        let host = (url.scheme() == "http").then(|| http1_host(&uri)).flatten();
        Ok(Self {
            shown: masked(&url).into(),
            url,
            uri,
            authorization,
            host,
        })
    }

    /// The URL as written, password included: only to send it, or to store it so that a
    /// replay can send it later. Everything shown uses `Display` (masked) instead.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The URI every attempt requests (no credentials in it).
    pub(crate) fn as_uri(&self) -> &http::Uri {
        &self.uri
    }

    /// `Authorization: Basic …` when the URL carries `user:password@`.
    pub(crate) fn authorization(&self) -> Option<&http::HeaderValue> {
        self.authorization.as_ref()
    }

    /// The `Host` header of an `http://` URL, made once rather than by the client on every
    /// request. `None` for `https://`: HTTP/2 may be negotiated there, which sends
    /// `:authority` instead, so the client decides.
    pub(crate) fn http1_host(&self) -> Option<&http::HeaderValue> {
        self.host.as_ref()
    }

    /// The request URI with `query` appended (`?` or `&` as the URL needs): a tencent
    /// callback's `SdkAppid=…&CallbackCommand=…` (`docs/behaviour.md §4.3`).
    pub(crate) fn uri_with_query(&self, query: Option<&str>) -> http::Uri {
        let Some(q) = query.filter(|q| !q.is_empty()) else {
            return self.uri.clone();
        };
        let path = self.uri.path();
        let joined = match self.uri.query() {
            Some(existing) if !existing.is_empty() => format!("{path}?{existing}&{q}"),
            _ => format!("{path}?{q}"),
        };
        let path_and_query = http::uri::PathAndQuery::try_from(joined).unwrap_or_else(|_| {
            // Characters a URI must not hold raw: percent-encode them as the URL parser does.
            let mut u = reqwest::Url::parse("http://h/").expect("a valid URL");
            u.set_path(path);
            let existing = self.uri.query().filter(|e| !e.is_empty());
            u.set_query(Some(&existing.map_or_else(|| q.to_string(), |e| format!("{e}&{q}"))));
            let encoded = format!("{}?{}", u.path(), u.query().unwrap_or_default());
            http::uri::PathAndQuery::try_from(encoded).expect("a URL's encoded path and query is a valid URI")
        });
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        http::Uri::from_parts(parts).expect("the same scheme and authority, a valid path and query")
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }
}

/// `Host` as hyper-util's client writes it for HTTP/1: the host, and the port unless it is
/// the scheme's default.
pub(crate) fn http1_host(uri: &http::Uri) -> Option<http::HeaderValue> {
    let host = uri.host()?;
    let default = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16().filter(|p| *p != default) {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    http::HeaderValue::try_from(value).ok()
}

/// Removes `user:password@` from `url` and returns it as a basic `Authorization` header value
/// (percent-decoded; no password is `user:`), the way reqwest 0.12 did.
fn take_credentials(url: &mut reqwest::Url) -> Option<http::HeaderValue> {
    use base64::Engine;
    use percent_encoding::percent_decode_str;
    if !url.has_authority() {
        return None;
    }
    let user = percent_decode_str(url.username()).decode_utf8().ok()?.into_owned();
    let password = url
        .password()
        .and_then(|p| percent_decode_str(p).decode_utf8().ok().map(|p| p.into_owned()));
    if user.is_empty() && password.is_none() {
        return None;
    }
    url.set_username("").ok()?;
    url.set_password(None).ok()?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.unwrap_or_default()));
    let mut value = http::HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The text shown for a password.
const MASK: &str = "***";

/// A parsed URL as shown: its password, if any, replaced by `***`.
fn masked(url: &reqwest::Url) -> String {
    if url.password().is_none() {
        return url.as_str().to_string();
    }
    let mut shown = url.clone();
    // A URL with a password has a host, so its password can be set.
    let _ = shown.set_password(Some(MASK));
    shown.into()
}

/// `text` with the password of the URL in it, if any, shown as `***`: for URLs that are only
/// text (stored ones, and input that is being refused). The authority as written — up to the
/// first `/` after `://` — decides first: a password may hold `?` or `#`, which a URL parser
/// takes for the start of the query or fragment (and then sees no password, or no URL). Text
/// that does not parse as a URL is masked from `://` to its last `@` before any `?` or `#`, so
/// a malformed URL is not shown with its password either.
pub fn mask_password(text: &str) -> Cow<'_, str> {
    if let Some(start) = text.find("://").map(|i| i + 3) {
        let rest = &text[start..];
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            return Cow::Owned(format!("{}{MASK}{}", &text[..start + colon + 1], &text[start + at..]));
        }
    }
    if let Ok(url) = reqwest::Url::parse(text) {
        return match url.password() {
            None => Cow::Borrowed(text),
            Some(_) => Cow::Owned(masked(&url)),
        };
    }
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(text);
    };
    let rest = &text[start..];
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return Cow::Borrowed(text);
    };
    match rest[..at].find(':') {
        None => Cow::Borrowed(text),
        Some(colon) => Cow::Owned(format!("{}{MASK}{}", &text[..start + colon + 1], &text[start + at..])),
    }
}

impl fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallbackUrl").field(&&*self.shown).finish()
    }
}

impl Serialize for CallbackUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

string_schema!(
    CallbackUrl,
    "An http:// or https:// URL; a password in it is shown as *** (http://user:***@host/)."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_are_http_or_https_with_a_host() {
        assert!(CallbackUrl::parse("http://127.0.0.1:9000/cb").is_ok());
        assert!(CallbackUrl::parse("HTTPS://example.com/x?a=1").is_ok());
        assert!(CallbackUrl::parse("ftp://example.com/").is_err());
        assert!(CallbackUrl::parse("127.0.0.1:9000").is_err());
        assert!(CallbackUrl::parse("http://").is_err());
        assert!(CallbackUrl::parse("http://h/x#frag").is_err());
    }

    #[test]
    fn callback_urls_keep_the_request_uri_and_credentials_apart() {
        let u = CallbackUrl::parse("http://us%20er:p%40ss@Example.com:8080/cb?x=2").unwrap();
        assert_eq!(u.expose(), "http://us%20er:p%40ss@example.com:8080/cb?x=2");
        assert_eq!(u.as_uri(), "http://example.com:8080/cb?x=2");
        // base64("us er:p@ss")
        assert_eq!(u.authorization().unwrap(), "Basic dXMgZXI6cEBzcw==");
        let u = CallbackUrl::parse("http://user@h/").unwrap();
        assert_eq!(u.authorization().unwrap(), "Basic dXNlcjo=");
        assert_eq!(CallbackUrl::parse("https://[::1]/").unwrap().as_uri(), "https://[::1]/");
        assert!(CallbackUrl::parse("http://h/").unwrap().authorization().is_none());
        let host = |s: &str| {
            CallbackUrl::parse(s)
                .unwrap()
                .http1_host()
                .map(|h| h.to_str().unwrap().to_string())
        };
        assert_eq!(
            host("http://u:p@Example.com:8080/cb").as_deref(),
            Some("example.com:8080")
        );
        assert_eq!(host("http://h:80/").as_deref(), Some("h"));
        assert_eq!(host("http://[::1]:9/").as_deref(), Some("[::1]:9"));
        assert_eq!(host("https://h:8443/"), None);
    }

    #[test]
    fn passwords_are_shown_masked_and_only_exposed_on_demand() {
        let u = CallbackUrl::parse("http://alice:pa%24s@h:8080/cb?x=1").unwrap();
        assert_eq!(u.to_string(), "http://alice:***@h:8080/cb?x=1");
        assert_eq!(format!("{u:?}"), r#"CallbackUrl("http://alice:***@h:8080/cb?x=1")"#);
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#""http://alice:***@h:8080/cb?x=1""#
        );
        assert_eq!(u.expose(), "http://alice:pa%24s@h:8080/cb?x=1");
        // No password: nothing to mask, the user name stays.
        let u = CallbackUrl::parse("https://alice@h/").unwrap();
        assert_eq!(
            (u.to_string(), u.expose()),
            ("https://alice@h/".into(), "https://alice@h/")
        );
        // Refused URLs are quoted masked.
        for bad in [
            "ftp://u:pw1@h/",
            "http://u:pw1@h/#frag",
            "http://u:pw1@h:99999/",
            "http://u:pw1@/",
        ] {
            let e = CallbackUrl::parse(bad).unwrap_err().0;
            assert!(e.contains("u:***@") && !e.contains("pw1"), "{e}");
        }
    }

    #[test]
    fn text_urls_are_masked_even_when_they_do_not_parse() {
        assert_eq!(mask_password("http://u:p@h/x?a=b@c"), "http://u:***@h/x?a=b@c");
        assert_eq!(mask_password("http://h/x"), "http://h/x");
        assert_eq!(mask_password("http://u@h/"), "http://u@h/");
        // Malformed: masked from the user's colon to the last @ before any query.
        assert_eq!(mask_password("http://u:p/w@h:99999/"), "http://u:***@h:99999/");
        assert_eq!(mask_password("gopher://u:p@h"), "gopher://u:***@h");
        assert_eq!(mask_password("no url"), "no url");
        assert_eq!(mask_password("http://u:p@"), "http://u:***@");
        // A password with `?` or `#`: the parser sees no password, or no URL at all.
        assert_eq!(mask_password("http://user:pa?ss@host/"), "http://user:***@host/");
        assert_eq!(mask_password("http://user:pa#ss@host/"), "http://user:***@host/");
        assert_eq!(mask_password("http://user:1234#x@host/"), "http://user:***@host/");
        // A port and an @ in the query are not a password.
        assert_eq!(mask_password("http://h:8080/p?mail=a@b"), "http://h:8080/p?mail=a@b");
    }

    #[test]
    fn query_strings_are_appended_correctly() {
        let with = |url: &str, q| CallbackUrl::parse(url).unwrap().uri_with_query(q).to_string();
        assert_eq!(with("http://h/cb", Some("a=1")), "http://h/cb?a=1");
        assert_eq!(with("http://h/cb", None), "http://h/cb");
        assert_eq!(with("http://h/cb", Some("")), "http://h/cb");
        assert_eq!(with("http://h/cb?x=2", Some("a=1")), "http://h/cb?x=2&a=1");
        assert_eq!(with("http://h/cb?", Some("a=1")), "http://h/cb?a=1");
        assert_eq!(with("https://u:p@h:1/", Some("a=1")), "https://h:1/?a=1");
        // Characters a URI cannot hold raw are encoded, as the URL parser would.
        assert_eq!(with("http://h/cb?x=2", Some("a=b c<")), "http://h/cb?x=2&a=b%20c%3C");
    }
}
