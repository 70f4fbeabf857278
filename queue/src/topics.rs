//! Topic names and reply addresses.
//!
//! **Results reach only the gateway that waits for them.** Each gateway instance owns one partition
//! of `r1.results` and reads only that partition (assigned, not subscribed: no consumer group, no
//! rebalance). A task's `reply_to` is `"<instance>@<partition>"`; the center produces its chunks to
//! that partition, keyed by task id. N gateways need `r1.results` to have at least N partitions;
//! M center nodes share the task topics through their consumer group. No gateway reads another's
//! results, and no center node needs to know the gateways.

use std::fmt;

use r1_proto::TaskClass;

/// The topic names (configurable; these are the defaults of DESIGN.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Tasks a client waits for on the connection.
    pub interactive: String,
    /// Asynchronous tasks and batch lines.
    pub batch: String,
    /// Result chunks, one partition per gateway instance.
    pub results: String,
    /// Cancel records.
    pub cancel: String,
    /// Tasks that failed too many times.
    pub dlq: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            interactive: "r1.tasks.interactive".to_owned(),
            batch: "r1.tasks.batch".to_owned(),
            results: "r1.results".to_owned(),
            cancel: "r1.cancel".to_owned(),
            dlq: "r1.tasks.dlq".to_owned(),
        }
    }
}

impl Topics {
    /// The task topic of `class`.
    pub fn tasks(&self, class: TaskClass) -> &str {
        match class {
            TaskClass::Interactive => &self.interactive,
            TaskClass::Batch => &self.batch,
        }
    }

    /// Every topic with the same `suffix` appended (e.g. a model version: `r1.tasks.interactive.v2`).
    /// Results and cancels are shared by all versions.
    pub fn for_version(&self, version: &str) -> Self {
        Self {
            interactive: format!("{}.{version}", self.interactive),
            batch: format!("{}.{version}", self.batch),
            dlq: format!("{}.{version}", self.dlq),
            ..self.clone()
        }
    }
}

/// Where a task's result chunks go: a gateway instance and its results partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The gateway instance (for logs).
    pub instance: String,
    /// Its partition of the results topic.
    pub partition: i32,
}

impl ReplyTo {
    /// Parses `"<instance>@<partition>"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (instance, partition) = text.rsplit_once('@')?;
        let partition = partition.parse().ok().filter(|p: &i32| *p >= 0)?;
        Some(Self {
            instance: instance.to_owned(),
            partition,
        })
    }
}

impl fmt::Display for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.instance, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_to_round_trips_and_refuses_garbage() {
        let r = ReplyTo {
            instance: "gw-a@pod".into(),
            partition: 3,
        };
        assert_eq!(r.to_string(), "gw-a@pod@3");
        assert_eq!(ReplyTo::parse("gw-a@pod@3"), Some(r));
        assert_eq!(ReplyTo::parse("gw"), None);
        assert_eq!(ReplyTo::parse("gw@-1"), None);
        assert_eq!(ReplyTo::parse("gw@x"), None);
    }

    #[test]
    fn versions_get_their_own_task_topics() {
        let t = Topics::default().for_version("canary");
        assert_eq!(t.tasks(TaskClass::Interactive), "r1.tasks.interactive.canary");
        assert_eq!(t.results, "r1.results");
    }
}
