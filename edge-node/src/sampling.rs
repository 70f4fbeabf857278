//! Choosing the next token: greedy, temperature, top-k, top-p, with a per-request seed.

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
}

impl SamplingParams {
    /// Greedy decoding.
    pub const GREEDY: Self = Self {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: None,
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
        }
    }

    /// Picks the next token from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> Choice {
        let (argmax, max) = argmax(logits);
        let denominator: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
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
        });
        assert!((0..200).all(|_| s.sample(&logits).token == 0));
        // top_k 2 never picks tokens 2 or 3.
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_p: 1.0,
            top_k: 2,
            seed: Some(1),
        });
        assert!((0..200).all(|_| s.sample(&logits).token < 2));
    }
}
