//! `kiln embed [--model DIR] [--json] TEXT...`: all-MiniLM-L6-v2 sentence embeddings.

use kiln_models::minilm::{default_model_dir, Embedder, MiniLm};
use kiln_runtime::{Device, DeviceOptions};
use std::path::PathBuf;

/// The most texts run in one batch; more are run in several batches of the same executable.
const MAX_BATCH: usize = 64;

pub fn run(model: Option<PathBuf>, json: bool, texts: &[String]) -> Result<(), String> {
    if texts.is_empty() {
        return Err("give at least one TEXT to embed".into());
    }
    let dir = match model {
        Some(d) => d,
        None => default_model_dir().map_err(|e| e.to_string())?,
    };
    let model = MiniLm::load(&dir).map_err(|e| e.to_string())?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = model.tokenize(&refs).map_err(|e| e.to_string())?;
    let longest = ids.iter().map(Vec::len).max().unwrap_or(1);
    // One executable for a sequence bucket; every batch runs through active extent.
    let bucket = if longest <= 128 {
        128.min(model.max_tokens)
    } else {
        model.max_tokens
    };
    let batch = texts.len().min(MAX_BATCH);
    let device = Device::new(&DeviceOptions::default()).map_err(|e| e.to_string())?;
    let mut embedder = Embedder::new(&device, model, batch, bucket).map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    let embeddings = embedder.embed(&refs).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if json {
        println!(
            "{}",
            serde_json::to_string(&embeddings).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let a = &device.info().adapter;
    println!(
        "all-MiniLM-L6-v2 on {} ({:?}): {} texts, bucket {batch} x {bucket} tokens, {:.1} ms",
        a.name,
        a.backend,
        texts.len(),
        elapsed.as_secs_f64() * 1e3
    );
    for ((t, e), ids) in texts.iter().zip(&embeddings).zip(&ids) {
        let head: Vec<String> = e.iter().take(4).map(|v| format!("{v:+.4}")).collect();
        println!(
            "  [{}] {} tokens  {} ...  {t:?}",
            e.len(),
            ids.len(),
            head.join(" ")
        );
    }
    Ok(())
}
