//! Reading an agora pre-send answer (docs/behaviour.md §4.2): `{"valid": bool, "code":
//! "...", "payload": {...}}`, where `payload` may rewrite a text message.

use serde_json::Value;

use crate::dialect::{Rewrite, Verdict};
use crate::domain::MessageType;

/// A rewritten payload is at most 1 KB, serialized.
pub const MAX_REWRITE_BYTES: usize = 1024;
/// What the sender is told when a rule blocks without a `code`.
pub const DENIED_NO_CODE: &str = "custom logic denied";
/// What the sender is told when a rule blocks with an empty `code`.
pub const DENIED_EMPTY_CODE: &str = "Message blocked by external logic";
/// What the sender is told when a rule with `on_failure = "block"` got a timeout, a non-200 or
/// a malformed answer.
pub const INTERNAL_ERROR: &str = "custom internal error";

/// Reads an answer; `Err` when it has no boolean `valid` or a `code` that is not a string.
pub fn read(body: &[u8], msg_type: MessageType, rule: &str) -> Result<Verdict, String> {
    let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
        return Err("the answer is not a JSON object".into());
    };
    let Some(valid) = answer.get("valid").and_then(Value::as_bool) else {
        return Err("the answer has no boolean `valid`".into());
    };
    let code = match answer.get("code") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("the answer's `code` is not a string".into()),
    };
    let mut v = Verdict {
        allow: valid,
        silent_drop: false,
        sender_text: None,
        sender_code: None,
        rewrite: None,
        warnings: Vec::new(),
    };
    if !valid {
        v.sender_text = Some(match code.as_deref() {
            None => DENIED_NO_CODE.to_string(),
            Some("") => DENIED_EMPTY_CODE.to_string(),
            Some(c) => c.to_string(),
        });
        return Ok(v);
    }
    if let Some(payload) = answer.get("payload").filter(|p| !p.is_null()) {
        match rewrite(msg_type, payload) {
            Ok(r) => v.rewrite = Some(r),
            Err(why) => v
                .warnings
                .push(format!("rule {rule}: the answer's payload was ignored: {why}")),
        }
    }
    Ok(v)
}

/// Checks a rewrite: a text message, `{"bodies": [{"type": "txt", "msg": "..."}], "ext": {...}}`.
fn rewrite(msg_type: MessageType, payload: &Value) -> Result<Rewrite, String> {
    const SHAPE: &str = r#"expected {"bodies": [{"type": "txt", "msg": "..."}], "ext": {...}} (ext optional)"#;
    if msg_type != MessageType::Txt {
        return Err(format!(
            "only a text message may be rewritten, and this one is {msg_type}"
        ));
    }
    let size = payload.to_string().len();
    if size > MAX_REWRITE_BYTES {
        return Err(format!("it is {size} bytes, over the {MAX_REWRITE_BYTES}-byte limit"));
    }
    let Value::Object(p) = payload else {
        return Err(format!("it is not an object; {SHAPE}"));
    };
    if let Some(k) = p.keys().find(|k| *k != "bodies" && *k != "ext") {
        return Err(format!("unexpected key {k:?}; {SHAPE}"));
    }
    let ext = match p.get("ext") {
        None => None,
        Some(Value::Object(e)) => Some(e.clone()),
        Some(_) => return Err(format!("ext is not an object; {SHAPE}")),
    };
    let bodies = p
        .get("bodies")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("bodies is missing or not a list; {SHAPE}"))?;
    let [Value::Object(b)] = bodies.as_slice() else {
        return Err(format!(
            "bodies must hold exactly one body, it holds {}; {SHAPE}",
            bodies.len()
        ));
    };
    if b.get("type").and_then(Value::as_str) != Some("txt") {
        return Err(format!("the body's type must be \"txt\"; {SHAPE}"));
    }
    if let Some(k) = b.keys().find(|k| *k != "type" && *k != "msg") {
        return Err(format!("unexpected key {k:?} in the body; {SHAPE}"));
    }
    let msg = b
        .get("msg")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the body's msg is missing or not a string; {SHAPE}"))?;
    Ok(Rewrite {
        msg: Some(msg.to_string()),
        ext,
        wire: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(body: &str) -> Result<Verdict, String> {
        read(body.as_bytes(), MessageType::Txt, "mod")
    }

    #[test]
    fn valid_answers_allow_or_block_with_the_sender_text() {
        let v = txt(r#"{"valid": true, "code": "HX:10000"}"#).unwrap();
        assert!(v.allow && v.rewrite.is_none());
        let v = txt(r#"{"valid": false, "code": "spam"}"#).unwrap();
        assert_eq!((v.allow, v.sender_text.as_deref()), (false, Some("spam")));
        assert_eq!(
            txt(r#"{"valid": false}"#).unwrap().sender_text.as_deref(),
            Some(DENIED_NO_CODE)
        );
        assert_eq!(
            txt(r#"{"valid": false, "code": ""}"#).unwrap().sender_text.as_deref(),
            Some(DENIED_EMPTY_CODE)
        );
    }

    #[test]
    fn answers_without_a_boolean_valid_or_with_a_non_string_code_are_unusable() {
        for body in [
            r#"{"code": "x"}"#,
            r#"{"valid": "true"}"#,
            "not json",
            r#"{"valid": false, "code": 7}"#,
            "[]",
        ] {
            assert!(txt(body).is_err(), "{body}");
        }
    }

    #[test]
    fn text_rewrites_are_checked() {
        let v = txt(r#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": "***"}]}}"#).unwrap();
        assert_eq!(
            v.rewrite,
            Some(Rewrite {
                msg: Some("***".into()),
                ext: None,
                wire: None,
            })
        );
        let v =
            txt(r#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": "ok"}], "ext": {"k": 1}}}"#).unwrap();
        assert_eq!(v.rewrite.unwrap().ext.unwrap()["k"], 1);
        for bad in [
            r#"{"valid": true, "payload": {"bodies": [{"type": "img", "url": "x"}]}}"#,
            r#"{"valid": true, "payload": {"bodies": []}}"#,
            r#"{"valid": true, "payload": {"msg": "flat"}}"#,
            r#"{"valid": true, "payload": "text"}"#,
            r#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": 5}]}}"#,
        ] {
            let v = txt(bad).unwrap();
            assert!(v.allow && v.rewrite.is_none(), "{bad}");
            assert_eq!(v.warnings.len(), 1, "{bad}");
            assert!(v.warnings[0].contains("rule mod"), "{:?}", v.warnings);
        }
        let v = read(
            br#"{"valid": true, "payload": {"bodies": [{"type": "txt", "msg": "x"}]}}"#,
            MessageType::Img,
            "mod",
        )
        .unwrap();
        assert!(v.rewrite.is_none() && v.warnings[0].contains("only a text message"));
    }
}
