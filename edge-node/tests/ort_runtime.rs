//! Loads ONNX Runtime from the library the setup step fetched and runs the tiny model, checking its
//! output numerically against the same maths done in plain Rust.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;

use ndarray::Array2;
use ort::session::Session;
use ort::value::Tensor;
use r1_edge::runtime::{self, LibrarySearch};

/// Must match `models/tiny-softmax/make.py`.
const W: [[f32; 3]; 4] = [
    [0.5, -1.0, 0.25],
    [1.5, 0.0, -0.5],
    [-2.0, 0.75, 1.0],
    [0.125, 2.0, -1.25],
];
const B: [f32; 3] = [0.1, -0.2, 0.3];

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tiny-softmax/model.onnx")
}

fn expected(x: &[[f32; 4]]) -> (Vec<[f32; 3]>, Vec<[f32; 3]>) {
    let logits: Vec<[f32; 3]> = x
        .iter()
        .map(|row| std::array::from_fn(|j| B[j] + (0..4).map(|k| row[k] * W[k][j]).sum::<f32>()))
        .collect();
    let probs = logits
        .iter()
        .map(|l| {
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: [f32; 3] = std::array::from_fn(|j| (l[j] - max).exp());
            let sum: f32 = exps.iter().sum();
            std::array::from_fn(|j| exps[j] / sum)
        })
        .collect();
    (logits, probs)
}

#[test]
fn tiny_model_runs_through_fetched_library() {
    let runtime = runtime::load(&LibrarySearch::from_env())
        .unwrap_or_else(|e| panic!("ONNX Runtime must be available for this test: {e}"));
    eprintln!(
        "ONNX Runtime from {} ({})",
        runtime.location.path.display(),
        runtime.location.source
    );

    let mut session = Session::builder(&runtime.environment)
        .unwrap()
        .commit_from_file(model_path())
        .unwrap();
    let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    assert_eq!(names, ["logits", "probs"]);

    let x = [[1.0, 2.0, 3.0, 4.0], [-0.5, 0.25, 0.0, 1.5], [0.0, 0.0, 0.0, 0.0]];
    let input = Array2::from_shape_vec((3, 4), x.iter().flatten().copied().collect()).unwrap();
    let outputs = session
        .run(ort::inputs!["X" => Tensor::from_array(input).unwrap()])
        .unwrap();

    let (want_logits, want_probs) = expected(&x);
    for (name, want) in [("logits", &want_logits), ("probs", &want_probs)] {
        let got = outputs[name].try_extract_array::<f32>().unwrap();
        assert_eq!(got.shape(), [3, 3], "{name} shape");
        for (i, row) in want.iter().enumerate() {
            for (j, w) in row.iter().enumerate() {
                let g = got[[i, j]];
                assert!((g - w).abs() <= 1e-5, "{name}[{i}][{j}]: onnxruntime {g} vs rust {w}");
            }
        }
    }
    // Rows of a softmax sum to one: a check independent of our own maths.
    let probs = outputs["probs"].try_extract_array::<f32>().unwrap();
    for row in probs.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn a_missing_explicit_library_is_a_clear_error() {
    let search = LibrarySearch {
        dylib_path: Some(PathBuf::from("/nonexistent/libonnxruntime.so.1.32.0")),
        cache_dir: None,
        allow_system: false,
    };
    // `load` would return the already-loaded runtime in a shared process only if paths matched; this
    // one never was loaded, so it is either "missing" (first call) or "already loaded" (later call).
    let err = search.locate().unwrap_err().to_string();
    assert!(err.contains("/nonexistent/libonnxruntime.so.1.32.0"), "{err}");
    assert!(err.contains("scripts/fetch-onnxruntime.sh"), "{err}");
}
