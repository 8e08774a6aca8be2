//! Domain types: validated names and the closed vocabularies of SPEC §1–§5.
//!
//! Everything here is parsed once at the edge (config, REST bodies) and trusted inside:
//! an `AppId` or a `RuleName` that exists is valid.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// Why a value could not become a domain type; the caller adds where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Checks a name's length (1 to `max`) and characters; the error says which rule it broke.
fn check_name(s: &str, max: usize, allowed: fn(char) -> bool, allowed_desc: &str) -> Result<(), DomainError> {
    if s.is_empty() || s.len() > max {
        return Err(DomainError(format!(
            "must be 1 to {max} characters long, got {}",
            s.chars().count()
        )));
    }
    if let Some(bad) = s.chars().find(|&c| !allowed(c)) {
        return Err(DomainError(format!("may only contain {allowed_desc}, found {bad:?}")));
    }
    Ok(())
}

/// An app id: `[A-Za-z0-9_-]{1,64}` (SPEC §2). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(Arc<str>);

impl AppId {
    /// Longest app id accepted (SPEC §2).
    pub const MAX_LEN: usize = 64;

    /// Validates an app id; the error says which character or length is wrong.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        check_name(
            s,
            Self::MAX_LEN,
            |c| is_word_char(c) || c == '-',
            "letters, digits, '_' and '-'",
        )?;
        Ok(Self(s.into()))
    }

    /// The id as written in the config and in REST paths.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for AppId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        AppId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Lets maps keyed by `AppId` be looked up with a `&str` (both hash as the string).
impl std::borrow::Borrow<str> for AppId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for AppId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A rule name: `[A-Za-z0-9_]{1,32}`, as the provider's console enforces (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleName(Arc<str>);

impl RuleName {
    /// Longest rule name the provider accepts (seed 001: "长度不超过 32 字符").
    pub const MAX_LEN: usize = 32;

    /// Validates a rule name; the error says which character or length is wrong.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        check_name(s, Self::MAX_LEN, is_word_char, "letters, digits and '_'")?;
        Ok(Self(s.into()))
    }

    /// The name as written in the config; the `rule` field of reports and stored items.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RuleName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An absolute `http://` or `https://` URL with a host: where callbacks go.
///
/// Parsed once: besides the URL as written (shown and stored), it keeps what every attempt
/// sends — the request URI, without the `user:password@` part, which becomes an
/// `Authorization: Basic` header instead (as HTTP clients do, reqwest before us) — and, for
/// `http://` (always HTTP/1.1), the `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl {
    url: reqwest::Url,
    uri: http::Uri,
    authorization: Option<http::HeaderValue>,
    host: Option<http::HeaderValue>,
}

impl CallbackUrl {
    /// Validates a URL: `http://` or `https://` (any case), a host, and no `#fragment`.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let lower = s.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(DomainError(format!("must start with http:// or https://, got {s:?}")));
        }
        let url = reqwest::Url::parse(s).map_err(|e| DomainError(format!("is not a valid URL ({e}): {s:?}")))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(DomainError(format!("has no host: {s:?}")));
        }
        if url.fragment().is_some() {
            return Err(DomainError(format!(
                "must not have a #fragment (it is never sent): {s:?}"
            )));
        }
        let mut bare = url.clone();
        let authorization = take_credentials(&mut bare);
        let uri = http::Uri::try_from(bare.as_str())
            .map_err(|e| DomainError(format!("is not a valid request URI ({e}): {s:?}")))?;
        let host = (url.scheme() == "http").then(|| http1_host(&uri)).flatten();
        Ok(Self {
            url,
            uri,
            authorization,
            host,
        })
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
    /// callback's `SdkAppid=…&CallbackCommand=…` (SPEC §4.3).
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

impl fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

impl Serialize for CallbackUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.url.as_str())
    }
}

/// A 10-minute bucket key `YYYYMMDDHHmm` (minute a multiple of ten), in the store's
/// `utc_offset` (SPEC §7: stored at 14:47:09 → `…1440`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DateKey([u8; 12]);

impl DateKey {
    /// The window the instant `ms` (Unix milliseconds) falls in, seen from `offset`.
    pub fn from_ms(ms: u64, offset: chrono::FixedOffset) -> Self {
        use chrono::{Datelike, TimeZone, Timelike};
        let t = offset
            .timestamp_millis_opt(ms.min(i64::MAX as u64) as i64)
            .single()
            .unwrap_or_else(|| offset.timestamp_millis_opt(0).unwrap());
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}",
            t.year().clamp(0, 9999),
            t.month(),
            t.day(),
            t.hour(),
            t.minute() / 10 * 10
        );
        let mut key = [0u8; 12];
        key.copy_from_slice(text.as_bytes());
        Self(key)
    }

    /// Parses a key; the error says what a key looks like.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let explain = || {
            DomainError(format!(
                "must be a 10-minute date key YYYYMMDDHHmm with minutes a multiple of ten, such as \"202109091440\", got {:?}",
                s.chars().take(40).collect::<String>()
            ))
        };
        if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(explain());
        }
        if chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M").is_err() || !s.ends_with('0') {
            return Err(explain());
        }
        let mut key = [0u8; 12];
        key.copy_from_slice(s.as_bytes());
        Ok(Self(key))
    }

    /// Builds a key from its 12 stored bytes, if they are a valid key.
    pub(crate) fn from_bytes(b: &[u8]) -> Option<Self> {
        std::str::from_utf8(b).ok().and_then(|s| Self::parse(s).ok())
    }

    /// The key as text, e.g. `"202109091440"`: the `date` of storage/info and storage/retry.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a date key is ASCII digits")
    }

    /// The key's 12 ASCII digits, as stored in sled keys (they sort in time order).
    pub(crate) fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }

    /// The Unix time in milliseconds at which this window starts, seen from `offset`.
    pub(crate) fn start_ms(&self, offset: chrono::FixedOffset) -> u64 {
        use chrono::TimeZone;
        let naive =
            chrono::NaiveDateTime::parse_from_str(self.as_str(), "%Y%m%d%H%M").expect("validated at construction");
        offset
            .from_local_datetime(&naive)
            .single()
            .map(|t| t.timestamp_millis().max(0) as u64)
            .unwrap_or(0)
    }
}

impl fmt::Display for DateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DateKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Describes a validated string type in the OpenAPI document (`GET /openapi.json`).
macro_rules! string_schema {
    ($name:ident, $desc:literal) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($desc))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

string_schema!(AppId, "An app id: [A-Za-z0-9_-]{1,64}.");
string_schema!(RuleName, "A rule name: [A-Za-z0-9_]{1,32}, unique within its app.");
string_schema!(CallbackUrl, "An http:// or https:// URL.");
string_schema!(
    DateKey,
    "A 10-minute bucket key YYYYMMDDHHmm, minutes a multiple of ten (e.g. 202109091440)."
);

/// Declares a closed vocabulary: an enum with its wire names, `ALL`, `parse` and `as_str`.
macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name, as SPEC spells it.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses a wire name; the error lists the accepted names.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(DomainError(format!(
                        "unknown value {other:?}, expected one of: {}",
                        [$($wire),+].join(", ")
                    ))),
                }
            }

            /// Position in `ALL`, for counter arrays.
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($wire),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// The provider wire format of an app (SPEC §1).
    Dialect {
        /// Agora Chat / Shengwang-Easemob: signed JSON bodies (SPEC §4.1, §4.2); the default.
        Agora = "agora",
        /// Tencent Cloud IM: command in the query string, unsigned bodies (SPEC §4.3).
        Tencent = "tencent",
    }
}

vocabulary! {
    /// What a rule is asked: before delivery (moderation) or after (sync).
    RuleKind {
        /// Told after the message is delivered; retried, banned and stored on failure.
        PostSend = "post_send",
        /// Asked before delivery and may block or rewrite the message; never retried or stored.
        PreSend = "pre_send",
    }
}

vocabulary! {
    /// The conversation kind of a message. On the agora wire, chatroom is sent as
    /// `groupchat` (seed 001), but rule filters tell them apart.
    ChatType {
        /// One-to-one; `to` is a user. Tencent `C2C.*` commands.
        Chat = "chat",
        /// A group; `to` is the group id. Tencent `Group.*` commands.
        GroupChat = "groupchat",
        /// A chatroom; `to` is the room id. `groupchat` on the agora wire.
        ChatRoom = "chatroom",
    }
}

vocabulary! {
    /// Message body types (SPEC §3).
    MessageType {
        /// Text (`msg`); the only type a pre-send answer may rewrite. Tencent `TIMTextElem`.
        Txt = "txt",
        /// Image. Tencent `TIMImageElem`.
        Img = "img",
        /// Voice. Tencent `TIMSoundElem`.
        Audio = "audio",
        /// Video. Tencent `TIMVideoFileElem`.
        Video = "video",
        /// File. Tencent `TIMFileElem`.
        File = "file",
        /// Location. Tencent `TIMLocationElem`.
        Loc = "loc",
        /// Command (transparent) message. Tencent `TIMCustomElem`.
        Cmd = "cmd",
        /// Custom message. Tencent `TIMCustomElem`.
        Custom = "custom",
    }
}

vocabulary! {
    /// Post-send event types a rule can subscribe to: messages (seed 001: 聊天消息 / 离线消息)
    /// and the non-message events of `POST /app-id/{app_id}/events` (SPEC §8.3).
    EventType {
        /// A message was sent: one callback per message and rule.
        Chat = "chat",
        /// A message reached an offline recipient: one callback per offline recipient.
        ChatOffline = "chat_offline",
        /// A user went online or offline (tencent `State.StateChange`).
        UserStatus = "user_status",
        /// Members joined a group (tencent `Group.CallbackAfterNewMemberJoin`).
        GroupMemberJoined = "group_member_joined",
    }
}

vocabulary! {
    /// Where a message came from: a client SDK or the provider's REST API (SPEC §3).
    Source {
        /// Sent by a client SDK: pre-send rules are asked first.
        Client = "client",
        /// Sent through the provider's REST API: no pre-send; skipped by `include_rest = false`.
        Rest = "rest",
    }
}

vocabulary! {
    /// The sender's platform, as tencent's `OptPlatform` names it (SPEC §4.3).
    Platform {
        /// The provider's REST API: every message with `source = rest`.
        RestApi = "RESTAPI",
        /// A web client.
        Web = "Web",
        /// An Android client.
        Android = "Android",
        /// An iOS client.
        Ios = "iOS",
        /// A Windows client.
        Windows = "Windows",
        /// A macOS client.
        Mac = "Mac",
        /// A client message that named no platform.
        Unknown = "Unknown",
    }
}

vocabulary! {
    /// What a rule does with a pre-send callback that got no usable answer (SPEC §4.2).
    OnFailure {
        /// Deliver the message as if the rule had allowed it (the default).
        Pass = "pass",
        /// Block the message as if the rule had denied it.
        Block = "block",
    }
}

vocabulary! {
    /// How one attempt ended, or why a callback was not attempted (SPEC §5).
    Outcome {
        /// 200 within the timeout (and, tencent, a parsable body).
        Delivered = "delivered",
        /// Delivered, but the body was longer than `max_response_chars`.
        Violation = "violation",
        /// The host name did not resolve.
        Dns = "dns",
        /// Connection refused or reset before a response.
        Connect = "connect",
        /// Certificate or handshake error, mutual TLS included.
        Tls = "tls",
        /// No complete response within the timeout.
        Timeout = "timeout",
        /// A response other than 200.
        Status = "status",
        /// A tencent or pre-send answer that does not parse.
        BadResponse = "bad_response",
        /// Not attempted: the rule is banned.
        Banned = "banned",
        /// Not attempted: the process is stopping.
        Shutdown = "shutdown",
    }
}

impl Outcome {
    /// The callback reached the receiver (no retry, nothing stored).
    pub const fn is_delivered(self) -> bool {
        matches!(self, Outcome::Delivered | Outcome::Violation)
    }

    /// The attempt counts toward the rule's ban window (SPEC §5, §6).
    pub const fn is_failure(self) -> bool {
        !matches!(self, Outcome::Delivered | Outcome::Banned | Outcome::Shutdown)
    }
}

vocabulary! {
    /// A rule's live state, as `GET …/callbacks/rules` shows it.
    RuleStatus {
        /// Enabled and not banned: its callbacks are attempted.
        Active = "active",
        /// Banned: its callbacks are stored (outcome `banned`) until the ban ends.
        Banned = "banned",
        /// `enabled = false` in the config: it makes no callbacks.
        Disabled = "disabled",
    }
}

vocabulary! {
    /// Where a callback ended up (SPEC §5).
    FinalOutcome {
        /// An attempt got 200 within the timeout (for pre-send: a usable answer).
        Delivered = "delivered",
        /// Delivered, but the answer was longer than `max_response_chars`; not retried or stored.
        Violation = "violation",
        /// Its last attempt failed (or it was banned/shutdown) and the store kept it.
        Stored = "stored",
        /// The same, with the exception store off (or a pre-send without a usable answer).
        Dropped = "dropped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_follow_the_console_rules() {
        assert!(RuleName::parse("chat_sync_01").is_ok());
        assert!(RuleName::parse(&"a".repeat(32)).is_ok());
        assert!(RuleName::parse(&"a".repeat(33)).is_err());
        assert!(RuleName::parse("").is_err());
        assert!(RuleName::parse("has-dash").is_err());
        assert!(RuleName::parse("中文").is_err());
    }

    #[test]
    fn app_ids_allow_dashes() {
        assert!(AppId::parse("demo-app_1").is_ok());
        assert!(AppId::parse("a/b").is_err());
        assert!(AppId::parse(&"a".repeat(65)).is_err());
    }

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
        assert_eq!(u.to_string(), "http://us%20er:p%40ss@example.com:8080/cb?x=2");
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

    #[test]
    fn vocabularies_round_trip_and_explain_errors() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Ok(*o));
        }
        let err = ChatType::parse("private").unwrap_err().0;
        assert!(err.contains("chat, groupchat, chatroom"), "{err}");
    }

    #[test]
    fn date_keys_are_ten_minute_windows_in_the_offset() {
        use chrono::FixedOffset;
        let utc = FixedOffset::east_opt(0).unwrap();
        let cst = FixedOffset::east_opt(8 * 3600).unwrap();
        // 2021-09-09 06:47:09 UTC = 14:47:09 at +08:00.
        let ms = 1_631_170_029_000;
        assert_eq!(DateKey::from_ms(ms, utc).as_str(), "202109090640");
        assert_eq!(DateKey::from_ms(ms, cst).as_str(), "202109091440");
        let k = DateKey::from_ms(ms, cst);
        assert_eq!(k.start_ms(cst), 1_631_170_029_000 - 7 * 60_000 - 9_000);
        assert_eq!(DateKey::parse("202109091440"), Ok(k));
        for bad in [
            "20210909144",
            "202109091445",
            "202113091440",
            "202102301440",
            "2021090914a0",
            "",
            "２０２１０９０９１４４０",
        ] {
            assert!(DateKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_are_what_feeds_the_ban() {
        assert!(!Outcome::Delivered.is_failure());
        assert!(Outcome::Violation.is_failure());
        assert!(Outcome::Violation.is_delivered());
        assert!(Outcome::Timeout.is_failure());
        assert!(!Outcome::Banned.is_failure());
    }
}
