//! The seeded model of the simulated IM world that `generate` sends: users, groups, chatrooms,
//! a mix of chat and message types with plausible bodies, offline recipients, and the catalog
//! events of `--event-mix` among the same users and groups (recalls and read receipts of
//! their messages, contacts, group operations, statuses). Pure: the same seed and [`Mix`] give
//! the same messages and events.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};

use super::mix::EventMix;
use crate::domain::{ChatType, EventType, MessageType, Platform, Source};
use crate::event::Event;
use crate::message::{Message, MessageError};

/// How the traffic looks. Weights are relative (they need not sum to 100).
#[derive(Debug, Clone)]
pub struct Mix {
    /// Weights of `chat`, `groupchat`, `chatroom`.
    pub chat_types: [u32; 3],
    /// Weights of `txt`, `img`, `audio`, `video`, `file`, `loc`, `cmd`, `custom`.
    pub message_types: [u32; 8],
    /// Chance that a recipient (one-to-one peer, group member) is offline.
    pub offline_ratio: f64,
    /// Members per group.
    pub group_size: usize,
    /// Distinct users.
    pub users: usize,
    /// Chance that a message was sent through the REST API (`source = rest`).
    pub rest_ratio: f64,
    /// The share of messages and of each catalog event (`--event-mix`).
    pub events: EventMix,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            chat_types: [60, 30, 10],
            message_types: [70, 10, 5, 3, 3, 3, 3, 3],
            offline_ratio: 0.2,
            group_size: 8,
            users: 1000,
            rest_ratio: 0.1,
            events: EventMix::default(),
        }
    }
}

/// Parses `chat=60,groupchat=30,chatroom=10`-style weights over a vocabulary.
pub fn parse_weights<const N: usize>(text: &str, names: [&str; N]) -> Result<[u32; N], String> {
    let mut w = [0u32; N];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected name=weight"))?;
        let i = names
            .iter()
            .position(|n| *n == k.trim())
            .ok_or_else(|| format!("{k:?}: expected one of {}", names.join(", ")))?;
        w[i] = v
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
    }
    if w.iter().all(|&x| x == 0) {
        return Err("at least one weight must be above 0".into());
    }
    Ok(w)
}

/// An index into `weights`, drawn by weight.
fn pick(rng: &mut StdRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.random_range(0..total.max(1));
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// One generated item: a message, or a catalog event.
pub enum Item {
    /// A message (`POST …/messages`).
    Message(Message),
    /// A catalog event (`POST …/events`).
    Event(Event),
}

/// The seeded model of the simulated IM world.
pub struct Traffic {
    rng: StdRng,
    mix: Mix,
    n: u64,
    /// The group of the event being made.
    current: Option<Venue>,
}

/// Texts of generated `txt` messages: short, varied, some non-ASCII (made up).
const PHRASES: &[&str] = &[
    "hello",
    "are you coming tonight?",
    "sent the report, have a look",
    "lol",
    "on my way",
    "meeting moved to 3pm",
    "can you review my PR?",
    "good morning!",
    "thanks a lot",
    "see you tomorrow",
    "where are we meeting?",
    "👍",
];
/// Actions of generated `cmd` messages (plausible, made up).
const ACTIONS: &[&str] = &["typing", "read_ack", "recall", "delivered"];
/// Platforms of generated client messages: every tencent `OptPlatform` a client can have
/// (`RESTAPI` is for `source = rest`, `Unknown` for no platform).
const PLATFORMS: &[Platform] = &[
    Platform::Ios,
    Platform::Android,
    Platform::Web,
    Platform::Windows,
    Platform::Mac,
];

impl Traffic {
    /// A model that produces the same messages for the same `seed` and `mix`.
    pub fn new(seed: u64, mix: Mix) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            mix,
            n: 0,
            current: None,
        }
    }

    fn pick(&mut self, weights: &[u32]) -> usize {
        pick(&mut self.rng, weights)
    }

    fn user(&mut self) -> String {
        format!("user_{}", self.rng.random_range(0..self.mix.users.max(2)))
    }

    fn body(&mut self, t: MessageType) -> Map<String, Value> {
        let n = self.n;
        let v = match t {
            MessageType::Txt => json!({ "msg": format!("{} #{n}", PHRASES[self.rng.random_range(0..PHRASES.len())]) }),
            MessageType::Img => json!({
                "url": format!("https://cdn.example.com/img/{n}.jpg"), "filename": format!("IMG_{n}.jpg"),
                "secret": format!("{:08x}", self.rng.random::<u32>()),
                "size": { "width": self.rng.random_range(320..4000), "height": self.rng.random_range(240..3000) },
                "file_length": self.rng.random_range(20_000..5_000_000),
            }),
            MessageType::Audio => json!({
                "url": format!("https://cdn.example.com/audio/{n}.amr"), "filename": format!("{n}.amr"),
                "length": self.rng.random_range(1..60), "file_length": self.rng.random_range(2_000..200_000),
            }),
            MessageType::Video => json!({
                "url": format!("https://cdn.example.com/video/{n}.mp4"), "filename": format!("{n}.mp4"),
                "thumb": format!("https://cdn.example.com/video/{n}.jpg"),
                "length": self.rng.random_range(1..300), "file_length": self.rng.random_range(100_000..50_000_000),
            }),
            MessageType::File => json!({
                "url": format!("https://cdn.example.com/files/{n}"), "filename": format!("report-{n}.pdf"),
                "file_length": self.rng.random_range(1_000..10_000_000),
            }),
            MessageType::Loc => json!({
                "lat": 39.9 + self.rng.random_range(-1000..1000) as f64 / 10_000.0,
                "lng": 116.4 + self.rng.random_range(-1000..1000) as f64 / 10_000.0,
                "addr": "Chaoyang District, Beijing",
            }),
            MessageType::Cmd => json!({ "action": ACTIONS[self.rng.random_range(0..ACTIONS.len())] }),
            MessageType::Custom => json!({
                "customEvent": "gift", "customExts": { "gift_id": format!("g{}", self.rng.random_range(1..50)), "count": self.rng.random_range(1..10) },
            }),
        };
        match v {
            Value::Object(m) => m,
            _ => unreachable!("bodies are objects"),
        }
    }

    /// The next message.
    pub fn next_message(&mut self) -> Message {
        self.n += 1;
        let chat_type =
            [ChatType::Chat, ChatType::GroupChat, ChatType::ChatRoom][self.pick(&self.mix.chat_types.clone())];
        let msg_type = MessageType::ALL[self.pick(&self.mix.message_types.clone())];
        let from = self.user();
        let (to, offline) = match chat_type {
            ChatType::Chat => {
                let mut to = self.user();
                while to == from {
                    to = self.user();
                }
                let off = self.rng.random_bool(self.mix.offline_ratio);
                let offline = if off { vec![to.clone()] } else { Vec::new() };
                (to, offline)
            }
            ChatType::GroupChat => {
                let group = self
                    .rng
                    .random_range(0..(self.mix.users / self.mix.group_size.max(1)).max(1));
                let offline = (0..self.mix.group_size.saturating_sub(1))
                    .filter(|_| self.rng.random_bool(self.mix.offline_ratio))
                    .map(|i| format!("user_{}", (group * self.mix.group_size + i + 1) % self.mix.users.max(1)))
                    .filter(|m| *m != from)
                    .collect();
                (format!("group_{group}"), offline)
            }
            ChatType::ChatRoom => (format!("room_{}", self.rng.random_range(0..10)), Vec::new()),
        };
        let source = if self.rng.random_bool(self.mix.rest_ratio) {
            Source::Rest
        } else {
            Source::Client
        };
        let mut ext = Map::new();
        if self.rng.random_bool(0.2) {
            ext.insert(
                "trace_id".into(),
                Value::String(format!("{:016x}", self.rng.random::<u64>())),
            );
        }
        let platform = Some(PLATFORMS[self.rng.random_range(0..PLATFORMS.len())]);
        let client_ip = Some(std::net::IpAddr::from([
            10,
            self.rng.random_range(0..255),
            self.rng.random_range(0..255),
            self.rng.random_range(1..255),
        ]));
        Message {
            from,
            to,
            chat_type,
            msg_type,
            body: self.body(msg_type),
            ext,
            source,
            platform,
            client_ip,
            offline,
            overrides: None,
        }
    }
}

/// Where a generated event happens: one of the model's groups, or a chatroom.
enum Venue {
    /// `group_{n}`, whose members are `user_{n × group_size + i}` (the first is its owner).
    Group(usize),
    /// `room_{n}`: anyone.
    Room(usize),
}

/// Reactions of generated `reaction_changed` events.
const REACTIONS: &[&str] = &["👍", "❤️", "😂", "🎉", "😮", "thumbs_up"];
/// Words of generated `keyword_alert` events (made up).
const WORDS: &[&str] = &["spamword", "badword", "scamlink", "forbidden"];
/// Channels of generated `push_result` events.
const PUSH_CHANNELS: &[&str] = &["APNS", "FCM", "HUAWEI", "XIAOMI", "OPPO", "VIVO"];
/// Announcements and descriptions of generated group changes (made up).
const NOTICES: &[&str] = &[
    "welcome! please read the pinned message",
    "team standup at 10:00 every day",
    "no ads please",
    "weekend trip planning",
];

impl Traffic {
    /// The next item: by the weights of `--event-mix`, a message or a catalog event. With
    /// messages only it is [`next_message`](Self::next_message) and nothing else is drawn, so
    /// a seed gives the same messages with or without the default mix.
    pub fn next_item(&mut self) -> Result<Item, MessageError> {
        if self.mix.events.messages_only() {
            return Ok(Item::Message(self.next_message()));
        }
        match pick(&mut self.rng, self.mix.events.weights()) {
            0 => Ok(Item::Message(self.next_message())),
            i => {
                let t = self.mix.events.events()[i - 1].0;
                self.next_event(t).map(Item::Event)
            }
        }
    }

    /// The next event of type `t`, with plausible fields among the model's users and groups;
    /// `Err` for `chat` and `chat_offline` (messages, not events).
    pub fn next_event(&mut self, t: EventType) -> Result<Event, MessageError> {
        self.n += 1;
        let fields = match t {
            // Not events: `Event::new` says so.
            EventType::Chat | EventType::ChatOffline => json!({}),
            EventType::UserStatus => {
                let online = self.rng.random_bool(0.5);
                let mut f = json!({
                    "user": self.user(), "status": if online { "online" } else { "offline" },
                    "platform": PLATFORMS[self.rng.random_range(0..PLATFORMS.len())],
                    "client_ip": self.ip(),
                });
                if !online && self.rng.random_bool(0.1) {
                    f["reason"] = "replaced".into();
                }
                f
            }
            EventType::MessageRecalled
            | EventType::MessageRead
            | EventType::MessageEdited
            | EventType::ReactionChanged
            | EventType::KeywordAlert => {
                let (chat_type, from, to) = self.conversation();
                let mut f = json!({ "from": from, "to": to, "chat_type": chat_type, "msg_id": self.msg_id() });
                match t {
                    EventType::MessageEdited => f["msg"] = format!("{} (edited)", self.phrase()).into(),
                    EventType::ReactionChanged => {
                        f["reaction"] = self.one(REACTIONS).into();
                        f["op"] = (if self.rng.random_bool(0.8) { "create" } else { "delete" }).into();
                    }
                    EventType::KeywordAlert => {
                        f["words"] = json!([self.one(WORDS)]);
                        f["action"] = self.one(&["through", "intercepted", "replaced"]).into();
                    }
                    _ => {}
                }
                f
            }
            EventType::ConversationRead => {
                let (from, to) = self.pair();
                json!({ "from": from, "to": to, "msg_id": self.msg_id() })
            }
            EventType::ContactAdded => {
                let (from, to) = self.pair();
                json!({ "from": from, "to": to, "reason": format!("hi, it's {from}") })
            }
            EventType::ContactAccepted
            | EventType::ContactDeclined
            | EventType::ContactRemoved
            | EventType::UserBlocked
            | EventType::UserUnblocked => {
                let (from, to) = self.pair();
                json!({ "from": from, "to": to })
            }
            EventType::GroupCreated => {
                let mut f = self.group_fields();
                let owner = f["operator"].clone();
                f["owner"] = owner;
                if let Some(members) = self.members(1, 7) {
                    f["members"] = members;
                }
                f
            }
            EventType::GroupDestroyed => {
                let mut f = self.group_fields();
                f["owner"] = f["operator"].clone();
                f
            }
            EventType::GroupMemberJoined => {
                let mut f = self.group_fields();
                f["members"] = json!(
                    (0..self.rng.random_range(1..=3))
                        .map(|_| self.user())
                        .collect::<Vec<_>>()
                );
                match self.one(&["applied", "invited", "direct"]) {
                    // Whoever applied or joined is the operator (the first member, by default).
                    "invited" => f["join_type"] = "invited".into(),
                    other => {
                        f["join_type"] = other.into();
                        f.as_object_mut().expect("an object").shift_remove("operator");
                    }
                }
                f
            }
            EventType::GroupMemberLeft => {
                let mut f = self.group_fields();
                f["members"] = self.members(1, 2).unwrap_or_else(|| json!([self.user()]));
                if self.rng.random_bool(0.7) {
                    f["leave_type"] = "quit".into();
                    f.as_object_mut().expect("an object").shift_remove("operator");
                } else {
                    f["leave_type"] = "kicked".into();
                }
                f
            }
            EventType::GroupInfoChanged => {
                let mut f = self.group_fields();
                match self.rng.random_range(0..3) {
                    0 => f["name"] = format!("{} (renamed)", f["group_id"].as_str().unwrap_or_default()).into(),
                    1 => f["description"] = self.one(NOTICES).into(),
                    _ => f["announcement"] = self.one(NOTICES).into(),
                }
                f
            }
            EventType::GroupOwnerChanged => {
                let mut f = self.group_fields();
                f["old_owner"] = f["operator"].clone();
                f["new_owner"] = match self.members(1, 1) {
                    Some(m) => m[0].clone(),
                    None => self.user().into(),
                };
                f
            }
            EventType::GroupAdminsChanged => {
                let mut f = self.group_fields();
                f["admins"] = self.members(1, 2).unwrap_or_else(|| json!([self.user()]));
                f["op"] = self.one(&["add", "remove"]).into();
                f
            }
            EventType::GroupMembersMuted => {
                let mut f = self.group_fields();
                f["members"] = self.members(1, 3).unwrap_or_else(|| json!([self.user()]));
                f["op"] = (if self.rng.random_bool(0.8) { "add" } else { "remove" }).into();
                f
            }
            EventType::PushResult => {
                let status = match self.rng.random_range(0..20) {
                    0 => "fail",
                    1 => "error",
                    _ => "success",
                };
                json!({ "to": self.user(), "msg_id": self.msg_id(), "status": status, "channel": self.one(PUSH_CHANNELS) })
            }
        };
        self.current = None;
        Event::new(t, fields)
    }

    fn one<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.rng.random_range(0..list.len())]
    }

    fn phrase(&mut self) -> &'static str {
        PHRASES[self.rng.random_range(0..PHRASES.len())]
    }

    fn ip(&mut self) -> String {
        format!(
            "10.{}.{}.{}",
            self.rng.random_range(0..255),
            self.rng.random_range(0..255),
            self.rng.random_range(1..255)
        )
    }

    /// The id of an earlier message: a numeric string like the simulator's.
    fn msg_id(&mut self) -> String {
        (1_760_000_000_000_000u64 + self.rng.random_range(0..10_000_000_000_000u64)).to_string()
    }

    /// Two different users.
    fn pair(&mut self) -> (String, String) {
        let from = self.user();
        let mut to = self.user();
        while to == from {
            to = self.user();
        }
        (from, to)
    }

    fn groups(&self) -> usize {
        (self.mix.users / self.mix.group_size.max(1)).max(1)
    }

    /// Member `i` of group `g` (member 0 is its owner).
    fn member(&self, g: usize, i: usize) -> String {
        format!("user_{}", (g * self.mix.group_size + i) % self.mix.users.max(1))
    }

    /// A group or a chatroom, by the weights of `groupchat` and `chatroom` (a group when both
    /// are 0).
    fn venue(&mut self) -> Venue {
        let [_, group, room] = self.mix.chat_types;
        if group + room > 0 && pick(&mut self.rng, &[group, room]) == 1 {
            Venue::Room(self.rng.random_range(0..10))
        } else {
            Venue::Group(self.rng.random_range(0..self.groups()))
        }
    }

    /// `group_id`, `chatroom` and the `operator` (the group's owner, or anyone in a chatroom)
    /// of a group event; remembers the group for [`members`](Self::members).
    fn group_fields(&mut self) -> Value {
        let venue = self.venue();
        let f = match venue {
            Venue::Group(g) => json!({ "group_id": format!("group_{g}"), "operator": self.member(g, 0) }),
            Venue::Room(r) => json!({ "group_id": format!("room_{r}"), "chatroom": true, "operator": self.user() }),
        };
        self.current = Some(venue);
        f
    }

    /// `min` to `max` members of the group of the event being made, owner aside (chatrooms:
    /// anyone); `None` when the group has no one but its owner.
    fn members(&mut self, min: usize, max: usize) -> Option<Value> {
        let n = self.rng.random_range(min..=max);
        let list: Vec<String> = match self.current {
            Some(Venue::Group(g)) => {
                let others = self.mix.group_size.saturating_sub(1);
                if others == 0 {
                    return None;
                }
                let start = self.rng.random_range(0..others);
                (0..n.min(others))
                    .map(|k| self.member(g, 1 + (start + k) % others))
                    .collect()
            }
            _ => (0..n).map(|_| self.user()).collect(),
        };
        Some(json!(list))
    }

    /// A conversation, by the weights of the chat types: (`chat_type`, a sender, a recipient
    /// user or group); in a group the sender is a member.
    fn conversation(&mut self) -> (ChatType, String, String) {
        let chat_type =
            [ChatType::Chat, ChatType::GroupChat, ChatType::ChatRoom][pick(&mut self.rng, &self.mix.chat_types)];
        match chat_type {
            ChatType::Chat => {
                let (from, to) = self.pair();
                (chat_type, from, to)
            }
            ChatType::GroupChat => {
                let g = self.rng.random_range(0..self.groups());
                let i = self.rng.random_range(0..self.mix.group_size.max(1));
                (chat_type, self.member(g, i), format!("group_{g}"))
            }
            ChatType::ChatRoom => (chat_type, self.user(), format!("room_{}", self.rng.random_range(0..10))),
        }
    }
}

/// The REST JSON of a generated event (for `--server` runs): `{"type": name, ...fields}`.
pub(crate) fn event_request_json(event: &Event) -> Value {
    let mut v = Map::with_capacity(event.fields().len() + 1);
    v.insert("type".into(), json!(event.event_type()));
    v.extend(event.fields().iter().map(|(k, v)| (k.clone(), v.clone())));
    Value::Object(v)
}

impl Message {
    /// The REST JSON of this message (for `--server` runs).
    pub(crate) fn to_request_json(&self) -> Value {
        let mut v = json!({
            "from": self.from, "to": self.to, "chat_type": self.chat_type, "type": self.msg_type,
            "ext": self.ext, "source": self.source, "offline": self.offline,
        });
        if self.msg_type == MessageType::Txt {
            v["msg"] = self.body.get("msg").cloned().unwrap_or_default();
        } else {
            v["body"] = Value::Object(self.body.clone());
        }
        if let Some(p) = self.platform {
            v["platform"] = json!(p);
        }
        if let Some(ip) = self.client_ip {
            v["client_ip"] = json!(ip.to_string());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        let a: Vec<Value> = {
            let mut t = Traffic::new(7, Mix::default());
            (0..200).map(|_| t.next_message().to_request_json()).collect()
        };
        let b: Vec<Value> = {
            let mut t = Traffic::new(7, Mix::default());
            (0..200).map(|_| t.next_message().to_request_json()).collect()
        };
        let c: Vec<Value> = {
            let mut t = Traffic::new(8, Mix::default());
            (0..200).map(|_| t.next_message().to_request_json()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_mix_follows_the_weights() {
        let mut t = Traffic::new(1, Mix::default());
        let msgs: Vec<Message> = (0..10_000).map(|_| t.next_message()).collect();
        let share = |f: &dyn Fn(&Message) -> bool| msgs.iter().filter(|m| f(m)).count() as f64 / msgs.len() as f64;
        assert!((share(&|m| m.chat_type == ChatType::Chat) - 0.6).abs() < 0.03);
        assert!((share(&|m| m.chat_type == ChatType::ChatRoom) - 0.1).abs() < 0.02);
        assert!((share(&|m| m.msg_type == MessageType::Txt) - 0.7).abs() < 0.03);
        for t in MessageType::ALL {
            assert!(msgs.iter().any(|m| m.msg_type == *t), "{t} never generated");
        }
        let chats_offline = share(&|m| m.chat_type == ChatType::Chat && !m.offline.is_empty()) / 0.6;
        assert!((chats_offline - 0.2).abs() < 0.03, "{chats_offline}");
        assert!(
            msgs.iter()
                .any(|m| m.chat_type == ChatType::GroupChat && m.offline.len() > 1)
        );
        // Every generated message is one the REST API accepts.
        for m in msgs.iter().take(500) {
            let req = crate::message::MessageRequest::from_json(m.to_request_json().to_string().as_bytes()).unwrap();
            req.into_message().unwrap();
        }
    }

    /// A model with `--event-mix` `mix`.
    fn with_events(seed: u64, mix: &str) -> Traffic {
        Traffic::new(
            seed,
            Mix {
                events: EventMix::parse(mix).unwrap(),
                ..Mix::default()
            },
        )
    }

    #[test]
    fn every_catalog_event_is_generated_valid_for_each_of_its_dialects() {
        use crate::domain::Dialect;
        use crate::event::Stamp;
        let stamp = Stamp {
            msg_id: "1760000000000000".into(),
            timestamp: 1_760_000_000_000,
            seq: 7,
            random: 42,
        };
        for def in crate::event::catalog::all() {
            for seed in 0..40 {
                let mut t = Traffic::new(seed, Mix::default());
                let e = t
                    .next_event(def.name)
                    .unwrap_or_else(|e| panic!("{} (seed {seed}): {e}", def.name));
                assert_eq!(e.event_type(), def.name);
                assert!(!e.subject().is_empty(), "{}: no subject", def.name);
                for dialect in [Dialect::Agora, Dialect::Tencent] {
                    if !def.in_dialect(dialect) {
                        continue;
                    }
                    // What --server posts is what the REST route takes, as the same event.
                    let json = event_request_json(&e).to_string();
                    let parsed = crate::event::parse_request(json.as_bytes(), dialect)
                        .unwrap_or_else(|err| panic!("{} {dialect}: {err}: {json}", def.name));
                    assert_eq!(parsed, e, "{} {dialect}", def.name);
                    // And the provider makes its wire body from it.
                    let body = match dialect {
                        Dialect::Agora => e.agora_body(&stamp, "sim#app1", "app1#x", seed % 2 == 1, None),
                        Dialect::Tencent => e.tencent_body(&stamp).map(|(_, b)| b),
                    };
                    assert!(body.is_some_and(|b| b.is_object()), "{} {dialect}", def.name);
                }
            }
        }
        let mut t = Traffic::new(1, Mix::default());
        for m in [EventType::Chat, EventType::ChatOffline] {
            assert_eq!(t.next_event(m).unwrap_err().field, "type", "{m} is a message");
        }
    }

    #[test]
    fn events_happen_among_the_models_users_and_groups() {
        let mut t = Traffic::new(3, Mix::default());
        let (size, users) = (8, 1000);
        let index = |u: &Value| -> usize { u.as_str().unwrap().strip_prefix("user_").unwrap().parse().unwrap() };
        for _ in 0..300 {
            let e = t.next_event(EventType::GroupMemberLeft).unwrap();
            let f = e.fields();
            let group = f["group_id"].as_str().unwrap();
            if let Some(g) = group.strip_prefix("group_") {
                let g: usize = g.parse().unwrap();
                for m in f["members"].as_array().unwrap() {
                    let i = index(m);
                    assert!(
                        (g * size + 1..(g + 1) * size).contains(&i),
                        "{m} is not a member of {group}, owner aside"
                    );
                }
                if f["leave_type"] == "kicked" {
                    assert_eq!(index(&f["operator"]), g * size % users, "the owner kicks");
                }
            } else {
                assert!(group.starts_with("room_") && f["chatroom"] == true, "{group}");
            }
        }
        for _ in 0..300 {
            let e = t.next_event(EventType::MessageRecalled).unwrap();
            let f = e.fields();
            let (from, to) = (f["from"].as_str().unwrap(), f["to"].as_str().unwrap());
            match f["chat_type"].as_str().unwrap() {
                "chat" => assert!(from != to && to.starts_with("user_")),
                "groupchat" => {
                    let g: usize = to.strip_prefix("group_").unwrap().parse().unwrap();
                    assert!(
                        (g * size..(g + 1) * size).contains(&index(&f["from"])),
                        "{from} in {to}"
                    );
                }
                other => assert!(other == "chatroom" && to.starts_with("room_")),
            }
            assert!(f["msg_id"].as_str().unwrap().parse::<u64>().is_ok());
        }
        let e = t.next_event(EventType::UserStatus).unwrap();
        assert!(e.fields()["user"].as_str().unwrap().starts_with("user_"));
        assert!(["online", "offline"].contains(&e.fields()["status"].as_str().unwrap()));
    }

    #[test]
    fn the_event_mix_follows_its_weights_and_repeats_with_the_seed() {
        let kinds = |seed| {
            let mut t = with_events(seed, "message=50,user_status=30,message_read=20");
            (0..10_000)
                .map(|_| match t.next_item().unwrap() {
                    Item::Message(m) => m.to_request_json(),
                    Item::Event(e) => event_request_json(&e),
                })
                .collect::<Vec<Value>>()
        };
        let a = kinds(5);
        assert_eq!(a, kinds(5), "the same seed, the same items");
        assert_ne!(a, kinds(6));
        let share = |t: &str| a.iter().filter(|v| v["type"] == t).count() as f64 / a.len() as f64;
        assert!((share("user_status") - 0.3).abs() < 0.03, "{}", share("user_status"));
        assert!((share("message_read") - 0.2).abs() < 0.03, "{}", share("message_read"));
        // Events only.
        let mut t = with_events(1, "group_created=1");
        for _ in 0..50 {
            assert!(matches!(t.next_item().unwrap(), Item::Event(e) if e.event_type() == EventType::GroupCreated));
        }
    }

    #[test]
    fn messages_only_draws_nothing_more_than_before() {
        let mut a = Traffic::new(9, Mix::default());
        let mut b = with_events(9, "message=1");
        for _ in 0..200 {
            let Ok(Item::Message(m)) = b.next_item() else {
                panic!("an event with messages only")
            };
            assert_eq!(m.to_request_json(), a.next_message().to_request_json());
        }
    }

    #[test]
    fn weights_parse_with_clear_errors() {
        assert_eq!(
            parse_weights("chat=1, chatroom=3", ["chat", "groupchat", "chatroom"]),
            Ok([1, 0, 3])
        );
        assert!(
            parse_weights("dm=1", ["chat", "groupchat", "chatroom"])
                .unwrap_err()
                .contains("expected one of")
        );
        assert!(parse_weights("chat=0", ["chat", "groupchat", "chatroom"]).is_err());
        assert!(parse_weights("chat", ["chat", "groupchat", "chatroom"]).is_err());
    }
}
