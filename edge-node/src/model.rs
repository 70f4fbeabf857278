//! A model directory exported for text generation with past key/values — by Hugging Face Optimum
//! (`text-generation-with-past`) or by onnxruntime-genai's model builder — and what we learn from it.
//!
//! Files: `model.onnx` (inputs `input_ids`, `attention_mask`, optional `position_ids`,
//! `past_key_values.N.key|value`; outputs `logits`, `present.N.key|value`), `tokenizer.json`,
//! `config.json`, `generation_config.json` (optional), `tokenizer_config.json` (special tokens, chat
//! template), `chat_template.jinja` (optional: where transformers has saved the chat template since mid-2025,
//! and the one it prefers when both exist).
//!
//! Layer count, KV heads, head size and dtypes are read from the ONNX graph's own inputs first and
//! from `config.json` only where the graph leaves a dimension symbolic, so a real export (Qwen2.5,
//! DeepSeek-R1-Distill, FP32/FP16/INT8/INT4) loads with no code change. The graph's nodes tell the two
//! layouts apart ([`Attention`]): the genai builder's `GroupQueryAttention` has Optimum's input names
//! but needs right-padded rows, and can share one buffer between past and present.

mod ops;

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use serde::Deserialize;
use serde_json::Value;

/// Why a model directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A required file is missing or unreadable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The graph does not have the inputs/outputs of a causal LM with past key/values.
    #[error("{path}: not a text-generation-with-past export: {reason}")]
    Layout {
        /// `model.onnx`.
        path: PathBuf,
        /// What is missing or unexpected.
        reason: String,
    },
}

/// `config.json`: only the keys we need; everything else is ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfConfig {
    /// Hidden size.
    pub hidden_size: Option<usize>,
    /// Attention heads.
    pub num_attention_heads: Option<usize>,
    /// KV heads (GQA); defaults to `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// Head size; defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// Decoder layers.
    pub num_hidden_layers: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: Option<usize>,
    /// Context length.
    pub max_position_embeddings: Option<usize>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<Value>,
    /// Model family, e.g. `qwen2`.
    pub model_type: Option<String>,
}

/// `generation_config.json`: sampling defaults and end-of-sequence ids.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationConfig {
    /// End-of-sequence id(s): an integer or a list.
    #[serde(default)]
    pub eos_token_id: Option<Value>,
    /// Default temperature.
    pub temperature: Option<f32>,
    /// Default nucleus mass.
    pub top_p: Option<f32>,
    /// Default top-k.
    pub top_k: Option<usize>,
    /// Whether sampling (rather than greedy) is the model's default.
    pub do_sample: Option<bool>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
}

/// `tokenizer_config.json`: the chat template and special tokens.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenizerConfig {
    /// Jinja chat template (a string; the list form of some exports is read as its `default` entry).
    #[serde(default, deserialize_with = "chat_template")]
    pub chat_template: Option<String>,
    /// BOS token text, if any.
    #[serde(default, deserialize_with = "token_text")]
    pub bos_token: Option<String>,
    /// EOS token text.
    #[serde(default, deserialize_with = "token_text")]
    pub eos_token: Option<String>,
    /// Padding token text.
    #[serde(default, deserialize_with = "token_text")]
    pub pad_token: Option<String>,
}

/// Token fields are either a string or `{"content": "..."}`.
fn token_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    })
}

/// `chat_template` is a string, or a list of `{name, template}` of which `default` is the chat one.
fn chat_template<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(items)) => items
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    })
}

/// Element type of the KV cache tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDtype {
    /// 32-bit float (FP32 and dynamically quantized INT8 exports).
    F32,
    /// 16-bit float (FP16 exports).
    F16,
}

/// How the graph's attention reads the KV cache, found from its operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Attention over `concat(past, new)` under the full `attention_mask` (Optimum's export): rows may
    /// be left-padded, and `present` is `past` plus the new positions.
    Masked,
    /// onnxruntime-genai's `GroupQueryAttention` (`com.microsoft`): a row attends to its first
    /// `sum(attention_mask)` positions whatever the mask's pattern, so its cache must start at
    /// position 0 (right padding); rotary positions are derived from that count too. Past and present
    /// may be one preallocated buffer, written in place (see [`crate::engine`]).
    GroupQuery,
}

/// What the graph needs, discovered from its inputs and outputs.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// How attention reads the cache.
    pub attention: Attention,
    /// Decoder layers (count of `past_key_values.N.key` inputs).
    pub layers: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// KV cache element type.
    pub kv_dtype: KvDtype,
    /// Element type of `logits`.
    pub logits_dtype: KvDtype,
    /// Whether the graph takes `position_ids`.
    pub has_position_ids: bool,
    /// Whether the graph takes `attention_mask`.
    pub has_attention_mask: bool,
    /// Input names `past_key_values.N.key`, `.value` per layer.
    pub past_names: Vec<[String; 2]>,
    /// Output names `present.N.key`, `.value` per layer.
    pub present_names: Vec<[String; 2]>,
    /// Longest sequence (prompt + generated) the model supports.
    pub context_length: usize,
}

/// A loaded model directory: parsed JSON files and paths.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: HfConfig,
    /// `generation_config.json` (defaults when absent).
    pub generation: GenerationConfig,
    /// `tokenizer_config.json`, its `chat_template` replaced by `chat_template.jinja` when that exists.
    pub tokenizer_config: TokenizerConfig,
    /// The file the chat template was read from (`chat_template.jinja` or `tokenizer_config.json`).
    pub chat_template_file: PathBuf,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

impl ModelFiles {
    /// Reads the JSON files of `dir`; `model.onnx` and `tokenizer.json` must exist.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        for required in ["model.onnx", "tokenizer.json", "config.json"] {
            let path = dir.join(required);
            if !path.is_file() {
                return Err(ModelError::File {
                    path,
                    reason: "missing (an Optimum text-generation export is expected)".into(),
                });
            }
        }
        let generation_path = dir.join("generation_config.json");
        let generation = if generation_path.is_file() {
            read_json(&generation_path)?
        } else {
            GenerationConfig::default()
        };
        let tokenizer_config_path = dir.join("tokenizer_config.json");
        let mut tokenizer_config: TokenizerConfig = if tokenizer_config_path.is_file() {
            read_json(&tokenizer_config_path)?
        } else {
            TokenizerConfig::default()
        };
        // transformers (since mid-2025) saves the template beside the config and loads that file first.
        let jinja_path = dir.join("chat_template.jinja");
        let chat_template_file = if jinja_path.is_file() {
            let template = std::fs::read_to_string(&jinja_path).map_err(|e| ModelError::File {
                path: jinja_path.clone(),
                reason: e.to_string(),
            })?;
            tokenizer_config.chat_template = Some(template);
            jinja_path
        } else {
            tokenizer_config_path
        };
        Ok(Self {
            dir: dir.to_owned(),
            config: read_json(&dir.join("config.json"))?,
            generation,
            tokenizer_config,
            chat_template_file,
        })
    }

    /// `model.onnx` inside the directory.
    pub fn onnx_path(&self) -> PathBuf {
        self.dir.join("model.onnx")
    }

    /// End-of-sequence ids: `generation_config.json`, else `config.json`.
    pub fn eos_ids(&self) -> Vec<u32> {
        let ids = |v: &Option<Value>| -> Vec<u32> {
            match v {
                Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|n| n as u32).collect(),
                _ => Vec::new(),
            }
        };
        let from_generation = ids(&self.generation.eos_token_id);
        if from_generation.is_empty() {
            ids(&self.config.eos_token_id)
        } else {
            from_generation
        }
    }
}

impl ModelSpec {
    /// Reads the graph's inputs and outputs, filling symbolic dimensions from `config.json`.
    pub fn discover(session: &Session, files: &ModelFiles) -> Result<Self, ModelError> {
        let path = files.onnx_path();
        let layout = |reason: String| ModelError::Layout {
            path: path.clone(),
            reason,
        };
        let input = |name: &str| session.inputs().iter().find(|i| i.name() == name);
        let output_names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();

        if input("input_ids").is_none() {
            return Err(layout("no `input_ids` input".into()));
        }
        let ops = ops::read(&path).map_err(|e| layout(format!("reading its nodes: {e}")))?;
        let attention = if ops.contains(&("com.microsoft".to_owned(), "GroupQueryAttention".to_owned())) {
            Attention::GroupQuery
        } else {
            Attention::Masked
        };
        if attention == Attention::GroupQuery && input("attention_mask").is_none() {
            return Err(layout(
                "GroupQueryAttention graph without `attention_mask`: the row lengths cannot be given".into(),
            ));
        }
        if !output_names.contains(&"logits") {
            return Err(layout("no `logits` output".into()));
        }
        let mut layers = 0;
        while input(&format!("past_key_values.{layers}.key")).is_some() {
            layers += 1;
        }
        if layers == 0 {
            return Err(layout(
                "no `past_key_values.0.key` input: export with past key/values (Optimum `text-generation-with-past`)"
                    .into(),
            ));
        }
        let mut past_names = Vec::with_capacity(layers);
        let mut present_names = Vec::with_capacity(layers);
        for layer in 0..layers {
            let past = [
                format!("past_key_values.{layer}.key"),
                format!("past_key_values.{layer}.value"),
            ];
            let present = [format!("present.{layer}.key"), format!("present.{layer}.value")];
            for name in &past {
                if input(name).is_none() {
                    return Err(layout(format!("missing input `{name}`")));
                }
            }
            for name in &present {
                if !output_names.contains(&name.as_str()) {
                    return Err(layout(format!("missing output `{name}`")));
                }
            }
            past_names.push(past);
            present_names.push(present);
        }

        let (kv_dtype, dims) = match input(&past_names[0][0]).map(|i| i.dtype()) {
            Some(ValueType::Tensor { ty, shape, .. }) => (
                dtype(*ty)
                    .ok_or_else(|| layout(format!("KV cache type {ty:?} is not supported (float32 or float16)")))?,
                shape.to_vec(),
            ),
            _ => return Err(layout("past_key_values.0.key is not a tensor".into())),
        };
        if dims.len() != 4 {
            return Err(layout(format!(
                "past_key_values.0.key has rank {}, expected [batch, kv_heads, past, head_dim]",
                dims.len()
            )));
        }
        let logits_dtype = match session
            .outputs()
            .iter()
            .find(|o| o.name() == "logits")
            .map(|o| o.dtype())
        {
            Some(ValueType::Tensor { ty, .. }) => {
                dtype(*ty).ok_or_else(|| layout(format!("logits type {ty:?} is not supported")))?
            }
            _ => return Err(layout("logits is not a tensor".into())),
        };
        let c = &files.config;
        let static_dim = |d: i64| usize::try_from(d).ok().filter(|&d| d > 0);
        let kv_heads = static_dim(dims[1])
            .or(c.num_key_value_heads)
            .or(c.num_attention_heads)
            .ok_or_else(|| {
                layout("KV heads are symbolic in the graph and config.json has no num_key_value_heads".into())
            })?;
        let head_dim = static_dim(dims[3])
            .or(c.head_dim)
            .or_else(|| Some(c.hidden_size? / c.num_attention_heads?))
            .ok_or_else(|| {
                layout("head size is symbolic in the graph and config.json has no head_dim/hidden_size".into())
            })?;
        if let Some(declared) = c.num_hidden_layers
            && declared != layers
        {
            tracing::warn!(
                graph = layers,
                config = declared,
                "layer count differs between model.onnx and config.json; using the graph's"
            );
        }
        Ok(Self {
            attention,
            layers,
            kv_heads,
            head_dim,
            kv_dtype,
            logits_dtype,
            has_position_ids: input("position_ids").is_some(),
            has_attention_mask: input("attention_mask").is_some(),
            past_names,
            present_names,
            context_length: c.max_position_embeddings.unwrap_or(2048),
        })
    }
}

fn dtype(ty: TensorElementType) -> Option<KvDtype> {
    match ty {
        TensorElementType::Float32 => Some(KvDtype::F32),
        TensorElementType::Float16 => Some(KvDtype::F16),
        _ => None,
    }
}

/// Why a model could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// ONNX Runtime itself is missing.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The directory's files are missing or wrong.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// ONNX Runtime refused the session options or the graph.
    #[error("onnxruntime session for {path}: {reason}")]
    Session {
        /// `model.onnx`.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
}

/// A model ready to run: the engine, the text codec and the directory's files.
#[derive(Debug)]
pub struct LoadedModel {
    /// Runs the graph.
    pub engine: crate::engine::Engine,
    /// Tokenizer and chat template.
    pub text: std::sync::Arc<crate::text::TextCodec>,
    /// The parsed JSON files.
    pub files: ModelFiles,
}

/// Loads ONNX Runtime (once per process), the model directory and its session.
pub fn load(
    search: &crate::runtime::LibrarySearch,
    dir: &Path,
    options: &crate::config::OrtSection,
) -> Result<LoadedModel, LoadError> {
    use crate::config::{Optimization, Provider};
    use ort::session::builder::GraphOptimizationLevel;

    let runtime = crate::runtime::load(search)?;
    let files = ModelFiles::open(dir)?;
    let path = files.onnx_path();
    let session_error = |reason: String| LoadError::Session {
        path: path.clone(),
        reason,
    };
    let providers: Vec<_> = options
        .execution_providers
        .iter()
        .map(|p| match p {
            Provider::Cpu => ort::ep::CPU::default().build(),
            Provider::Cuda => ort::ep::CUDA::default().build().error_on_failure(),
            Provider::Tensorrt => ort::ep::TensorRT::default().build().error_on_failure(),
        })
        .collect();
    let level = match options.optimization {
        Optimization::Disable => GraphOptimizationLevel::Disable,
        Optimization::Basic => GraphOptimizationLevel::Level1,
        Optimization::Extended => GraphOptimizationLevel::Level2,
        Optimization::All => GraphOptimizationLevel::All,
    };
    let mut builder = Session::builder(&runtime.environment)
        .map_err(|e| session_error(e.to_string()))?
        .with_optimization_level(level)
        .map_err(|e| session_error(e.to_string()))?
        .with_execution_providers(providers)
        .map_err(|e| session_error(format!("execution providers {:?}: {e}", options.execution_providers)))?;
    if !options.spin {
        builder = builder
            .with_intra_op_spinning(false)
            .map_err(|e| session_error(e.to_string()))?
            .with_inter_op_spinning(false)
            .map_err(|e| session_error(e.to_string()))?;
    }
    if options.intra_threads > 0 {
        builder = builder
            .with_intra_threads(options.intra_threads)
            .map_err(|e| session_error(e.to_string()))?;
    }
    if options.inter_threads > 0 {
        builder = builder
            .with_parallel_execution(true)
            .map_err(|e| session_error(e.to_string()))?;
        builder = builder
            .with_inter_threads(options.inter_threads)
            .map_err(|e| session_error(e.to_string()))?;
    }
    let session = builder
        .commit_from_file(&path)
        .map_err(|e| session_error(e.to_string()))?;
    let spec = ModelSpec::discover(&session, &files)?;
    let text = std::sync::Arc::new(crate::text::TextCodec::load(&files)?);
    tracing::info!(
        model = %dir.display(),
        attention = ?spec.attention,
        layers = spec.layers,
        kv_heads = spec.kv_heads,
        head_dim = spec.head_dim,
        kv_dtype = ?spec.kv_dtype,
        context = spec.context_length,
        "model loaded"
    );
    let engine = crate::engine::Engine::new(session, spec, text.pad_id());
    Ok(LoadedModel { engine, text, files })
}
