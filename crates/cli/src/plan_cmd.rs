//! `kiln plan GRAPH.json`: the steps, the arena, its lower bound; as text, JSON or SVG.

use kiln_ir::Graph;
use kiln_plan::{plan, Binding, DeviceLimits, FusionOptions, PlanOptions};
use std::path::PathBuf;

pub struct Args {
    pub graph: Option<PathBuf>,
    pub model: Option<String>,
    pub json: bool,
    pub svg: Option<PathBuf>,
    pub max_binding: Option<u64>,
    pub no_fusion: bool,
}

/// The graph of a real model's architecture (weights are not needed to plan).
pub fn model_graph(name: &str) -> Result<Graph, String> {
    model_graph_with(name, false)
}

/// [`model_graph`]; with `fixed`, MiniLM's batch and sequence dims are static at their bounds
/// (the graph `kiln bench` runs: steps whose shapes cannot change may split k).
pub fn model_graph_with(name: &str, fixed: bool) -> Result<Graph, String> {
    use kiln_ir::Dim;
    use kiln_models::{llama, minilm, workloads};
    let dim = |sym: &str, bound: usize| {
        if fixed {
            Dim::Static(bound)
        } else {
            Dim::bounded(sym, bound)
        }
    };
    match name {
        "minilm" => minilm::build_graph(
            &workloads::minilm_config(),
            dim("batch", 32),
            dim("seq", 128),
        )
        .map_err(|e| e.to_string()),
        "smollm2" => {
            let c = workloads::smollm2_config();
            let w = workloads::SmolWeights::new(&c);
            llama::build_graph(
                &c,
                &w,
                Dim::bounded("seq", 128),
                1024,
                llama::Sampling::GREEDY,
            )
            .map_err(|e| e.to_string())
        }
        other => Err(format!("unknown model `{other}` (minilm or smollm2)")),
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let graph = match (&args.model, &args.graph) {
        (Some(m), _) => model_graph(m)?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Graph::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, None) => return Err("give a GRAPH.json or --model".into()),
    };
    let mut options = PlanOptions::default();
    options.limits = DeviceLimits {
        max_storage_binding: args
            .max_binding
            .unwrap_or(options.limits.max_storage_binding),
        max_buffer: u64::MAX,
        ..options.limits
    };
    if args.no_fusion {
        options.fusion = FusionOptions::none();
    }
    let p = plan(&graph, &options).map_err(|e| e.to_string())?;
    if let Some(path) = &args.svg {
        std::fs::write(path, kiln_plan::svg::timeline(&p))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", p.to_json());
        return Ok(());
    }
    println!(
        "{:>4}  {:<18} {:<28} {:<24} binding",
        "step", "kind", "writes", "reads"
    );
    for (i, s) in p.steps.iter().enumerate() {
        let names = |v: &[usize]| {
            v.iter()
                .map(|&n| format!("%{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let op = match s.kind {
            kiln_plan::StepKind::Op { node } => p.graph.nodes()[node].op.name(),
            ref k => k.name(),
        };
        let binding = match s.binding {
            Binding::Arena { offset, size } => format!("arena @{offset} +{size}"),
            Binding::Scratch { size } => format!("scratch +{size} ({} staged)", s.staged.len()),
        };
        println!(
            "{i:>4}  {op:<18} {:<28} {:<24} {binding}",
            names(&s.writes),
            names(&s.reads)
        );
    }
    println!(
        "arena {} bytes, lower bound {} bytes, ratio {:.3}, scratch {} bytes, {}",
        p.arena_bytes,
        p.lower_bound_bytes,
        p.ratio(),
        p.scratch_bytes,
        if p.whole_arena {
            "whole arena bound"
        } else {
            "bind windows"
        }
    );
    Ok(())
}
