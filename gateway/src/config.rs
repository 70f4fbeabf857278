//! The gateway's configuration file: a typed TOML tree, validated with every problem reported at once.
//!
//! This is the part of the schema that exists so far (listeners and routing weights); the gateway
//! issue extends it. Unknown keys are refused, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::Path;

use r1_config::{ConfigError, Validate};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the gateway listens.
    #[serde(default)]
    pub listen: ListenSection,
    /// How requests are split between edge and center.
    #[serde(default)]
    pub routing: RoutingSection,
}

/// `[listen]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Public listener: the OpenAI-compatible client API.
    #[serde(default = "default_public")]
    pub public: SocketAddr,
    /// Admin listener: metrics and route explain. Never the same as `public`.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            public: default_public(),
            admin: default_admin(),
        }
    }
}

fn default_public() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// How the route decision is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoutingMode {
    /// Decide and send where the decision says.
    #[default]
    Enforce,
    /// Decide and record, but send by weights alone.
    Shadow,
    /// No scoring: weights alone.
    Off,
}

/// `[routing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// `enforce`, `shadow` or `off`.
    #[serde(default)]
    pub mode: RoutingMode,
    /// Complexity scores at or below this go to the edge.
    #[serde(default = "default_edge_max")]
    pub edge_max: f64,
    /// Complexity scores at or above this go to the center.
    #[serde(default = "default_center_min")]
    pub center_min: f64,
    /// Split of the middle band (and of everything when `mode = "off"`).
    #[serde(default)]
    pub weights: Weights,
}

impl Default for RoutingSection {
    fn default() -> Self {
        Self {
            mode: RoutingMode::default(),
            edge_max: default_edge_max(),
            center_min: default_center_min(),
            weights: Weights::default(),
        }
    }
}

fn default_edge_max() -> f64 {
    0.35
}
fn default_center_min() -> f64 {
    0.65
}

/// `[routing.weights]`: relative shares, each 0..=100.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Share sent to the edge pool.
    pub edge: u32,
    /// Share sent to the center.
    pub center: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self { edge: 70, center: 30 }
    }
}

impl GatewayConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        r1_config::load(path)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        r1_config::parse(text, "<config>")
    }
}

impl Validate for GatewayConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.listen.public == self.listen.admin {
            problems.push("listen.admin: must differ from listen.public (metrics are never public)".to_owned());
        }
        let r = &self.routing;
        for (key, value) in [("routing.edge_max", r.edge_max), ("routing.center_min", r.center_min)] {
            if !(0.0..=1.0).contains(&value) {
                problems.push(format!("{key}: {value} must be within 0.0..=1.0"));
            }
        }
        if r.edge_max > r.center_min {
            problems.push(format!(
                "routing.edge_max: {} must not exceed routing.center_min ({})",
                r.edge_max, r.center_min
            ));
        }
        for (key, value) in [
            ("routing.weights.edge", r.weights.edge),
            ("routing.weights.center", r.weights.center),
        ] {
            if value > 100 {
                problems.push(format!("{key}: {value} must be 0..=100"));
            }
        }
        if r.weights.edge == 0 && r.weights.center == 0 {
            problems.push("routing.weights: edge and center cannot both be 0".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = GatewayConfig::parse("").unwrap();
        assert_eq!(c.routing.mode, RoutingMode::Enforce);
        assert_eq!((c.routing.weights.edge, c.routing.weights.center), (70, 30));
        assert_eq!(c.listen.admin.port(), 9090);
    }

    #[test]
    fn the_reference_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/gateway.toml");
        GatewayConfig::load(&path).unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = GatewayConfig::parse("[routing]\nwieghts = { edge = 1, center = 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wieghts"), "{err}");
    }

    #[test]
    fn all_problems_at_once_with_paths() {
        let text = r#"
            [listen]
            public = "127.0.0.1:8080"
            admin = "127.0.0.1:8080"
            [routing]
            edge_max = 0.9
            center_min = 1.5
            weights = { edge = 101, center = 0 }
        "#;
        let ConfigError::Invalid { problems, .. } = GatewayConfig::parse(text).unwrap_err() else {
            panic!("expected Invalid");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(keys, ["listen.admin", "routing.center_min", "routing.weights.edge"]);
    }
}
