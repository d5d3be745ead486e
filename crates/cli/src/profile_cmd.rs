//! `kiln profile GRAPH.json | --model NAME [--extent SYM=N]`: GPU time per step (timestamp
//! queries), with random params and inputs at the active extent (the bounds by default).

use kiln_ir::{DType, DimBinding, Graph, HostTensor, Op};
use kiln_runtime::{CompileOptions, Device, DeviceOptions, Executable};
use std::path::Path;

/// Deterministic values in [-1, 1) for floats, zeros for everything else.
fn random_tensor(dtype: DType, dims: &[usize], seed: u64) -> Result<HostTensor, String> {
    let n: usize = dims.iter().product();
    let mut s = seed | 1;
    let values: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if dtype.is_float() {
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            } else {
                0.0
            }
        })
        .collect();
    if dtype.is_quantized() {
        let bytes = dtype
            .storage_bytes(n, dims.last().copied().unwrap_or(1))
            .ok_or("bad quantized shape")?;
        return HostTensor::from_bytes(dtype, dims, vec![0; bytes]).map_err(|e| e.to_string());
    }
    HostTensor::from_values(dtype, dims, &values).map_err(|e| e.to_string())
}

/// `SYMBOL=VALUE` pairs.
fn parse_extent(pairs: &[String]) -> Result<DimBinding, String> {
    let mut b = DimBinding::new();
    for pair in pairs {
        let (sym, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--extent `{pair}`: expected SYMBOL=VALUE"))?;
        let value = value
            .parse::<usize>()
            .map_err(|_| format!("--extent `{pair}`: `{value}` is not a size"))?;
        b.set(sym, value);
    }
    Ok(b)
}

pub fn run(path: Option<&Path>, model: Option<&str>, extent: &[String]) -> Result<(), String> {
    let graph = match (model, path) {
        // Without an extent, the graph the benches run (static MiniLM dims).
        (Some(m), _) => crate::plan_cmd::model_graph_with(m, extent.is_empty())?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Graph::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, None) => return Err("give a graph file or --model".into()),
    };
    let extent = parse_extent(extent)?;
    let dev = Device::new(&DeviceOptions::default()).map_err(|e| e.to_string())?;
    let mut exe =
        Executable::compile(&dev, &graph, &CompileOptions::default()).map_err(|e| e.to_string())?;
    for (sym, value) in extent.iter() {
        exe.set_active_extent(sym, value)
            .map_err(|e| e.to_string())?;
    }
    let mut inputs = Vec::new();
    for (i, node) in graph.nodes().iter().enumerate() {
        let dims: Vec<usize> = node
            .shape
            .dims()
            .iter()
            .map(|d| d.resolve(&extent).or(d.upper_bound()))
            .collect::<Option<_>>()
            .ok_or("unbounded symbol")?;
        match &node.op {
            Op::Param { name } => exe
                .set_param(name, &random_tensor(node.dtype, &dims, i as u64)?)
                .map_err(|e| e.to_string())?,
            Op::Input { name } => {
                inputs.push((name.clone(), random_tensor(node.dtype, &dims, i as u64)?))
            }
            _ => {}
        }
    }
    let refs: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    // One warm-up run, then the profiled one.
    exe.run_read_outputs(&refs, &[])
        .map_err(|e| e.to_string())?;
    let times = exe.profile(&refs).map_err(|e| e.to_string())?;
    let a = &dev.info().adapter;
    println!("{} ({:?})", a.name, a.backend);
    println!(
        "{:>4}  {:<40} {:>10} {:>12}",
        "step", "what", "dispatches", "GPU µs"
    );
    let mut total = 0.0;
    for t in &times {
        println!(
            "{:>4}  {:<40} {:>10} {:>12.1}",
            t.step,
            t.name,
            t.dispatches,
            t.gpu_ns / 1e3
        );
        total += t.gpu_ns;
    }
    println!(
        "total GPU time {:.1} µs over {} steps",
        total / 1e3,
        times.len()
    );
    Ok(())
}
