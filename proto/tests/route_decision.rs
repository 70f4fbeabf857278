//! The route decision's JSON is the `explain` output contract: `{"route","score","tier","reason"}`.

use r1_proto::{Route, RouteDecision, RouteReason, Tier};
use serde_json::json;

#[test]
fn serializes_exactly_four_keys_without_detail() {
    let decision = RouteDecision::new(Route::Edge, 0.125, Tier::Simple, RouteReason::BelowEdgeMax);
    assert_eq!(
        serde_json::to_string(&decision).unwrap(),
        r#"{"route":"edge","score":0.125,"tier":"simple","reason":"below_edge_max"}"#
    );
}

#[test]
fn detail_is_written_when_set_and_round_trips() {
    let text =
        r#"{"route":"center","score":0.42,"tier":"uncertain","reason":"rule","detail":"premium-tier-to-center"}"#;
    let decision: RouteDecision = serde_json::from_str(text).unwrap();
    assert_eq!(
        decision,
        RouteDecision::new(Route::Center, 0.42, Tier::Uncertain, RouteReason::Rule)
            .with_detail("premium-tier-to-center")
    );
    assert_eq!(serde_json::to_string(&decision).unwrap(), text);
}

#[test]
fn header_values() {
    let decision = RouteDecision::new(Route::Cache, 0.9, Tier::Complex, RouteReason::CacheHit);
    assert_eq!(
        (decision.route.as_str(), decision.reason.as_str()),
        ("cache", "cache_hit")
    );
    assert_eq!(
        serde_json::to_value(&decision).unwrap(),
        json!({"route": "cache", "score": 0.9f32, "tier": "complex", "reason": "cache_hit"})
    );
    assert_eq!(
        Tier::ALL.iter().map(|tier| tier.as_str()).collect::<Vec<_>>(),
        ["simple", "uncertain", "complex"]
    );
}
