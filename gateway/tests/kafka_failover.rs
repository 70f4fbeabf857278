//! Broker failover on the three-broker KRaft cluster (`scripts/services.sh up kafka-cluster`: every
//! partition on three brokers, `min.insync.replicas` 2), with the hand-off over SASL_SSL (SCRAM-SHA-512)
//! as production runs it: eight clients keep asking through the real gateway and a real r1-center node
//! (the mock of the model API behind it) while the broker leading the task topic's partitions — or the
//! results partition the gateway reads — is SIGKILLed, then started again.
//!
//! Asserted: every request is refused at once with a 503 and `Retry-After` (only in a burst around the
//! kill) or answered once and completely at its own client; none hangs; no answer is doubled; and the
//! cluster heals with no manual step (every partition's in-sync replicas back to three).
//!
//! Its own test binary: it kills brokers of the shared cluster, which no other test may see; the two
//! drills take turns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code: a panic is the failure report

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;
use support::kafka::{Center, Listener, Names, ask_center, kafka_gateway_on, read_sse};
use support::{Restart, services};

/// The drills kill brokers of one cluster: one at a time.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Concurrent clients, each asking again as soon as it has its answer.
const CLIENTS: usize = 8;
/// What every answer must be, exactly: the mock's eight chunks, once.
const CHUNKS: u32 = 8;
const CHUNK: &str = "ok ";
/// Longer than any answer may take: a request still unanswered then counts as hung.
const HUNG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_task_topics_leader_killed_under_load_loses_no_accepted_task_and_the_cluster_heals() {
    drill(Victim::TaskLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_results_partitions_leader_killed_under_load_loses_no_answer_and_the_cluster_heals() {
    drill(Victim::ResultsLeader).await;
}

/// Which broker a drill kills.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// The one leading the most partitions of the interactive task topic (not the gateway's results
    /// partition, so the drill is about the tasks' path).
    TaskLeader,
    /// The leader of the results partition the gateway reads.
    ResultsLeader,
}

async fn drill(victim: Victim) {
    let _turn = TURNS.lock().await;
    let (Some(listener), Some(cluster)) = (Listener::cluster_sasl_ssl("SCRAM-SHA-512"), Cluster::from_env()) else {
        return;
    };
    let names = Names::new();
    let (interactive, results) = (names.topic("interactive"), names.topic("results"));
    // A node the previous drill restarted may still be catching up.
    cluster.wait_until_whole(&[]).await;

    let script = r1_mock_upstream::Script::default()
        .content(CHUNKS, CHUNK)
        .delays(Duration::from_millis(20), Duration::from_millis(20));
    let upstream = r1_mock_upstream::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), script)
        .await
        .unwrap();
    let center = Center::start_on(&names, "center-a", &upstream.url(), &listener);
    let gw = kafka_gateway_on(&names, &[], 0, &listener).await;
    center.wait_until_serving().await;
    gw.wait_until_center_seen().await;

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, url) = (gw.client.clone(), format!("{}/v1/chat/completions", gw.public));
            tokio::spawn(ask_until(client, url, c, stop.clone(), answered.clone()))
        })
        .collect();
    let answers = |n: u64| {
        let answered = answered.clone();
        async move {
            let deadline = Instant::now() + HUNG;
            while answered.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "fewer than {n} answers");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    answers(40).await; // steady load first

    let node = match victim {
        Victim::TaskLeader => {
            let results_leader = cluster.partitions(&results).await[0].leader;
            let mut counts = [0usize; 4];
            for p in cluster.partitions(&interactive).await {
                counts[usize::try_from(p.leader).unwrap()] += 1;
            }
            (1..=3)
                .filter(|&n| n != results_leader)
                .max_by_key(|&n| counts[usize::try_from(n).unwrap()])
                .unwrap()
        }
        Victim::ResultsLeader => cluster.partitions(&results).await[0].leader,
    };
    let led: Vec<i32> = cluster
        .partitions(&interactive)
        .await
        .iter()
        .filter(|p| p.leader == node)
        .map(|p| p.id)
        .collect();
    let revive = Restart("kafka-cluster"); // whatever happens below, the node comes back
    let killed_at = Instant::now();
    services(&["kill-broker", &node.to_string()]);

    // The controller fences the node once its heartbeats stop, and moves its partitions to the others.
    let deadline = Instant::now() + HUNG;
    loop {
        let moved = cluster.brokers().await.iter().all(|&b| b != node)
            && [&interactive, &results]
                .iter()
                .all(|t| cluster.all_partitions(t, false, |p| p.leader != node && p.leader >= 0));
        if moved {
            break;
        }
        assert!(Instant::now() < deadline, "node {node}'s partitions did not move");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fenced_after = killed_at.elapsed();
    answers(answered.load(Ordering::Relaxed) + 40).await; // flowing on two brokers

    let restarted_at = Instant::now();
    tokio::task::block_in_place(|| services(&["start-broker", &node.to_string()]));
    let started_after = restarted_at.elapsed();
    cluster
        .wait_until_whole(&[&interactive, &results, &names.topic("cancel")])
        .await;
    let healed_after = restarted_at.elapsed();
    drop(revive);
    answers(answered.load(Ordering::Relaxed) + 20).await; // and on three again

    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    let report = Report::new(&outcomes, killed_at);
    let pools = gw.pools().await;
    let suppressed = center.metric("r1_center_duplicates_suppressed_total").await;
    let redelivered = center.metric("r1_center_redeliveries_total").await;
    let runs = upstream.stats().snapshot().received;
    println!(
        "{victim:?}: node {node} killed (led interactive partitions {led:?}); fenced and moved after {fenced_after:.1?}; \
         restarted in {started_after:.1?}, ISR 3 again {healed_after:.1?} after the restart. {report}; \
         model runs {runs}, redeliveries {redelivered}, duplicates suppressed by the center {suppressed}, \
         result chunks dropped as duplicates by the gateway {}",
        pools["handoff"]["results_duplicates"]
    );

    assert!(
        report.failed.is_empty(),
        "{} requests failed: {:?}",
        report.failed.len(),
        &report.failed[..report.failed.len().min(5)]
    );
    assert!(report.accepted >= 100, "steady load: {report}");
    assert_eq!(report.answered, report.accepted, "every accepted task answered once");
    assert!(
        runs >= u64::try_from(report.answered).unwrap(),
        "each answer came from a model run"
    );
    if let Some((first, last)) = report.burst {
        assert!(first >= 0.0, "no 503 before the kill: {report}");
        assert!(last - first <= 15.0, "a short burst: {report}");
        assert!(
            last <= (fenced_after + Duration::from_secs(10)).as_secs_f64(),
            "the 503s end once the partitions moved: {report}"
        );
    }
    assert!(
        report.slowest_refusal <= Duration::from_millis(4500),
        "a 503 is quick (send_timeout 3 s, and a 500 ms backstop): {report}"
    );
    gw.stop();
    upstream.shutdown().await.unwrap();
}

/// What one request got.
#[derive(Debug)]
struct Outcome {
    sent: Instant,
    latency: Duration,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A 200 with the whole answer, once.
    Answered,
    /// A 503 with `Retry-After`: not accepted.
    Refused,
    /// Anything else: a lost, cut, doubled or hung answer.
    Failed(String),
}

/// Client `c`: asks until `stop`, each question its own conversation (so tasks spread over every
/// partition), streamed and not in turn.
async fn ask_until(
    client: reqwest::Client,
    url: String,
    c: usize,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let stream = (c + i).is_multiple_of(2);
        let body = ask_center(&format!("client {c}, question {i}"), stream);
        let sent = Instant::now();
        let kind = tokio::time::timeout(HUNG, ask(&client, &url, &body, stream))
            .await
            .unwrap_or_else(|_| Kind::Failed(format!("no answer within {HUNG:?}")));
        if matches!(kind, Kind::Answered) {
            answered.fetch_add(1, Ordering::Relaxed);
        }
        let refused = matches!(kind, Kind::Refused);
        outcomes.push(Outcome {
            sent,
            latency: sent.elapsed(),
            kind,
        });
        if refused {
            // Sooner than `Retry-After` asks, to map the burst finely.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        i += 1;
    }
    outcomes
}

async fn ask(client: &reqwest::Client, url: &str, body: &Value, stream: bool) -> Kind {
    let r = match client.post(url).json(body).send().await {
        Ok(r) => r,
        Err(e) => return Kind::Failed(format!("request: {e}")),
    };
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    let text = match r.text().await {
        Ok(t) => t,
        Err(e) => return Kind::Failed(format!("{status}, body cut: {e}")),
    };
    match status {
        503 if retry_after => Kind::Refused,
        200 => {
            let content = if stream {
                let (content, _, done, error) = read_sse(&text);
                if !done || error.is_some() {
                    return Kind::Failed(format!("stream without [DONE] or with an error: {text}"));
                }
                content
            } else {
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["choices"][0]["message"]["content"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            if content == CHUNK.repeat(CHUNKS as usize) {
                Kind::Answered
            } else {
                Kind::Failed(format!("not the one complete answer: {content:?}"))
            }
        }
        _ => Kind::Failed(format!("{status}: {text}")),
    }
}

/// The counts a drill asserts on and reports.
struct Report {
    accepted: usize,
    answered: usize,
    refused: usize,
    failed: Vec<String>,
    /// When the first and the last refused request ended, in seconds after the kill.
    burst: Option<(f64, f64)>,
    slowest_answer: Duration,
    slowest_refusal: Duration,
}

impl Report {
    fn new(outcomes: &[Outcome], killed_at: Instant) -> Self {
        let since_kill = |o: &Outcome| {
            o.sent
                .checked_duration_since(killed_at)
                .map_or_else(|| -((killed_at - o.sent).as_secs_f64()), |d| d.as_secs_f64())
        };
        let refused: Vec<&Outcome> = outcomes.iter().filter(|o| matches!(o.kind, Kind::Refused)).collect();
        // A request in flight at the kill may be refused: it counts from when it ended.
        let burst = refused
            .iter()
            .map(|o| since_kill(o) + o.latency.as_secs_f64())
            .fold(None, |b: Option<(f64, f64)>, t| {
                Some(b.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))))
            });
        let max = |kind: fn(&Kind) -> bool| {
            outcomes
                .iter()
                .filter(|o| kind(&o.kind))
                .map(|o| o.latency)
                .max()
                .unwrap_or_default()
        };
        Self {
            accepted: outcomes.iter().filter(|o| !matches!(o.kind, Kind::Refused)).count(),
            answered: outcomes.iter().filter(|o| matches!(o.kind, Kind::Answered)).count(),
            refused: refused.len(),
            failed: outcomes
                .iter()
                .filter_map(|o| match &o.kind {
                    Kind::Failed(why) => Some(format!("{:+.1}s after the kill: {why}", since_kill(o))),
                    _ => None,
                })
                .collect(),
            burst,
            slowest_answer: max(|k| matches!(k, Kind::Answered)),
            slowest_refusal: max(|k| matches!(k, Kind::Refused)),
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "accepted {}, answered once {}, failed {}, 503 + Retry-After {}",
            self.accepted,
            self.answered,
            self.failed.len(),
            self.refused
        )?;
        if let Some((first, last)) = self.burst {
            write!(f, " (ended {first:.1} s to {last:.1} s after the kill)")?;
        }
        write!(
            f,
            ", slowest answer {:.2?}, slowest 503 {:.2?}",
            self.slowest_answer, self.slowest_refusal
        )
    }
}

/// One partition as the cluster's metadata describes it.
#[derive(Debug)]
struct Partition {
    id: i32,
    leader: i32,
    isr: usize,
}

/// The cluster's metadata, read over its PLAINTEXT listeners.
struct Cluster {
    client: BaseConsumer,
}

impl Cluster {
    fn from_env() -> Option<Self> {
        let Some(brokers) = std::env::var("R1_TEST_KAFKA_CLUSTER_BROKERS")
            .ok()
            .filter(|b| !b.is_empty())
        else {
            println!("skipped: R1_TEST_KAFKA_CLUSTER_BROKERS is not set (eval \"$(scripts/services.sh env)\")");
            return None;
        };
        let client = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("allow.auto.create.topics", "false")
            .create()
            .unwrap();
        Some(Self { client })
    }

    fn partitions_now(&self, topic: &str) -> Vec<Partition> {
        let Ok(metadata) = self.client.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
            return Vec::new();
        };
        metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| Partition {
                id: p.id(),
                leader: p.leader(),
                isr: p.isr().len(),
            })
            .collect()
    }

    async fn partitions(&self, topic: &str) -> Vec<Partition> {
        let mut partitions = tokio::task::block_in_place(|| self.partitions_now(topic));
        partitions.sort_by_key(|p| p.id);
        partitions
    }

    /// Whether every partition of `topic` satisfies `ok`; a topic that does not exist (yet) passes if
    /// `missing_ok`.
    fn all_partitions(&self, topic: &str, missing_ok: bool, ok: impl Fn(&Partition) -> bool) -> bool {
        let partitions = tokio::task::block_in_place(|| self.partitions_now(topic));
        if partitions.is_empty() {
            return missing_ok;
        }
        partitions.iter().all(ok)
    }

    /// The brokers the metadata lists (a killed one until the controller fences it).
    async fn brokers(&self) -> Vec<i32> {
        tokio::task::block_in_place(|| {
            self.client
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|m| m.brokers().iter().map(|b| b.id()).collect())
                .unwrap_or_default()
        })
    }

    /// Waits until three brokers are listed and every partition of `topics` and of the group offsets
    /// topic (once a group made it) has all three in sync.
    async fn wait_until_whole(&self, topics: &[&String]) {
        let deadline = Instant::now() + HUNG;
        loop {
            let whole = self.brokers().await.len() == 3
                && topics
                    .iter()
                    .map(|t| t.as_str())
                    .chain(["__consumer_offsets"])
                    .all(|t| self.all_partitions(t, t == "__consumer_offsets", |p| p.isr == 3));
            if whole {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not heal: {topics:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
