//! Non-message events (`POST /app-id/{app_id}/events`, `docs/behaviour.md §8.3`): a user going
//! online or offline, members joining a group. They go to every enabled post-send rule whose
//! `event_types` allow them, with the delivery policy of messages. An event from REST
//! ([`EventRequest`]) and one built in code go through the same [`Event::check`].

use std::net::IpAddr;

use serde::Deserialize;

use crate::domain::{EventType, GroupType, JoinType, Platform};
use crate::message::{MAX_ID_CHARS, MessageError};

/// Most members one join event may name.
pub const MAX_MEMBERS: usize = 10_000;

/// An event, ready to fan out into callbacks once [`check`](Event::check)ed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A user went online or offline: event type `user_status`, tencent `State.StateChange`.
    UserStatus {
        /// The user id (the report's `to`).
        user: String,
        /// `true` for `online` (login), `false` for `offline` (logout).
        online: bool,
        /// The client's platform, if given (agora `os`).
        platform: Option<Platform>,
        /// The client's address, if given (agora `ip`).
        client_ip: Option<IpAddr>,
    },
    /// Members joined a group: event type `group_member_joined`, tencent
    /// `Group.CallbackAfterNewMemberJoin`.
    GroupMemberJoined {
        /// The group id (the report's `to`).
        group_id: String,
        /// The user ids that joined, 1 to 10,000.
        members: Vec<String>,
        /// Who added them (agora `from`, tencent `Operator_Account`); defaults to the first
        /// member.
        operator: String,
        /// How they joined: tencent's `JoinType`, agora's `join_type`.
        join_type: JoinType,
        /// The kind of group: tencent's group `Type`.
        group_type: GroupType,
    },
}

impl Event {
    /// The event type rules filter on (`user_status` or `group_member_joined`).
    pub fn event_type(&self) -> EventType {
        match self {
            Event::UserStatus { .. } => EventType::UserStatus,
            Event::GroupMemberJoined { .. } => EventType::GroupMemberJoined,
        }
    }

    /// Who the callback is about (the report's `to`).
    pub fn subject(&self) -> &str {
        match self {
            Event::UserStatus { user, .. } => user,
            Event::GroupMemberJoined { group_id, .. } => group_id,
        }
    }

    /// Every rule an event obeys, whether it came from REST or was built in code: each id
    /// (`user`, `group_id`, `operator`, each member) is 1 to [`MAX_ID_CHARS`] characters
    /// without control characters, and a join names 1 to [`MAX_MEMBERS`] members. The error
    /// names the field as the REST body would.
    pub fn check(&self) -> Result<(), MessageError> {
        match self {
            Event::UserStatus { user, .. } => check_id("user", user),
            Event::GroupMemberJoined {
                group_id,
                members,
                operator,
                ..
            } => {
                if members.is_empty() || members.len() > MAX_MEMBERS {
                    return Err(bad("members", format!("must list 1 to {MAX_MEMBERS} members")));
                }
                for (i, m) in members.iter().enumerate() {
                    check_id(&format!("members[{i}]"), m)?;
                }
                check_id("operator", operator)?;
                check_id("group_id", group_id)
            }
        }
    }
}

/// The REST body: `{"type": "user_status", "user", "status": "online"|"offline", "platform",
/// "client_ip"}` or `{"type": "group_member_joined", "group_id", "members": [..], "operator",
/// "join_type", "group_type"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// `type`: `user_status` or `group_member_joined`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(user_status|group_member_joined)$")]
    pub kind: String,
    /// `user` (user_status, required): the user id.
    pub user: Option<String>,
    /// `status` (user_status, required): `online` or `offline`.
    pub status: Option<String>,
    /// `platform` (user_status): a [`Platform`] name such as `iOS`.
    pub platform: Option<Platform>,
    /// `client_ip` (user_status): an IPv4 or IPv6 address.
    pub client_ip: Option<String>,
    /// `group_id` (group_member_joined, required).
    pub group_id: Option<String>,
    /// `members` (group_member_joined, required): 1 to [`MAX_MEMBERS`] user ids.
    pub members: Option<Vec<String>>,
    /// `operator` (group_member_joined): who added them; defaults to the first member.
    pub operator: Option<String>,
    /// `join_type` (group_member_joined): `Apply` (default) or `Invited`.
    pub join_type: Option<JoinType>,
    /// `group_type` (group_member_joined): tencent's group `Type`, default `Public`.
    pub group_type: Option<GroupType>,
}

fn bad(field: &str, reason: impl Into<String>) -> MessageError {
    MessageError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn required(field: &str, v: Option<String>) -> Result<String, MessageError> {
    v.ok_or_else(|| bad(field, "is required"))
}

fn check_id(field: &str, v: &str) -> Result<(), MessageError> {
    if v.is_empty() || v.chars().count() > MAX_ID_CHARS || v.chars().any(char::is_control) {
        return Err(bad(
            field,
            format!("must be 1 to {MAX_ID_CHARS} characters without control characters"),
        ));
    }
    Ok(())
}

fn only_for(field: &str, given: bool, kind: &str) -> Result<(), MessageError> {
    if given {
        return Err(bad(field, format!("does not apply to a {kind} event")));
    }
    Ok(())
}

impl EventRequest {
    /// Reads the JSON body; a malformed body or an unknown field is an error naming the field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, MessageError> {
        crate::message::parse_json_object(bytes)
    }

    /// Validates the request into an [`Event`]; fields of the other event type are errors.
    /// Defaults: `operator` the first member, `join_type` `Apply`, `group_type` `Public`.
    pub fn into_event(self) -> Result<Event, MessageError> {
        let event = self.into_unchecked_event()?;
        event.check()?;
        Ok(event)
    }

    /// The event the request describes, with what only a request can get wrong checked: its
    /// `type`, required fields, fields of the other type, `status` and `client_ip`.
    fn into_unchecked_event(self) -> Result<Event, MessageError> {
        match self.kind.as_str() {
            "user_status" => {
                for (f, given) in [
                    ("group_id", self.group_id.is_some()),
                    ("members", self.members.is_some()),
                    ("operator", self.operator.is_some()),
                    ("join_type", self.join_type.is_some()),
                    ("group_type", self.group_type.is_some()),
                ] {
                    only_for(f, given, "user_status")?;
                }
                let online = match self.status.as_deref() {
                    Some("online") => true,
                    Some("offline") => false,
                    Some(other) => {
                        return Err(bad(
                            "status",
                            format!("must be \"online\" or \"offline\", got {other:?}"),
                        ));
                    }
                    None => return Err(bad("status", "is required: \"online\" or \"offline\"")),
                };
                let client_ip = match self.client_ip {
                    None => None,
                    Some(ip) => Some(
                        ip.parse()
                            .map_err(|_| bad("client_ip", format!("must be an IPv4 or IPv6 address, got {ip:?}")))?,
                    ),
                };
                Ok(Event::UserStatus {
                    user: required("user", self.user)?,
                    online,
                    platform: self.platform,
                    client_ip,
                })
            }
            "group_member_joined" => {
                for (f, given) in [
                    ("user", self.user.is_some()),
                    ("status", self.status.is_some()),
                    ("platform", self.platform.is_some()),
                    ("client_ip", self.client_ip.is_some()),
                ] {
                    only_for(f, given, "group_member_joined")?;
                }
                let members = self
                    .members
                    .ok_or_else(|| bad("members", "is required: the ids of the members who joined"))?;
                let operator = match self.operator {
                    Some(operator) => operator,
                    None => members.first().cloned().unwrap_or_default(),
                };
                Ok(Event::GroupMemberJoined {
                    group_id: required("group_id", self.group_id)?,
                    members,
                    operator,
                    join_type: self.join_type.unwrap_or(JoinType::Apply),
                    group_type: self.group_type.unwrap_or(GroupType::Public),
                })
            }
            other => Err(bad(
                "type",
                format!("unknown event type {other:?}, expected user_status or group_member_joined"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Event, MessageError> {
        EventRequest::from_json(json.as_bytes())?.into_event()
    }

    #[test]
    fn events_parse_with_defaults() {
        assert_eq!(
            parse(r#"{"type":"user_status","user":"u1","status":"offline"}"#).unwrap(),
            Event::UserStatus {
                user: "u1".into(),
                online: false,
                platform: None,
                client_ip: None
            }
        );
        let e = parse(r#"{"type":"group_member_joined","group_id":"g","members":["a","b"]}"#).unwrap();
        assert_eq!(e.subject(), "g");
        assert!(
            matches!(e, Event::GroupMemberJoined { ref operator, join_type: JoinType::Apply, group_type: GroupType::Public, .. } if operator == "a")
        );
    }

    #[test]
    fn event_errors_name_the_field() {
        assert_eq!(parse(r#"{"type":"nap"}"#).unwrap_err().field, "type");
        assert_eq!(
            parse(r#"{"type":"user_status","user":"u1","status":"away"}"#)
                .unwrap_err()
                .field,
            "status"
        );
        assert_eq!(
            parse(r#"{"type":"user_status","status":"online"}"#).unwrap_err().field,
            "user"
        );
        assert_eq!(
            parse(r#"{"type":"user_status","user":"u","status":"online","members":["x"]}"#)
                .unwrap_err()
                .field,
            "members"
        );
        assert_eq!(
            parse(r#"{"type":"group_member_joined","group_id":"g","members":[]}"#)
                .unwrap_err()
                .field,
            "members"
        );
        assert_eq!(
            parse(r#"{"type":"group_member_joined","group_id":"g","members":["a",""]}"#)
                .unwrap_err()
                .field,
            "members[1]"
        );
        assert_eq!(parse(r#"{"user":"u"}"#).unwrap_err().field, "type");
        let e =
            parse(r#"{"type":"group_member_joined","group_id":"g","members":["a"],"join_type":"apply"}"#).unwrap_err();
        assert_eq!(e.field, "join_type");
        assert!(e.reason.contains("Apply, Invited"), "{e}");
        let e =
            parse(r#"{"type":"group_member_joined","group_id":"g","members":["a"],"group_type":"Club"}"#).unwrap_err();
        assert_eq!(e.field, "group_type");
        assert!(
            e.reason
                .contains("Public, Private, ChatRoom, AVChatRoom, Work, Meeting, Community"),
            "{e}"
        );
        assert_eq!(
            parse(r#"{"type":"group_member_joined","group_id":"g","members":["a"],"operator":""}"#)
                .unwrap_err()
                .field,
            "operator"
        );
    }

    #[test]
    fn join_and_group_types_are_typed() {
        let e = parse(r#"{"type":"group_member_joined","group_id":"g","members":["a","b"],"operator":"admin","join_type":"Invited","group_type":"AVChatRoom"}"#).unwrap();
        assert_eq!(
            e,
            Event::GroupMemberJoined {
                group_id: "g".into(),
                members: vec!["a".into(), "b".into()],
                operator: "admin".into(),
                join_type: JoinType::Invited,
                group_type: GroupType::AVChatRoom,
            }
        );
    }

    #[test]
    fn events_built_in_code_are_checked_like_rest_ones() {
        let status = |user: &str| Event::UserStatus {
            user: user.into(),
            online: true,
            platform: None,
            client_ip: None,
        };
        assert!(status("u1").check().is_ok());
        assert_eq!(status("").check().unwrap_err().field, "user");
        let join = |members: Vec<String>, operator: &str| Event::GroupMemberJoined {
            group_id: "g".into(),
            members,
            operator: operator.into(),
            join_type: JoinType::Apply,
            group_type: GroupType::Public,
        };
        assert!(join(vec!["a".into()], "a").check().is_ok());
        assert_eq!(join(vec![], "a").check().unwrap_err().field, "members");
        assert_eq!(
            join(vec!["a".into(), "b\0".into()], "a").check().unwrap_err().field,
            "members[1]"
        );
        assert_eq!(join(vec!["a".into()], "").check().unwrap_err().field, "operator");
    }
}
