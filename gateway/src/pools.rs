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
//!   the router fails over to the other pool.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use r1_proto::Route;
use serde::Serialize;

use crate::config::HealthSection;
use crate::route::PoolState;

/// How long an outlier stays out of rotation.
pub const EJECTION: Duration = Duration::from_secs(10);

/// Members and ejections, shared between a pool and its balancer's discovery.
#[derive(Debug, Default)]
pub struct Membership {
    members: ArcSwap<Vec<String>>,
    /// Per configured member: the address it resolved to at the last discovery.
    resolved: Mutex<HashMap<String, String>>,
    /// Per resolved address: consecutive live failures, and when an ejection ends.
    outliers: Mutex<HashMap<String, (u32, Option<Instant>)>>,
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
        if let Ok(mut map) = self.0.resolved.lock() {
            *map = resolved;
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
    /// Consecutive failed live requests.
    pub consecutive_failures: u32,
    /// Ejected as an outlier right now.
    pub ejected: bool,
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
}

impl Pool {
    /// The balancer for a pool: members from `membership`, HTTP health checks as `health` says. It
    /// must run as a Pingora background service (discovery every second, probes every interval); the
    /// pool is then built around the running service's task with [`Pool::new`].
    pub fn balancer(
        members: &[String],
        health: &HealthSection,
        tls: Option<&crate::config::UpstreamTls>,
    ) -> (Arc<Membership>, LoadBalancer<RoundRobin>) {
        let membership = Arc::new(Membership::default());
        membership.members.store(Arc::new(members.to_vec()));
        let mut backends = Backends::new(Box::new(ConfigDiscovery(membership.clone())));
        let mut check = match tls {
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
        backends.set_health_check(Box::new(check));
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

    /// Applies a reloaded configuration's members and limits.
    pub fn reconfigure(&self, members: &[String], max_in_flight: usize, unhealthy_threshold: u32) {
        self.membership.members.store(Arc::new(members.to_vec()));
        self.max_in_flight.store(max_in_flight, Ordering::Relaxed);
        self.unhealthy_threshold
            .store(unhealthy_threshold as usize, Ordering::Relaxed);
    }

    /// A ready member, round robin, skipping `exclude` (members already tried for this request).
    pub fn select(&self, exclude: &[String]) -> Option<Backend> {
        self.balancer.select_with(b"", 64, |backend, healthy| {
            healthy && !exclude.contains(&backend.addr.to_string())
        })
    }

    /// Health and capacity, for the router.
    pub fn state(&self) -> PoolState {
        let backends = self.balancer.backends();
        let healthy = backends.get_backend().iter().any(|b| backends.ready(b));
        PoolState {
            healthy,
            saturated: self.in_flight.load(Ordering::Relaxed) >= self.max_in_flight.load(Ordering::Relaxed),
            serves: r1_proto::Capabilities::FULL,
        }
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
                    consecutive_failures: failures,
                    ejected: until.is_some_and(|u| u > now),
                }
            })
            .collect();
        PoolStatus {
            pool: self.route.as_str(),
            members,
            in_flight: self.in_flight(),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
        }
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
