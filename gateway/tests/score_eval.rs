//! Evaluation of the complexity scorer on the labeled dataset, and the tool that fits its weights.
//!
//! - `test_split_auc_and_confusion`: AUC and the confusion matrix at the routing defaults on the TEST split.
//! - `weights_match_a_fresh_fit`: the weights in `src/score.rs` are what the documented fit gives.
//! - `fit_weights` (ignored; a tool): fits the logistic model on the TRAIN split and prints the weights;
//!   with `R1_SCORE_WRITE=1` it also writes them into `src/score.rs`:
//!   `R1_SCORE_WRITE=1 cargo test -p r1-gateway --test score_eval -- --ignored fit_weights --nocapture`.
// Test code (a panic is the failure report); the fitting tool is linear algebra over indices.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::needless_range_loop
)]

use r1_gateway::score::{BIAS, FEATURE_COUNT, FEATURES, Scorer};
use r1_proto::ChatCompletionRequest;
use serde_json::Value;

/// The routing config's default thresholds: `score ≤ EDGE_MAX` → edge, `score ≥ CENTER_MIN` → center.
const EDGE_MAX: f32 = 0.35;
const CENTER_MIN: f32 = 0.65;

/// The floor the test AUC must stay above: just below what the shipped weights achieve (1.000, see
/// docs/ROUTING-SCORER.md), so a regression fails loudly.
const AUC_FLOOR: f64 = 0.99;

/// The floor for the stress set (harder, worded away from the cue lists): just below what we achieve (0.921).
const STRESS_AUC_FLOOR: f64 = 0.90;

/// L2 penalty of the fit (on the weights, not the bias): chosen from [`LAMBDAS`] by 5-fold cross-validation
/// on the train split with the one-standard-error rule (`fit_weights` prints the table and checks this value).
const LAMBDA: f64 = 1.0;
/// About one standard error of an AUC near 0.99 on ~300 examples.
const CV_TOLERANCE: f64 = 0.005;
const LAMBDAS: [f64; 6] = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0];

const DATASET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/complexity.jsonl");
/// Written after the features were frozen, in wording chosen to avoid the cue lists; never used to fit
/// or to design features. See gateway/data/README.md.
const STRESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/complexity-stress.jsonl");

#[derive(Debug)]
struct Example {
    id: String,
    lang: String,
    complex: bool,
    category: String,
    request: ChatCompletionRequest,
}

impl Example {
    /// The deterministic ~70/30 split: FNV-1a (64-bit) of the id; `hash % 10 < 7` → train.
    fn is_train(&self) -> bool {
        fnv1a(self.id.as_bytes()) % 10 < 7
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn load() -> Vec<Example> {
    load_from(DATASET)
}

fn load_from(path: &str) -> Vec<Example> {
    let text = std::fs::read_to_string(path).expect("read dataset");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(number, line)| {
            let mut value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", number + 1));
            let field = |key: &str| {
                value[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("line {}: no {key}", number + 1))
            };
            let id = field("id").to_owned();
            let lang = field("lang").to_owned();
            let label = field("label").to_owned();
            let category = field("category").to_owned();
            assert!(label == "simple" || label == "complex", "{id}: label {label}");
            assert!(lang == "en" || lang == "zh", "{id}: lang {lang}");
            value["model"] = Value::from("eval");
            let request: ChatCompletionRequest =
                serde_json::from_value(value).unwrap_or_else(|e| panic!("{id}: not a chat request: {e}"));
            Example {
                id,
                lang,
                complex: label == "complex",
                category,
                request,
            }
        })
        .collect()
}

/// Area under the ROC curve: the chance a random complex example outscores a random simple one (ties ½).
fn auc(scored: &[(f32, bool)]) -> f64 {
    let mut sorted: Vec<_> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut positives) = (0.0, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let average_rank = (i + j + 1) as f64 / 2.0; // ranks i+1..=j
        for item in &sorted[i..j] {
            if item.1 {
                rank_sum += average_rank;
                positives += 1.0;
            }
        }
        i = j;
    }
    let negatives = sorted.len() as f64 - positives;
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// Where each label lands at the default thresholds.
#[derive(Debug, Default)]
struct Confusion {
    /// [label complex?][edge, band, center]
    cells: [[usize; 3]; 2],
}

impl Confusion {
    fn add(&mut self, score: f32, complex: bool) {
        let zone = if score <= EDGE_MAX {
            0
        } else if score >= CENTER_MIN {
            2
        } else {
            1
        };
        self.cells[usize::from(complex)][zone] += 1;
    }

    fn print(&self, title: &str) {
        let [simple, complex] = self.cells;
        println!("{title}");
        println!("  label \\ zone  edge (≤{EDGE_MAX})  band  center (≥{CENTER_MIN})");
        println!("  simple        {:>13}  {:>4}  {:>15}", simple[0], simple[1], simple[2]);
        println!(
            "  complex       {:>13}  {:>4}  {:>15}",
            complex[0], complex[1], complex[2]
        );
        let decided = simple[0] + simple[2] + complex[0] + complex[2];
        let right = simple[0] + complex[2];
        let total = decided + simple[1] + complex[1];
        println!(
            "  decided {decided}/{total}: {right} right ({:.1} %); band {} ({} simple, {} complex)",
            100.0 * right as f64 / decided.max(1) as f64,
            simple[1] + complex[1],
            simple[1],
            complex[1],
        );
    }
}

#[test]
fn dataset_is_well_formed() {
    let examples = load();
    assert!(examples.len() >= 300, "{} examples", examples.len());
    let zh = examples.iter().filter(|e| e.lang == "zh").count();
    assert!(zh * 100 >= examples.len() * 35, "{zh} Chinese of {}", examples.len());
    let mut ids: Vec<_> = examples.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), examples.len(), "ids are unique");
    for example in &examples {
        assert!(!example.request.messages.is_empty(), "{}: no messages", example.id);
        assert!(!example.category.is_empty(), "{}: no category", example.id);
    }
    // Both splits hold both labels in both languages.
    for train in [true, false] {
        for lang in ["en", "zh"] {
            for complex in [true, false] {
                let n = examples
                    .iter()
                    .filter(|e| e.is_train() == train && e.lang == lang && e.complex == complex)
                    .count();
                assert!(n >= 15, "train={train} {lang} complex={complex}: only {n}");
            }
        }
    }
}

/// Scores `examples`, prints AUC (overall and per language), the confusion matrix at the default thresholds
/// and the wrongly decided examples; returns the AUC.
fn evaluate(title: &str, scorer: &Scorer, examples: &[&Example]) -> f64 {
    let scored: Vec<(f32, bool)> = examples
        .iter()
        .map(|e| (scorer.assess(&e.request).score, e.complex))
        .collect();
    for (score, _) in &scored {
        assert!(score.is_finite() && (0.0..=1.0).contains(score));
    }
    let overall = auc(&scored);
    let complex = scored.iter().filter(|s| s.1).count();
    println!(
        "{title}: {} examples ({} complex, {} simple)",
        examples.len(),
        complex,
        examples.len() - complex
    );
    println!("  AUC {overall:.4}");
    for lang in ["en", "zh"] {
        let part: Vec<_> = examples
            .iter()
            .zip(&scored)
            .filter(|(e, _)| e.lang == lang)
            .map(|(_, s)| *s)
            .collect();
        println!("  AUC [{lang}] {:.4} (n = {})", auc(&part), part.len());
    }
    let mut confusion = Confusion::default();
    for &(score, complex) in &scored {
        confusion.add(score, complex);
    }
    confusion.print(&format!("Confusion matrix at the default thresholds ({title}):"));

    // The mistakes (wrong side of a threshold), for whoever tunes the features next.
    let mut misses: Vec<_> = examples
        .iter()
        .zip(&scored)
        .filter(|(e, (score, _))| {
            if e.complex {
                *score <= EDGE_MAX
            } else {
                *score >= CENTER_MIN
            }
        })
        .collect();
    misses.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    println!("Wrongly decided ({}):", misses.len());
    for (example, (score, _)) in misses {
        let text = example
            .request
            .messages
            .last()
            .map(|m| m.text().into_owned())
            .unwrap_or_default();
        let short: String = text.chars().take(70).collect();
        println!("  {:.3} {} [{}] {short:?}", score, example.id, example.category);
    }
    overall
}

#[test]
fn test_split_auc_and_confusion() {
    let scorer = Scorer::new();
    let examples = load();
    let test: Vec<_> = examples.iter().filter(|e| !e.is_train()).collect();
    let overall = evaluate("TEST split", &scorer, &test);

    let train: Vec<_> = examples.iter().filter(|e| e.is_train()).collect();
    let scored: Vec<_> = train
        .iter()
        .map(|e| (scorer.assess(&e.request).score, e.complex))
        .collect();
    println!(
        "(train split AUC {:.4}, n = {}, for reference only)",
        auc(&scored),
        train.len()
    );

    assert!(overall >= AUC_FLOOR, "test AUC {overall:.4} < {AUC_FLOOR}");
}

#[test]
fn stress_set_auc_and_confusion() {
    let scorer = Scorer::new();
    let examples = load_from(STRESS);
    assert!(examples.len() >= 60);
    let all: Vec<_> = examples.iter().collect();
    let overall = evaluate("STRESS set", &scorer, &all);
    assert!(
        overall >= STRESS_AUC_FLOOR,
        "stress AUC {overall:.4} < {STRESS_AUC_FLOOR}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// The fit: L2-regularized logistic regression by Newton's method, in f64, fully deterministic.
// ---------------------------------------------------------------------------------------------------------

/// Fits `(bias, weights)` on rows `x` with labels `y`, penalty `lambda` on the weights.
fn fit(x: &[[f32; FEATURE_COUNT]], y: &[bool], lambda: f64) -> (f64, Vec<f64>) {
    let d = FEATURE_COUNT + 1; // weights, then the bias
    let mut theta = vec![0.0f64; d];
    let row = |i: usize, k: usize| if k < FEATURE_COUNT { f64::from(x[i][k]) } else { 1.0 };
    for _ in 0..100 {
        let mut gradient = vec![0.0f64; d];
        let mut hessian = vec![vec![0.0f64; d]; d];
        for i in 0..x.len() {
            let z: f64 = (0..d).map(|k| theta[k] * row(i, k)).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let error = p - if y[i] { 1.0 } else { 0.0 };
            let w = p * (1.0 - p);
            for a in 0..d {
                gradient[a] += error * row(i, a);
                for b in 0..d {
                    hessian[a][b] += w * row(i, a) * row(i, b);
                }
            }
        }
        for k in 0..d {
            let penalty = if k < FEATURE_COUNT { lambda } else { 1e-9 };
            gradient[k] += penalty * theta[k];
            hessian[k][k] += penalty;
        }
        let step = solve(hessian, gradient);
        let size: f64 = step.iter().map(|s| s * s).sum::<f64>().sqrt();
        for k in 0..d {
            theta[k] -= step[k];
        }
        if size < 1e-12 {
            break;
        }
    }
    let bias = theta[FEATURE_COUNT];
    theta.truncate(FEATURE_COUNT);
    (bias, theta)
}

/// Solves `a · s = b` by Gaussian elimination with partial pivoting (`a` is positive definite here).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap();
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in col + 1..n {
            let factor = a[r][col] / a[col][col];
            if factor != 0.0 {
                for c in col..n {
                    a[r][c] -= factor * a[col][c];
                }
                b[r] -= factor * b[col];
            }
        }
    }
    let mut s = vec![0.0; n];
    for r in (0..n).rev() {
        let tail: f64 = (r + 1..n).map(|c| a[r][c] * s[c]).sum();
        s[r] = (b[r] - tail) / a[r][r];
    }
    s
}

fn predict(bias: f64, weights: &[f64], x: &[f32; FEATURE_COUNT]) -> f32 {
    let z = bias + weights.iter().zip(x).map(|(w, v)| w * f64::from(*v)).sum::<f64>();
    (1.0 / (1.0 + (-z).exp())) as f32
}

fn train_matrix() -> (Vec<[f32; FEATURE_COUNT]>, Vec<bool>) {
    let scorer = Scorer::new();
    let train: Vec<_> = load().into_iter().filter(Example::is_train).collect();
    (
        train.iter().map(|e| scorer.extract(&e.request)).collect(),
        train.iter().map(|e| e.complex).collect(),
    )
}

/// Weights as written in the table: rounded to two decimals.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[test]
fn weights_match_a_fresh_fit() {
    let (x, y) = train_matrix();
    let (bias, weights) = fit(&x, &y, LAMBDA);
    let mut stale = Vec::new();
    if (f64::from(BIAS) - round2(bias)).abs() > 0.011 {
        stale.push(format!("bias: {BIAS} vs fit {:.2}", bias));
    }
    for (feature, fitted) in FEATURES.iter().zip(&weights) {
        if (f64::from(feature.weight) - round2(*fitted)).abs() > 0.011 {
            stale.push(format!("{}: {} vs fit {:.2}", feature.name, feature.weight, fitted));
        }
    }
    assert!(
        stale.is_empty(),
        "src/score.rs's weights are not the fit of the train split; refit with\n  R1_SCORE_WRITE=1 cargo test -p \
         r1-gateway --test score_eval -- --ignored fit_weights --nocapture\n{}",
        stale.join("\n")
    );
}

#[test]
#[ignore = "a tool: refits the weights (see the file's doc)"]
fn fit_weights() {
    let (x, y) = train_matrix();
    println!("train split: {} examples, {} features", x.len(), FEATURE_COUNT);

    // λ by 5-fold cross-validation on the train split (folds by position; the id hash already shuffled
    // the order), with the one-standard-error rule: the largest λ whose CV AUC is within
    // `CV_TOLERANCE` of the best — the most regularized model the data cannot tell from the best one.
    let folds = 5;
    let mut table = Vec::new();
    for lambda in LAMBDAS {
        let mut scored = Vec::new();
        for fold in 0..folds {
            let (mut fx, mut fy) = (Vec::new(), Vec::new());
            for i in (0..x.len()).filter(|i| i % folds != fold) {
                fx.push(x[i]);
                fy.push(y[i]);
            }
            let (bias, weights) = fit(&fx, &fy, lambda);
            for i in (0..x.len()).filter(|i| i % folds == fold) {
                scored.push((predict(bias, &weights, &x[i]), y[i]));
            }
        }
        let cv = auc(&scored);
        println!("  λ = {lambda:>5}: 5-fold CV AUC {cv:.4}");
        table.push((lambda, cv));
    }
    let best = table.iter().map(|row| row.1).fold(f64::MIN, f64::max);
    let chosen = table
        .iter()
        .filter(|row| row.1 >= best - CV_TOLERANCE)
        .map(|row| row.0)
        .fold(f64::MIN, f64::max);
    println!("  chosen λ = {chosen} (LAMBDA in this file is {LAMBDA})");
    assert!(chosen == LAMBDA, "set LAMBDA to {chosen} in this file and rerun");

    let (bias, weights) = fit(&x, &y, LAMBDA);
    println!("bias: {:.2};", round2(bias));
    for (feature, weight) in FEATURES.iter().zip(&weights) {
        println!("  {:<18} {:>6.2}", feature.name, round2(*weight));
    }

    if std::env::var_os("R1_SCORE_WRITE").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/score.rs");
        let source = std::fs::read_to_string(path).unwrap();
        let mut out = String::new();
        for line in source.split_inclusive('\n') {
            out.push_str(&rewrite_weight(line, bias, &weights).unwrap_or_else(|| line.to_owned()));
        }
        std::fs::write(path, out).unwrap();
        println!("wrote the weights into {path}");
    }
}

/// The line with its weight replaced, if it is the table's `bias: W;` or `Variant = "name", W;` line.
fn rewrite_weight(line: &str, bias: f64, weights: &[f64]) -> Option<String> {
    let indent = &line[..line.len() - line.trim_start().len()];
    let trimmed = line.trim();
    if trimmed.starts_with("bias: ") && trimmed.ends_with(';') {
        return Some(format!("{indent}bias: {:.2};\n", round2(bias)));
    }
    let (head, _) = trimmed.rsplit_once(", ")?;
    let (_, quoted) = head.split_once(" = \"")?;
    let name = quoted.strip_suffix('"')?;
    let index = FEATURES.iter().position(|feature| feature.name == name)?;
    trimmed
        .ends_with(';')
        .then(|| format!("{indent}{head}, {:.2};\n", round2(weights[index])))
}
