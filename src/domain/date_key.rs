//! [`DateKey`]: the 10-minute bucket key of the exception store.

use std::fmt;

use serde::{Serialize, Serializer};

use super::DomainError;

/// A 10-minute bucket key `YYYYMMDDHHmm` (minute a multiple of ten), in the store's
/// `utc_offset` (`docs/behaviour.md §7`: stored at 14:47:09 → `…1440`).
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

string_schema!(
    DateKey,
    "A 10-minute bucket key YYYYMMDDHHmm, minutes a multiple of ten (e.g. 202109091440)."
);

#[cfg(test)]
mod tests {
    use super::*;

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
}
