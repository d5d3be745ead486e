//! A `tokenizers::Tokenizer` built from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE from `tokens` and `merges`) with
//! the pre-tokenizers named by `tokenizer.ggml.pre`:
//!
//! - `smollm`: digits split one by one, then GPT-2's byte-level split;
//! - `gpt-2`: GPT-2's byte-level split alone.
//!
//! Any other model or pre-tokenizer is an error rather than a tokenizer that silently splits
//! text differently from the model's training. Control tokens (`token_type` 3) become special
//! added tokens, so `<|im_start|>` in a text encodes to its one id. Encoding never adds BOS or
//! EOS: callers that want one (see [`GgufTokenizer::add_bos`]) prepend it themselves.

use crate::error::ModelError;
use crate::gguf::Gguf;
use tokenizers::models::bpe::{BpeBuilder, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

/// GGUF's token type of control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
pub const TOKEN_TYPE_CONTROL: i32 = 3;

/// A byte-level BPE tokenizer and the special ids and chat template of a GGUF file.
#[derive(Clone)]
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    vocab_size: u32,
    bos_id: u32,
    eos_id: u32,
    add_bos: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

impl GgufTokenizer {
    /// Builds the tokenizer from `gguf`'s metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<GgufTokenizer, ModelError> {
        let format = |detail: String| ModelError::Format {
            path: gguf.path().to_string(),
            detail,
        };
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(format(format!(
                "tokenizer.ggml.model {model:?} is not supported (only \"gpt2\", byte-level BPE)"
            )));
        }
        let pre = gguf.get_str("tokenizer.ggml.pre")?;
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            // GPT-2's split alone.
            "gpt-2" => byte_level.into(),
            other => {
                return Err(format(format!(
                    "tokenizer.ggml.pre {other:?} is not supported (only \"smollm\" and \"gpt-2\")"
                )))
            }
        };

        let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
        let vocab_size = u32::try_from(tokens.len())
            .map_err(|_| format(format!("{} tokens are too many", tokens.len())))?;
        let types = gguf.get_opt::<&[i32]>("tokenizer.ggml.token_type")?;
        if let Some(types) = types {
            if types.len() != tokens.len() {
                return Err(format(format!(
                    "tokenizer.ggml.token_type has {} entries for {} tokens",
                    types.len(),
                    tokens.len()
                )));
            }
        }
        let mut vocab = Vocab::with_capacity(tokens.len());
        for (id, tok) in (0u32..).zip(tokens) {
            if vocab.insert(tok.clone(), id).is_some() {
                return Err(format(format!(
                    "tokenizer.ggml.tokens has {tok:?} twice (again at id {id})"
                )));
            }
        }
        let merges_raw = gguf
            .get_opt::<&[String]>("tokenizer.ggml.merges")?
            .unwrap_or_default();
        let mut merges: Merges = Vec::with_capacity(merges_raw.len());
        for (i, m) in merges_raw.iter().enumerate() {
            match m.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    merges.push((a.to_string(), b.to_string()))
                }
                _ => {
                    return Err(format(format!(
                    "tokenizer.ggml.merges entry {i} {m:?} is not two tokens separated by a space"
                )))
                }
            }
        }
        let bpe = BpeBuilder::new()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| format(format!("cannot build the BPE model: {e}")))?;

        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(byte_level));
        if let Some(types) = types {
            let specials: Vec<AddedToken> = tokens
                .iter()
                .zip(types)
                .filter(|&(_, &t)| t == TOKEN_TYPE_CONTROL)
                .map(|(tok, _)| AddedToken::from(tok.clone(), true))
                .collect();
            tokenizer.add_special_tokens(&specials);
        }

        let id = |key: &str| -> Result<u32, ModelError> {
            let id = gguf.get_u32(key)?;
            if id >= vocab_size {
                return Err(format(format!(
                    "{key} {id} is outside the vocabulary of {vocab_size} tokens"
                )));
            }
            Ok(id)
        };
        Ok(GgufTokenizer {
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            add_bos: gguf
                .get_opt::<bool>("tokenizer.ggml.add_bos_token")?
                .unwrap_or(false),
            chat_template: gguf
                .get_opt::<&str>("tokenizer.chat_template")?
                .map(str::to_string),
            vocab_size,
            tokenizer,
        })
    }

    /// Token ids of `text`, with no BOS or EOS added. Control tokens written in the text (such
    /// as `<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// The text of `ids`, control tokens included as written (`<|im_end|>`). An id outside the
    /// vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        if let Some(&bad) = ids.iter().find(|&&id| id >= self.vocab_size) {
            return Err(ModelError::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.vocab_size
            )));
        }
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// The id of a token string (e.g. `"<|im_end|>"`), if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The number of tokens.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// `tokenizer.ggml.bos_token_id`.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// `tokenizer.ggml.eos_token_id`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// `tokenizer.ggml.add_bos_token` (false when absent): whether the model expects a BOS
    /// before a prompt. [`GgufTokenizer::encode`] never adds it.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// `tokenizer.chat_template` (a Jinja template), if the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
