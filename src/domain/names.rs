//! Validated names: [`AppId`] and [`RuleName`]. A value that exists is valid; both are cheap
//! to clone and serialize as their text.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::DomainError;

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

/// An app id: `[A-Za-z0-9_-]{1,64}` (`docs/behaviour.md §2`). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(Arc<str>);

impl AppId {
    /// Longest app id accepted.
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

/// A rule name: `[A-Za-z0-9_]{1,32}`, as Easemob's console enforces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleName(Arc<str>);

impl RuleName {
    /// Longest rule name Easemob's console accepts: 32 characters.
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

string_schema!(AppId, "An app id: [A-Za-z0-9_-]{1,64}.");
string_schema!(RuleName, "A rule name: [A-Za-z0-9_]{1,32}, unique within its app.");

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
}
