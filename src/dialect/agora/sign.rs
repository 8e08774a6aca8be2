//! The agora signature (docs/behaviour.md §4.1): `security` is the lowercase hex MD5 of
//! `callId + secret + timestamp`, with the timestamp in decimal milliseconds.

use md5::{Digest, Md5};
use serde::Deserialize;

use crate::dialect::Signature;

/// The agora signature: a callback's `security`, the lowercase hex MD5 of
/// `callId + secret + timestamp` (timestamp in decimal milliseconds). A receiver computes it
/// to check a callback (or use [`agora_verify`](crate::agora_verify)); `callback-sim sign`
/// prints it.
///
/// ```
/// // The test vector of docs/behaviour.md §4.1.
/// let security = callback_sim::agora_sign("demo-app#e7b1c1d2-5a0f-4a34-9c1e-0f6b2f7a9a11", "s3cr3t_Key", 1600060847294);
/// assert_eq!(security, "b799cb921c701a742c45c89296990cf7");
/// ```
pub fn sign(call_id: &str, secret: &str, timestamp_ms: u64) -> String {
    let mut h = Md5::new();
    h.update(call_id.as_bytes());
    h.update(secret.as_bytes());
    let mut digits = [0u8; 20];
    h.update(decimal(timestamp_ms, &mut digits));
    hex(&h.finalize())
}

/// Signs a body built as a JSON value (an event's, docs/behaviour.md §11.1): `security` from
/// the body's own `callId` and `timestamp`, so that overrides of either are signed as sent. A
/// body whose `security` an override set (or removed) is left as it is.
pub fn sign_value(body: &mut serde_json::Value, secret: &str, overridden: bool) {
    if overridden {
        return;
    }
    let call_id = body.get("callId").and_then(|v| v.as_str()).unwrap_or_default();
    let security = match body.get("timestamp") {
        Some(serde_json::Value::Number(n)) if n.is_u64() => sign(call_id, secret, n.as_u64().unwrap_or_default()),
        Some(serde_json::Value::String(t)) => sign_text(call_id, secret, t),
        Some(other) => sign_text(call_id, secret, &other.to_string()),
        None => sign_text(call_id, secret, ""),
    };
    if let serde_json::Value::Object(m) = body {
        m.insert("security".into(), security.into());
    }
}

/// MD5(callId + secret + timestamp) with the timestamp as text.
fn sign_text(call_id: &str, secret: &str, timestamp: &str) -> String {
    let mut h = Md5::new();
    h.update(call_id.as_bytes());
    h.update(secret.as_bytes());
    h.update(timestamp.as_bytes());
    hex(&h.finalize())
}

/// `n` in decimal, written into `buf` without allocating.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// The fields of a callback a receiver needs to check its signature.
#[derive(Deserialize)]
pub(super) struct Head<'a> {
    #[serde(rename = "callId", borrow)]
    pub(super) call_id: Option<std::borrow::Cow<'a, str>>,
    timestamp: Option<u64>,
    #[serde(borrow)]
    security: Option<std::borrow::Cow<'a, str>>,
}

impl Head<'_> {
    /// `security` against MD5(callId + secret + timestamp).
    pub(super) fn check(&self, secret: &str) -> Signature {
        match self {
            Head {
                call_id: Some(id),
                timestamp: Some(ts),
                security: Some(sig),
            } if sign(id, secret, *ts) == *sig => Signature::Valid,
            Head {
                call_id: Some(_),
                timestamp: Some(_),
                security: Some(_),
            } => Signature::Invalid,
            _ => Signature::Missing,
        }
    }
}

/// Checks an agora callback's signature, as a receiver should: `security` must be the
/// lowercase hex MD5 of `callId + secret + timestamp` (docs/behaviour.md §4.1). Answers
/// [`Signature::Valid`], [`Signature::Invalid`], [`Signature::Missing`] (a field is absent) or
/// [`Signature::Unparsable`] (not a JSON object).
///
/// ```
/// use callback_sim::{Signature, agora_sign, agora_verify};
///
/// let call_id = "demo#e7b1c1d2-5a0f-4a34-9c1e-0f6b2f7a9a11";
/// let security = agora_sign(call_id, "s3cret", 1600060847294);
/// let body = format!(r#"{{"callId":"{call_id}","timestamp":1600060847294,"security":"{security}"}}"#);
/// assert_eq!(agora_verify(body.as_bytes(), "s3cret"), Signature::Valid);
/// assert_eq!(agora_verify(body.as_bytes(), "other"), Signature::Invalid);
/// assert_eq!(agora_verify(b"{}", "s3cret"), Signature::Missing);
/// ```
pub fn verify(body: &[u8], secret: &str) -> Signature {
    match serde_json::from_slice::<Head>(body) {
        Ok(head) => head.check(secret),
        Err(_) => Signature::Unparsable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_test_vector() {
        assert_eq!(
            sign(
                "demo-app#e7b1c1d2-5a0f-4a34-9c1e-0f6b2f7a9a11",
                "s3cr3t_Key",
                1600060847294
            ),
            "b799cb921c701a742c45c89296990cf7"
        );
    }

    #[test]
    fn values_are_signed_from_their_own_fields() {
        let mut v = serde_json::json!({"callId": "a#1", "timestamp": 5, "security": ""});
        sign_value(&mut v, "s", false);
        assert_eq!(v["security"], sign("a#1", "s", 5));
        let mut v = serde_json::json!({"callId": "a#1", "timestamp": "5", "security": "mine"});
        sign_value(&mut v, "s", true);
        assert_eq!(v["security"], "mine");
        sign_value(&mut v, "s", false);
        assert_eq!(v["security"], sign("a#1", "s", 5));
    }

    #[test]
    fn decimal_digits() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(1600060847294, &mut b), b"1600060847294");
        assert_eq!(decimal(u64::MAX, &mut b), u64::MAX.to_string().as_bytes());
    }
}
