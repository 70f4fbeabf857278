//! The route decision, in the order DESIGN.md fixes:
//! 1. explicit rules (header, JWT claim, model name), then a model name that pins a pool;
//! 2. the complexity score ([`crate::score`]);
//! 3. `score <= edge_max` → edge, `score >= center_min` → center, otherwise the weighted split;
//! 4. a conversation's tier only moves up (sticky by session key);
//! 5. health and capacity: an unhealthy or saturated pool fails over to the other;
//! 6. what each pool serves: a request a pool cannot serve (tools, `response_format`, logprobs, `n`,
//!    images, its `max_tokens` cap or context) goes to the other pool if that one can, whatever 1–5 said
//!    (a model pin excepted), and never fails over to a pool that cannot.
//!
//! Modes: `enforce` sends where the decision says; `shadow` computes the decision (returned as
//! [`Decision::shadow`] for metrics and logs) but sends by the weights alone; `off` uses the weights
//! alone and never scores. Everything here is synchronous and allocation-light: it runs on every request.

use std::sync::atomic::{AtomicU64, Ordering};

use moka::sync::Cache;
use r1_proto::{Capabilities, ChatCompletionRequest, Needs, Role, Route, RouteDecision, RouteReason, Tier, Unmet};

use crate::config::{GatewayConfig, NameValue, RoutingMode, Weights};
use crate::score::{Assessment, Scorer};

/// What the request carries besides its body: headers and, once authenticated, JWT claims.
pub trait RequestFacts {
    /// A header's value (name matched case-insensitively).
    fn header(&self, name: &str) -> Option<&str>;
    /// A JWT claim's value as text.
    fn claim(&self, name: &str) -> Option<&str>;
    /// Who is calling (the tenant): a conversation is one tenant's, so its session key includes it.
    /// Empty when unknown (`explain`).
    fn tenant(&self) -> &str {
        ""
    }
}

/// No headers, no claims: what `explain` runs with.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFacts;

impl RequestFacts for NoFacts {
    fn header(&self, _: &str) -> Option<&str> {
        None
    }
    fn claim(&self, _: &str) -> Option<&str> {
        None
    }
}

/// A pool as the router sees it at decision time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolState {
    /// At least one member is healthy.
    pub healthy: bool,
    /// In-flight requests reached the pool's `max_in_flight`.
    pub saturated: bool,
    /// What the pool can serve.
    pub serves: Capabilities,
    /// The pool has members (or a hand-off) at all: a pool with none is never where a request the
    /// other pool cannot serve is sent, while one that is merely down is (it answers 503, not 400).
    pub configured: bool,
}

impl PoolState {
    /// Healthy with room, serving everything.
    pub const READY: Self = Self {
        healthy: true,
        saturated: false,
        serves: Capabilities::FULL,
        configured: true,
    };
    /// No members at all.
    pub const ABSENT: Self = Self {
        healthy: false,
        configured: false,
        ..Self::READY
    };
    /// No healthy member.
    pub const DOWN: Self = Self {
        healthy: false,
        ..Self::READY
    };
    /// Healthy but at `max_in_flight`.
    pub const FULL: Self = Self {
        saturated: true,
        ..Self::READY
    };

    /// The same state, serving `serves`.
    pub const fn serving(self, serves: Capabilities) -> Self {
        Self { serves, ..self }
    }
}

/// Both pools.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pools {
    /// The edge pool.
    pub edge: PoolState,
    /// The center.
    pub center: PoolState,
}

impl Pools {
    /// Both healthy with room (what `explain` assumes).
    pub const READY: Self = Self {
        edge: PoolState::READY,
        center: PoolState::READY,
    };

    fn get(&self, route: Route) -> PoolState {
        match route {
            Route::Edge => self.edge,
            _ => self.center,
        }
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Where the request goes, and why.
    pub decision: RouteDecision,
    /// In shadow mode: what `enforce` would have done.
    pub shadow: Option<RouteDecision>,
    /// The scorer's view (empty when the scorer was not consulted).
    pub assessment: Option<Assessment>,
    /// The conversation key used for stickiness.
    pub session: u64,
    /// What no pool that may answer can serve: the request is refused with a 400 naming it.
    pub unservable: Option<Unmet>,
}

/// Makes route decisions; one per gateway, shared by all requests.
#[derive(Debug)]
pub struct Router {
    scorer: Scorer,
    split: WeightedSplit,
    /// Conversations that reached the center, so they stay there.
    sticky: Cache<u64, ()>,
}

impl Router {
    /// A router whose sticky memory is sized by `config`.
    pub fn new(config: &GatewayConfig) -> Self {
        Self {
            scorer: Scorer::new(),
            split: WeightedSplit::default(),
            sticky: Cache::builder()
                .max_capacity(config.routing.sticky_capacity)
                .time_to_idle(config.routing.sticky_ttl)
                .build(),
        }
    }

    /// Decides where `request` goes under `config`, given the pools' state.
    pub fn decide(
        &self,
        config: &GatewayConfig,
        request: &ChatCompletionRequest,
        facts: &dyn RequestFacts,
        pools: Pools,
    ) -> Decision {
        let routing = &config.routing;
        let session = session_key(facts.tenant(), request, facts.header(&routing.session_header));
        let (edge_max, center_min) = (routing.edge_max, routing.center_min);

        let pinned = if request.model == config.edge.model {
            Some(Route::Edge)
        } else if request.model == config.center.model {
            Some(Route::Center)
        } else {
            None
        };
        if routing.mode == RoutingMode::Off {
            // No scoring and no rules — but a pool's own model name still addresses that pool:
            // another pool would answer with another model.
            let decision = match pinned {
                Some(route) => RouteDecision::new(route, 0.0, Tier::Uncertain, RouteReason::Rule)
                    .with_detail(format!("model {}", request.model)),
                None => RouteDecision::new(
                    self.split.pick(routing.weights),
                    0.0,
                    Tier::Uncertain,
                    RouteReason::ModeOff,
                ),
            };
            let (decision, unservable) = serve(
                failover(decision, pools, pinned.is_some()),
                pools,
                request,
                pinned.is_some(),
            );
            return Decision {
                decision,
                shadow: None,
                assessment: None,
                session,
                unservable,
            };
        }

        let assessment = self.scorer.assess(request);
        let score = assessment.score;
        let tier = Tier::from_score(score, edge_max, center_min);

        // 1. Rules, then a pool's own model name.
        let rule = routing.rules.iter().find(|rule| {
            let w = &rule.when;
            (w.model.is_empty() || w.model.contains(&request.model))
                && w.header.as_ref().is_none_or(|nv| matches(facts.header(&nv.name), nv))
                && w.claim.as_ref().is_none_or(|nv| matches(facts.claim(&nv.name), nv))
        });
        let mut decision = if let Some(rule) = rule {
            RouteDecision::new(rule.route, score, tier, RouteReason::Rule).with_detail(rule.name.clone())
        } else if let Some(route) = pinned {
            RouteDecision::new(route, score, tier, RouteReason::Rule).with_detail(format!("model {}", request.model))
        } else {
            // 2–3. Score bands, weights in the middle.
            match tier {
                Tier::Simple => RouteDecision::new(Route::Edge, score, tier, RouteReason::BelowEdgeMax),
                Tier::Complex => RouteDecision::new(Route::Center, score, tier, RouteReason::AboveCenterMin),
                Tier::Uncertain => {
                    RouteDecision::new(self.split.pick(routing.weights), score, tier, RouteReason::Weighted)
                }
            }
        };
        // 4. A conversation that reached the center stays there (rules still win).
        if decision.route == Route::Edge && rule.is_none() && pinned.is_none() && self.sticky.contains_key(&session) {
            decision.route = Route::Center;
            decision.reason = RouteReason::StickySession;
        }
        // 5. Health and capacity (a model pin is honoured even when its pool is down: another model
        //    would be a different answer than the one asked for).
        let decision = failover(decision, pools, pinned.is_some() && rule.is_none());
        // 6. Only to a pool that can serve it.
        let (decision, unservable) = serve(decision, pools, request, pinned.is_some() && rule.is_none());
        if decision.route == Route::Center {
            self.sticky.insert(session, ());
        }

        if routing.mode == RoutingMode::Shadow {
            let route = self.split.pick(routing.weights);
            let actual = failover(
                RouteDecision::new(route, score, tier, RouteReason::Shadow),
                pools,
                false,
            );
            let (actual, unservable) = serve(actual, pools, request, false);
            return Decision {
                decision: actual,
                shadow: Some(decision),
                assessment: Some(assessment),
                session,
                unservable,
            };
        }
        Decision {
            decision,
            shadow: None,
            assessment: Some(assessment),
            session,
            unservable,
        }
    }
}

fn matches(value: Option<&str>, expected: &NameValue) -> bool {
    value == Some(expected.value.as_str())
}

/// Keeps the decision if its pool can serve `request`, else moves it to the other pool if that one can
/// (not for a model pin: the other pool is another model). `Some(unmet)` when neither may serve it.
fn serve(
    mut decision: RouteDecision,
    pools: Pools,
    request: &ChatCompletionRequest,
    pinned: bool,
) -> (RouteDecision, Option<Unmet>) {
    let chosen = pools.get(decision.route).serves;
    // The common case — a pool serving everything, or a plain request — needs no scan of the body.
    if chosen == Capabilities::FULL {
        return (decision, None);
    }
    let needs = Needs::of(request);
    let Some(unmet) = chosen.unmet(&needs) else {
        return (decision, None);
    };
    let other = match decision.route {
        Route::Edge => Route::Center,
        _ => Route::Edge,
    };
    let alternative = pools.get(other);
    if pinned || !alternative.configured || alternative.serves.unmet(&needs).is_some() {
        return (decision, Some(unmet));
    }
    decision.reason = match (decision.route, unmet) {
        (Route::Edge, Unmet::MaxTokens) => RouteReason::EdgeCannotServeMaxTokens,
        (Route::Edge, Unmet::Context) => RouteReason::EdgeCannotServeContext,
        (Route::Edge, Unmet::Tools) => RouteReason::EdgeCannotServeTools,
        (Route::Edge, Unmet::ResponseFormat) => RouteReason::EdgeCannotServeResponseFormat,
        (Route::Edge, Unmet::Logprobs) => RouteReason::EdgeCannotServeLogprobs,
        (Route::Edge, Unmet::N) => RouteReason::EdgeCannotServeN,
        (Route::Edge, Unmet::Images) => RouteReason::EdgeCannotServeImages,
        (Route::Edge, Unmet::Parameters) => RouteReason::EdgeCannotServeParameters,
        _ => RouteReason::CenterCannotServe,
    };
    decision.detail = Some(format!("{} cannot serve {}", decision.route.as_str(), unmet.as_str()));
    decision.route = other;
    (decision, None)
}

/// Sends to the other pool when the chosen one is down or full and the other is not.
fn failover(mut decision: RouteDecision, pools: Pools, pinned: bool) -> RouteDecision {
    if pinned {
        return decision;
    }
    let other = match decision.route {
        Route::Edge => Route::Center,
        _ => Route::Edge,
    };
    let (chosen, alternative) = (pools.get(decision.route), pools.get(other));
    let reason = if !chosen.healthy && alternative.healthy {
        Some(RouteReason::FailoverUnhealthy)
    } else if chosen.healthy && chosen.saturated && alternative.healthy && !alternative.saturated {
        Some(RouteReason::FailoverSaturated)
    } else {
        None
    };
    if let Some(reason) = reason {
        decision.route = other;
        decision.reason = reason;
    }
    decision
}

/// The conversation key, within one tenant: the session header if given, else a stable hash of the
/// conversation's first system and user messages (the same on every turn of one chat, and on every
/// gateway replica). Two tenants never share a conversation, whatever their messages or headers say.
pub fn session_key(tenant: &str, request: &ChatCompletionRequest, header: Option<&str>) -> u64 {
    let mut hash = Fnv1a::default();
    hash.write(tenant.as_bytes());
    hash.write(b"\0");
    match header {
        Some(value) => {
            hash.write(b"header\0");
            hash.write(value.as_bytes());
        }
        None => {
            let first_system = request.messages.iter().find(|m| m.role == Role::System);
            let first_user = request.messages.iter().find(|m| m.role == Role::User);
            for message in [first_system, first_user].into_iter().flatten() {
                hash.write(message.role.as_str().as_bytes());
                hash.write(b"\0");
                hash.write(message.text().as_bytes());
                hash.write(b"\0");
            }
        }
    }
    hash.0
}

/// FNV-1a, 64 bits: stable across processes and versions, unlike `std`'s randomized hasher.
#[derive(Debug)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Splits by weights exactly, without randomness: of every `edge + center` consecutive picks, exactly
/// `edge` go to the edge, spread evenly (a stride schedule over one shared counter).
#[derive(Debug, Default)]
pub struct WeightedSplit {
    counter: AtomicU64,
}

impl WeightedSplit {
    /// The route for the next request under `weights`.
    pub fn pick(&self, weights: Weights) -> Route {
        let total = u64::from(weights.edge + weights.center);
        if total == 0 {
            return Route::Edge;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed) % total;
        let edge = u64::from(weights.edge);
        if (n + 1) * edge / total > n * edge / total {
            Route::Edge
        } else {
            Route::Center
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r1_proto::ChatMessage;

    struct Headers(Vec<(&'static str, &'static str)>);
    impl RequestFacts for Headers {
        fn header(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
        fn claim(&self, _: &str) -> Option<&str> {
            None
        }
    }

    fn config(extra: &str) -> GatewayConfig {
        GatewayConfig::parse(extra).unwrap()
    }

    fn request(model: &str, text: &str) -> ChatCompletionRequest {
        ChatCompletionRequest::new(model, vec![ChatMessage::user(text)])
    }

    #[test]
    fn a_request_goes_only_to_a_pool_that_serves_it() {
        let c = config("");
        let router = Router::new(&c);
        let plain_edge = Pools {
            edge: PoolState::READY.serving(Capabilities {
                max_tokens: Some(1024),
                ..Capabilities::PLAIN
            }),
            center: PoolState::READY,
        };
        // "Hello" scores simple: the edge, unless it asks for what the edge does not serve.
        let hello = request("deepseek-r1", "Hello");
        let d = router.decide(&c, &hello, &NoFacts, plain_edge);
        assert_eq!((d.decision.route, d.unservable), (Route::Edge, None));
        let mut tools = hello.clone();
        tools.extra.insert(
            "tools".to_owned(),
            serde_json::json!([{"type": "function", "function": {"name": "f"}}]),
        );
        let d = router.decide(&c, &tools, &NoFacts, plain_edge);
        assert_eq!(d.decision.route, Route::Center);
        assert_eq!(d.decision.reason, RouteReason::EdgeCannotServeTools);
        let mut long = request("deepseek-r1", "Hi there");
        long.max_tokens = Some(2048);
        let d = router.decide(&c, &long, &NoFacts, plain_edge);
        assert_eq!(d.decision.reason, RouteReason::EdgeCannotServeMaxTokens);
        // Not even when the center is down: the edge would refuse it.
        let down = Pools {
            center: PoolState::DOWN,
            ..plain_edge
        };
        assert_eq!(router.decide(&c, &tools, &NoFacts, down).decision.route, Route::Center);
        // A pin to the edge model is that model or nothing: a 400 naming the parameter.
        let mut pinned = tools.clone();
        pinned.model = c.edge.model.clone();
        let d = router.decide(&c, &pinned, &NoFacts, plain_edge);
        assert_eq!(d.unservable, Some(Unmet::Tools));
        assert_eq!(Unmet::Tools.param(), "tools");
        // Neither pool serves it: refused.
        let neither = Pools {
            edge: plain_edge.edge,
            center: PoolState::READY.serving(Capabilities::PLAIN),
        };
        assert_eq!(
            router.decide(&c, &tools, &NoFacts, neither).unservable,
            Some(Unmet::Tools)
        );
        // Shadow mode sends by weights, but never to a pool that would refuse.
        let shadow = config("[routing]\nmode = \"shadow\"\nweights = { edge = 100, center = 0 }");
        let router = Router::new(&shadow);
        let d = router.decide(&shadow, &tools, &NoFacts, plain_edge);
        assert_eq!(d.decision.route, Route::Center);
    }

    #[test]
    fn the_split_is_exact_and_spread() {
        let split = WeightedSplit::default();
        let picks: Vec<Route> = (0..100).map(|_| split.pick(Weights { edge: 70, center: 30 })).collect();
        assert_eq!(picks.iter().filter(|r| **r == Route::Edge).count(), 70);
        // Spread: never more than 3 edges in a row at 70/30.
        let longest = picks.split(|r| *r == Route::Center).map(<[Route]>::len).max().unwrap();
        assert!(longest <= 3, "{longest}");
        assert!((0..10).all(|_| split.pick(Weights { edge: 0, center: 1 }) == Route::Center));
        assert!((0..10).all(|_| split.pick(Weights { edge: 5, center: 0 }) == Route::Edge));
    }

    #[test]
    fn rules_come_first_then_model_pins() {
        let c = config(
            r#"
            [[routing.rules]]
            name = "premium"
            route = "center"
            match = { header = { name = "x-r1-tier", value = "premium" } }
            "#,
        );
        let router = Router::new(&c);
        let premium = Headers(vec![("X-R1-Tier", "premium")]);
        let d = router
            .decide(&c, &request("deepseek-r1", "hi"), &premium, Pools::READY)
            .decision;
        assert_eq!(
            (d.route, d.reason, d.detail.as_deref()),
            (Route::Center, RouteReason::Rule, Some("premium"))
        );
        let d = router
            .decide(&c, &request("r1-edge-mini", "hi"), &NoFacts, Pools::READY)
            .decision;
        assert_eq!((d.route, d.reason), (Route::Edge, RouteReason::Rule));
        let d = router
            .decide(&c, &request("deepseek-r1", "hi"), &NoFacts, Pools::READY)
            .decision;
        assert_ne!(d.reason, RouteReason::Rule);
    }

    #[test]
    fn failover_on_health_and_capacity_but_not_for_a_pinned_model() {
        let c = config("[routing]\nmode = \"off\"\n[routing.weights]\nedge = 1\ncenter = 0\n");
        let router = Router::new(&c);
        let edge_down = Pools {
            edge: PoolState::DOWN,
            center: PoolState::READY,
        };
        let d = router
            .decide(&c, &request("deepseek-r1", "hi"), &NoFacts, edge_down)
            .decision;
        assert_eq!((d.route, d.reason), (Route::Center, RouteReason::FailoverUnhealthy));
        let edge_full = Pools {
            edge: PoolState::FULL,
            center: PoolState::READY,
        };
        let d = router
            .decide(&c, &request("deepseek-r1", "hi"), &NoFacts, edge_full)
            .decision;
        assert_eq!((d.route, d.reason), (Route::Center, RouteReason::FailoverSaturated));
        let both_down = Pools {
            edge: PoolState::DOWN,
            center: edge_down.edge,
        };
        let d = router
            .decide(&c, &request("deepseek-r1", "hi"), &NoFacts, both_down)
            .decision;
        assert_eq!(d.route, Route::Edge, "nowhere better to go");
        // With scoring off, a pool's own model name still addresses that pool.
        let d = router
            .decide(
                &c,
                &request("deepseek-ai/DeepSeek-R1", "hi"),
                &NoFacts,
                Pools {
                    edge: PoolState::READY,
                    center: PoolState::READY,
                },
            )
            .decision;
        assert_eq!(
            (d.route, d.reason),
            (Route::Center, RouteReason::Rule),
            "weights are edge 1 / center 0"
        );

        let enforce = config("");
        let router = Router::new(&enforce);
        let d = router
            .decide(&enforce, &request("r1-edge-mini", "hi"), &NoFacts, edge_down)
            .decision;
        assert_eq!(
            (d.route, d.reason),
            (Route::Edge, RouteReason::Rule),
            "a pinned model is not rerouted"
        );
    }

    /// A caller's facts: its tenant only.
    struct TenantFacts(&'static str);

    impl RequestFacts for TenantFacts {
        fn header(&self, _: &str) -> Option<&str> {
            None
        }
        fn claim(&self, _: &str) -> Option<&str> {
            None
        }
        fn tenant(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn one_tenants_sticky_conversation_never_moves_another_tenants() {
        let c = config("[routing]\nedge_max = 0.0\ncenter_min = 1.0\n[routing.weights]\nedge = 1\ncenter = 0\n");
        let router = Router::new(&c);
        let edge_down = Pools {
            edge: PoolState::DOWN,
            center: PoolState::READY,
        };
        let hello = request("deepseek-r1", "hello");
        // Tenant a's chat reaches the center once: it stays there.
        assert_eq!(
            router.decide(&c, &hello, &TenantFacts("a"), edge_down).decision.route,
            Route::Center
        );
        let again = router.decide(&c, &hello, &TenantFacts("a"), Pools::READY).decision;
        assert_eq!((again.route, again.reason), (Route::Center, RouteReason::StickySession));
        // Tenant b's chat with the same opening is b's own: the edge.
        assert_eq!(
            router
                .decide(&c, &hello, &TenantFacts("b"), Pools::READY)
                .decision
                .route,
            Route::Edge
        );
    }

    #[test]
    fn a_conversation_only_moves_up() {
        // Weights send the middle band all to the edge, so only stickiness can move a turn to the center.
        let c = config("[routing]\nedge_max = 0.0\ncenter_min = 1.0\n[routing.weights]\nedge = 1\ncenter = 0\n");
        let router = Router::new(&c);
        let session = Headers(vec![("x-session-id", "chat-42")]);
        let d = router
            .decide(&c, &request("deepseek-r1", "hello"), &session, Pools::READY)
            .decision;
        assert_eq!(d.route, Route::Edge);
        // The edge goes down once: this turn fails over to the center...
        let edge_down = Pools {
            edge: PoolState::DOWN,
            center: PoolState::READY,
        };
        let d = router
            .decide(&c, &request("deepseek-r1", "hello"), &session, edge_down)
            .decision;
        assert_eq!(d.route, Route::Center);
        // ... and the conversation stays there when the edge is back.
        let d = router
            .decide(&c, &request("deepseek-r1", "and then?"), &session, Pools::READY)
            .decision;
        assert_eq!((d.route, d.reason), (Route::Center, RouteReason::StickySession));
        // Another conversation is not affected.
        let other = Headers(vec![("x-session-id", "chat-43")]);
        assert_eq!(
            router
                .decide(&c, &request("deepseek-r1", "hello"), &other, Pools::READY)
                .decision
                .route,
            Route::Edge
        );
    }

    #[test]
    fn shadow_records_the_decision_but_sends_by_weights() {
        let c = config(
            "[routing]\nmode = \"shadow\"\nedge_max = 1.0\ncenter_min = 1.0\n[routing.weights]\nedge = 0\ncenter = 1\n",
        );
        let router = Router::new(&c);
        let d = router.decide(&c, &request("deepseek-r1", "hi"), &NoFacts, Pools::READY);
        assert_eq!(
            (d.decision.route, d.decision.reason),
            (Route::Center, RouteReason::Shadow)
        );
        let shadow = d.shadow.unwrap();
        assert_eq!((shadow.route, shadow.reason), (Route::Edge, RouteReason::BelowEdgeMax));
    }

    #[test]
    fn session_keys_are_stable_per_conversation() {
        let mut first = ChatCompletionRequest::new(
            "m",
            vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("plan a trip"),
                ChatMessage::assistant("ok"),
            ],
        );
        let k1 = session_key("t", &first, None);
        first.messages.push(ChatMessage::user("and the budget?"));
        assert_eq!(session_key("t", &first, None), k1, "later turns keep the key");
        assert_ne!(
            session_key("t", &request("m", "plan a trip"), None),
            k1,
            "a different system prompt is another chat"
        );
        assert_eq!(
            session_key("t", &request("m", "x"), Some("abc")),
            session_key("t", &request("m", "y"), Some("abc"))
        );
        // Pinned value: the hash must not change between versions or replicas.
        assert_eq!(
            session_key("t", &request("m", "hello"), None),
            session_key("t", &request("m", "hello"), None)
        );
        // Another tenant's chat with the same opening, or the same session header, is another conversation.
        assert_ne!(session_key("t", &first, None), session_key("u", &first, None));
        assert_ne!(
            session_key("t", &request("m", "x"), Some("abc")),
            session_key("u", &request("m", "x"), Some("abc"))
        );
    }
}
