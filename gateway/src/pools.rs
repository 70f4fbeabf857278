//! The upstream pools (edge, center): Pingora load balancers over members that come from the live
//! configuration, with active health checks, passive outlier ejection and in-flight accounting.
//!
//! - **Members** are discovered from the current configuration every second, so a reload that
//!   changes them takes effect without a restart; in-flight requests to a removed member finish.
//! - **Active health checks** (`GET <health.path>`, 200 = healthy) mark a member down after
//!   `unhealthy_threshold` consecutive failures and up after `healthy_threshold` successes.
//! - **Outlier ejection**: `unhealthy_threshold` consecutive failed live requests eject a member
//!   for `EJECTION` (it is reported disabled to the balancer), whatever the probes say meanwhile.
//! - **Saturation**: a pool with `max_in_flight` requests in flight reports itself saturated, and
//!   the router fails over to the other pool. So does a pool whose every ready member said it is busy
//!   (429, or 503, before any token): such a member is skipped for its `Retry-After` (1 s when it gives
//!   none, at most [`MAX_BUSY`]), so an overloaded member is not sent more until it has room, and a pool
//!   with none left sheds at once instead of queueing every stream behind the slow ones.
//! - **What it serves** is learned from each member's model card with the health checks and
//!   overridden by `[<pool>.capabilities]` (see [`crate::card`]); the router keeps a request off a
//!   pool that cannot serve it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use r1_proto::{Capabilities, Route};
use serde::Serialize;

use crate::card::{CARD_LIMIT, CARD_REFRESH, CapabilitiesSection};
use crate::config::PoolSettings;
use crate::route::PoolState;

/// How long an outlier stays out of rotation.
pub const EJECTION: Duration = Duration::from_secs(10);

/// The longest a member that said it is busy is skipped, whatever its `Retry-After` asks.
pub const MAX_BUSY: Duration = Duration::from_secs(5);

/// Members, ejections and what they serve, shared between a pool, its balancer's discovery and its
/// health checks.
#[derive(Debug)]
pub struct Membership {
    route: Route,
    members: ArcSwap<Vec<String>>,
    /// Per configured member: the address it resolved to at the last discovery.
    resolved: Mutex<HashMap<String, String>>,
    /// Per resolved address: consecutive live failures, and when an ejection ends.
    outliers: Mutex<HashMap<String, (u32, Option<Instant>)>>,
    /// What a member serves when its card says nothing: the edge plain chat, the center everything.
    baseline: Capabilities,
    /// The pool's model (the card entry read) and `[<pool>.capabilities]`.
    settings: ArcSwap<(String, CapabilitiesSection)>,
    /// Per resolved address: what its card says (`None`: nothing readable), and when it was read.
    cards: Mutex<HashMap<String, (Option<Capabilities>, Instant)>>,
    /// What the pool serves: its members' common capabilities, config applied.
    serves: ArcSwap<Capabilities>,
    /// Per resolved address: until when a member that said it is busy is skipped.
    busy: Mutex<HashMap<String, Instant>>,
    /// The latest of those instants, as milliseconds since `epoch`: selection takes the lock only
    /// while some member may still be busy.
    busy_until_ms: AtomicU64,
    epoch: Instant,
}

impl Membership {
    fn new(route: Route, settings: PoolSettings<'_>) -> Self {
        let baseline = match route {
            Route::Edge => Capabilities::PLAIN,
            _ => Capabilities::FULL,
        };
        let membership = Self {
            route,
            members: ArcSwap::from_pointee(settings.members.to_vec()),
            resolved: Mutex::default(),
            outliers: Mutex::default(),
            baseline,
            settings: ArcSwap::from_pointee((settings.model.to_owned(), settings.capabilities.clone())),
            cards: Mutex::default(),
            serves: ArcSwap::from_pointee(settings.capabilities.apply(baseline)),
            busy: Mutex::default(),
            busy_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        membership.recompute();
        membership
    }

    /// The card path to read for the member at `address`, if its card is due (never read, or stale).
    pub fn card_due(&self, address: &str, now: Instant) -> Option<String> {
        let settings = self.settings.load();
        if !settings.1.discover {
            return None;
        }
        let cards = self.cards.lock().ok()?;
        match cards.get(address) {
            Some((_, read)) if now.saturating_duration_since(*read) < CARD_REFRESH => None,
            _ => Some(settings.1.card_path.clone()),
        }
    }

    /// What a card body says of the pool's model.
    pub fn read_card(&self, body: &[u8]) -> Option<Capabilities> {
        crate::card::read_card(body, &self.settings.load().0, self.baseline)
    }

    /// Records what the member at `address` serves by its card, and what the pool then serves.
    pub fn learn(&self, address: &str, card: Option<Capabilities>, now: Instant) {
        let Ok(mut cards) = self.cards.lock() else {
            return;
        };
        let before = cards.insert(address.to_owned(), (card, now)).map(|(c, _)| c);
        drop(cards);
        if before != Some(card) {
            match &card {
                Some(c) => tracing::info!(pool = self.route.as_str(), member = address, serves = ?c, "model card read"),
                None => tracing::info!(
                    pool = self.route.as_str(),
                    member = address,
                    "model card unreadable or silent; counting the member as the pool's baseline"
                ),
            }
            self.recompute();
        }
    }

    /// What the pool serves now: what all its resolved members serve, with the config's keys applied.
    fn recompute(&self) {
        let addresses: Vec<String> = self
            .resolved
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        let learned: Vec<Capabilities> = {
            let cards = self.cards.lock().map(|c| c.clone()).unwrap_or_default();
            addresses
                .iter()
                .map(|a| cards.get(a).and_then(|(c, _)| *c).unwrap_or(self.baseline))
                .collect()
        };
        let common = Capabilities::common(&learned).unwrap_or(self.baseline);
        let serves = self.settings.load().1.apply(common);
        if **self.serves.load() != serves {
            tracing::info!(pool = self.route.as_str(), ?serves, "pool capabilities");
            self.serves.store(Arc::new(serves));
        }
    }

    /// Takes a reloaded model name and `[<pool>.capabilities]`.
    fn reconfigure(&self, model: &str, capabilities: &CapabilitiesSection) {
        let settings = self.settings.load();
        if settings.0 != model || settings.1 != *capabilities {
            if settings.0 != model
                && let Ok(mut cards) = self.cards.lock()
            {
                // Another model: every card is read again for its entry.
                cards.clear();
            }
            self.settings.store(Arc::new((model.to_owned(), capabilities.clone())));
            self.recompute();
        }
    }
}

/// Feeds the balancer the configured members (names resolved), with ejected ones disabled.
struct ConfigDiscovery(Arc<Membership>);

fn backend_key(backend: &Backend) -> u64 {
    let mut hasher = DefaultHasher::new();
    backend.hash(&mut hasher);
    hasher.finish()
}

#[async_trait]
impl ServiceDiscovery for ConfigDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let members = self.0.members.load_full();
        let now = Instant::now();
        let outliers = self.0.outliers.lock().map(|o| o.clone()).unwrap_or_default();
        let mut backends = BTreeSet::new();
        let mut enabled = HashMap::new();
        let mut resolved = HashMap::new();
        for member in members.iter() {
            // A name not (yet) in DNS stays out of rotation until it resolves.
            let address = match tokio::net::lookup_host(member.as_str()).await.map(|mut a| a.next()) {
                Ok(Some(address)) => address.to_string(),
                Ok(None) | Err(_) => {
                    tracing::warn!(member, "cannot resolve pool member");
                    continue;
                }
            };
            let Ok(backend) = Backend::new(&address) else { continue };
            let ejected = outliers
                .get(&address)
                .and_then(|(_, until)| *until)
                .is_some_and(|until| until > now);
            enabled.insert(backend_key(&backend), !ejected);
            backends.insert(backend);
            resolved.insert(member.clone(), address);
        }
        let live: BTreeSet<String> = resolved.values().cloned().collect();
        let changed = self.0.resolved.lock().is_ok_and(|mut map| {
            let changed = *map != resolved;
            *map = resolved;
            changed
        });
        if changed {
            // Members came or went: forget the cards of those gone, and what the pool serves follows.
            if let Ok(mut cards) = self.0.cards.lock() {
                cards.retain(|address, _| live.contains(address));
            }
            self.0.recompute();
        }
        Ok((backends, enabled))
    }
}

/// One pool.
pub struct Pool {
    route: Route,
    balancer: Arc<LoadBalancer<RoundRobin>>,
    membership: Arc<Membership>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    unhealthy_threshold: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("route", &self.route)
            .field("members", &self.membership.members.load())
            .finish()
    }
}

/// A member as `/admin/pools` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// `host:port` as configured (a name or an address).
    pub address: String,
    /// Passing health checks and not ejected.
    pub ready: bool,
    /// What its model card says it serves (absent: not read, or silent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serves: Option<Capabilities>,
    /// Consecutive failed live requests.
    pub consecutive_failures: u32,
    /// Ejected as an outlier right now.
    pub ejected: bool,
    /// Said it is busy and is skipped right now.
    pub busy: bool,
}

/// A pool as `/admin/pools` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// `edge` or `center`.
    pub pool: &'static str,
    /// Members and their state.
    pub members: Vec<MemberStatus>,
    /// Requests in flight.
    pub in_flight: usize,
    /// Saturation point.
    pub max_in_flight: usize,
    /// What the pool serves (its members in common, config applied).
    pub serves: Capabilities,
}

impl Pool {
    /// The balancer for a pool: members from `membership`, HTTP health checks (and model card reads)
    /// as `settings` say. It must run as a Pingora background service (discovery every second, probes
    /// every interval); the pool is then built around the running service's task with [`Pool::new`].
    pub fn balancer(route: Route, settings: PoolSettings<'_>) -> (Arc<Membership>, LoadBalancer<RoundRobin>) {
        let membership = Arc::new(Membership::new(route, settings));
        let health = settings.health;
        let mut backends = Backends::new(Box::new(ConfigDiscovery(membership.clone())));
        let mut check = match settings.tls {
            Some(tls) => {
                let mut check = HttpHealthCheck::new(&tls.sni, true);
                check.peer_template.options.verify_cert = tls.verify;
                check.peer_template.options.verify_hostname = tls.verify;
                check
            }
            None => HttpHealthCheck::new("localhost", false),
        };
        check.consecutive_success = health.healthy_threshold as usize;
        check.consecutive_failure = health.unhealthy_threshold as usize;
        check.peer_template.options.connection_timeout = Some(Duration::from_secs(1));
        check.peer_template.options.read_timeout = Some(Duration::from_secs(2));
        if let Ok(uri) = health.path.parse() {
            check.req.set_uri(uri);
        }
        backends.set_health_check(Box::new(MemberCheck::new(check, membership.clone())));
        let mut balancer = LoadBalancer::from_backends(backends);
        balancer.health_check_frequency = Some(health.interval);
        balancer.update_frequency = Some(Duration::from_secs(1));
        balancer.parallel_health_check = true;
        (membership, balancer)
    }

    /// A pool over a running balancer.
    pub fn new(
        route: Route,
        membership: Arc<Membership>,
        balancer: Arc<LoadBalancer<RoundRobin>>,
        max_in_flight: usize,
        unhealthy_threshold: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            route,
            balancer,
            membership,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(max_in_flight),
            unhealthy_threshold: AtomicUsize::new(unhealthy_threshold as usize),
        })
    }

    /// Applies a reloaded configuration's members, limits and capabilities.
    pub fn reconfigure(&self, settings: PoolSettings<'_>) {
        self.membership.members.store(Arc::new(settings.members.to_vec()));
        self.max_in_flight.store(settings.max_in_flight, Ordering::Relaxed);
        self.unhealthy_threshold
            .store(settings.health.unhealthy_threshold as usize, Ordering::Relaxed);
        self.membership.reconfigure(settings.model, settings.capabilities);
    }

    /// What the pool serves now.
    pub fn serves(&self) -> Capabilities {
        **self.membership.serves.load()
    }

    /// A ready member, round robin, skipping `exclude` (members already tried for this request) and
    /// members that said they are busy.
    pub fn select(&self, exclude: &[String]) -> Option<Backend> {
        let busy = self.busy_members();
        self.balancer.select_with(b"", 64, |backend, healthy| {
            if !healthy {
                return false;
            }
            if exclude.is_empty() && busy.is_none() {
                return true; // the common case: no address to format
            }
            let address = backend.addr.to_string();
            !exclude.contains(&address) && busy.as_ref().is_none_or(|busy| !busy.contains(&address))
        })
    }

    /// Health and capacity, for the router: saturated at `max_in_flight`, or when every ready member
    /// said it is busy.
    pub fn state(&self) -> PoolState {
        let backends = self.balancer.backends();
        let busy = self.busy_members();
        let mut healthy = false;
        let mut room = false;
        for backend in backends.get_backend().iter().filter(|b| backends.ready(b)) {
            healthy = true;
            room |= busy
                .as_ref()
                .is_none_or(|busy| !busy.contains(&backend.addr.to_string()));
        }
        PoolState {
            healthy,
            saturated: !room || self.in_flight.load(Ordering::Relaxed) >= self.max_in_flight.load(Ordering::Relaxed),
            serves: self.serves(),
            configured: !self.membership.members.load().is_empty(),
        }
    }

    /// A member answered that it is busy (429, or 503 before any token): it is skipped for
    /// `retry_after` (1 s when it gave none), at most [`MAX_BUSY`].
    pub fn busy(&self, member: &str, retry_after: Option<Duration>) {
        let wait = retry_after
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(100), MAX_BUSY);
        let until = Instant::now() + wait;
        let m = &self.membership;
        if let Ok(mut busy) = m.busy.lock() {
            busy.insert(member.to_owned(), until);
            let ms = u64::try_from(until.duration_since(m.epoch).as_millis()).unwrap_or(u64::MAX);
            m.busy_until_ms.fetch_max(ms, Ordering::Relaxed);
        }
        tracing::info!(
            pool = self.route.as_str(),
            member,
            ?wait,
            "member busy: skipped until it has room"
        );
    }

    /// The members still busy now; `None` (no lock taken) when none can be.
    fn busy_members(&self) -> Option<BTreeSet<String>> {
        let m = &self.membership;
        let now_ms = u64::try_from(m.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if m.busy_until_ms.load(Ordering::Relaxed) <= now_ms {
            return None;
        }
        let mut busy = m.busy.lock().ok()?;
        let now = Instant::now();
        busy.retain(|_, until| *until > now);
        Some(busy.keys().cloned().collect())
    }

    /// Counts a request in flight until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Reports a live request's outcome for outlier ejection (`member` as selected: the resolved address).
    pub fn report(&self, member: &str, ok: bool) {
        let Ok(mut outliers) = self.membership.outliers.lock() else {
            return;
        };
        if ok {
            // The common case: no allocation, and nothing to write for a member with no failures.
            if let Some(entry) = outliers.get_mut(member) {
                *entry = (0, None);
            }
            return;
        }
        let entry = outliers.entry(member.to_owned()).or_insert((0, None));
        entry.0 += 1;
        if entry.0 as usize >= self.unhealthy_threshold.load(Ordering::Relaxed)
            && entry.1.is_none_or(|t| t <= Instant::now())
        {
            entry.1 = Some(Instant::now() + EJECTION);
            tracing::warn!(
                pool = self.route.as_str(),
                member,
                failures = entry.0,
                ?EJECTION,
                "ejecting outlier"
            );
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Members and state, for `/admin/pools`.
    pub fn status(&self) -> PoolStatus {
        let backends = self.balancer.backends();
        let now = Instant::now();
        let outliers = self.membership.outliers.lock().map(|o| o.clone()).unwrap_or_default();
        let resolved = self.membership.resolved.lock().map(|r| r.clone()).unwrap_or_default();
        let cards = self.membership.cards.lock().map(|c| c.clone()).unwrap_or_default();
        let busy = self.busy_members().unwrap_or_default();
        let members = self
            .membership
            .members
            .load()
            .iter()
            .map(|member| {
                let address = resolved.get(member);
                let ready = address
                    .and_then(|a| Backend::new(a).ok())
                    .is_some_and(|b| backends.ready(&b));
                let (failures, until) = address.and_then(|a| outliers.get(a)).copied().unwrap_or((0, None));
                MemberStatus {
                    address: member.clone(),
                    ready,
                    serves: address.and_then(|a| cards.get(a)).and_then(|(c, _)| *c),
                    consecutive_failures: failures,
                    ejected: until.is_some_and(|u| u > now),
                    busy: address.is_some_and(|a| busy.contains(a)),
                }
            })
            .collect();
        PoolStatus {
            pool: self.route.as_str(),
            members,
            in_flight: self.in_flight(),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            serves: self.serves(),
        }
    }
}

/// The health check of a pool's members: the configured HTTP probe, then (once it passes, and the
/// card is stale) a read of the member's model card into the pool's [`Membership`].
pub struct MemberCheck {
    http: HttpHealthCheck,
    connector: Connector,
    membership: Arc<Membership>,
}

impl std::fmt::Debug for MemberCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberCheck")
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl MemberCheck {
    /// Wraps `http` (whose peer settings and `Host` the card read reuses).
    pub fn new(http: HttpHealthCheck, membership: Arc<Membership>) -> Self {
        Self {
            http,
            connector: Connector::new(None),
            membership,
        }
    }

    async fn fetch_card(&self, target: &Backend, path: &str) -> pingora::Result<Vec<u8>> {
        use pingora::{Error, ErrorType};
        let mut peer = self.http.peer_template.clone();
        peer._address = target.addr.clone();
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        let mut request = self.http.req.clone();
        request.set_uri(
            path.parse()
                .map_err(|e| Error::because(ErrorType::InternalError, "card path", e))?,
        );
        session.set_write_timeout(peer.options.write_timeout);
        session.write_request_header(Box::new(request)).await?;
        session.finish_request_body().await?;
        session.set_read_timeout(peer.options.read_timeout);
        session.read_response_header().await?;
        let status = session.response_header().map_or(0, |h| h.status.as_u16());
        if status != 200 {
            return Error::e_explain(ErrorType::CustomCode("card status", status), "reading a model card");
        }
        let mut body = Vec::new();
        while let Some(chunk) = session.read_response_body().await? {
            if body.len() + chunk.len() > CARD_LIMIT {
                return Error::e_explain(ErrorType::InternalError, "model card over 1 MiB");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[async_trait]
impl HealthCheck for MemberCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        self.http.check(target).await?;
        let address = target.addr.to_string();
        let Some(path) = self.membership.card_due(&address, Instant::now()) else {
            return Ok(());
        };
        let card = match self.fetch_card(target, &path).await {
            Ok(body) => self.membership.read_card(&body),
            Err(e) => {
                tracing::debug!(member = %address, error = %e, "model card not read");
                None
            }
        };
        self.membership.learn(&address, card, Instant::now());
        Ok(())
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        self.http.health_status_change(target, healthy).await;
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.http.health_threshold(success)
    }
}

/// One request in flight on a pool; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<Pool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;

    #[test]
    fn a_pool_serves_what_all_its_members_serve_and_config_has_the_last_word() {
        let config = GatewayConfig::parse("[edge]\nmembers = [\"a:1\", \"b:1\"]\n").unwrap();
        let membership = Membership::new(Route::Edge, config.pool(Route::Edge));
        if let Ok(mut resolved) = membership.resolved.lock() {
            resolved.insert("a:1".to_owned(), "10.0.0.1:1".to_owned());
            resolved.insert("b:1".to_owned(), "10.0.0.2:1".to_owned());
        }
        let now = Instant::now();
        let card = |max_tokens| Capabilities {
            max_tokens: Some(max_tokens),
            context_length: Some(4096),
            ..Capabilities::PLAIN
        };
        membership.learn("10.0.0.1:1", Some(card(1024)), now);
        membership.learn("10.0.0.2:1", Some(card(512)), now);
        assert_eq!(membership.serves.load().max_tokens, Some(512), "the lowest limit");
        assert_eq!(membership.card_due("10.0.0.1:1", now), None, "fresh");
        assert_eq!(
            membership.card_due("10.0.0.1:1", now + CARD_REFRESH).as_deref(),
            Some("/v1/models"),
            "read again once stale"
        );

        let tuned = GatewayConfig::parse("[edge.capabilities]\nmax_tokens = 64\ntools = true\n").unwrap();
        membership.reconfigure(&tuned.edge.model, &tuned.edge.capabilities);
        let serves = **membership.serves.load();
        assert_eq!(
            (serves.max_tokens, serves.context_length, serves.tools),
            (Some(64), Some(4096), true)
        );

        let off = GatewayConfig::parse("[edge.capabilities]\ndiscover = false\n").unwrap();
        membership.reconfigure(&off.edge.model, &off.edge.capabilities);
        assert_eq!(membership.card_due("10.0.0.3:1", now), None, "no card is read");
    }
}
