//! The `kiln` command-line tool.

mod bench_cmd;
mod demo;
mod embed_cmd;
mod generate_cmd;
mod info;
mod kernel_stats;
mod plan_cmd;
mod profile_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "An ML graph compiler and runtime for GPUs through wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters and show the chosen one: backend, driver, limits, features.
    Info,
    /// Run a small demo graph on the GPU and check it against the CPU reference.
    Demo,
    /// Sentence embeddings with all-MiniLM-L6-v2 (fetched into the cache when missing).
    Embed {
        /// The model folder (config.json, model.safetensors, tokenizer.json).
        #[arg(long, value_name = "DIR")]
        model: Option<std::path::PathBuf>,
        /// Print exactly one JSON value: an array with one array of floats per TEXT.
        #[arg(long)]
        json: bool,
        /// The texts to embed.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Plan a graph: steps, arena size, liveness lower bound and their ratio.
    Plan {
        /// A graph saved as JSON (`Graph::to_json`).
        #[arg(required_unless_present = "model", conflicts_with = "model")]
        graph: Option<std::path::PathBuf>,
        /// Plan a real model's graph instead: `minilm` (batch <= 32, seq <= 128) or `smollm2`
        /// (seq <= 128, a cache of 1024).
        #[arg(long, value_parser = ["minilm", "smollm2"])]
        model: Option<String>,
        /// Print the whole plan as JSON (keys include arena_bytes, lower_bound_bytes, steps).
        #[arg(long)]
        json: bool,
        /// Also draw the memory timeline (step range x address range per tensor) to this file.
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
        /// Plan for this storage binding limit in bytes (default 128 MiB).
        #[arg(long, value_name = "BYTES")]
        max_binding: Option<u64>,
        /// Switch every fusion pass off.
        #[arg(long)]
        no_fusion: bool,
    },
    /// Benchmark the workloads (matmul, attention, layer norm, MiniLM, SmolLM2, run() CPU cost).
    Bench {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Small sizes and few runs (for software drivers and smoke tests).
        #[arg(long)]
        quick: bool,
        /// Only these groups, comma-separated: matmul, linear, attention, layernorm, minilm,
        /// smollm2, cpu, coop (the f16-input cooperative-matrix runs, where the GPU has them).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The linear group's shapes, comma-separated `MxKxN` ([M, K] x [N, K]^T + bias), in
        /// place of its defaults (16x384x1536, 4096x384x1536).
        #[arg(long, value_delimiter = ',', value_name = "MxKxN")]
        linear: Vec<String>,
    },
    /// Generate text with SmolLM2-135M-Instruct (Q4_1 GGUF, fetched into the cache when missing).
    Generate {
        /// The GGUF file.
        #[arg(long, value_name = "FILE")]
        model: Option<std::path::PathBuf>,
        /// The most tokens to generate.
        #[arg(short = 'n', default_value_t = 64)]
        max_new: usize,
        /// Always take the most likely token (the default).
        #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
        greedy: bool,
        /// Sample with this temperature (0 = greedy).
        #[arg(long)]
        temperature: Option<f32>,
        /// Sample among the K most likely tokens (0 = all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Sample among the most likely tokens whose probability reaches P.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// The sampler's seed: the same seed repeats the same tokens.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Wrap the prompt in the model's chat format.
        #[arg(long)]
        chat: bool,
        /// Print prefill and decode tokens/s to stderr.
        #[arg(long)]
        stats: bool,
        /// Print exactly one JSON object: prompt_ids, token_ids, text.
        #[arg(long)]
        json: bool,
        prompt: String,
    },
    /// What the Vulkan driver compiled each kernel into: registers, workgroup memory, spills
    /// and whatever else it reports (VK_KHR_pipeline_executable_properties).
    KernelStats {
        /// Only these kernels, comma-separated (e.g. `matmul_wide_vec4`); default: all.
        #[arg(long, value_delimiter = ',', value_name = "NAME")]
        kernel: Vec<String>,
        /// Also write each kernel's internal representations (driver IR, assembly) here.
        #[arg(long, value_name = "DIR")]
        ir: Option<std::path::PathBuf>,
    },
    /// Run a graph once on the GPU with random inputs and print the GPU time of every step.
    Profile {
        /// A graph saved as JSON.
        #[arg(required_unless_present = "model", conflicts_with = "model")]
        graph: Option<std::path::PathBuf>,
        /// Profile a model's graph with synthetic weights instead: `minilm` or `smollm2`
        /// (without `--extent`, MiniLM's batch and sequence are fixed at 32 x 128, the graph
        /// `kiln bench` runs).
        #[arg(long, value_parser = ["minilm", "smollm2"])]
        model: Option<String>,
        /// Run at this active extent, e.g. `--extent seq=1` (a decode step); default: the bounds.
        #[arg(long, value_name = "SYMBOL=VALUE")]
        extent: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info::run(),
        Command::Demo => demo::run(),
        Command::Embed { model, json, texts } => embed_cmd::run(model, json, &texts),
        Command::Plan {
            graph,
            model,
            json,
            svg,
            max_binding,
            no_fusion,
        } => plan_cmd::run(plan_cmd::Args {
            graph,
            model,
            json,
            svg,
            max_binding,
            no_fusion,
        }),
        Command::Profile {
            graph,
            model,
            extent,
        } => profile_cmd::run(graph.as_deref(), model.as_deref(), &extent),
        Command::KernelStats { kernel, ir } => kernel_stats::run(&kernel, ir.as_deref()),
        Command::Bench {
            json,
            quick,
            only,
            linear,
        } => bench_cmd::run(json, quick, &only, &linear),
        Command::Generate {
            model,
            max_new,
            greedy: _,
            temperature,
            top_k,
            top_p,
            seed,
            chat,
            stats,
            json,
            prompt,
        } => generate_cmd::run(generate_cmd::Args {
            model,
            max_new,
            sampling: kiln_models::llama::Sampling {
                temperature: temperature.unwrap_or(0.0),
                top_k,
                top_p,
                seed,
            },
            chat,
            stats,
            json,
            prompt,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}
