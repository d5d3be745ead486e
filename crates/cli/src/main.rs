//! The `kiln` command-line tool.

mod bench_cmd;
mod demo;
mod embed_cmd;
mod info;
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
        graph: std::path::PathBuf,
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
    },
    /// Run a graph once on the GPU with random inputs and print the GPU time of every step.
    Profile {
        /// A graph saved as JSON.
        graph: std::path::PathBuf,
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
            json,
            svg,
            max_binding,
            no_fusion,
        } => plan_cmd::run(plan_cmd::Args {
            graph,
            json,
            svg,
            max_binding,
            no_fusion,
        }),
        Command::Profile { graph } => profile_cmd::run(&graph),
        Command::Bench { json, quick } => bench_cmd::run(json, quick),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}
