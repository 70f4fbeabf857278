//! The Kafka side of the hand-off service: topics, the results reader, the task store, topics for new model versions.

use super::*;

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
    reader.abort();
}

/// Connects the asynchronous task store (Redis), retrying until it answers.
pub(super) async fn connect_states(handoff: Arc<Handoff>, redis: RedisSection) {
    let mut wait = Duration::from_millis(200);
    loop {
        match RedisStateStore::connect(&redis.url, redis.timeout).await {
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
