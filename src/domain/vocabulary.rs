//! The closed vocabularies (`docs/behaviour.md §1` to `§5`): enums with their wire names, declared
//! with `vocabulary!` so that every one parses, prints, serializes and describes itself in
//! the OpenAPI document the same way.

use std::fmt;

use serde::{Serialize, Serializer};

use super::DomainError;

/// Declares a closed vocabulary: an enum with its wire names, `ALL`, `parse` and `as_str`.
macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name, as the config, the REST API and the callbacks spell it.
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
    /// The provider wire format of an app (`docs/behaviour.md §1`).
    Dialect {
        /// Agora Chat / Shengwang-Easemob: signed JSON bodies (`docs/behaviour.md §4.1`, `§4.2`);
        /// the default.
        Agora = "agora",
        /// Tencent Cloud IM: command in the query string, unsigned bodies
        /// (`docs/behaviour.md §4.3`).
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
    /// `groupchat` (as Easemob sends it), but rule filters tell them apart.
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
    /// Message body types (`docs/behaviour.md §3`).
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
    /// What a post-send callback is about, as rules filter it (`event_types`): messages
    /// (Easemob's chat and offline messages) and the events of the catalog
    /// (`docs/behaviour.md §11`), each defined once in `event::catalog`.
    EventType {
        /// A message was sent: one callback per message and rule.
        Chat = "chat",
        /// A message reached an offline recipient: one callback per offline recipient.
        ChatOffline = "chat_offline",
        /// A user logged in, logged out or was kicked.
        UserStatus = "user_status",
        /// Members joined a group or chatroom.
        GroupMemberJoined = "group_member_joined",
        /// A message was recalled.
        MessageRecalled = "message_recalled",
        /// A message was read (a read receipt).
        MessageRead = "message_read",
        /// A whole conversation was read.
        ConversationRead = "conversation_read",
        /// A sent message was edited.
        MessageEdited = "message_edited",
        /// A reaction was added to or removed from a message.
        ReactionChanged = "reaction_changed",
        /// A contact (friend) request was sent.
        ContactAdded = "contact_added",
        /// A contact request was accepted.
        ContactAccepted = "contact_accepted",
        /// A contact request was declined.
        ContactDeclined = "contact_declined",
        /// A contact was removed.
        ContactRemoved = "contact_removed",
        /// A user was put on another's block list.
        UserBlocked = "user_blocked",
        /// A user was taken off another's block list.
        UserUnblocked = "user_unblocked",
        /// A group or chatroom was created.
        GroupCreated = "group_created",
        /// A group or chatroom was destroyed.
        GroupDestroyed = "group_destroyed",
        /// Members left or were removed from a group or chatroom.
        GroupMemberLeft = "group_member_left",
        /// A group's name, description or announcement changed.
        GroupInfoChanged = "group_info_changed",
        /// A group got a new owner.
        GroupOwnerChanged = "group_owner_changed",
        /// Group admins were added or removed.
        GroupAdminsChanged = "group_admins_changed",
        /// Group members were muted or unmuted.
        GroupMembersMuted = "group_members_muted",
        /// A message hit the keyword filter.
        KeywordAlert = "keyword_alert",
        /// The result of an offline push.
        PushResult = "push_result",
    }
}

vocabulary! {
    /// Where a message came from: a client SDK or the provider's REST API (`docs/behaviour.md §3`).
    Source {
        /// Sent by a client SDK: pre-send rules are asked first.
        Client = "client",
        /// Sent through the provider's REST API: no pre-send; skipped by `include_rest = false`.
        Rest = "rest",
    }
}

vocabulary! {
    /// The sender's platform, as tencent's `OptPlatform` names it (`docs/behaviour.md §4.3`).
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
    /// What a rule does with a pre-send callback that got no usable answer (`docs/behaviour.md §4.2`).
    OnFailure {
        /// Deliver the message as if the rule had allowed it (the default).
        Pass = "pass",
        /// Block the message as if the rule had denied it.
        Block = "block",
    }
}

vocabulary! {
    /// How one attempt ended, or why a callback was not attempted (`docs/behaviour.md §5`).
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
        /// Not attempted: the rule's lane was full when it was accepted.
        Overflow = "overflow",
    }
}

impl Outcome {
    /// The callback reached the receiver (no retry, nothing stored).
    pub const fn is_delivered(self) -> bool {
        matches!(self, Outcome::Delivered | Outcome::Violation)
    }

    /// The attempt counts toward the rule's ban window (`docs/behaviour.md §5`, `§6`).
    pub const fn is_failure(self) -> bool {
        !matches!(
            self,
            Outcome::Delivered | Outcome::Banned | Outcome::Shutdown | Outcome::Overflow
        )
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
    /// Where a callback ended up (`docs/behaviour.md §5`).
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

vocabulary! {
    /// How members came into a group (a `group_member_joined` event): tencent's `JoinType`,
    /// agora's `join_type`.
    JoinType {
        /// They asked to join (the default).
        Apply = "Apply",
        /// Someone invited them: the event's `operator`.
        Invited = "Invited",
    }
}

vocabulary! {
    /// The kind of group members joined (a `group_member_joined` event): tencent's group `Type`.
    GroupType {
        /// A public group ("stranger social" group), which users apply to join (the default).
        Public = "Public",
        /// A private group: tencent's older name for `Work`.
        Private = "Private",
        /// A chat room: tencent's older name for `Meeting`.
        ChatRoom = "ChatRoom",
        /// An audio-video chat room, for live streams.
        AVChatRoom = "AVChatRoom",
        /// A work group ("friends' work group"), which members invite others into.
        Work = "Work",
        /// A temporary meeting group.
        Meeting = "Meeting",
        /// A community group.
        Community = "Community",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_round_trip_and_explain_errors() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Ok(*o));
        }
        let err = ChatType::parse("private").unwrap_err().0;
        assert!(err.contains("chat, groupchat, chatroom"), "{err}");
        for t in GroupType::ALL {
            assert_eq!(GroupType::parse(t.as_str()), Ok(*t));
        }
        assert_eq!(JoinType::parse("Invited"), Ok(JoinType::Invited));
        let err = JoinType::parse("invited").unwrap_err().0;
        assert!(err.contains("Apply, Invited"), "{err}");
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
