//! Which offset of a partition may be committed when its tasks finish out of order.
//!
//! A center node runs several tasks of one partition at once; they finish in any order. Committing
//! offset 8 when task 5 is still running would lose task 5 if the node died: the group would resume
//! at 8. So the committable position is the lowest offset still running (or one past the highest
//! finished, when nothing runs). Offsets of partitions this member no longer owns are forgotten.

use std::collections::{BTreeSet, HashMap};

/// Per-partition bookkeeping of started and finished offsets.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    running: BTreeSet<i64>,
    highest_done: Option<i64>,
    committed: Option<i64>,
}

impl OffsetTracker {
    /// A message at `offset` was taken.
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partitions
            .entry((topic.to_owned(), partition))
            .or_default()
            .running
            .insert(offset);
    }

    /// The message at `offset` is finished. Returns the offset to store (`rd_kafka_offset_store`
    /// semantics: the last finished offset; the commit is one past it), if it moved.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        if !p.running.remove(&offset) {
            return None; // the partition was revoked and re-assigned since: not ours to store
        }
        p.highest_done = Some(p.highest_done.map_or(offset, |h| h.max(offset)));
        let storable = match p.running.first() {
            Some(&lowest) => lowest - 1,
            None => p.highest_done?,
        };
        if storable < 0 || p.committed.is_some_and(|c| c >= storable) {
            return None;
        }
        p.committed = Some(storable);
        Some(storable)
    }

    /// The partition was revoked: what still runs there will be redelivered to its new owner.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }

    /// Messages taken and not finished, over all partitions.
    pub fn running(&self) -> usize {
        self.partitions.values().map(|p| p.running.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_finishes_commit_only_the_contiguous_prefix() {
        let mut t = OffsetTracker::default();
        for o in 5..=8 {
            t.start("t", 0, o);
        }
        assert_eq!(t.finish("t", 0, 7), Some(4)); // 5 and 6 still run: nothing past 4
        assert_eq!(t.finish("t", 0, 6), None); // 5 still runs
        assert_eq!(t.finish("t", 0, 5), Some(7)); // 8 runs: up to 7
        assert_eq!(t.finish("t", 0, 8), Some(8));
        assert_eq!(t.running(), 0);
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let mut t = OffsetTracker::default();
        t.start("t", 1, 10);
        t.start("t", 2, 3);
        t.revoke("t", 1);
        assert_eq!(t.finish("t", 1, 10), None);
        assert_eq!(t.finish("t", 2, 3), Some(3));
    }
}
