//! Group and chatroom operations (docs/behaviour.md §11.3): agora's `group_op_event`
//! envelope (or, with `group_events = "legacy"`, the older `chat_type: "muc"` one); tencent's
//! `Group.*` after-commands, and the before-commands `pre_send` rules are asked about a
//! creation and an invitation (docs/behaviour.md §11.4).

use serde_json::{Map, Value, json};

use super::shape::{self, group_op, member_list, muc, muc_operator, muc_target, tencent_group_type, tencent_operator};
use super::{AgoraDef, Before, Ctx, EventDef, TencentDef};
use crate::domain::EventType;
use crate::event::fields::{Default, Field, Kind, opt, req};

/// Tencent: a group was created.
pub const AFTER_CREATE: &str = "Group.CallbackAfterCreateGroup";
/// Tencent: asked before a group is created.
pub const BEFORE_CREATE: &str = "Group.CallbackBeforeCreateGroup";
/// Tencent: a group was destroyed.
pub const AFTER_DESTROYED: &str = "Group.CallbackAfterGroupDestroyed";
/// Tencent: members joined.
pub const AFTER_JOIN: &str = "Group.CallbackAfterNewMemberJoin";
/// Tencent: asked before invited members join.
pub const BEFORE_INVITE: &str = "Group.CallbackBeforeInviteJoinGroup";
/// Tencent: members left.
pub const AFTER_EXIT: &str = "Group.CallbackAfterMemberExit";
/// Tencent: the group's name, introduction or notification changed.
pub const AFTER_INFO: &str = "Group.CallbackAfterGroupInfoChanged";
/// Tencent: the group got a new owner.
pub const AFTER_OWNER: &str = "Group.CallbackAfterChangeGroupOwner";

const GROUP_ID: Field = req("group_id", Kind::Id, "the group or chatroom id");
const CHATROOM: Field = opt(
    "chatroom",
    Kind::Bool,
    Default::Bool(false),
    "a chatroom rather than a group",
);
const OPERATOR: Field = opt(
    "operator",
    Kind::Id,
    Default::None,
    "who did it (default: the app admin, agora @ppAdmin, tencent admin)",
);
const FIRST_MEMBER_OPERATOR: Field = opt(
    "operator",
    Kind::Id,
    Default::From("the first member", |f| f["members"][0].clone()),
    "who did it",
);
const GROUP_TYPE: Field = opt(
    "group_type",
    Kind::Choice(&[
        "Public",
        "Private",
        "ChatRoom",
        "AVChatRoom",
        "Work",
        "Meeting",
        "Community",
    ]),
    Default::None,
    "tencent: the group's Type (Public, or ChatRoom for chatrooms)",
);
const MEMBERS: Field = req("members", Kind::Ids, "the members");
const OP: Field = opt(
    "op",
    Kind::Choice(&["add", "remove"]),
    Default::Str("add"),
    "add or remove",
);

/// `ADD` or `REMOVE`, from the `op` field.
fn add_remove(c: &Ctx) -> &'static str {
    if c.s("op") == "remove" { "REMOVE" } else { "ADD" }
}

/// A millisecond time as agora's group `info` sends it: a string.
fn ms_string(ms: u64) -> String {
    ms.to_string()
}

fn created_agora(c: &Ctx) -> Value {
    let owner = c.s("owner");
    let mut role = Map::new();
    role.insert(owner.into(), "owner".into());
    group_op(
        c,
        "CREATE",
        Some(json!({
            "role": role,
            "member": c.list("members"),
            "info": {
                "owner": format!("{}_{owner}", c.appkey),
                "created": ms_string(c.ms()),
                "custom": "",
                "description": c.s("description"),
                "mute": "false",
                "title": c.s("name"),
                "max_users": "200",
                "invite_need_confirm": "true",
                "public": "true",
                "allow_user_invites": "false",
                "disabled": "false",
                "last_modified": ms_string(c.ms()),
            },
        })),
        Vec::new(),
    )
}

fn created_tencent(c: &Ctx) -> Value {
    shape::tencent(
        c,
        AFTER_CREATE,
        json!({
            "GroupId": c.s("group_id"),
            "Operator_Account": c.s("operator"),
            "Owner_Account": c.s("owner"),
            "Type": tencent_group_type(c),
            "Name": c.s("name"),
            "MemberList": member_list(&c.list("members")),
            "UserDefinedDataList": [],
        }),
    )
}

fn before_create(c: &Ctx) -> Value {
    let members = c.list("members");
    shape::tencent(
        c,
        BEFORE_CREATE,
        json!({
            "Operator_Account": c.s("operator"),
            "Owner_Account": c.s("owner"),
            "Type": tencent_group_type(c),
            "Name": c.s("name"),
            "CreateGroupNum": 0,
            "MemberList": member_list(&members),
        }),
    )
}

/// `DIRECT`, `INVITE` or `APPLY`, and tencent's `Apply`/`Invited`, from `join_type`.
fn join_kind(c: &Ctx) -> (&'static str, &'static str) {
    match c.s("join_type") {
        "direct" => ("DIRECT", "Apply"),
        "invited" | "Invited" => ("INVITE", "Invited"),
        _ => ("APPLY", "Apply"),
    }
}

fn joined_agora(c: &Ctx) -> Value {
    let members = c.list("members");
    let count = c.u("member_count").unwrap_or(members.len() as u64 + 1);
    group_op(
        c,
        "JOIN",
        Some(json!({ "member": members, "type": join_kind(c).0 })),
        vec![("member_count", count.into())],
    )
}

fn joined_tencent(c: &Ctx) -> Value {
    shape::tencent(
        c,
        AFTER_JOIN,
        json!({
            "GroupId": c.s("group_id"),
            "Type": tencent_group_type(c),
            "JoinType": join_kind(c).1,
            "Operator_Account": c.s("operator"),
            "NewMemberList": member_list(&c.list("members")),
        }),
    )
}

fn before_invite(c: &Ctx) -> Value {
    shape::tencent(
        c,
        BEFORE_INVITE,
        json!({
            "GroupId": c.s("group_id"),
            "Type": tencent_group_type(c),
            "Operator_Account": c.s("operator"),
            "DestinationMembers": member_list(&c.list("members")),
        }),
    )
}

/// An allowing answer's `RefusedMembers_Account` leaves those members out of the join.
fn apply_invite(answer: &Value, fields: &mut Map<String, Value>) -> Result<(), String> {
    let refused: Vec<&str> = answer
        .get("RefusedMembers_Account")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if refused.is_empty() {
        return Ok(());
    }
    if let Some(Value::Array(members)) = fields.get_mut("members") {
        members.retain(|m| !m.as_str().is_some_and(|m| refused.contains(&m)));
        if members.is_empty() {
            return Err("the receiver refused every invited member (RefusedMembers_Account)".into());
        }
    }
    Ok(())
}

fn left_agora(c: &Ctx) -> Value {
    let kind = if c.s("leave_type") == "kicked" { "KICK" } else { "QUIT" };
    group_op(
        c,
        "LEAVE",
        Some(json!({ "member": c.list("members"), "type": kind })),
        Vec::new(),
    )
}

fn left_tencent(c: &Ctx) -> Value {
    let kind = if c.s("leave_type") == "kicked" {
        "Kicked"
    } else {
        "Quit"
    };
    shape::tencent(
        c,
        AFTER_EXIT,
        json!({
            "GroupId": c.s("group_id"),
            "Type": tencent_group_type(c),
            "ExitType": kind,
            "Operator_Account": c.s("operator"),
            "ExitMemberList": member_list(&c.list("members")),
        }),
    )
}

fn info_changed_agora(c: &Ctx) -> Value {
    let only_announcement =
        c.opt("announcement").is_some() && c.opt("name").is_none() && c.opt("description").is_none();
    let payload = if only_announcement {
        json!({ "type": "ANNOUNCEMENT", "announcement": c.s("announcement") })
    } else {
        let mut info = Map::new();
        if let Some(d) = c.opt("description") {
            info.insert("description".into(), d.into());
        }
        if let Some(n) = c.opt("name") {
            info.insert("title".into(), n.into());
        }
        info.insert("last_modified".into(), ms_string(c.ms()).into());
        json!({ "type": "INFO", "info": info })
    };
    group_op(c, "UPDATE", Some(payload), Vec::new())
}

fn info_changed_tencent(c: &Ctx) -> Value {
    let mut f = Map::new();
    f.insert("GroupId".into(), c.s("group_id").into());
    f.insert("Type".into(), tencent_group_type(c).into());
    f.insert("Operator_Account".into(), tencent_operator(c).into());
    for (field, wire) in [
        ("name", "Name"),
        ("description", "Introduction"),
        ("announcement", "Notification"),
    ] {
        if let Some(v) = c.opt(field) {
            f.insert(wire.into(), v.into());
        }
    }
    shape::tencent(c, AFTER_INFO, Value::Object(f))
}

fn old_owner<'a>(c: &Ctx<'a>) -> &'a str {
    c.opt("old_owner").or(c.opt("operator")).unwrap_or(shape::TENCENT_ADMIN)
}

pub(super) const EVENTS: &[EventDef] = &[
    EventDef {
        name: EventType::GroupCreated,
        summary: "A group or chatroom was created.",
        subject: "group_id",
        fields: &[
            GROUP_ID,
            req("owner", Kind::Id, "the owner"),
            opt("members", Kind::Ids, Default::None, "the first members, owner aside"),
            opt(
                "name",
                Kind::Text,
                Default::From("group {group_id}", |f| {
                    format!("group {}", f["group_id"].as_str().unwrap_or_default()).into()
                }),
                "the group's name",
            ),
            opt("description", Kind::Text, Default::Str(""), "the group's description"),
            opt(
                "operator",
                Kind::Id,
                Default::From("the owner", |f| f["owner"].clone()),
                "who created it",
            ),
            CHATROOM,
            GROUP_TYPE,
        ],
        example: r#"{"group_id": "group1", "owner": "alice", "members": ["bob", "carol"]}"#,
        agora: Some(AgoraDef {
            wire: "event: group_op_event, operation: CREATE",
            body: created_agora,
            legacy: Some(|c| muc(c, "create", c.s("operator"), c.s("operator"))),
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: AFTER_CREATE,
            body: created_tencent,
            before: Some(Before {
                command: BEFORE_CREATE,
                asks: |_| true,
                body: before_create,
                apply: |_, _| Ok(()),
            }),
        }),
    },
    EventDef {
        name: EventType::GroupDestroyed,
        summary: "A group or chatroom was destroyed.",
        subject: "group_id",
        fields: &[
            GROUP_ID,
            OPERATOR,
            opt(
                "owner",
                Kind::Id,
                Default::None,
                "tencent: the owner (default: the operator)",
            ),
            opt("name", Kind::Text, Default::Str(""), "tencent: the group's name"),
            opt("members", Kind::Ids, Default::None, "tencent: the members it had"),
            CHATROOM,
            GROUP_TYPE,
        ],
        example: r#"{"group_id": "group1"}"#,
        agora: Some(AgoraDef {
            wire: "event: group_op_event, operation: DELETE",
            body: |c| group_op(c, "DELETE", None, Vec::new()),
            legacy: Some(|c| muc(c, "destroy", muc_operator(c), muc_operator(c))),
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: AFTER_DESTROYED,
            body: |c| {
                shape::tencent(
                    c,
                    AFTER_DESTROYED,
                    json!({
                        "GroupId": c.s("group_id"),
                        "Type": tencent_group_type(c),
                        "Owner_Account": c.opt("owner").unwrap_or(tencent_operator(c)),
                        "Name": c.s("name"),
                        "MemberList": member_list(&c.list("members")),
                    }),
                )
            },
            before: None,
        }),
    },
    EventDef {
        name: EventType::GroupMemberJoined,
        summary: "Members joined a group or chatroom: directly, invited, or by applying.",
        subject: "group_id",
        fields: &[
            GROUP_ID,
            MEMBERS,
            FIRST_MEMBER_OPERATOR,
            opt(
                "join_type",
                Kind::Choice(&["direct", "invited", "applied", "Apply", "Invited"]),
                Default::Str("applied"),
                "how they joined (Apply and Invited are the older spellings)",
            ),
            opt(
                "member_count",
                Kind::Int,
                Default::None,
                "agora: the group's size after the join (default: members + 1)",
            ),
            CHATROOM,
            GROUP_TYPE,
        ],
        example: r#"{"group_id": "group1", "members": ["dave"], "operator": "alice", "join_type": "invited"}"#,
        agora: Some(AgoraDef {
            wire: "event: group_op_event, operation: JOIN",
            body: joined_agora,
            legacy: Some(|c| muc(c, "presence", muc_target(c, "members"), c.s("group_id"))),
            legacy_each: Some("members"),
        }),
        tencent: Some(TencentDef {
            command: AFTER_JOIN,
            body: joined_tencent,
            before: Some(Before {
                command: BEFORE_INVITE,
                asks: |f| matches!(f.get("join_type").and_then(Value::as_str), Some("invited" | "Invited")),
                body: before_invite,
                apply: apply_invite,
            }),
        }),
    },
    EventDef {
        name: EventType::GroupMemberLeft,
        summary: "Members left a group or chatroom, or were kicked out.",
        subject: "group_id",
        fields: &[
            GROUP_ID,
            MEMBERS,
            FIRST_MEMBER_OPERATOR,
            opt(
                "leave_type",
                Kind::Choice(&["quit", "kicked"]),
                Default::Str("quit"),
                "how they left",
            ),
            CHATROOM,
            GROUP_TYPE,
        ],
        example: r#"{"group_id": "group1", "members": ["dave"]}"#,
        agora: Some(AgoraDef {
            wire: "event: group_op_event, operation: LEAVE",
            body: left_agora,
            legacy: Some(|c| {
                let member = muc_target(c, "members");
                if c.s("leave_type") == "kicked" {
                    muc(c, "kick", muc_operator(c), member)
                } else {
                    muc(c, "absence", member, c.s("group_id"))
                }
            }),
            legacy_each: Some("members"),
        }),
        tencent: Some(TencentDef {
            command: AFTER_EXIT,
            body: left_tencent,
            before: None,
        }),
    },
    EventDef {
        name: EventType::GroupInfoChanged,
        summary: "A group's name, description or announcement changed.",
        subject: "group_id",
        fields: &[
            GROUP_ID,
            OPERATOR,
            opt("name", Kind::Text, Default::None, "the new name"),
            opt("description", Kind::Text, Default::None, "the new description"),
            opt("announcement", Kind::Text, Default::None, "the new announcement"),
            CHATROOM,
            GROUP_TYPE,
        ],
        example: r#"{"group_id": "group1", "name": "Weekend hikes"}"#,
        agora: Some(AgoraDef {
            wire: "event: group_op_event, operation: UPDATE, payload.type: INFO or ANNOUNCEMENT",
            body: info_changed_agora,
            legacy: Some(|c| {
                let only_announcement =
                    c.opt("announcement").is_some() && c.opt("name").is_none() && c.opt("description").is_none();
                let op = if only_announcement {
                    "update_announcement"
                } else {
                    "update"
                };
                muc(c, op, muc_operator(c), muc_operator(c))
            }),
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: AFTER_INFO,
            body: info_changed_tencent,
            before: None,
        }),
    },
    EventDef {
        name: EventType::GroupOwnerChanged,
        summary: "A group was handed to a new owner.",
        subject: "group_id",
        fields: &[
            GROUP_ID,
            req("new_owner", Kind::Id, "the new owner"),
            opt(
                "old_owner",
                Kind::Id,
                Default::None,
                "the previous owner (default: the operator)",
            ),
            OPERATOR,
            CHATROOM,
            GROUP_TYPE,
        ],
        example: r#"{"group_id": "group1", "new_owner": "bob", "old_owner": "alice"}"#,
        agora: Some(AgoraDef {
            wire: "event: group_op_event, operation: UPDATE, payload.type: OWNER",
            body: |c| {
                group_op(
                    c,
                    "UPDATE",
                    Some(json!({ "owner": old_owner(c), "new_owner": c.s("new_owner"), "type": "OWNER" })),
                    Vec::new(),
                )
            },
            legacy: Some(|c| muc(c, "assing_owner", old_owner(c), c.s("new_owner"))),
            legacy_each: None,
        }),
        tencent: Some(TencentDef {
            command: AFTER_OWNER,
            body: |c| {
                shape::tencent(
                    c,
                    AFTER_OWNER,
                    json!({
                        "GroupId": c.s("group_id"),
                        "Type": tencent_group_type(c),
                        "Operator_Account": tencent_operator(c),
                        "OldOwner_Account": old_owner(c),
                        "NewOwner_Account": c.s("new_owner"),
                    }),
                )
            },
            before: None,
        }),
    },
    EventDef {
        name: EventType::GroupAdminsChanged,
        summary: "Group admins were added or removed.",
        subject: "group_id",
        fields: &[GROUP_ID, req("admins", Kind::Ids, "the admins"), OP, OPERATOR, CHATROOM],
        example: r#"{"group_id": "group1", "admins": ["bob"]}"#,
        agora: Some(AgoraDef {
            wire: "event: group_op_event, operation: ADMIN",
            body: |c| {
                group_op(
                    c,
                    "ADMIN",
                    Some(json!({ "admin": c.list("admins"), "type": add_remove(c) })),
                    Vec::new(),
                )
            },
            legacy: Some(|c| {
                let op = if c.s("op") == "remove" {
                    "remove_admin"
                } else {
                    "add_admin"
                };
                muc(c, op, muc_operator(c), muc_target(c, "admins"))
            }),
            legacy_each: Some("admins"),
        }),
        tencent: None,
    },
    EventDef {
        name: EventType::GroupMembersMuted,
        summary: "Group members were muted (until a time) or unmuted.",
        subject: "group_id",
        fields: &[
            GROUP_ID,
            MEMBERS,
            OP,
            opt(
                "until",
                Kind::Int,
                Default::AtSend("a day from now"),
                "when the mute ends, Unix ms",
            ),
            OPERATOR,
            CHATROOM,
        ],
        example: r#"{"group_id": "group1", "members": ["dave"], "until": 1767225600000}"#,
        agora: Some(AgoraDef {
            wire: "event: group_op_event, operation: MUTE",
            body: |c| {
                let mut payload = json!({ "member": c.list("members") });
                if c.s("op") != "remove" {
                    payload["expire_timestamp"] = c.u("until").unwrap_or(c.ms() + 86_400_000).into();
                }
                payload["type"] = add_remove(c).into();
                group_op(c, "MUTE", Some(payload), Vec::new())
            },
            legacy: Some(|c| {
                let op = if c.s("op") == "remove" {
                    "remove_mute"
                } else {
                    "add_mute"
                };
                muc(c, op, muc_operator(c), muc_target(c, "members"))
            }),
            legacy_each: Some("members"),
        }),
        tencent: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_members_are_left_out_and_none_left_is_an_error() {
        let mut f = Map::new();
        f.insert("members".into(), json!(["a", "b"]));
        apply_invite(&json!({"RefusedMembers_Account": ["a"]}), &mut f).unwrap();
        assert_eq!(f["members"], json!(["b"]));
        assert!(apply_invite(&json!({"RefusedMembers_Account": ["b"]}), &mut f).is_err());
        assert!(apply_invite(&json!({}), &mut f).is_ok());
    }
}
