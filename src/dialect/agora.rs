//! The agora dialect (SPEC §4.1, seeds 001 and 002): the post-send body and its MD5 signature.

use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::value::RawValue;

/// `securityVersion` is always "1.0.0" (seed 001: "目前为 1.0.0").
pub const SECURITY_VERSION: &str = "1.0.0";

/// The agora signature (SPEC §4.1): a callback's `security`, the lowercase hex MD5 of
/// `callId + secret + timestamp` (timestamp in decimal milliseconds). A receiver computes it
/// to check a callback (or use [`agora_verify`](crate::agora_verify)); `callback-sim sign`
/// prints it.
///
/// ```
/// // The test vector of SPEC §4.1.
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

/// The JSON body of a post-send (and pre-send) callback, fields in the provider's order.
#[derive(Serialize)]
pub struct CallbackBody<'a> {
    /// `callId`: `{app_id}#{uuid}`, unique per callback, the same across retries and replays.
    #[serde(rename = "callId")]
    pub call_id: &'a str,
    /// `eventType`: `chat` or `chat_offline` ([`EventType`](crate::domain::EventType)).
    #[serde(rename = "eventType")]
    pub event_type: &'a str,
    /// `timestamp`: Unix time in milliseconds at which the simulator received the message.
    pub timestamp: u64,
    /// `chat_type` on the wire: `chat`, or `groupchat` for both groups and chatrooms.
    pub chat_type: &'a str,
    /// `group_id`: the message's `to`, for groups and chatrooms only (omitted for `chat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<&'a str>,
    /// `from`: the sender's user id.
    pub from: &'a str,
    /// `to`: the recipient (user or group); on `chat_offline`, the offline recipient.
    pub to: &'a str,
    /// `msg_id`: the message's id, shared by all its callbacks.
    pub msg_id: &'a str,
    /// `payload`: `{"bodies": [...], "ext": {...}}`, already serialized (possibly as rewritten
    /// by a pre-send rule).
    pub payload: &'a RawValue,
    /// `securityVersion`: always [`SECURITY_VERSION`].
    #[serde(rename = "securityVersion")]
    pub security_version: &'static str,
    /// `security`: [`sign`] of `callId`, the rule's secret and `timestamp`.
    pub security: &'a str,
}

impl CallbackBody<'_> {
    /// Serializes the body; it cannot fail for these field types.
    pub fn to_bytes(&self) -> Vec<u8> {
        // One allocation: the payload plus room for the other fields (about 300 bytes).
        let mut out =
            Vec::with_capacity(self.payload.get().len() + 320 + self.call_id.len() + self.from.len() + self.to.len());
        serde_json::to_writer(&mut out, self).expect("a callback body always serializes");
        out
    }
}

/// A user went online or offline (this project's agora shape for the tencent
/// `State.StateChange`, after the fields of Easemob's login/logout callback).
#[derive(Serialize)]
pub struct UserStatusBody<'a> {
    /// `callId`: `{app_id}#{uuid}`, unique per callback, the same across retries and replays.
    #[serde(rename = "callId")]
    pub call_id: &'a str,
    /// `eventType`: `user_status`.
    #[serde(rename = "eventType")]
    pub event_type: &'a str,
    /// `timestamp`: Unix time in milliseconds at which the simulator received the event.
    pub timestamp: u64,
    /// `user`: whose status changed.
    pub user: &'a str,
    /// `online` or `offline`.
    pub status: &'a str,
    /// `login` or `logout`.
    pub reason: &'a str,
    /// `os`: the event's platform ([`Platform`](crate::domain::Platform) name), if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<&'a str>,
    /// `ip`: the client's IP address, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `securityVersion`: always [`SECURITY_VERSION`].
    #[serde(rename = "securityVersion")]
    pub security_version: &'static str,
    /// `security`: [`sign`] of `callId`, the rule's secret and `timestamp`.
    pub security: &'a str,
}

/// Members joined a group (this project's agora shape for the tencent
/// `Group.CallbackAfterNewMemberJoin`).
#[derive(Serialize)]
pub struct MemberJoinedBody<'a> {
    /// `callId`: `{app_id}#{uuid}`, unique per callback, the same across retries and replays.
    #[serde(rename = "callId")]
    pub call_id: &'a str,
    /// `eventType`: `group_member_joined`.
    #[serde(rename = "eventType")]
    pub event_type: &'a str,
    /// `timestamp`: Unix time in milliseconds at which the simulator received the event.
    pub timestamp: u64,
    /// `chat_type`: always `groupchat`.
    pub chat_type: &'static str,
    /// `group_id`: the group the members joined.
    pub group_id: &'a str,
    /// Who added them (the member itself when they applied).
    pub from: &'a str,
    /// `members`: the user ids that joined.
    pub members: &'a [String],
    /// `Apply` or `Invited`.
    pub join_type: &'a str,
    /// `securityVersion`: always [`SECURITY_VERSION`].
    #[serde(rename = "securityVersion")]
    pub security_version: &'static str,
    /// `security`: [`sign`] of `callId`, the rule's secret and `timestamp`.
    pub security: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_spec_test_vector() {
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
    fn decimal_digits() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(1600060847294, &mut b), b"1600060847294");
        assert_eq!(decimal(u64::MAX, &mut b), u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn body_has_the_provider_field_order() {
        let payload = RawValue::from_string(r#"{"bodies":[{"type":"txt","msg":"hi"}],"ext":{}}"#.into()).unwrap();
        let body = CallbackBody {
            call_id: "demo#1",
            event_type: "chat",
            timestamp: 1,
            chat_type: "chat",
            group_id: None,
            from: "a",
            to: "b",
            msg_id: "9",
            payload: &payload,
            security_version: SECURITY_VERSION,
            security: "x",
        };
        let text = String::from_utf8(body.to_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"callId":"demo#1","eventType":"chat","timestamp":1,"chat_type":"chat","from":"a","to":"b","msg_id":"9","payload":{"bodies":[{"type":"txt","msg":"hi"}],"ext":{}},"securityVersion":"1.0.0","security":"x"}"#
        );
    }
}
