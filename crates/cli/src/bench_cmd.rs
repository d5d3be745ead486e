//! `kiln bench [--json] [--quick]`: the benchmark workloads with warm-up, reporting medians of
//! wall time per run, GPU time from timestamp queries where the adapter has them, and GFLOP/s.

use kiln_ir::{Activation, DType, Graph, HostTensor};
use kiln_models::workloads::{self, Workload};
use kiln_runtime::{CompileOptions, Device, DeviceOptions, Executable, MatmulInputs};
use serde_json::json;
use std::time::Instant;

/// One measured workload.
struct Measured {
    name: String,
    wall_ms: f64,
    gpu_ms: Option<f64>,
    gflops: Option<f64>,
    extra: serde_json::Value,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn compile(dev: &Device, w: &Workload) -> Result<(Executable, f64), String> {
    compile_with(dev, w, &CompileOptions::default())
}

fn compile_with(
    dev: &Device,
    w: &Workload,
    options: &CompileOptions,
) -> Result<(Executable, f64), String> {
    let t = Instant::now();
    let mut exe =
        Executable::compile(dev, &w.graph, options).map_err(|e| format!("{}: {e}", w.name))?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    for (n, p) in &w.params {
        exe.set_param(n, p).map_err(|e| e.to_string())?;
    }
    Ok((exe, compile_ms))
}

fn refs(inputs: &[(String, HostTensor)]) -> Vec<(&str, &HostTensor)> {
    inputs.iter().map(|(n, t)| (n.as_str(), t)).collect()
}

/// What [`time_runs`] measured (times in ms).
struct Timed {
    /// Median wall time of a run (no readback).
    wall: f64,
    /// Median CPU time of a run before its submit.
    cpu_before_submit: f64,
    /// Median CPU time of a run after its submit, encoding the next run's commands while the
    /// GPU works.
    cpu_ahead: f64,
    /// Median GPU time of a profiled run, and its slowest steps.
    gpu: Option<f64>,
    top: serde_json::Value,
}

/// Times `runs` runs after warm-up (see [`Timed`]).
fn time_runs(
    exe: &mut Executable,
    inputs: &[(String, HostTensor)],
    runs: usize,
) -> Result<Timed, String> {
    let r = refs(inputs);
    for _ in 0..3 {
        exe.run_read_outputs(&r, &[]).map_err(|e| e.to_string())?;
    }
    let mut wall = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    let mut ahead = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        exe.run_read_outputs(&r, &[]).map_err(|e| e.to_string())?;
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push(exe.last_run_cpu_ns() as f64 / 1e6);
        ahead.push(exe.last_run_ahead_ns() as f64 / 1e6);
    }
    let (gpu, top) = gpu_profile(exe, &r);
    Ok(Timed {
        wall: median(wall),
        cpu_before_submit: median(cpu),
        cpu_ahead: median(ahead),
        gpu,
        top,
    })
}

/// Profiled runs per workload: the GPU time reported is their median (one run alone varied by
/// up to 2x on large matmuls).
const PROFILED_RUNS: usize = 5;

/// The median GPU time of [`PROFILED_RUNS`] profiled runs and the five slowest steps of the
/// median run.
fn gpu_profile(
    exe: &mut Executable,
    inputs: &[(&str, &HostTensor)],
) -> (Option<f64>, serde_json::Value) {
    let mut runs = Vec::with_capacity(PROFILED_RUNS);
    for _ in 0..PROFILED_RUNS {
        match exe.profile(inputs) {
            Ok(steps) => {
                let total = steps.iter().map(|s| s.gpu_ns).sum::<f64>() / 1e6;
                runs.push((total, steps));
            }
            Err(_) => return (None, json!([])),
        }
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (total, mut steps) = runs.swap_remove(PROFILED_RUNS / 2);
    steps.sort_by(|a, b| b.gpu_ns.total_cmp(&a.gpu_ns));
    let top: Vec<serde_json::Value> = steps
        .iter()
        .take(5)
        .map(|s| json!([s.name, (s.gpu_ns / 1e3).round()]))
        .collect();
    (Some(total), json!(top))
}

/// The median over [`PROFILED_RUNS`] of the GPU time of whole runs (ms): all dispatches in the
/// one pass a run uses, so barriers count and no per-dispatch pass overhead does.
fn one_pass_ms(exe: &mut Executable, inputs: &[(&str, &HostTensor)]) -> Option<f64> {
    let mut runs = Vec::with_capacity(PROFILED_RUNS);
    for _ in 0..PROFILED_RUNS {
        runs.push(exe.profile_run(inputs).ok()? / 1e6);
    }
    Some(median(runs))
}

fn measure(dev: &Device, w: Workload, runs: usize) -> Result<Measured, String> {
    let (mut exe, compile_ms) = compile(dev, &w)?;
    measure_exe(&mut exe, w, compile_ms, runs)
}

fn measure_exe(
    exe: &mut Executable,
    w: Workload,
    compile_ms: f64,
    runs: usize,
) -> Result<Measured, String> {
    let exe = &mut *exe;
    let t = time_runs(exe, &w.inputs, runs)?;
    let one_pass = one_pass_ms(exe, &refs(&w.inputs));
    let best = t.gpu.unwrap_or(t.wall);
    Ok(Measured {
        name: w.name,
        wall_ms: t.wall,
        gpu_ms: t.gpu,
        gflops: (w.flops > 0.0).then(|| w.flops / (best * 1e-3) / 1e9),
        extra: json!({
            "compile_ms": compile_ms,
            "dispatches": exe.dispatch_count(),
            "cpu_ms_before_submit": t.cpu_before_submit,
            "cpu_ms_encoding_ahead": t.cpu_ahead,
            "gpu_ms_one_pass": one_pass,
            "slowest_steps_us": t.top
        }),
    })
}

/// `w` with f16-input cooperative-matrix matmuls, and how far its first output is from the
/// f32 kernels' (max |error| over max |f32 value|, and the relative RMS error).
fn measure_cooperative(dev: &Device, mut w: Workload, runs: usize) -> Result<Measured, String> {
    let options = CompileOptions {
        matmul_inputs: MatmulInputs::F16WhereFaster,
        ..Default::default()
    };
    let (mut coop, compile_ms) = compile_with(dev, &w, &options)?;
    if !coop.uses_cooperative_matrix() {
        return Err(format!("{}: the cooperative kernel was not chosen", w.name));
    }
    let (mut exact, _) = compile(dev, &w)?;
    let r = refs(&w.inputs);
    let first = |exe: &mut Executable| -> Result<Vec<f32>, String> {
        let out = exe.run_read_outputs(&r, &[0]).map_err(|e| e.to_string())?;
        Ok(out[0].to_f32())
    };
    let (want, got) = (first(&mut exact)?, first(&mut coop)?);
    drop(exact);
    let max_ref = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let (mut max_err, mut sq_err, mut sq_ref) = (0f64, 0f64, 0f64);
    for (a, b) in want.iter().zip(&got) {
        let e = (*a as f64 - *b as f64).abs();
        max_err = max_err.max(e);
        sq_err += e * e;
        sq_ref += (*a as f64) * (*a as f64);
    }
    w.name = format!("{} [coop f16 inputs]", w.name);
    let mut m = measure_exe(&mut coop, w, compile_ms, runs)?;
    m.extra["error_vs_f32"] = json!({
        "max_abs_over_max_ref": max_err / max_ref.max(f64::MIN_POSITIVE),
        "rms_rel": (sq_err / sq_ref.max(f64::MIN_POSITIVE)).sqrt(),
    });
    Ok(m)
}

/// SmolLM2 prefill of 128 tokens, then decode steps at extent 1 with the cache fed back.
fn smollm2(dev: &Device, runs: usize, ctx: usize) -> Result<Vec<Measured>, String> {
    let w = workloads::smollm2(128, 128, ctx).map_err(|e| e.to_string())?;
    let (mut exe, compile_ms) = compile(dev, &w)?;
    let layers = workloads::smollm2_config().layers;
    for l in 0..layers {
        exe.feed_back(2 + 2 * l, &format!("k_cache.{l}"))
            .map_err(|e| e.to_string())?;
        exe.feed_back(3 + 2 * l, &format!("v_cache.{l}"))
            .map_err(|e| e.to_string())?;
    }
    // Prefill: the caches are given (zeros) once; the timed runs, like generation, give only
    // the tokens and positions (a prefill at position 0 reads no cache row it did not write).
    exe.run_read_outputs(&refs(&w.inputs), &[])
        .map_err(|e| e.to_string())?;
    let fresh: Vec<(String, HostTensor)> = w
        .inputs
        .iter()
        .filter(|(n, _)| !n.contains("_cache."))
        .cloned()
        .collect();
    let prefill = time_runs(&mut exe, &fresh, runs)?;
    let mut decode_wall = Vec::new();
    let mut decode_cpu = Vec::new();
    let mut decode_ahead = Vec::new();
    let one = |v: i32| HostTensor::from_i32(&[1], &[v]).map_err(|e| e.to_string());
    let steps = runs.max(8);
    for i in 0..steps + 3 {
        let token = HostTensor::from_i32(&[1, 1], &[(i as i32 * 101) % 49152])
            .map_err(|e| e.to_string())?;
        let (past, last, counter) = (one(128 + i as i32)?, one(0)?, one(i as i32)?);
        let ins = [
            ("tokens", &token),
            ("past", &past),
            ("last", &last),
            ("counter", &counter),
        ];
        let t = Instant::now();
        // Only the sampled token comes back, as in generation.
        exe.run_read_outputs(&ins, &[0])
            .map_err(|e| e.to_string())?;
        if i >= 3 {
            decode_wall.push(t.elapsed().as_secs_f64() * 1e3);
            decode_cpu.push(exe.last_run_cpu_ns() as f64 / 1e6);
            decode_ahead.push(exe.last_run_ahead_ns() as f64 / 1e6);
        }
    }
    let token = HostTensor::from_i32(&[1, 1], &[7]).map_err(|e| e.to_string())?;
    let (past, last, counter) = (one(140)?, one(0)?, one(0)?);
    let ins = [
        ("tokens", &token),
        ("past", &past),
        ("last", &last),
        ("counter", &counter),
    ];
    let (decode_gpu, decode_top) = gpu_profile(&mut exe, &ins);
    let decode_one_pass = one_pass_ms(&mut exe, &ins);
    let decode_ms = median(decode_wall);
    Ok(vec![
        Measured {
            name: "SmolLM2-135M Q4_1 prefill 128 (synthetic weights)".into(),
            wall_ms: prefill.wall,
            gpu_ms: prefill.gpu,
            gflops: Some(w.flops / (prefill.gpu.unwrap_or(prefill.wall) * 1e-3) / 1e9),
            extra: json!({
                "compile_ms": compile_ms,
                "tokens_per_s": 128.0 / (prefill.wall * 1e-3),
                "ctx": ctx,
                "cpu_ms_before_submit": prefill.cpu_before_submit,
                "cpu_ms_encoding_ahead": prefill.cpu_ahead,
                "slowest_steps_us": prefill.top
            }),
        },
        Measured {
            name: "SmolLM2-135M Q4_1 decode step (synthetic weights)".into(),
            wall_ms: decode_ms,
            gpu_ms: decode_gpu,
            gflops: None,
            extra: json!({
                "tokens_per_s": 1e3 / decode_ms,
                "dispatches": exe.dispatch_count(),
                "cpu_ms_before_submit": median(decode_cpu),
                "cpu_ms_encoding_ahead": median(decode_ahead),
                "gpu_ms_one_pass": decode_one_pass,
                "slowest_steps_us": decode_top
            }),
        },
    ])
}

/// CPU cost of run() per step: a chain of `n` tiny activations, CPU time per run (before its
/// submit and encoding the next run after it) / n.
fn cpu_per_step(dev: &Device, n: usize, runs: usize) -> Result<Measured, String> {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [64]).map_err(|e| e.to_string())?;
    let mut y = x;
    for i in 0..n {
        let act = if i % 2 == 0 {
            Activation::Neg
        } else {
            Activation::Abs
        };
        y = g.activation(act, y).map_err(|e| e.to_string())?;
    }
    g.output(y).map_err(|e| e.to_string())?;
    let mut exe =
        Executable::compile(dev, &g, &CompileOptions::default()).map_err(|e| e.to_string())?;
    let t = HostTensor::from_f32(&[64], &[1.0; 64]).map_err(|e| e.to_string())?;
    let mut cpu = Vec::new();
    let mut before = Vec::new();
    let mut wall = Vec::new();
    for i in 0..runs + 3 {
        let s = Instant::now();
        exe.run_read_outputs(&[("x", &t)], &[])
            .map_err(|e| e.to_string())?;
        if i >= 3 {
            wall.push(s.elapsed().as_secs_f64() * 1e3);
            // All the CPU work of a run: before its submit, and encoding the next run after it.
            cpu.push((exe.last_run_cpu_ns() + exe.last_run_ahead_ns()) as f64 / 1e3);
            before.push(exe.last_run_cpu_ns() as f64 / 1e3);
        }
    }
    let per_step_us = median(cpu) / n as f64;
    Ok(Measured {
        name: format!("run() CPU cost, {n} steps"),
        wall_ms: median(wall),
        gpu_ms: None,
        gflops: None,
        extra: json!({
            "cpu_us_per_step": per_step_us,
            "cpu_us_per_step_before_submit": median(before) / n as f64,
            "steps": n
        }),
    })
}

/// The workload groups `--only` selects from.
const GROUPS: [&str; 8] = [
    "matmul",
    "linear",
    "attention",
    "layernorm",
    "minilm",
    "smollm2",
    "cpu",
    "coop",
];

/// A linear shape `MxKxN`, each a positive integer.
fn parse_linear(text: &str) -> Result<(usize, usize, usize), String> {
    let dims: Vec<usize> = text
        .split('x')
        .map(|d| d.trim().parse::<usize>().ok().filter(|&v| v > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("linear shape `{text}` is not MxKxN with positive integers"))?;
    match dims[..] {
        [m, k, n] => Ok((m, k, n)),
        _ => Err(format!("linear shape `{text}` is not MxKxN")),
    }
}

pub fn run(json_out: bool, quick: bool, only: &[String], linear: &[String]) -> Result<(), String> {
    if let Some(bad) = only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        return Err(format!(
            "unknown bench group `{bad}`; the groups are {}",
            GROUPS.join(", ")
        ));
    }
    let mut linear_shapes = linear
        .iter()
        .map(|s| parse_linear(s))
        .collect::<Result<Vec<_>, _>>()?;
    if linear_shapes.is_empty() {
        linear_shapes = vec![(16, 384, 1536), (4096, 384, 1536)];
    }
    let want = |group: &str| only.is_empty() || only.iter().any(|g| g == group);
    let dev = Device::new(&DeviceOptions::default()).map_err(|e| e.to_string())?;
    let runs = if quick { 3 } else { 20 };
    let sizes: &[usize] = if quick {
        &[256, 512]
    } else {
        &[256, 1024, 2048, 4096]
    };
    let mut results = Vec::new();
    let w = |r: Result<Workload, kiln_models::ModelError>| r.map_err(|e| e.to_string());
    if want("matmul") {
        for &n in sizes {
            results.push(measure(&dev, w(workloads::matmul(n))?, runs)?);
        }
    }
    if want("linear") {
        for &(m, k, n) in &linear_shapes {
            results.push(measure(&dev, w(workloads::linear(m, k, n))?, runs)?);
        }
    }
    if want("attention") {
        results.push(measure(&dev, w(workloads::attention(1, 128, 12))?, runs)?);
        if !quick {
            results.push(measure(&dev, w(workloads::attention(32, 128, 12))?, runs)?);
        }
    }
    if want("layernorm") {
        let rows = if quick { 256 } else { 4096 };
        results.push(measure(&dev, w(workloads::layer_norm(rows, 384))?, runs)?);
    }
    if want("minilm") {
        results.push(measure(&dev, w(workloads::minilm(1, 16))?, runs)?);
        if !quick {
            results.push(measure(&dev, w(workloads::minilm(32, 128))?, runs)?);
        }
    }
    if want("smollm2") {
        results.extend(smollm2(&dev, runs, if quick { 160 } else { 1024 })?);
    }
    if want("cpu") {
        results.push(cpu_per_step(&dev, 200, runs)?);
    }
    if want("coop") && dev.info().cooperative_f16 {
        for &n in sizes {
            results.push(measure_cooperative(&dev, w(workloads::matmul(n))?, runs)?);
        }
        let linear = w(workloads::linear(4096, 384, 1536))?;
        results.push(measure_cooperative(&dev, linear, runs)?);
        let (batch, seq) = if quick { (1, 16) } else { (32, 128) };
        let minilm = w(workloads::minilm(batch, seq))?;
        results.push(measure_cooperative(&dev, minilm, runs)?);
    }

    let a = &dev.info().adapter;
    if json_out {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|m| json!({ "workload": m.name, "wall_ms": m.wall_ms, "gpu_ms": m.gpu_ms, "gflops": m.gflops, "extra": m.extra }))
            .collect();
        let out = json!({ "adapter": a.name, "backend": format!("{:?}", a.backend), "driver": format!("{} {}", a.driver, a.driver_info), "cooperative_f16": dev.info().cooperative_f16, "results": rows });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} ({:?}, driver {} {}; cooperative matrices: {})",
        a.name,
        a.backend,
        a.driver,
        a.driver_info,
        if dev.info().cooperative_f16 {
            "f16 16x16x16"
        } else {
            "none"
        }
    );
    println!(
        "{:<52} {:>10} {:>10} {:>10}  extra",
        "workload", "wall ms", "GPU ms", "GFLOP/s"
    );
    for m in &results {
        let gpu = m.gpu_ms.map_or("-".into(), |g| format!("{g:.3}"));
        let gf = m.gflops.map_or("-".into(), |g| format!("{g:.0}"));
        println!(
            "{:<52} {:>10.3} {:>10} {:>10}  {}",
            m.name, m.wall_ms, gpu, gf, m.extra
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_linear;

    #[test]
    fn linear_shapes_parse_or_say_why_not() {
        assert_eq!(parse_linear("4096x384x1152"), Ok((4096, 384, 1152)));
        for bad in ["4096x384", "4096x0x8", "ax1x2", "1x2x3x4", ""] {
            let err = parse_linear(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }
}
