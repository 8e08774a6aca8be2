//! Rule isolation: each rule's lane is bounded; a full lane sends its rule's new callbacks
//! straight to the store as `overflow`, and the other rules never notice.

use callback_sim::{FinalOutcome, Message, Outcome, Reply};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_hanging_rule_overflows_into_the_store_and_the_healthy_one_keeps_delivering() {
    let hung = sink(Reply::hang()).await;
    let healthy = sink(Reply::ok()).await;
    // One worker per rule; the hung rule's lane holds 5. The whole queue has room for far
    // more: nothing is refused.
    let sim = start(
        config().concurrency(2).rule_queue_capacity(5).queue_capacity(1000).app(
            app1()
                .timeout_secs(30.0)
                .rule(rule("hung", &hung.url("/")))
                .rule(rule("healthy", &healthy.url("/"))),
        ),
    )
    .await;
    const N: usize = 40;
    // Paced by the healthy receiver, whose lane is as small: it never fills.
    for i in 0..N {
        sim.submit(APP, Message::text("a", "b", "x")).await.expect("accepted");
        arrived(&healthy, i + 1).await;
    }
    // One at the hung receiver, five in its lane, the rest overflowed into the store.
    let overflowed = (N - 1 - 5) as u64;
    eventually("the hung rule's extra callbacks to be stored as overflow", || async {
        let s = rule_state(&sim, "hung").stats;
        (s.final_outcome(FinalOutcome::Stored) == overflowed).then_some(())
    })
    .await;
    let s = rule_state(&sim, "hung").stats;
    assert_eq!(s.outcome(Outcome::Overflow), overflowed);
    assert_eq!(stored_total(&sim), overflowed);
    assert_eq!(count(&hung), 1, "only the one in flight reached the hung receiver");
    // Over REST, with wait: the healthy callback is delivered, the hung rule's is stored at
    // once as overflow, not attempted; the message is accepted.
    let (status, answer) = send(&sim, json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    assert_eq!(status, 200, "{answer}");
    let cbs = callbacks(&answer);
    let by_rule = |name: &str| cbs.iter().find(|c| c["rule"] == name).unwrap().clone();
    let h = by_rule("hung");
    assert_eq!(
        (&h["outcome"], &h["last_attempt"], &h["attempts"]),
        (&json!("stored"), &json!("overflow"), &json!(0)),
        "{answer}"
    );
    assert_eq!(by_rule("healthy")["outcome"], "delivered", "{answer}");
    // The storage listing says why it was kept; /metrics counts it.
    let items = info(&sim).await;
    assert_eq!(
        items.iter().map(|b| b["size"].as_u64().unwrap()).sum::<u64>(),
        overflowed + 1
    );
    let metrics = reqwest::get(format!("{}/metrics", sim.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!(
        "callback_sim_attempts_total{{app=\"app1\",rule=\"hung\",outcome=\"overflow\"}} {}",
        overflowed + 1
    );
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    assert_eq!(sim.queued(), 5, "the hung rule's lane is full, the healthy one empty");
}

#[tokio::test]
async fn an_overflow_without_a_store_is_dropped_and_the_message_still_accepted() {
    let hung = sink(Reply::hang()).await;
    let sim = start(
        config()
            .concurrency(1)
            .rule_queue_capacity(1)
            .app(app1().exception_store(false).rule(rule("hung", &hung.url("/")))),
    )
    .await;
    sim.submit(APP, Message::text("a", "b", "x")).await.unwrap();
    arrived(&hung, 1).await;
    sim.submit(APP, Message::text("a", "b", "x")).await.unwrap();
    eventually("the second callback to wait in the lane", || async {
        (sim.queued() == 1).then_some(())
    })
    .await;
    let (status, answer) = send(&sim, json!({"from": "a", "to": "b", "msg": "x"}), true).await;
    assert_eq!(status, 200, "{answer}");
    let cb = &callbacks(&answer)[0];
    assert_eq!(
        (&cb["outcome"], &cb["last_attempt"]),
        (&json!("dropped"), &json!("overflow"))
    );
}
