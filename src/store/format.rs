//! The exception store's on-disk format: the sled keys, and the versioned record of a stored
//! callback. The public [`StoredCallback`] converts to and from the newest record, so renaming
//! one of its fields leaves the stores already on disk readable.
//!
//! Keys of the `callbacks` tree (all sort by app, then date, then retry, then order):
//!
//! - `i` app `\0` date(12 ASCII digits) retry(u32 BE) seq(u64 BE) → an item record;
//! - `b` app `\0` date retry → the bucket's item count (u64 BE).
//!
//! The `bans` tree maps app `\0` rule → the rule's ban record ([`BanV1`]).
//!
//! A record (an item or a ban) is a version byte, then the record: `1` then the JSON of [`V1`]
//! or [`BanV1`]. Stores written before records had a version byte hold that same JSON alone; it
//! starts with `{`, which is no version byte, and reads as version 1.

use serde::{Deserialize, Serialize};

use super::{Bucket, StoreError, StoredCallback};
use crate::ban::BanRecord;
use crate::domain::{AppId, DateKey, EventType, Outcome};

/// The version byte of a [`V1`] record.
const V1_TAG: u8 = 1;

/// A stored callback on disk, version 1. These field names and their `serde` names are the
/// format: a change to them is a new version, with its own tag, and V1 stays readable. `S` is
/// `&str` when writing (no copy of the body) and `String` when reading.
#[derive(Serialize, Deserialize)]
struct V1<S> {
    app: S,
    #[serde(rename = "callId")]
    call_id: S,
    rule: S,
    url: S,
    #[serde(rename = "eventType")]
    event_type: EventType,
    to: S,
    body: S,
    query: Option<S>,
    outcome: Outcome,
    attempts: u32,
    status: Option<u16>,
    stored_at_ms: u64,
}

/// A rule's ban record on disk, version 1 (the same rule as [`V1`]: a change is a new version).
#[derive(Serialize, Deserialize)]
struct BanV1 {
    banned_until_ms: u64,
    level: u32,
    history_ms: Vec<u64>,
}

/// The bytes of a ban record as the newest version.
pub(super) fn encode_ban(record: &BanRecord) -> Vec<u8> {
    let v = BanV1 {
        banned_until_ms: record.banned_until_ms,
        level: record.level,
        history_ms: record.history_ms.clone(),
    };
    let mut out = vec![V1_TAG];
    serde_json::to_writer(&mut out, &v).expect("a ban record serializes");
    out
}

/// A ban record of any version.
pub(super) fn decode_ban(bytes: &[u8]) -> Result<BanRecord, StoreError> {
    let v: BanV1 = serde_json::from_slice(record_json(bytes)?).map_err(|e| undecodable(e.to_string()))?;
    Ok(BanRecord {
        banned_until_ms: v.banned_until_ms,
        level: v.level,
        history_ms: v.history_ms,
    })
}

/// The bytes of `item` as the newest record.
pub(super) fn encode_item(item: &StoredCallback) -> Vec<u8> {
    let record = V1 {
        app: item.app.as_str(),
        call_id: &item.call_id,
        rule: &item.rule,
        url: &item.url,
        event_type: item.event_type,
        to: &item.to,
        body: &item.body,
        query: item.query.as_deref(),
        outcome: item.outcome,
        attempts: item.attempts,
        status: item.status,
        stored_at_ms: item.stored_at_ms,
    };
    let mut out = Vec::with_capacity(item.body.len() + 256);
    out.push(V1_TAG);
    serde_json::to_writer(&mut out, &record).expect("a stored callback serializes");
    out
}

fn undecodable(why: String) -> StoreError {
    StoreError::Io(format!("undecodable item: {why}"))
}

/// The JSON of a record of any version.
fn record_json(bytes: &[u8]) -> Result<&[u8], StoreError> {
    match bytes.first() {
        Some(&V1_TAG) => Ok(&bytes[1..]),
        Some(b'{') => Ok(bytes),
        Some(v) => Err(undecodable(format!("unknown record version {v}"))),
        None => Err(undecodable("empty record".into())),
    }
}

/// The stored callback of a record of any version.
pub(super) fn decode_item(bytes: &[u8]) -> Result<StoredCallback, StoreError> {
    let json = record_json(bytes)?;
    let r: V1<String> = serde_json::from_slice(json).map_err(|e| undecodable(e.to_string()))?;
    Ok(StoredCallback {
        app: AppId::parse(&r.app).map_err(|e| undecodable(format!("field `app`: {e}")))?,
        call_id: r.call_id,
        rule: r.rule,
        url: r.url,
        event_type: r.event_type,
        to: r.to,
        body: r.body,
        query: r.query,
        outcome: r.outcome,
        attempts: r.attempts,
        status: r.status,
        stored_at_ms: r.stored_at_ms,
    })
}

/// Whether the record of any version holds the callback `call_id`, without decoding the rest
/// of it (paging a bucket from a `callId` reads every record before it).
pub(super) fn item_has_call_id(bytes: &[u8], call_id: &str) -> Result<bool, StoreError> {
    #[derive(Deserialize)]
    struct CallIdOnly<'a> {
        #[serde(rename = "callId", borrow)]
        call_id: std::borrow::Cow<'a, str>,
    }
    let r: CallIdOnly = serde_json::from_slice(record_json(bytes)?).map_err(|e| undecodable(e.to_string()))?;
    Ok(r.call_id == call_id)
}

/// Just the `stored_at_ms` of a record of any version (what retention reads), without
/// copying the rest.
pub(super) fn decode_stored_at(bytes: &[u8]) -> Result<u64, StoreError> {
    #[derive(Deserialize)]
    struct StoredAt {
        stored_at_ms: u64,
    }
    let r: StoredAt = serde_json::from_slice(record_json(bytes)?).map_err(|e| undecodable(e.to_string()))?;
    Ok(r.stored_at_ms)
}

/// The key of bucket (`app`, `date`, `retry`) under `tag`: `b` for its count, `i` for the
/// prefix of its items.
pub(super) fn bucket_prefix(tag: u8, app: &str, date: &DateKey, retry: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + app.len() + 1 + 12 + 4 + 8);
    k.push(tag);
    k.extend_from_slice(app.as_bytes());
    k.push(0);
    k.extend_from_slice(date.as_bytes());
    k.extend_from_slice(&retry.to_be_bytes());
    k
}

/// The bucket of an item or count key.
pub(super) fn decode_bucket(key: &[u8]) -> Option<Bucket> {
    let rest = &key[1..];
    let nul = rest.iter().position(|&b| b == 0)?;
    let app = AppId::parse(std::str::from_utf8(&rest[..nul]).ok()?).ok()?;
    let tail = &rest[nul + 1..];
    let date = DateKey::from_bytes(tail.get(..12)?)?;
    let retry = u32::from_be_bytes(tail.get(12..16)?.try_into().ok()?);
    Some(Bucket { app, date, retry })
}

/// The key of a rule's ban record.
pub(super) fn ban_key(app: &AppId, rule: &str) -> Vec<u8> {
    let mut k = app.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(rule.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> StoredCallback {
        StoredCallback {
            app: AppId::parse("app1").unwrap(),
            call_id: "app1#2f1c".into(),
            rule: "sync".into(),
            url: "http://127.0.0.1:9/cb".into(),
            event_type: EventType::ChatOffline,
            to: "bob".into(),
            body: r#"{"msg":"hi \"there\""}"#.into(),
            query: Some("SdkAppid=1&Sign=x".into()),
            outcome: Outcome::Status,
            attempts: 3,
            status: Some(503),
            stored_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let bytes = encode_item(&item());
        assert_eq!(bytes[0], V1_TAG);
        assert_eq!(decode_item(&bytes).unwrap(), item());
    }

    #[test]
    fn records_written_before_the_version_byte_still_read() {
        // What the store wrote before records were versioned: the plain JSON of the callback.
        let legacy = br#"{"app":"app1","callId":"app1#2f1c","rule":"sync","url":"http://127.0.0.1:9/cb","eventType":"chat_offline","to":"bob","body":"{\"msg\":\"hi \\\"there\\\"\"}","query":"SdkAppid=1&Sign=x","outcome":"status","attempts":3,"status":503,"stored_at_ms":1700000000000}"#;
        assert_eq!(decode_item(legacy).unwrap(), item());
        let no_query = br#"{"app":"app1","callId":"c","rule":"sync","url":"u","eventType":"chat","to":"bob","body":"{}","query":null,"outcome":"banned","attempts":0,"status":null,"stored_at_ms":5}"#;
        let got = decode_item(no_query).unwrap();
        assert_eq!((got.query, got.outcome, got.status), (None, Outcome::Banned, None));
    }

    #[test]
    fn a_records_call_id_is_read_alone() {
        let bytes = encode_item(&item());
        assert!(item_has_call_id(&bytes, "app1#2f1c").unwrap());
        assert!(!item_has_call_id(&bytes, "app1#2f1").unwrap());
        let legacy = br#"{"app":"app1","callId":"c","rule":"sync","url":"u","eventType":"chat","to":"bob","body":"{}","query":null,"outcome":"banned","attempts":0,"status":null,"stored_at_ms":5}"#;
        assert!(item_has_call_id(legacy, "c").unwrap());
    }

    #[test]
    fn the_stored_time_reads_alone_from_any_version() {
        assert_eq!(decode_stored_at(&encode_item(&item())).unwrap(), 1_700_000_000_000);
        let legacy = br#"{"app":"a","callId":"c","rule":"r","url":"u","eventType":"chat","to":"b","body":"{}","query":null,"outcome":"banned","attempts":0,"status":null,"stored_at_ms":5}"#;
        assert_eq!(decode_stored_at(legacy).unwrap(), 5);
        assert!(decode_stored_at(b"\x09{}").is_err());
    }

    #[test]
    fn unknown_versions_are_refused_not_misread() {
        let mut bytes = encode_item(&item());
        bytes[0] = 9;
        assert!(
            decode_item(&bytes)
                .unwrap_err()
                .to_string()
                .contains("unknown record version 9")
        );
        assert!(decode_item(b"").is_err());
    }

    #[test]
    fn bucket_keys_round_trip() {
        let b = Bucket {
            app: AppId::parse("app-1").unwrap(),
            date: DateKey::parse("202109091440").unwrap(),
            retry: 7,
        };
        let key = bucket_prefix(b'i', b.app.as_str(), &b.date, b.retry);
        assert_eq!(decode_bucket(&key), Some(b));
    }

    #[test]
    fn ban_records_are_versioned_and_old_ones_still_read() {
        let record = BanRecord {
            banned_until_ms: 9,
            level: 2,
            history_ms: vec![1, 5],
        };
        let bytes = encode_ban(&record);
        assert_eq!(bytes[0], V1_TAG);
        assert_eq!(decode_ban(&bytes).unwrap(), record);
        // As stores wrote them before bans were versioned: the record's JSON alone.
        let legacy = br#"{"banned_until_ms":9,"level":2,"history_ms":[1,5]}"#;
        assert_eq!(decode_ban(legacy).unwrap(), record);
        assert!(decode_ban(b"\x07{}").is_err());
    }
}
