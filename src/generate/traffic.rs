//! The seeded model of the simulated IM world that `generate` sends: users, groups, chatrooms,
//! a mix of chat and message types with plausible bodies, offline recipients. Pure: the same
//! seed and [`Mix`] give the same messages.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};

use crate::domain::{ChatType, MessageType, Platform, Source};
use crate::message::Message;

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

/// The seeded model of the simulated IM world.
pub struct Traffic {
    rng: StdRng,
    mix: Mix,
    n: u64,
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
        }
    }

    fn pick(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.rng.random_range(0..total.max(1));
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
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
