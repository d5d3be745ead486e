//! `kiln plan GRAPH.json`: the steps, the arena, its lower bound; as text, JSON or SVG.

use kiln_ir::Graph;
use kiln_plan::{plan, Binding, DeviceLimits, FusionOptions, PlanOptions};
use std::path::PathBuf;

pub struct Args {
    pub graph: PathBuf,
    pub json: bool,
    pub svg: Option<PathBuf>,
    pub max_binding: Option<u64>,
    pub no_fusion: bool,
}

pub fn run(args: Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.graph)
        .map_err(|e| format!("cannot read {}: {e}", args.graph.display()))?;
    let graph = Graph::from_json(&text).map_err(|e| format!("{}: {e}", args.graph.display()))?;
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
