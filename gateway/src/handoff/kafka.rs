//! The Kafka side of the hand-off service: topics, the results reader, the task store, topics for new model versions.

use super::*;
use r1_queue::redis_conn::RedisClient;

pub(super) async fn run_kafka(
    handoff: &Arc<Handoff>,
    k: &CenterKafkaSection,
    settings: &r1_queue::kafka::KafkaSettings,
    mut config: watch::Receiver<Arc<GatewayConfig>>,
    mut shutdown: ShutdownWatch,
) {
    let topics = k.topics();
    let mut wait = Duration::from_millis(200);
    let reader = loop {
        let attempt = async {
            // A refusal (the brokers' login or TLS) stays a refusal: say so, as an error, on every try;
            // readiness stays false until the brokers accept the settings (e.g. a rotated password).
            let check = {
                let settings = settings.clone();
                tokio::task::spawn_blocking(move || check_brokers(&settings, BROKER_CHECK)).await
            };
            match check {
                Ok(Err(e)) if e.is_refusal() => {
                    tracing::error!(error = %describe_check(&e, k), "Kafka refuses this gateway");
                    anyhow::bail!("{}", describe_check(&e, k));
                }
                Ok(Err(e)) => anyhow::bail!("{}", describe_check(&e, k)),
                Ok(Ok(())) => {}
                Err(e) => anyhow::bail!("{e}"),
            }
            ensure_topics(settings, &topics, 12, k.result_partitions).await?;
            let (settings, topics, reply_to, router) = (
                settings.clone(),
                topics.clone(),
                handoff.reply_to.clone(),
                handoff.router.clone(),
            );
            tokio::task::spawn_blocking(move || {
                spawn_results_reader(&settings, &topics, &reply_to, router).map_err(anyhow::Error::from)
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
        };
        match attempt.await {
            Ok(reader) => break reader,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Kafka hand-off not ready; retrying");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    handoff.ready.store(true, Ordering::Relaxed);
    tracing::info!(reply_to = %handoff.reply_to, "Kafka hand-off ready");
    if let Some(redis) = handoff.redis.clone() {
        tokio::spawn(connect_states(handoff.clone(), redis));
    }
    let group = tokio::spawn(watch_center_groups(handoff.clone(), settings.clone(), config.clone()));
    let mut known = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = config.changed() => tick.reset_immediately(),
            _ = tick.tick() => {
                let versions: Vec<String> = config
                    .borrow()
                    .center
                    .versions
                    .iter()
                    .filter(|v| !known.contains(&v.name))
                    .map(|v| v.name.clone())
                    .collect();
                for version in versions {
                    match ensure_topics(settings, &topics.for_version(&version), 12, k.result_partitions).await {
                        Ok(()) => {
                            known.insert(version);
                        }
                        Err(e) => tracing::warn!(%version, error = %e, "creating the version's topics"),
                    }
                }
            }
        }
    }
    handoff.ready.store(false, Ordering::Relaxed);
    group.abort();
    reader.abort();
}

/// How often the center nodes' groups are looked at while they have members, and while they have none
/// (a node that joins is seen soon).
const GROUP_CHECK: Duration = Duration::from_secs(2);
const GROUP_CHECK_EMPTY: Duration = Duration::from_millis(250);
/// A request about to be refused because no node was there looks again if the last look is older.
const FRESH_LOOK: Duration = Duration::from_millis(100);

/// The gateway's view of the r1-center nodes: their consumer groups (`center.kafka.center_group`, and
/// `<group>.<version>` for each model version), as the group coordinator describes them. The center
/// counts as up while a group's members hold task partitions (or it is stable with members): not while
/// the first members are still joining, and no longer once none is left. A rebalance changes nothing:
/// members keep what they hold (cooperative assignment). Up turns down only on two empty looks in a
/// row, and a look that gets no answer counts the nodes as up (fail open: Kafka keeps the tasks).
#[derive(Debug, Default)]
pub(crate) struct CenterView {
    up: AtomicBool,
    members: AtomicUsize,
    /// Looks in a row that found no member taking tasks.
    empty_looks: std::sync::atomic::AtomicU32,
    observer: std::sync::OnceLock<Arc<r1_queue::kafka_transport::GroupObserver>>,
    groups: std::sync::Mutex<Vec<String>>,
    /// When the last look finished (one look at a time).
    last_look: tokio::sync::Mutex<Option<Instant>>,
}

impl CenterView {
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn members(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }

    /// Whether nodes are up, looking again first if the last look is older than [`FRESH_LOOK`] (so a
    /// node that joined a moment ago is not refused).
    pub(crate) async fn confirm(&self) -> bool {
        self.look(FRESH_LOOK).await;
        self.is_up()
    }

    /// Looks at the groups unless the last look is younger than `max_age`.
    async fn look(&self, max_age: Duration) {
        let Some(observer) = self.observer.get().cloned() else {
            return;
        };
        let mut last = self.last_look.lock().await;
        if last.is_some_and(|at| at.elapsed() < max_age) {
            return;
        }
        let groups = self.groups.lock().map(|g| g.clone()).unwrap_or_default();
        let seen = tokio::task::spawn_blocking(move || {
            groups
                .iter()
                .map(|g| observer.describe(g, Duration::from_secs(2)).map(|v| (g.clone(), v)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        *last = Some(Instant::now());
        let failed = match seen {
            Ok(Ok(views)) => Ok(views),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let views = match failed {
            Ok(views) => views,
            Err(e) => {
                // The coordinator is moving or a broker is gone: no answer is not an empty group, and
                // refusing on a guess would turn a broker's failover into an outage. Fail open.
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot see the center nodes' consumer groups; counting them as up");
                }
                self.empty_looks.store(0, Ordering::Relaxed);
                return;
            }
        };
        let members: usize = views.iter().map(|(_, v)| v.members).sum();
        let was = self.is_up();
        let taking = views.iter().any(|(_, v)| v.is_taking());
        // Up → down only on two empty looks in a row: one look can catch a group between coordinators.
        let empty = if taking {
            0
        } else {
            self.empty_looks.fetch_add(1, Ordering::Relaxed) + 1
        };
        if taking {
            self.empty_looks.store(0, Ordering::Relaxed);
        }
        let now = taking || (was && empty < 2);
        self.members.store(members, Ordering::Relaxed);
        if now != was {
            self.up.store(now, Ordering::Relaxed);
            let groups: Vec<&str> = views.iter().map(|(g, _)| g.as_str()).collect();
            if now {
                tracing::info!(?groups, members, "center nodes hold the task partitions");
            } else {
                tracing::warn!(
                    ?groups,
                    "no center node in the consumer groups: center requests are refused"
                );
            }
        }
    }
}

/// Follows the center nodes' groups for as long as the hand-off runs.
async fn watch_center_groups(
    handoff: Arc<Handoff>,
    settings: r1_queue::kafka::KafkaSettings,
    mut config: watch::Receiver<Arc<GatewayConfig>>,
) {
    let view = &handoff.center;
    let created = tokio::task::spawn_blocking(move || r1_queue::kafka_transport::GroupObserver::new(&settings)).await;
    match created {
        Ok(Ok(observer)) => {
            let _ = view.observer.set(Arc::new(observer));
        }
        Ok(Err(e)) => return assume_up(view, &e.to_string()),
        Err(e) => return assume_up(view, &e.to_string()),
    }
    loop {
        let groups = center_groups(&config.borrow_and_update());
        if let Ok(mut g) = view.groups.lock() {
            *g = groups;
        }
        view.look(Duration::ZERO).await;
        let settled = view.is_up() && view.empty_looks.load(Ordering::Relaxed) == 0;
        let pause = if settled { GROUP_CHECK } else { GROUP_CHECK_EMPTY };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            changed = config.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(pause).await; // no more reloads: just the pace
                }
            }
        }
    }
}

fn assume_up(view: &CenterView, error: &str) {
    tracing::error!(
        error,
        "cannot watch the center nodes' consumer groups; counting them as up"
    );
    view.up.store(true, Ordering::Relaxed);
}

/// The consumer groups of the center nodes `config` sends tasks to.
fn center_groups(config: &GatewayConfig) -> Vec<String> {
    let Some(k) = &config.center.kafka else {
        return Vec::new();
    };
    std::iter::once(k.center_group.clone())
        .chain(
            config
                .center
                .versions
                .iter()
                .map(|v| format!("{}.{}", k.center_group, v.name)),
        )
        .collect()
}
/// Connects the asynchronous task store (Redis), retrying until it answers.
pub(super) async fn connect_states(handoff: Arc<Handoff>, (redis, timeout): (RedisClient, Duration)) {
    let mut wait = Duration::from_millis(200);
    loop {
        match RedisStateStore::connect(&redis, timeout).await {
            Ok(store) => {
                handoff
                    .states
                    .store(Some(Arc::new(Box::new(store) as Box<dyn StateStore>)));
                tracing::info!("asynchronous task store connected (Redis)");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "asynchronous task store (Redis) not reachable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
