//! The one place the gateway reads its process environment: the variables that override the
//! configuration file, and those a section names for its secrets. Everything else takes an
//! [`Environment`], so tests hand in a map and never touch the process's variables.

use std::collections::BTreeMap;

/// Overrides `center.kafka.results_partition` (a StatefulSet passes its pod's ordinal, from the label
/// `apps.kubernetes.io/pod-index`).
pub const RESULTS_PARTITION: &str = "R1_RESULTS_PARTITION";

/// Where variables come from.
pub trait Environment {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed set of variables (tests, and embedding).
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl MapEnv {
    /// The variables `pairs`.
    pub fn of<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }
}

impl Environment for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}
