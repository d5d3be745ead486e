//! Text generation: the GGUF's weights, tokenizer and hyperparameters, one executable that
//! serves prefill (by active extent over a bucket) and decode (the same graph at extent 1),
//! the KV cache kept on the GPU, and the next token sampled on the GPU.

use crate::error::ModelError;
use crate::gguf::Gguf;
use crate::gguf_tokenizer::GgufTokenizer;
use crate::llama::{self, LlamaConfig, Sampling, WeightInfo};
use kiln_ir::{DType, Dim, HostTensor};
use kiln_runtime::{CompileOptions, Device, Executable};
use std::path::Path;

/// A loaded SmolLM2 (any llama GGUF with supported tensor types): file, tokenizer, config.
pub struct SmolLm2 {
    pub gguf: Gguf,
    pub tokenizer: GgufTokenizer,
    pub config: LlamaConfig,
}

impl WeightInfo for Gguf {
    fn weight(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        self.tensor(name)
            .ok()
            .map(|t| (t.dtype(), t.shape().to_vec()))
    }
}

impl SmolLm2 {
    pub fn load(path: &Path) -> Result<SmolLm2, ModelError> {
        let gguf = Gguf::open(path)?;
        let arch = gguf.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::Format {
                path: path.display().to_string(),
                detail: format!("architecture `{arch}` is not llama"),
            });
        }
        let hidden = gguf.get_usize("llama.embedding_length")?;
        let heads = gguf.get_usize("llama.attention.head_count")?;
        let kv_heads = gguf.get_usize("llama.attention.head_count_kv")?;
        if heads == 0 || kv_heads == 0 || hidden % heads != 0 {
            return Err(ModelError::Format {
                path: path.display().to_string(),
                detail: format!("{heads} heads do not divide the hidden size {hidden}"),
            });
        }
        let head_dim = hidden / heads;
        let vocab = gguf
            .tensor("token_embd.weight")?
            .shape()
            .first()
            .copied()
            .ok_or_else(|| ModelError::Format {
                path: path.display().to_string(),
                detail: "token_embd.weight has no dims".into(),
            })?;
        let config = LlamaConfig {
            vocab,
            hidden,
            layers: gguf.get_usize("llama.block_count")?,
            heads,
            kv_heads,
            head_dim,
            ffn: gguf.get_usize("llama.feed_forward_length")?,
            rope_theta: gguf.get_f32("llama.rope.freq_base").unwrap_or(10_000.0),
            rope_dims: gguf
                .get_usize("llama.rope.dimension_count")
                .unwrap_or(head_dim),
            rms_eps: gguf.get_f32("llama.attention.layer_norm_rms_epsilon")?,
        };
        let tokenizer = GgufTokenizer::from_gguf(&gguf)?;
        Ok(SmolLm2 {
            gguf,
            tokenizer,
            config,
        })
    }

    /// The prompt's token ids: no BOS; with `chat`, wrapped as one user turn of the model's
    /// chat format (`<|im_start|>user … <|im_end|>` then the assistant's turn).
    pub fn prompt_ids(&self, prompt: &str, chat: bool) -> Result<Vec<u32>, ModelError> {
        if chat {
            let text = format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n");
            return self.tokenizer.encode(&text);
        }
        self.tokenizer.encode(prompt)
    }
}

/// How to generate.
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    pub sampling: Sampling,
    /// The longest prompt (the prefill bucket).
    pub bucket: usize,
    /// Cache rows: prompt plus generated tokens.
    pub context: usize,
    /// Also read back the logits after the prompt (for tests and inspection); otherwise only
    /// the chosen token id comes back from the GPU at every step.
    pub read_first_logits: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            sampling: Sampling::GREEDY,
            bucket: 128,
            context: 1024,
            read_first_logits: false,
        }
    }
}

/// What one generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub tokens: Vec<u32>,
    /// The logits of the position after the prompt (empty unless
    /// [`GenerateOptions::read_first_logits`]).
    pub first_logits: Vec<f32>,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

/// A compiled SmolLM2 ready to generate: one executable, reused for every prompt and token.
pub struct Generator {
    pub model: SmolLm2,
    exe: Executable,
    options: GenerateOptions,
}

impl Generator {
    pub fn new(
        device: &Device,
        model: SmolLm2,
        options: GenerateOptions,
    ) -> Result<Generator, ModelError> {
        if options.bucket == 0 || options.bucket > options.context {
            return Err(ModelError::Invalid(format!(
                "bucket {} must be in 1..={} (the context)",
                options.bucket, options.context
            )));
        }
        let c = &model.config;
        let graph = llama::build_graph(
            c,
            &model.gguf,
            Dim::bounded("seq", options.bucket),
            options.context,
            options.sampling,
        )?;
        let mut exe = Executable::compile(device, &graph, &CompileOptions::default())?;
        for (_, node) in graph.params() {
            let name = node.source_name().unwrap_or_default();
            let t = model.gguf.tensor(name)?;
            exe.set_param_bytes(name, t.bytes())?;
        }
        // The caches live on the GPU: every run's updated cache becomes the next run's input.
        for l in 0..c.layers {
            exe.feed_back(2 + 2 * l, &format!("k_cache.{l}"))?;
            exe.feed_back(3 + 2 * l, &format!("v_cache.{l}"))?;
        }
        Ok(Generator {
            model,
            exe,
            options,
        })
    }

    pub fn executable(&self) -> &Executable {
        &self.exe
    }

    /// Generates up to `max_new` tokens after `prompt`, stopping after the end-of-sequence
    /// token or when the context is full. `on_token` sees each token as it is chosen.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_new: usize,
        mut on_token: impl FnMut(u32),
    ) -> Result<Generated, ModelError> {
        let n = prompt.len();
        if n == 0 {
            return Err(ModelError::Invalid("the prompt is empty".into()));
        }
        if n > self.options.bucket {
            return Err(ModelError::Invalid(format!(
                "the prompt has {n} tokens, more than the context bucket of {}",
                self.options.bucket
            )));
        }
        let eos = self.model.tokenizer.eos_id();
        let start = std::time::Instant::now();
        let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
        let read_logits = self.options.read_first_logits;
        let (mut token, first_logits) = self.step(&ids, 0, 0, read_logits)?;
        let prefill_seconds = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let mut tokens = Vec::new();
        for i in 0..max_new {
            tokens.push(token);
            on_token(token);
            let past = n + i;
            if token == eos || i + 1 == max_new || past + 1 > self.options.context {
                break;
            }
            token = self.step(&[token as i32], past, i as i32 + 1, false)?.0;
        }
        Ok(Generated {
            tokens,
            first_logits: first_logits.unwrap_or_default(),
            prefill_seconds,
            decode_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// One run: `ids` at position `past`; returns the sampled token (and the logits if asked).
    fn step(
        &mut self,
        ids: &[i32],
        past: usize,
        counter: i32,
        logits: bool,
    ) -> Result<(u32, Option<Vec<f32>>), ModelError> {
        let bad = |e: kiln_ir::TensorError| ModelError::Invalid(e.to_string());
        let tokens = HostTensor::from_i32(&[1, ids.len()], ids).map_err(bad)?;
        let one = |v: i32| HostTensor::from_i32(&[1], &[v]).map_err(bad);
        let (past, last, counter) = (one(past as i32)?, one(ids.len() as i32 - 1)?, one(counter)?);
        let inputs = [
            ("tokens", &tokens),
            ("past", &past),
            ("last", &last),
            ("counter", &counter),
        ];
        let read: &[usize] = if logits { &[0, 1] } else { &[0] };
        let out = self.exe.run_read_outputs(&inputs, read)?;
        let token = out[0].to_f32().first().copied().unwrap_or(0.0) as u32;
        Ok((token, logits.then(|| out[1].to_f32())))
    }
}
