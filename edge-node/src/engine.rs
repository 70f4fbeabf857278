//! Model execution: prefill and decode steps over a batch whose KV cache lives in ONNX Runtime values.
//!
//! No scheduling here (that is [`crate::batcher`]): this module only knows how to
//! - **prefill** a group of new prompts (left-padded to a common length, `past` empty),
//! - run one **decode** step for every row of a [`KvBatch`] (one new token per row), and
//! - **merge** two batches and **retain** a subset of rows, re-padding the cache on the left.
//!
//! Rows are left-padded: a row's real tokens always end at the last cache position, and its
//! `attention_mask` is 0 over its padding. Positions (`position_ids`) count real tokens only, so a
//! row computes exactly what it would compute alone. In steady state a step feeds the previous
//! step's `present.*` outputs straight back as `past_key_values.*`: the cache is copied only when
//! rows join or leave.

use std::borrow::Cow;

use half::f16;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use crate::model::{KvDtype, ModelSpec};

/// A failure while running the model; every row of the step it happened in is failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// ONNX Runtime refused or failed a run.
    #[error("onnxruntime: {0}")]
    Ort(#[from] ort::Error),
    /// The model returned something of an unexpected shape.
    #[error("model output: {0}")]
    Output(String),
}

/// The rows of a running batch and their KV cache: per layer, `[key, value]` of shape
/// `[rows, kv_heads, len, head_dim]`.
#[derive(Debug)]
pub struct KvBatch {
    kv: Vec<[DynValue; 2]>,
    /// Per row, the attention mask over the `len` cached positions (0 = left padding).
    masks: Vec<Vec<i64>>,
    len: usize,
}

impl KvBatch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.masks.len()
    }

    /// Cached positions per row, padding included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }
}

/// The loaded model: an ONNX Runtime session and what its graph expects.
#[derive(Debug)]
pub struct Engine {
    session: Session,
    spec: ModelSpec,
    pad_id: i64,
}

/// Logits of the last position of each row, as `f32`, `rows × vocab` row-major.
#[derive(Debug, Clone)]
pub struct Logits {
    data: Vec<f32>,
    vocab: usize,
}

impl Logits {
    /// Row `i`'s logits.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }
}

impl Engine {
    /// Wraps a session whose graph matched `spec`.
    pub fn new(session: Session, spec: ModelSpec, pad_id: u32) -> Self {
        Self {
            session,
            spec,
            pad_id: i64::from(pad_id),
        }
    }

    /// What the graph expects.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Runs new prompts (each non-empty) as one left-padded batch; returns their cache and the logits
    /// of each prompt's last token.
    pub fn prefill(&mut self, prompts: &[&[u32]]) -> Result<(KvBatch, Logits), EngineError> {
        let rows = prompts.len();
        let len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * len);
        let mut positions = Vec::with_capacity(rows * len);
        let mut masks = Vec::with_capacity(rows);
        for prompt in prompts {
            let pad = len - prompt.len();
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            ids.extend(prompt.iter().map(|&t| i64::from(t)));
            positions.extend(std::iter::repeat_n(0, pad));
            positions.extend(0..prompt.len() as i64);
            let mut mask = vec![0; pad];
            mask.resize(len, 1);
            masks.push(mask);
        }
        let past = (0..self.spec.layers)
            .map(|_| Ok([self.empty_past(rows)?, self.empty_past(rows)?]))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mask_flat: Vec<i64> = masks.iter().flatten().copied().collect();
        let (kv, logits) = self.run([rows, len], ids, positions, mask_flat, past)?;
        Ok((KvBatch { kv, masks, len }, logits))
    }

    /// One decode step: `tokens[i]` at position `positions[i]` is appended to row `i`.
    pub fn decode(&mut self, batch: &mut KvBatch, tokens: &[u32], positions: &[i64]) -> Result<Logits, EngineError> {
        let rows = batch.rows();
        debug_assert_eq!(tokens.len(), rows);
        for mask in &mut batch.masks {
            mask.push(1);
        }
        batch.len += 1;
        let mask_flat: Vec<i64> = batch.masks.iter().flatten().copied().collect();
        let ids = tokens.iter().map(|&t| i64::from(t)).collect();
        let past = std::mem::take(&mut batch.kv);
        let (kv, logits) = self.run([rows, 1], ids, positions.to_vec(), mask_flat, past)?;
        batch.kv = kv;
        Ok(logits)
    }

    fn empty_past(&self, rows: usize) -> Result<DynValue, EngineError> {
        let shape = [rows, self.spec.kv_heads, 0, self.spec.head_dim];
        Ok(match self.spec.kv_dtype {
            KvDtype::F32 => Tensor::<f32>::from_array((shape, Vec::<f32>::new()))?.into_dyn(),
            KvDtype::F16 => Tensor::<f16>::from_array((shape, Vec::<f16>::new()))?.into_dyn(),
        })
    }

    fn run(
        &mut self,
        shape: [usize; 2],
        ids: Vec<i64>,
        positions: Vec<i64>,
        mask: Vec<i64>,
        past: Vec<[DynValue; 2]>,
    ) -> Result<(Vec<[DynValue; 2]>, Logits), EngineError> {
        let [rows, seq] = shape;
        let total = mask.len() / rows.max(1);
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(3 + 2 * self.spec.layers);
        inputs.push(("input_ids".into(), Tensor::from_array((shape, ids))?.into_dyn().into()));
        if self.spec.has_attention_mask {
            inputs.push((
                "attention_mask".into(),
                Tensor::from_array(([rows, total], mask))?.into_dyn().into(),
            ));
        }
        if self.spec.has_position_ids {
            inputs.push((
                "position_ids".into(),
                Tensor::from_array((shape, positions))?.into_dyn().into(),
            ));
        }
        for (names, [key, value]) in self.spec.past_names.iter().zip(past) {
            inputs.push((names[0].clone().into(), key.into()));
            inputs.push((names[1].clone().into(), value.into()));
        }
        let mut outputs = self.session.run(inputs)?;
        let logits = outputs
            .remove("logits")
            .ok_or_else(|| EngineError::Output("no logits".into()))?;
        let logits = last_position_logits(&logits, self.spec.logits_dtype, rows, seq)?;
        let mut present = Vec::with_capacity(self.spec.layers);
        for names in &self.spec.present_names {
            let mut take = |name: &str| {
                outputs
                    .remove(name)
                    .ok_or_else(|| EngineError::Output(format!("no {name}")))
            };
            present.push([take(&names[0])?, take(&names[1])?]);
        }
        Ok((present, logits))
    }

    /// Appends `other`'s rows after `batch`'s, left-padding whichever cache is shorter.
    pub fn merge(&self, batch: KvBatch, other: KvBatch) -> Result<KvBatch, EngineError> {
        if batch.is_empty() {
            return Ok(other);
        }
        let len = batch.len.max(other.len);
        let picks: Vec<(usize, usize)> = (0..batch.rows())
            .map(|r| (0, r))
            .chain((0..other.rows()).map(|r| (1, r)))
            .collect();
        let sources = [&batch, &other];
        let kv = self.repack(&sources, &picks, len)?;
        let masks = picks
            .iter()
            .map(|&(s, r)| left_pad(&sources[s].masks[r], len))
            .collect();
        Ok(KvBatch { kv, masks, len })
    }

    /// Keeps the rows where `keep` is true, and drops cache columns that are padding in every kept row.
    pub fn retain(&self, batch: KvBatch, keep: &[bool]) -> Result<KvBatch, EngineError> {
        let picks: Vec<(usize, usize)> = (0..batch.rows()).filter(|&r| keep[r]).map(|r| (0, r)).collect();
        if picks.len() == batch.rows() {
            return Ok(batch);
        }
        let common_pad = picks
            .iter()
            .map(|&(_, r)| batch.masks[r].iter().take_while(|&&m| m == 0).count())
            .min()
            .unwrap_or(batch.len);
        let len = batch.len - common_pad;
        let kv = self.repack(&[&batch], &picks, len)?;
        let masks = picks
            .iter()
            .map(|&(_, r)| batch.masks[r][common_pad..].to_vec())
            .collect();
        Ok(KvBatch { kv, masks, len })
    }

    fn repack(
        &self,
        sources: &[&KvBatch],
        picks: &[(usize, usize)],
        len: usize,
    ) -> Result<Vec<[DynValue; 2]>, EngineError> {
        let geometry = Geometry {
            heads: self.spec.kv_heads,
            head_dim: self.spec.head_dim,
            len,
        };
        (0..self.spec.layers)
            .map(|layer| {
                let mut pair = Vec::with_capacity(2);
                for kv in 0..2 {
                    let tensors: Vec<(&DynValue, usize)> = sources.iter().map(|s| (&s.kv[layer][kv], s.len)).collect();
                    pair.push(match self.spec.kv_dtype {
                        KvDtype::F32 => repack_typed::<f32>(&tensors, picks, geometry)?,
                        KvDtype::F16 => repack_typed::<f16>(&tensors, picks, geometry)?,
                    });
                }
                let value = pair.pop().ok_or_else(|| EngineError::Output("repack".into()))?;
                let key = pair.pop().ok_or_else(|| EngineError::Output("repack".into()))?;
                Ok([key, value])
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    heads: usize,
    head_dim: usize,
    len: usize,
}

/// Builds a `[picks, heads, len, head_dim]` tensor from rows of source tensors, each row right-aligned:
/// shorter rows get zero columns on the left, longer ones lose leading (padding) columns.
fn repack_typed<T>(
    sources: &[(&DynValue, usize)],
    picks: &[(usize, usize)],
    g: Geometry,
) -> Result<DynValue, EngineError>
where
    T: ort::value::PrimitiveTensorElementType + Copy + Default + std::fmt::Debug + 'static,
{
    let views = sources
        .iter()
        .map(|(value, len)| Ok((value.try_extract_tensor::<T>()?.1, *len)))
        .collect::<Result<Vec<_>, EngineError>>()?;
    let mut out = vec![T::default(); picks.len() * g.heads * g.len * g.head_dim];
    for (dst_row, &(source, src_row)) in picks.iter().enumerate() {
        let (data, src_len) = views[source];
        for head in 0..g.heads {
            let src_base = ((src_row * g.heads + head) * src_len) * g.head_dim;
            let dst_base = ((dst_row * g.heads + head) * g.len) * g.head_dim;
            let (src_skip, dst_skip) = if src_len > g.len {
                (src_len - g.len, 0)
            } else {
                (0, g.len - src_len)
            };
            let n = (src_len - src_skip) * g.head_dim;
            let src = &data[src_base + src_skip * g.head_dim..][..n];
            out[dst_base + dst_skip * g.head_dim..][..n].copy_from_slice(src);
        }
    }
    Ok(Tensor::from_array(([picks.len(), g.heads, g.len, g.head_dim], out))?.into_dyn())
}

fn left_pad(mask: &[i64], len: usize) -> Vec<i64> {
    let mut out = vec![0; len - mask.len()];
    out.extend_from_slice(mask);
    out
}

fn last_position_logits(value: &DynValue, dtype: KvDtype, rows: usize, seq: usize) -> Result<Logits, EngineError> {
    fn take<T: Copy>(data: &[T], rows: usize, seq: usize, convert: impl Fn(T) -> f32) -> Result<Logits, EngineError> {
        let vocab = data.len() / (rows * seq).max(1);
        if vocab == 0 || data.len() != rows * seq * vocab {
            return Err(EngineError::Output(format!(
                "logits of {} values for {rows}×{seq} positions",
                data.len()
            )));
        }
        let mut out = Vec::with_capacity(rows * vocab);
        for row in 0..rows {
            let start = (row * seq + seq - 1) * vocab;
            out.extend(data[start..start + vocab].iter().map(|&x| convert(x)));
        }
        Ok(Logits { data: out, vocab })
    }
    match dtype {
        KvDtype::F32 => take(value.try_extract_tensor::<f32>()?.1, rows, seq, |x| x),
        KvDtype::F16 => take(value.try_extract_tensor::<f16>()?.1, rows, seq, f16::to_f32),
    }
}
