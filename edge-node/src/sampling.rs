//! Choosing the next token: presence/frequency penalties, then greedy, temperature, top-k, top-p,
//! with a per-request seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How one request samples. `temperature == 0` is greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the most likely token.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 disables.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Seed for reproducible sampling; `None` draws one.
    pub seed: Option<u64>,
    /// Subtracted once from the logit of every token already generated (OpenAI's `presence_penalty`).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated (`frequency_penalty`).
    pub frequency_penalty: f32,
}

impl SamplingParams {
    /// Greedy decoding.
    pub const GREEDY: Self = Self {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: None,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
    };

    /// Whether this always picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

/// A request's sampler: its parameters and random state.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    scratch: Vec<(f32, u32)>,
    /// Times each token was generated, while a penalty applies (few distinct tokens: a short list).
    counts: Vec<(u32, u32)>,
    /// The logits with penalties applied.
    penalized: Vec<f32>,
}

/// What was chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// The token.
    pub token: u32,
    /// Its probability under the model's own distribution (temperature 1, no truncation): the
    /// per-token term of the confidence metric.
    pub probability: f32,
}

impl Sampler {
    /// A sampler for `params`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Self {
            params,
            rng,
            scratch: Vec::new(),
            counts: Vec::new(),
            penalized: Vec::new(),
        }
    }

    /// Picks the next token from `logits`, after penalties for the tokens this sampler already picked.
    pub fn sample(&mut self, logits: &[f32]) -> Choice {
        let (presence, frequency) = (self.params.presence_penalty, self.params.frequency_penalty);
        if presence == 0.0 && frequency == 0.0 {
            return self.pick(logits);
        }
        let mut penalized = std::mem::take(&mut self.penalized);
        penalized.clear();
        penalized.extend_from_slice(logits);
        for &(token, count) in &self.counts {
            if let Some(l) = penalized.get_mut(token as usize) {
                *l -= presence + frequency * count as f32;
            }
        }
        let mut choice = self.pick(&penalized);
        self.penalized = penalized;
        // The confidence metric reads the model's own distribution, before penalties.
        let (_, max) = argmax(logits);
        choice.probability = (logits[choice.token as usize] - max).exp() / exp_sum(logits, max);
        match self.counts.iter_mut().find(|(t, _)| *t == choice.token) {
            Some((_, count)) => *count += 1,
            None => self.counts.push((choice.token, 1)),
        }
        choice
    }

    fn pick(&mut self, logits: &[f32]) -> Choice {
        let (argmax, max) = argmax(logits);
        // The softmax denominator over the whole vocabulary, for every row of every step: with libm's
        // `expf` this loop cost more than the model itself at batch 32 (see docs/BENCHMARKS.md).
        let denominator = exp_sum(logits, max);
        let probability_of = |token: u32| (logits[token as usize] - max).exp() / denominator;
        if self.params.is_greedy() {
            return Choice {
                token: argmax,
                probability: probability_of(argmax),
            };
        }

        let t = self.params.temperature;
        let candidates = &mut self.scratch;
        candidates.clear();
        candidates.extend(logits.iter().enumerate().map(|(i, &l)| ((l - max) / t, i as u32)));
        let by_logit_desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0);
        if self.params.top_k > 0 && self.params.top_k < candidates.len() {
            candidates.select_nth_unstable_by(self.params.top_k - 1, by_logit_desc);
            candidates.truncate(self.params.top_k);
        }
        candidates.sort_unstable_by(by_logit_desc);
        // Softmax over the survivors (already shifted by the max, so exp() cannot overflow).
        for c in candidates.iter_mut() {
            c.0 = c.0.exp();
        }
        let total: f32 = candidates.iter().map(|c| c.0).sum();
        if self.params.top_p < 1.0 {
            let mut mass = 0.0;
            let keep = candidates
                .iter()
                .position(|c| {
                    mass += c.0 / total;
                    mass >= self.params.top_p
                })
                .map_or(candidates.len(), |i| i + 1);
            candidates.truncate(keep);
        }
        let total: f32 = candidates.iter().map(|c| c.0).sum();
        let mut target = self.rng.random::<f32>() * total;
        let mut token = candidates.last().map_or(argmax, |c| c.1);
        for &(weight, id) in candidates.iter() {
            if target < weight {
                token = id;
                break;
            }
            target -= weight;
        }
        Choice {
            token,
            probability: probability_of(token),
        }
    }
}

/// `Σ e^(l - max)`, in eight independent lanes so the compiler can vectorize it (a plain float
/// `sum()` is a serial dependency chain: floating-point addition is not reassociated for us).
fn exp_sum(logits: &[f32], max: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = logits.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&l| fast_exp(l - max)).sum();
    for chunk in chunks {
        for (lane, &l) in lanes.iter_mut().zip(chunk) {
            *lane += fast_exp(l - max);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `e^x` for `x <= 0` within 1e-5 relative error, written so that LLVM vectorizes a loop of it
/// with plain SSE2: `2^k · 2^f` with `k` rounded by the 1.5·2^23 trick and a degree-5 Taylor
/// polynomial for `2^f`, `|f| <= 0.5`. Inputs below -87 (masked logits) give ~1e-38, never NaN.
#[inline]
fn fast_exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer
    let t = (x * LOG2_E).clamp(-126.0, 126.0);
    let k = (t + ROUND) - ROUND;
    let f = (t - k) * std::f32::consts::LN_2;
    let p = 1.0 + f * (1.0 + f * (0.5 + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0)))));
    f32::from_bits(((k as i32 + 127) as u32) << 23) * p
}

fn argmax(logits: &[f32]) -> (u32, f32) {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &l) in logits.iter().enumerate() {
        if l > best.1 {
            best = (i as u32, l);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_libm() {
        for i in 0..=200_000 {
            let x = -(i as f32) * 0.0005; // 0 down to -100
            let (fast, exact) = (fast_exp(x), x.exp());
            let tolerance = 1e-5 * exact + 1e-37;
            assert!((fast - exact).abs() <= tolerance, "x={x}: {fast} vs {exact}");
        }
        assert!(fast_exp(-3.0e38) >= 0.0 && fast_exp(-3.0e38) < 1e-37);
    }

    #[test]
    fn exp_sum_matches_the_plain_sum() {
        let logits: Vec<f32> = (0..2051).map(|i| ((i * 37) % 101) as f32 * 0.1 - 5.0).collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let plain: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        assert!((f64::from(exp_sum(&logits, max)) - plain).abs() < 1e-5 * plain);
    }

    #[test]
    fn greedy_takes_argmax_and_reports_its_probability() {
        let mut s = Sampler::new(SamplingParams::GREEDY);
        let c = s.sample(&[0.0, 2.0, 1.0]);
        assert_eq!(c.token, 1);
        let expected = 2f32.exp() / (1.0 + 2f32.exp() + 1f32.exp());
        assert!((c.probability - expected).abs() < 1e-6);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: Some(7),
            ..SamplingParams::GREEDY
        };
        let draw = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..20).map(|_| s.sample(&logits).token).collect::<Vec<_>>()
        };
        assert_eq!(draw(params.clone()), draw(params.clone()), "same seed, same tokens");
        assert_ne!(
            draw(params.clone()),
            draw(SamplingParams {
                seed: Some(8),
                ..params.clone()
            })
        );
        let greedy = argmax(&logits).0;
        assert!(draw(SamplingParams { top_k: 1, ..params }).iter().all(|&t| t == greedy));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 0 holds ~88% of the mass: top_p 0.5 must always pick it.
        let logits = [5.0, 3.0, 0.0, -1.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            top_k: 0,
            seed: Some(1),
            ..SamplingParams::GREEDY
        });
        assert!((0..200).all(|_| s.sample(&logits).token == 0));
        // top_k 2 never picks tokens 2 or 3.
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_p: 1.0,
            top_k: 2,
            seed: Some(1),
            ..SamplingParams::GREEDY
        });
        assert!((0..200).all(|_| s.sample(&logits).token < 2));
    }

    #[test]
    fn penalties_push_away_from_what_was_generated() {
        let logits = [2.0, 1.5, 0.0];
        let mut plain = Sampler::new(SamplingParams::GREEDY);
        assert!((0..5).all(|_| plain.sample(&logits).token == 0));
        // A presence penalty of 1: token 0 (2.0 - 1) loses to token 1 after its first pick; once both
        // were picked, each pays it once and token 0 leads again.
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 1.0,
            ..SamplingParams::GREEDY
        });
        let picks: Vec<u32> = (0..4).map(|_| s.sample(&logits).token).collect();
        assert_eq!(picks, vec![0, 1, 0, 0]);
        // A frequency penalty grows with each pick: 0, 1, then 0 again (2.0 - 0.6 > 1.5 - 0.6)...
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 0.6,
            ..SamplingParams::GREEDY
        });
        let picks: Vec<u32> = (0..4).map(|_| s.sample(&logits).token).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
        // ...and the reported probability is the model's own.
        let expected = 2f32.exp() / (2f32.exp() + 1.5f32.exp() + 1.0);
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 2.0,
            ..SamplingParams::GREEDY
        });
        assert!((s.sample(&logits).probability - expected).abs() < 1e-6);
    }
}
