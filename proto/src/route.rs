//! The routing decision: who answers a request and why, as headers, metric labels and `explain` output.

use serde::{Deserialize, Serialize};

wire_enum! {
    /// Who answers. [`Route::as_str`] is the `x-r1-route` header value and metric label.
    pub enum Route {
        /// The small-model edge pool, over HTTP.
        Edge = "edge",
        /// The big-model center, through the task queue.
        Center = "center",
        /// The result cache.
        Cache = "cache",
    }
}

wire_enum! {
    /// The complexity band of the score.
    pub enum Tier {
        /// At or below `edge_max`.
        Simple = "simple",
        /// Between `edge_max` and `center_min`: split by weights.
        Uncertain = "uncertain",
        /// At or above `center_min`.
        Complex = "complex",
    }
}

impl Tier {
    /// The band of `score` given the thresholds: `score <= edge_max` is simple, `score >= center_min`
    /// complex, anything else uncertain (`edge_max` is checked first, so it wins if the bands overlap).
    pub fn from_score(score: f32, edge_max: f32, center_min: f32) -> Self {
        if score <= edge_max {
            Self::Simple
        } else if score >= center_min {
            Self::Complex
        } else {
            Self::Uncertain
        }
    }
}

wire_enum! {
    /// Why the route was chosen: a bounded set, safe as a metric label and the `x-r1-route-reason` header.
    pub enum RouteReason {
        /// An explicit config rule matched (its name goes in `detail`).
        Rule = "rule",
        /// The score was at or below `edge_max`.
        BelowEdgeMax = "below_edge_max",
        /// The score was at or above `center_min`.
        AboveCenterMin = "above_center_min",
        /// The score was in the middle band and the weights chose.
        Weighted = "weighted",
        /// The chosen pool was unhealthy, so the other one got it.
        FailoverUnhealthy = "failover_unhealthy",
        /// The chosen pool was saturated, so the other one got it.
        FailoverSaturated = "failover_saturated",
        /// The conversation had already moved up a tier and stays there.
        StickySession = "sticky_session",
        /// Shadow mode: decided and recorded, but sent by weights alone.
        Shadow = "shadow",
        /// Routing is off (`mode = "off"`): the scorer was not consulted.
        ModeOff = "mode_off",
        /// Answered from the cache.
        CacheHit = "cache_hit",
        /// The edge caps `max_tokens` below what was asked.
        EdgeCannotServeMaxTokens = "edge_cannot_serve_max_tokens",
        /// Prompt plus answer do not fit the edge model's context.
        EdgeCannotServeContext = "edge_cannot_serve_context",
        /// The edge does not do function calling.
        EdgeCannotServeTools = "edge_cannot_serve_tools",
        /// The edge does not serve the asked `response_format`.
        EdgeCannotServeResponseFormat = "edge_cannot_serve_response_format",
        /// The edge does not return logprobs.
        EdgeCannotServeLogprobs = "edge_cannot_serve_logprobs",
        /// The edge gives fewer choices than `n`.
        EdgeCannotServeN = "edge_cannot_serve_n",
        /// The edge takes no image input.
        EdgeCannotServeImages = "edge_cannot_serve_images",
        /// A parameter the edge does not take (`logit_bias`, `reasoning_effort`, an unknown key).
        EdgeCannotServeParameters = "edge_cannot_serve_parameters",
        /// The center cannot serve what was asked and the edge can.
        CenterCannotServe = "center_cannot_serve",
        /// An embeddings request, sent to the pool that declares embeddings.
        Embeddings = "embeddings",
    }
}

/// One routing decision, serialized as `{"route","score","tier","reason"}` plus `"detail"` when set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDecision {
    /// Who answers.
    pub route: Route,
    /// The complexity score, in `[0, 1]`.
    pub score: f32,
    /// The band of the score.
    pub tier: Tier,
    /// Why this route.
    pub reason: RouteReason,
    /// More about the reason, for logs and `explain` (such as the rule name); never a metric label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl RouteDecision {
    /// A decision; `score` is clamped into `[0, 1]` (NaN becomes 0).
    pub fn new(route: Route, score: f32, tier: Tier, reason: RouteReason) -> Self {
        let score = if score.is_nan() { 0.0 } else { score.clamp(0.0, 1.0) };
        Self {
            route,
            score,
            tier,
            reason,
            detail: None,
        }
    }

    /// The same decision with `detail`.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_bands() {
        assert_eq!(Tier::from_score(0.2, 0.3, 0.7), Tier::Simple);
        assert_eq!(Tier::from_score(0.3, 0.3, 0.7), Tier::Simple);
        assert_eq!(Tier::from_score(0.5, 0.3, 0.7), Tier::Uncertain);
        assert_eq!(Tier::from_score(0.7, 0.3, 0.7), Tier::Complex);
        assert_eq!(Tier::from_score(1.0, 0.3, 0.7), Tier::Complex);
    }

    #[test]
    fn score_is_clamped() {
        let high = RouteDecision::new(Route::Center, 1.5, Tier::Complex, RouteReason::AboveCenterMin);
        assert_eq!(high.score, 1.0);
        let nan = RouteDecision::new(Route::Edge, f32::NAN, Tier::Simple, RouteReason::BelowEdgeMax);
        assert_eq!(nan.score, 0.0);
        let low = RouteDecision::new(Route::Edge, -0.1, Tier::Simple, RouteReason::BelowEdgeMax);
        assert_eq!(low.score, 0.0);
    }

    #[test]
    fn labels_are_snake_case() {
        let labels: Vec<_> = RouteReason::ALL.iter().map(|reason| reason.to_string()).collect();
        assert_eq!(
            labels,
            [
                "rule",
                "below_edge_max",
                "above_center_min",
                "weighted",
                "failover_unhealthy",
                "failover_saturated",
                "sticky_session",
                "shadow",
                "mode_off",
                "cache_hit",
                "edge_cannot_serve_max_tokens",
                "edge_cannot_serve_context",
                "edge_cannot_serve_tools",
                "edge_cannot_serve_response_format",
                "edge_cannot_serve_logprobs",
                "edge_cannot_serve_n",
                "edge_cannot_serve_images",
                "edge_cannot_serve_parameters",
                "center_cannot_serve",
                "embeddings"
            ]
        );
        assert_eq!(
            Route::ALL.iter().map(|route| route.as_str()).collect::<Vec<_>>(),
            ["edge", "center", "cache"]
        );
    }
}
