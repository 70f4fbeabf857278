//! Cold start and scale-down of the center nodes, as the nodes and the gateway report them, on the real
//! broker and Redis the test command starts: a node is ready only once its consumer group has given it
//! its task partitions, and a gateway counts the center as up only while that group has members, so an
//! interactive request never waits on a task nobody is there to take. Asynchronous tasks are durable:
//! they are accepted meanwhile and answered once a node joins.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Gateway;
use support::kafka::{Center, Names, ask_center, kafka_gateway};

/// Waits until the gateway's view of the center nodes (`/admin/pools`) is `up`.
async fn until_center_is(gw: &Gateway, up: bool) -> Duration {
    let started = Instant::now();
    loop {
        let pools = gw.pools().await;
        if pools["handoff"]["consumers"] == up {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the gateway never saw the center as {}: {pools}",
            if up { "up" } else { "down" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A chat pinned to the center (it names the center's model) is refused at once with a 503 and
/// `Retry-After`, not queued.
async fn refused_at_once(gw: &Gateway) {
    let started = Instant::now();
    let r = gw.chat(ask_center("Is anybody there?", false)).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 503, "{:?}", r.text().await);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(
        took < Duration::from_secs(2),
        "refused at once, not after a timeout: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_center_counts_as_up_only_while_nodes_hold_the_task_partitions() {
    let names = Names::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = r1_mock_upstream::serve(listener, r1_mock_upstream::Script::default().content(3, "ok "))
        .await
        .unwrap();
    let redis = format!("[redis]\n{}", support::redis_target::keys());
    let gw = kafka_gateway(&names, &[], 0, &redis).await;

    // No node yet: the hand-off is ready (tasks can be handed over), the center is not up.
    let pools = gw.pools().await;
    assert_eq!(pools["handoff"]["ready"], true, "{pools}");
    assert_eq!(pools["handoff"]["consumers"], false, "{pools}");
    assert_eq!(pools["handoff"]["center_members"], 0, "{pools}");
    refused_at_once(&gw).await;
    // An asynchronous task waits on the brokers for a node.
    let r = gw
        .client
        .post(format!("{}/v1/tasks", gw.public))
        .json(&json!({"request": ask_center("Answer me later.", false)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let task: Value = r.json().await.unwrap();
    let task_url = format!("{}/v1/tasks/{}", gw.public, task["id"].as_str().unwrap());

    // A node: ready only with its partitions (12 interactive + 12 batch), announced after the assignment.
    let mut center = Center::start(&names, "center-a", &format!("http://{}", upstream.addr()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let (status, text) = center.readiness().await;
        match status {
            200 => break text,
            0 => {}
            503 => assert!(text.contains("joining"), "{text}"),
            other => panic!("/readyz answered {other}: {text}"),
        }
        assert!(Instant::now() < deadline, "r1-center never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready.trim(), "ready: 24 task partitions held");
    assert_eq!(center.metric("r1_center_partitions_held").await, 24.0);
    center.wait_until_serving().await;
    let log = std::fs::read_to_string(&center.log).unwrap();
    let (assigned, announced) = (
        log.find("partitions assigned").unwrap(),
        log.find("r1-center ready").unwrap(),
    );
    assert!(assigned < announced, "ready is said after the assignment:\n{log}");

    // The gateway follows within its look interval; the waiting task is answered, and chats flow.
    let seen_in = until_center_is(&gw, true).await;
    assert!(seen_in < Duration::from_secs(5), "{seen_in:?}");
    // Up can come first from a look the brokers did not answer (it fails open: on a new cluster the
    // group coordinator is still being made); the member count follows with the next look.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pools = gw.pools().await;
        if pools["handoff"]["center_members"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never counted the node: {pools}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = gw.chat(ask_center("Hello?", false)).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "ok ok ok ");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: Value = gw.client.get(&task_url).send().await.unwrap().json().await.unwrap();
        if state["status"] == "succeeded" {
            assert_eq!(state["result"]["choices"][0]["message"]["content"], "ok ok ok ");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task that waited was not answered: {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGTERM: the node leaves its group; the gateway stops counting on it, and refuses at once again.
    center.terminate();
    center.wait_for_exit(Duration::from_secs(20)).await;
    let gone_in = until_center_is(&gw, false).await;
    assert!(gone_in < Duration::from_secs(5), "{gone_in:?}");
    refused_at_once(&gw).await;

    gw.stop();
    upstream.shutdown().await.unwrap();
}
