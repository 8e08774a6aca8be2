//! `--event-mix NAME=WEIGHT,...` (docs/behaviour.md §9): what share of the generated items are
//! messages and what share each catalog event. Pure: parsing and the dialect check.

use crate::domain::{Dialect, EventType};
use crate::event::catalog;

/// The name of the messages in a mix (the messages of `--chat-types`, `--message-types`…).
pub const MESSAGE: &str = "message";

/// What share of the traffic is messages and what share each catalog event, by relative
/// weight. The default is messages only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMix {
    /// The weight of messages.
    message: u32,
    /// Each event with a weight above 0, in the order given.
    events: Vec<(EventType, u32)>,
    /// `message` then each event's weight: what an item is drawn from.
    weights: Vec<u32>,
}

impl Default for EventMix {
    fn default() -> Self {
        Self {
            message: 1,
            events: Vec::new(),
            weights: vec![1],
        }
    }
}

impl EventMix {
    /// Parses `message=80,message_recalled=10,user_status=10`. `NAME` is `message` or a
    /// catalog event name; weights are whole numbers, relative; an event of weight 0 is left
    /// out. Every error names the part that is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut message = None;
        let mut events: Vec<(EventType, u32)> = Vec::new();
        let mut named: Vec<&str> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected NAME=WEIGHT (NAME is {MESSAGE} or a catalog event)"))?;
            let (name, weight) = (name.trim(), weight.trim());
            let weight: u32 = weight
                .parse()
                .map_err(|_| format!("{part:?}: the weight must be a whole number, got {weight:?}"))?;
            if named.contains(&name) {
                return Err(format!("{part:?}: {name} is named twice"));
            }
            named.push(name);
            if name == MESSAGE {
                message = Some(weight);
                continue;
            }
            let def = catalog::find(name).map_err(|e| {
                let hint = if EventType::parse(name).is_ok() {
                    format!(" ({name} callbacks come from messages: use {MESSAGE}=WEIGHT)")
                } else {
                    String::new()
                };
                format!("{part:?}: {e}, or {MESSAGE}{hint}")
            })?;
            if weight > 0 {
                events.push((def.name, weight));
            }
        }
        let message = message.unwrap_or(0);
        if message == 0 && events.is_empty() {
            return Err(format!(
                "{text:?}: at least one weight must be above 0 (e.g. {MESSAGE}=90,message_recalled=10)"
            ));
        }
        let weights = std::iter::once(message).chain(events.iter().map(|e| e.1)).collect();
        Ok(Self {
            message,
            events,
            weights,
        })
    }

    /// Whether every item is a message (no event has a weight).
    pub fn messages_only(&self) -> bool {
        self.events.is_empty()
    }

    /// The events of the mix with their weights, in the order given.
    pub fn events(&self) -> &[(EventType, u32)] {
        &self.events
    }

    /// `message` then each event's weight: index 0 is a message, index `i` the event `i − 1`.
    pub(super) fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// Checks that the provider of `dialect` has every event of the mix; the error names the
    /// first one it lacks, the dialect, and the names it has.
    pub fn check_dialect(&self, dialect: Dialect) -> Result<(), String> {
        match self
            .events
            .iter()
            .find(|(t, _)| catalog::get(*t).is_some_and(|d| !d.in_dialect(dialect)))
        {
            None => Ok(()),
            Some((t, _)) => Err(format!(
                "{t} is not an event of the {dialect} dialect (its provider has no such callback); the {dialect} \
                 dialect has: {MESSAGE}, {}",
                catalog::names(Some(dialect)).join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_with_weights_in_order() {
        let m = EventMix::parse("message=80, message_recalled=15,user_status=5").unwrap();
        assert_eq!(m.weights(), &[80, 15, 5]);
        assert_eq!(
            m.events(),
            &[(EventType::MessageRecalled, 15), (EventType::UserStatus, 5)]
        );
        assert!(!m.messages_only());
        // Events only; a zero weight leaves the event out.
        let m = EventMix::parse("group_created=1,push_result=0").unwrap();
        assert_eq!(m.weights(), &[0, 1]);
        assert_eq!(m.events(), &[(EventType::GroupCreated, 1)]);
        assert!(EventMix::parse("message=3").unwrap().messages_only());
        assert!(EventMix::default().messages_only());
        assert_eq!(EventMix::default().weights(), &[1]);
    }

    #[test]
    fn errors_name_the_bad_part() {
        let err = |s: &str| EventMix::parse(s).unwrap_err();
        let e = err("message=1,nap=2");
        assert!(
            e.contains("\"nap=2\"") && e.contains("message_recalled") && e.contains("message"),
            "{e}"
        );
        let e = err("message=1,chat=2");
        assert!(e.contains("\"chat=2\"") && e.contains("message=WEIGHT"), "{e}");
        let e = err("message=1,user_status");
        assert!(e.contains("\"user_status\"") && e.contains("NAME=WEIGHT"), "{e}");
        let e = err("message=1,user_status=-3");
        assert!(e.contains("\"user_status=-3\"") && e.contains("whole number"), "{e}");
        let e = err("message=1,user_status=x");
        assert!(e.contains("\"x\""), "{e}");
        let e = err("user_status=1,user_status=2");
        assert!(e.contains("\"user_status=2\"") && e.contains("twice"), "{e}");
        assert!(err("message=0,user_status=0").contains("above 0"));
        assert!(err("").contains("above 0"));
    }

    #[test]
    fn the_dialect_check_names_the_event_the_dialect_and_what_it_has() {
        let m = EventMix::parse("message=1,user_status=1,reaction_changed=1").unwrap();
        assert_eq!(m.check_dialect(Dialect::Agora), Ok(()));
        let e = m.check_dialect(Dialect::Tencent).unwrap_err();
        assert!(
            e.starts_with("reaction_changed is not an event of the tencent dialect"),
            "{e}"
        );
        assert!(e.contains("message, user_status") && e.contains("message_read"), "{e}");
        assert!(!e.contains("reaction_changed,"), "{e}");
    }
}
