//! Model execution: prefill and decode steps over a batch whose KV cache lives in ONNX Runtime values.
//!
//! No scheduling here (that is [`crate::batcher`]): this module only knows how to
//! - **prefill** a group of new prompts (left-padded to a common length, `past` empty),
//! - run one **decode** step for every row of a [`KvBatch`] (one new token per row), and
//! - **merge** two batches and **retain** a subset of rows, re-padding the cache on the left.
//!
//! Two cache layouts, chosen by the graph's attention ([`Attention`]):
//!
//! - **Masked** (Optimum's export): rows are left-padded: a row's real tokens always end at the last
//!   cache position, and its `attention_mask` is 0 over its padding. Positions (`position_ids`) count
//!   real tokens only, so a row computes exactly what it would compute alone. A step feeds the previous
//!   step's `present.*` outputs back as `past_key_values.*`; the graph's `Concat(past, new)` copies the
//!   whole cache into a new tensor every step.
//! - **Shared** (`GroupQueryAttention`, onnxruntime-genai's builder): each row's cache starts at
//!   position 0 of a preallocated `[rows, kv_heads, capacity, head_dim]` buffer per layer, and its
//!   length is the count of ones in its `attention_mask` row (the graph derives `seqlens_k` and the
//!   rotary positions from it). Every decode step binds the same buffer as `past_key_values.*` and
//!   `present.*` (ONNX Runtime's I/O binding), so the operator writes the new position in place: no
//!   copy per step. The capacity grows by doubling when a row reaches it.
//!
//! In both layouts the cache is copied only when rows join or leave, or when the shared buffer grows.

use std::borrow::Cow;

use half::f16;
use ort::session::{IoBinding, Session, SessionInputValue};
use ort::value::{DynTensor, DynValue, Tensor, TensorElementType};

use crate::model::{Attention, KvDtype, ModelSpec};

/// Smallest shared-buffer capacity, in positions.
const MIN_CAPACITY: usize = 64;

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

/// The rows of a running batch and their KV cache.
#[derive(Debug)]
pub struct KvBatch {
    cache: Cache,
}

#[derive(Debug)]
enum Cache {
    /// Per layer, `[key, value]` of shape `[rows, kv_heads, len, head_dim]`, rows left-padded.
    Masked {
        kv: Vec<[DynValue; 2]>,
        /// Per row, the attention mask over the `len` cached positions (0 = left padding).
        masks: Vec<Vec<i64>>,
        len: usize,
    },
    /// Per layer, `[key, value]` of shape `[rows, kv_heads, capacity, head_dim]`; row `r` holds
    /// positions `0..lens[r]`.
    Shared {
        kv: Vec<[DynValue; 2]>,
        lens: Vec<usize>,
        capacity: usize,
        /// Binds `kv` as both past and present (made on the first decode step of this composition).
        binding: Option<Box<IoBinding>>,
    },
}

impl KvBatch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        match &self.cache {
            Cache::Masked { masks, .. } => masks.len(),
            Cache::Shared { lens, .. } => lens.len(),
        }
    }

    /// Cached positions of the longest row (padding included in the masked layout).
    pub fn len(&self) -> usize {
        match &self.cache {
            Cache::Masked { len, .. } => *len,
            Cache::Shared { lens, .. } => lens.iter().copied().max().unwrap_or(0),
        }
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    /// Positions the cache tensors hold per row: `len()` in the masked layout, the preallocated
    /// capacity in the shared one.
    pub fn capacity(&self) -> usize {
        match &self.cache {
            Cache::Masked { len, .. } => *len,
            Cache::Shared { capacity, .. } => *capacity,
        }
    }

    /// Bytes the cache tensors hold, every layer's key and value: rows × capacity × the bytes of one
    /// position (layers × 2 × KV heads × head size × element size).
    pub fn cache_bytes(&self) -> usize {
        let (Cache::Masked { kv, .. } | Cache::Shared { kv, .. }) = &self.cache;
        kv.iter().flatten().map(value_bytes).sum()
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

    /// Runs new prompts (each non-empty) as one padded batch; returns their cache and the logits of
    /// each prompt's last token.
    pub fn prefill(&mut self, prompts: &[&[u32]]) -> Result<(KvBatch, Logits), EngineError> {
        match self.spec.attention {
            Attention::Masked => self.prefill_masked(prompts),
            Attention::GroupQuery => self.prefill_shared(prompts),
        }
    }

    /// One decode step: `tokens[i]` at position `positions[i]` is appended to row `i` (the shared
    /// layout's graph derives the positions from each row's length, which equals them).
    pub fn decode(&mut self, batch: &mut KvBatch, tokens: &[u32], positions: &[i64]) -> Result<Logits, EngineError> {
        debug_assert_eq!(tokens.len(), batch.rows());
        match &mut batch.cache {
            Cache::Masked { kv, masks, len } => {
                let rows = masks.len();
                for mask in masks.iter_mut() {
                    mask.push(1);
                }
                *len += 1;
                let mask_flat: Vec<i64> = masks.iter().flatten().copied().collect();
                let ids = tokens.iter().map(|&t| i64::from(t)).collect();
                let past = std::mem::take(kv);
                let (present, logits) = self.run([rows, 1], ids, positions.to_vec(), mask_flat, past)?;
                *kv = present;
                Ok(logits)
            }
            Cache::Shared { .. } => self.decode_shared(batch, tokens),
        }
    }

    fn prefill_masked(&mut self, prompts: &[&[u32]]) -> Result<(KvBatch, Logits), EngineError> {
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
        Ok((
            KvBatch {
                cache: Cache::Masked { kv, masks, len },
            },
            logits,
        ))
    }

    /// Prefill for the shared layout: rows right-padded, empty past; each row's logits are taken at
    /// its own last token. The cache comes back at the prompt length; the first decode step or merge
    /// moves it into a buffer with room to grow.
    fn prefill_shared(&mut self, prompts: &[&[u32]]) -> Result<(KvBatch, Logits), EngineError> {
        let rows = prompts.len();
        let len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for prompt in prompts {
            let pad = len - prompt.len();
            ids.extend(prompt.iter().map(|&t| i64::from(t)));
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            mask.extend(std::iter::repeat_n(1, prompt.len()));
            mask.extend(std::iter::repeat_n(0, pad));
        }
        let past = (0..self.spec.layers)
            .map(|_| Ok([self.empty_past(rows)?, self.empty_past(rows)?]))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
        let last: Vec<usize> = lens.iter().map(|l| l - 1).collect();
        let (kv, logits) = self.run_rows([rows, len], ids, mask, past, &last)?;
        Ok((
            KvBatch {
                cache: Cache::Shared {
                    kv,
                    lens,
                    capacity: len,
                    binding: None,
                },
            },
            logits,
        ))
    }

    /// One decode step in the shared layout: the cache buffers are bound as both past and present, so
    /// the graph writes each row's new position in place.
    fn decode_shared(&mut self, batch: &mut KvBatch, tokens: &[u32]) -> Result<Logits, EngineError> {
        let needed = batch.len() + 1;
        if needed > batch.capacity() {
            let rows = batch.rows();
            let picks: Vec<(usize, usize)> = (0..rows).map(|r| (0, r)).collect();
            let grown = self.repack_shared(&[&*batch], &picks, needed)?;
            *batch = grown;
        }
        let Cache::Shared { kv, lens, binding, .. } = &mut batch.cache else {
            return Err(EngineError::Output("decode_shared on a masked batch".into()));
        };
        let rows = lens.len();
        if binding.is_none() {
            let mut b = self.session.create_binding()?;
            for (names, [key, value]) in self.spec.past_names.iter().zip(kv.iter()) {
                b.bind_input(names[0].as_str(), key)?;
                b.bind_input(names[1].as_str(), value)?;
            }
            for (names, [key, value]) in self.spec.present_names.iter().zip(kv.iter_mut()) {
                b.bind_output(names[0].as_str(), key)?;
                b.bind_output(names[1].as_str(), value)?;
            }
            b.bind_output_to_device("logits", self.session.allocator().memory_info())?;
            *binding = Some(Box::new(b));
        }
        let Some(b) = binding.as_mut() else {
            return Err(EngineError::Output("no binding".into()));
        };
        let total = lens.iter().copied().max().unwrap_or(0) + 1;
        let mut mask = Vec::with_capacity(rows * total);
        for &len in lens.iter() {
            mask.extend(std::iter::repeat_n(1i64, len + 1));
            mask.extend(std::iter::repeat_n(0i64, total - len - 1));
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        b.bind_input("input_ids", &Tensor::from_array(([rows, 1], ids))?)?;
        b.bind_input("attention_mask", &Tensor::from_array(([rows, total], mask))?)?;
        let mut outputs = self.session.run_binding(b)?;
        let logits = outputs
            .remove("logits")
            .ok_or_else(|| EngineError::Output("no logits".into()))?;
        // In place: the present ONNX Runtime returns is our buffer, not a copy of it.
        debug_assert!(
            self.spec
                .present_names
                .first()
                .zip(kv.first())
                .is_none_or(|(names, [key, _])| {
                    let dtype = self.spec.kv_dtype;
                    outputs.get(names[0].as_str()).and_then(|v| buffer_ptr(v, dtype)) == buffer_ptr(key, dtype)
                }),
            "present is not the shared buffer"
        );
        let last = vec![0; rows];
        let logits = row_logits(&logits, self.spec.logits_dtype, rows, 1, &last)?;
        for len in lens.iter_mut() {
            *len += 1;
        }
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
        let last = vec![seq - 1; rows];
        self.outputs(inputs, rows, seq, &last)
    }

    /// Runs with `input_ids` and `attention_mask` only (no positions), taking row `r`'s logits at
    /// position `last[r]`.
    fn run_rows(
        &mut self,
        shape: [usize; 2],
        ids: Vec<i64>,
        mask: Vec<i64>,
        past: Vec<[DynValue; 2]>,
        last: &[usize],
    ) -> Result<(Vec<[DynValue; 2]>, Logits), EngineError> {
        let [rows, seq] = shape;
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(2 + 2 * self.spec.layers);
        inputs.push(("input_ids".into(), Tensor::from_array((shape, ids))?.into_dyn().into()));
        inputs.push((
            "attention_mask".into(),
            Tensor::from_array((shape, mask))?.into_dyn().into(),
        ));
        for (names, [key, value]) in self.spec.past_names.iter().zip(past) {
            inputs.push((names[0].clone().into(), key.into()));
            inputs.push((names[1].clone().into(), value.into()));
        }
        self.outputs(inputs, rows, seq, last)
    }

    fn outputs(
        &mut self,
        inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)>,
        rows: usize,
        seq: usize,
        last: &[usize],
    ) -> Result<(Vec<[DynValue; 2]>, Logits), EngineError> {
        let mut outputs = self.session.run(inputs)?;
        let logits = outputs
            .remove("logits")
            .ok_or_else(|| EngineError::Output("no logits".into()))?;
        let logits = row_logits(&logits, self.spec.logits_dtype, rows, seq, last)?;
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

    /// Appends `other`'s rows after `batch`'s (masked layout: left-padding whichever cache is shorter).
    pub fn merge(&self, batch: KvBatch, other: KvBatch) -> Result<KvBatch, EngineError> {
        if batch.is_empty() {
            return Ok(other);
        }
        let picks: Vec<(usize, usize)> = (0..batch.rows())
            .map(|r| (0, r))
            .chain((0..other.rows()).map(|r| (1, r)))
            .collect();
        if let Cache::Shared { .. } = batch.cache {
            let needed = batch.len().max(other.len()) + 1;
            return self.repack_shared(&[&batch, &other], &picks, needed);
        }
        let (Cache::Masked { masks: a, len: la, .. }, Cache::Masked { masks: b, len: lb, .. }) =
            (&batch.cache, &other.cache)
        else {
            return Err(EngineError::Output("merging batches of different layouts".into()));
        };
        let len = (*la).max(*lb);
        let sources = [&batch, &other];
        let kv = self.repack(&sources, &picks, len)?;
        let masks = picks
            .iter()
            .map(|&(s, r)| left_pad(if s == 0 { &a[r] } else { &b[r] }, len))
            .collect();
        Ok(KvBatch {
            cache: Cache::Masked { kv, masks, len },
        })
    }

    /// Keeps the rows where `keep` is true (masked layout: and drops cache columns that are padding in
    /// every kept row).
    pub fn retain(&self, batch: KvBatch, keep: &[bool]) -> Result<KvBatch, EngineError> {
        let picks: Vec<(usize, usize)> = (0..batch.rows()).filter(|&r| keep[r]).map(|r| (0, r)).collect();
        if picks.len() == batch.rows() {
            return Ok(batch);
        }
        let masks = match &batch.cache {
            Cache::Shared { lens, .. } => {
                let needed = picks.iter().map(|&(_, r)| lens[r]).max().unwrap_or(0) + 1;
                return self.repack_shared(&[&batch], &picks, needed);
            }
            Cache::Masked { masks, .. } => masks,
        };
        let common_pad = picks
            .iter()
            .map(|&(_, r)| masks[r].iter().take_while(|&&m| m == 0).count())
            .min()
            .unwrap_or(batch.len());
        let len = batch.len() - common_pad;
        let kv = self.repack(&[&batch], &picks, len)?;
        let masks = picks.iter().map(|&(_, r)| masks[r][common_pad..].to_vec()).collect();
        Ok(KvBatch {
            cache: Cache::Masked { kv, masks, len },
        })
    }

    /// Copies the picked rows' positions `0..len` into new shared buffers with room for `needed`
    /// positions (capacity doubled from the next power of two, at most the context length).
    fn repack_shared(
        &self,
        sources: &[&KvBatch],
        picks: &[(usize, usize)],
        needed: usize,
    ) -> Result<KvBatch, EngineError> {
        if needed > self.spec.context_length {
            return Err(EngineError::Output(format!(
                "{needed} positions exceed the context length {}",
                self.spec.context_length
            )));
        }
        let capacity = needed
            .next_power_of_two()
            .max(MIN_CAPACITY)
            .min(self.spec.context_length);
        let mut parts = Vec::with_capacity(sources.len());
        for source in sources {
            let Cache::Shared { kv, lens, capacity, .. } = &source.cache else {
                return Err(EngineError::Output("merging batches of different layouts".into()));
            };
            parts.push((kv, lens, *capacity));
        }
        let lens: Vec<usize> = picks.iter().map(|&(s, r)| parts[s].1[r]).collect();
        let geometry = Geometry {
            heads: self.spec.kv_heads,
            head_dim: self.spec.head_dim,
            len: capacity,
        };
        let element = match self.spec.kv_dtype {
            KvDtype::F32 => TensorElementType::Float32,
            KvDtype::F16 => TensorElementType::Float16,
        };
        let mut kv = Vec::with_capacity(self.spec.layers);
        for layer in 0..self.spec.layers {
            let mut pair = Vec::with_capacity(2);
            for half in 0..2 {
                let mut dst = DynTensor::new(
                    self.session.allocator(),
                    element,
                    [picks.len(), geometry.heads, capacity, geometry.head_dim],
                )?
                .into_dyn();
                let tensors: Vec<(&DynValue, usize)> = parts.iter().map(|p| (&p.0[layer][half], p.2)).collect();
                match self.spec.kv_dtype {
                    KvDtype::F32 => copy_prefixes::<f32>(&tensors, picks, &lens, &mut dst, geometry)?,
                    KvDtype::F16 => copy_prefixes::<f16>(&tensors, picks, &lens, &mut dst, geometry)?,
                }
                pair.push(dst);
            }
            let value = pair.pop().ok_or_else(|| EngineError::Output("repack".into()))?;
            let key = pair.pop().ok_or_else(|| EngineError::Output("repack".into()))?;
            kv.push([key, value]);
        }
        Ok(KvBatch {
            cache: Cache::Shared {
                kv,
                lens,
                capacity,
                binding: None,
            },
        })
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
                    let tensors = sources
                        .iter()
                        .map(|s| match &s.cache {
                            Cache::Masked { kv: values, len, .. } => Ok((&values[layer][kv], *len)),
                            Cache::Shared { .. } => Err(EngineError::Output("repack of a shared cache".into())),
                        })
                        .collect::<Result<Vec<_>, EngineError>>()?;
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

/// Writes positions `0..lens[i]` of each picked source row into row `i` of `dst`
/// (`[picks, heads, g.len, head_dim]`); positions past a row's length are left as they are.
fn copy_prefixes<T>(
    sources: &[(&DynValue, usize)],
    picks: &[(usize, usize)],
    lens: &[usize],
    dst: &mut DynValue,
    g: Geometry,
) -> Result<(), EngineError>
where
    T: ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static,
{
    let views = sources
        .iter()
        .map(|(value, capacity)| Ok((value.try_extract_tensor::<T>()?.1, *capacity)))
        .collect::<Result<Vec<_>, EngineError>>()?;
    let (_, out) = dst.try_extract_tensor_mut::<T>()?;
    for (dst_row, (&(source, src_row), &len)) in picks.iter().zip(lens).enumerate() {
        let (data, src_capacity) = views[source];
        if len > src_capacity || len > g.len {
            return Err(EngineError::Output(format!(
                "row of {len} positions in a cache of {src_capacity}"
            )));
        }
        for head in 0..g.heads {
            let src = ((src_row * g.heads + head) * src_capacity) * g.head_dim;
            let dst = ((dst_row * g.heads + head) * g.len) * g.head_dim;
            let n = len * g.head_dim;
            out[dst..dst + n].copy_from_slice(&data[src..src + n]);
        }
    }
    Ok(())
}

/// Size of a tensor's data in bytes (0 for anything that is not a float32/float16 tensor).
fn value_bytes(value: &DynValue) -> usize {
    if let Ok((_, data)) = value.try_extract_tensor::<f32>() {
        std::mem::size_of_val(data)
    } else if let Ok((_, data)) = value.try_extract_tensor::<f16>() {
        std::mem::size_of_val(data)
    } else {
        0
    }
}

/// Where a cache tensor's data lives (to tell a bound buffer from a copy).
fn buffer_ptr(value: &DynValue, dtype: KvDtype) -> Option<*const u8> {
    match dtype {
        KvDtype::F32 => value.try_extract_tensor::<f32>().ok().map(|(_, d)| d.as_ptr().cast()),
        KvDtype::F16 => value.try_extract_tensor::<f16>().ok().map(|(_, d)| d.as_ptr().cast()),
    }
}

fn left_pad(mask: &[i64], len: usize) -> Vec<i64> {
    let mut out = vec![0; len - mask.len()];
    out.extend_from_slice(mask);
    out
}

/// Row `r`'s logits at position `last[r]`, as `f32`.
fn row_logits(
    value: &DynValue,
    dtype: KvDtype,
    rows: usize,
    seq: usize,
    last: &[usize],
) -> Result<Logits, EngineError> {
    fn take<T: Copy>(
        data: &[T],
        rows: usize,
        seq: usize,
        last: &[usize],
        convert: impl Fn(T) -> f32,
    ) -> Result<Logits, EngineError> {
        let vocab = data.len() / (rows * seq).max(1);
        if vocab == 0 || data.len() != rows * seq * vocab {
            return Err(EngineError::Output(format!(
                "logits of {} values for {rows}×{seq} positions",
                data.len()
            )));
        }
        let mut out = Vec::with_capacity(rows * vocab);
        for (row, &position) in last.iter().enumerate().take(rows) {
            let start = (row * seq + position.min(seq - 1)) * vocab;
            out.extend(data[start..start + vocab].iter().map(|&x| convert(x)));
        }
        Ok(Logits { data: out, vocab })
    }
    match dtype {
        KvDtype::F32 => take(value.try_extract_tensor::<f32>()?.1, rows, seq, last, |x| x),
        KvDtype::F16 => take(value.try_extract_tensor::<f16>()?.1, rows, seq, last, f16::to_f32),
    }
}
