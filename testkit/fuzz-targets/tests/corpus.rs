//! Every fuzz target over its seed corpus (`fuzz/corpus/<target>/`), on stable: the seeds are the
//! inputs the targets must keep passing, and a crash libFuzzer finds is added there as a regression.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;

#[test]
fn every_target_keeps_its_properties_on_its_seed_corpus() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, target) in r1_fuzz_targets::TARGETS {
        let dir = root.join(name);
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} fails", path.display());
            seeds += 1;
        }
        assert!(seeds >= 3, "{name}: at least three seeds, {seeds} found");
    }
}
