//! Tencent's webhook authentication (docs/behaviour.md §11.4): an app with a token adds
//! `Sign` = lowercase hex SHA-256(token + RequestTime) and `RequestTime` (Unix seconds) to
//! every callback URL; a receiver recomputes `Sign` and refuses a `RequestTime` more than
//! [`MAX_SKEW_SECS`] away from its clock.

use sha2::{Digest, Sha256};

use crate::dialect::Signature;

/// How far `RequestTime` may be from the receiver's clock (the provider says about a
/// minute).
pub const MAX_SKEW_SECS: u64 = 60;

/// `Sign` for a token and a `RequestTime`: the lowercase hex SHA-256 of `token +
/// request_time` (the time in decimal seconds).
///
/// ```
/// // The test vector of docs/behaviour.md §11.4.
/// assert_eq!(
///     callback_sim::tencent_sign("s3cr3t_Token", 1700000000),
///     "4654af236dd1ece3a00cea5df5e97008f0da6ab96aefe5515849989ce28a6b3e"
/// );
/// ```
pub fn sign(token: &str, request_time: u64) -> String {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(request_time.to_string().as_bytes());
    let digest = h.finalize();
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `query` with `&Sign=…&RequestTime=…` for a request sent at `now_ms`.
pub fn signed_query(query: &str, token: &str, now_ms: u64) -> String {
    let t = now_ms / 1000;
    format!("{query}&Sign={}&RequestTime={t}", sign(token, t))
}

/// Checks `Sign` and `RequestTime` of a received query (its parameters) at `now_ms`.
pub fn verify(sign_param: Option<&str>, request_time: Option<&str>, token: &str, now_ms: u64) -> Signature {
    let (Some(sig), Some(t)) = (sign_param, request_time) else {
        return Signature::Missing;
    };
    let Ok(t) = t.parse::<u64>() else {
        return Signature::Invalid;
    };
    if sign(token, t) != sig {
        return Signature::Invalid;
    }
    if (now_ms / 1000).abs_diff(t) > MAX_SKEW_SECS {
        return Signature::Stale;
    }
    Signature::Valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_with_the_time_window() {
        let s = sign("tok", 100);
        assert_eq!(s.len(), 64);
        assert_eq!(verify(Some(&s), Some("100"), "tok", 100_000), Signature::Valid);
        assert_eq!(verify(Some(&s), Some("100"), "tok", 160_999), Signature::Valid);
        assert_eq!(verify(Some(&s), Some("100"), "tok", 161_000), Signature::Stale);
        assert_eq!(verify(Some(&s), Some("100"), "other", 100_000), Signature::Invalid);
        assert_eq!(verify(Some(&s), Some("x"), "tok", 100_000), Signature::Invalid);
        assert_eq!(verify(None, Some("100"), "tok", 100_000), Signature::Missing);
        let q = signed_query("SdkAppid=1", "tok", 100_500);
        assert_eq!(q, format!("SdkAppid=1&Sign={s}&RequestTime=100"));
    }
}
