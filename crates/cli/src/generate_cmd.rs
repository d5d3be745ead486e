//! `kiln generate`: SmolLM2-135M text generation from the Q4_1 GGUF.

use kiln_models::llama::Sampling;
use kiln_models::smollm2::{default_model_path, GenerateOptions, Generator, SmolLm2};
use kiln_runtime::{Device, DeviceOptions};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

pub struct Args {
    pub model: Option<PathBuf>,
    pub max_new: usize,
    pub sampling: Sampling,
    pub chat: bool,
    pub stats: bool,
    pub json: bool,
    pub prompt: String,
}

pub fn run(args: Args) -> Result<(), String> {
    let path = match args.model {
        Some(p) => p,
        None => default_model_path().map_err(|e| e.to_string())?,
    };
    let model = SmolLm2::load(&path).map_err(|e| e.to_string())?;
    let prompt_ids = model
        .prompt_ids(&args.prompt, args.chat)
        .map_err(|e| e.to_string())?;
    let device = Device::new(&DeviceOptions::default()).map_err(|e| e.to_string())?;
    let options = GenerateOptions {
        sampling: args.sampling,
        context: (prompt_ids.len() + args.max_new)
            .clamp(256, 8192)
            .next_power_of_two(),
        ..GenerateOptions::default()
    };
    let mut generator = Generator::new(&device, model, options).map_err(|e| e.to_string())?;
    let eos = generator.model.tokenizer.eos_id();
    // Stream: print whatever the decoded text grew by (whole characters only).
    let mut printed = String::new();
    let mut so_far: Vec<u32> = Vec::new();
    let tokenizer = generator.model.tokenizer.clone();
    let stream = !args.json;
    let out = generator
        .generate(&prompt_ids, args.max_new, |t| {
            if !stream || t == eos {
                return;
            }
            so_far.push(t);
            if let Ok(text) = tokenizer.decode(&so_far) {
                if text.starts_with(&printed) && !text.ends_with('\u{fffd}') {
                    print!("{}", &text[printed.len()..]);
                    let _ = std::io::stdout().flush();
                    printed = text;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    let mut text_ids = out.tokens.clone();
    if text_ids.last() == Some(&eos) {
        text_ids.pop();
    }
    let text = generator
        .model
        .tokenizer
        .decode(&text_ids)
        .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            json!({ "prompt_ids": prompt_ids, "token_ids": out.tokens, "text": text })
        );
    } else {
        if text.len() > printed.len() && text.starts_with(&printed) {
            print!("{}", &text[printed.len()..]);
        }
        println!();
    }
    if args.stats {
        let decoded = out.tokens.len().saturating_sub(1).max(1);
        eprintln!(
            "prefill: {} tokens in {:.2} ms ({:.0} tokens/s); decode: {} tokens in {:.2} ms ({:.1} tokens/s, {:.2} ms/token)",
            prompt_ids.len(),
            out.prefill_seconds * 1e3,
            prompt_ids.len() as f64 / out.prefill_seconds,
            decoded,
            out.decode_seconds * 1e3,
            decoded as f64 / out.decode_seconds,
            out.decode_seconds * 1e3 / decoded as f64
        );
    }
    Ok(())
}
