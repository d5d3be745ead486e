//! Criterion benches of the workloads `kiln bench` reports (the same graphs, synthetic weights):
//! f32 matmul 256–4096, attention, layer norm, MiniLM forward, SmolLM2 prefill and decode, the
//! CPU cost of run() per step, plan / compile time, and the f16-input cooperative-matrix matmul
//! where the GPU has it. Run on the GPU machine with
//! `cargo bench`; numbers belong in docs/PERFORMANCE.md, not in tests.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln::ir::{Activation, DType, Graph, HostTensor};
use kiln::runtime::{CompileOptions, Device, DeviceOptions, Executable, MatmulInputs};
use kiln_models::workloads::{self, Workload};

fn device() -> Device {
    Device::new(&DeviceOptions::default()).expect("a GPU adapter")
}

fn compiled(dev: &Device, w: &Workload) -> Executable {
    compiled_with(dev, w, &CompileOptions::default())
}

fn compiled_with(dev: &Device, w: &Workload, options: &CompileOptions) -> Executable {
    let mut exe = Executable::compile(dev, &w.graph, options).expect("compiles");
    for (n, t) in &w.params {
        exe.set_param(n, t).expect("param");
    }
    exe
}

fn bench_workload(c: &mut Criterion, group: &str, id: String, w: Workload) {
    let dev = device();
    let exe = compiled(&dev, &w);
    bench_executable(c, group, id, w, exe);
}

fn bench_executable(c: &mut Criterion, group: &str, id: String, w: Workload, mut exe: Executable) {
    let inputs: Vec<(&str, &HostTensor)> = w.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut g = c.benchmark_group(group);
    if w.flops > 0.0 {
        g.throughput(Throughput::Elements(w.flops as u64));
    }
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| exe.run_read_outputs(&inputs, &[]).expect("runs"))
    });
    g.finish();
}

fn matmul(c: &mut Criterion) {
    for n in [256, 1024, 2048, 4096] {
        bench_workload(
            c,
            "matmul_f32",
            n.to_string(),
            workloads::matmul(n).unwrap(),
        );
    }
}

/// f32 matmuls with f16 inputs on cooperative matrices (skipped where the GPU has none).
fn matmul_cooperative(c: &mut Criterion) {
    let dev = device();
    if !dev.info().cooperative_f16 {
        eprintln!(
            "matmul_coop: skipped, {} has no cooperative matrices",
            dev.info().adapter.name
        );
        return;
    }
    let options = CompileOptions {
        matmul_inputs: MatmulInputs::F16WhereFaster,
        ..Default::default()
    };
    for n in [1024, 4096] {
        let w = workloads::matmul(n).unwrap();
        let exe = compiled_with(&dev, &w, &options);
        assert!(exe.uses_cooperative_matrix());
        bench_executable(c, "matmul_coop_f16_inputs", n.to_string(), w, exe);
    }
}

fn attention_and_norm(c: &mut Criterion) {
    bench_workload(
        c,
        "attention",
        "1x128x12x64".into(),
        workloads::attention(1, 128, 12).unwrap(),
    );
    bench_workload(
        c,
        "attention",
        "32x128x12x64".into(),
        workloads::attention(32, 128, 12).unwrap(),
    );
    bench_workload(
        c,
        "layer_norm",
        "4096x384".into(),
        workloads::layer_norm(4096, 384).unwrap(),
    );
}

fn minilm(c: &mut Criterion) {
    bench_workload(
        c,
        "minilm_forward",
        "1x16".into(),
        workloads::minilm(1, 16).unwrap(),
    );
    bench_workload(
        c,
        "minilm_forward",
        "32x128".into(),
        workloads::minilm(32, 128).unwrap(),
    );
}

fn smollm2(c: &mut Criterion) {
    let w = workloads::smollm2(128, 128, 1024).unwrap();
    bench_workload(
        c,
        "smollm2",
        "prefill_128".into(),
        workloads::smollm2(128, 128, 1024).unwrap(),
    );
    let dev = device();
    let mut exe = compiled(&dev, &w);
    for l in 0..workloads::smollm2_config().layers {
        exe.feed_back(2 + 2 * l, &format!("k_cache.{l}")).unwrap();
        exe.feed_back(3 + 2 * l, &format!("v_cache.{l}")).unwrap();
    }
    let token = HostTensor::from_i32(&[1, 1], &[42]).unwrap();
    let one = |v| HostTensor::from_i32(&[1], &[v]).unwrap();
    let (past, last, counter) = (one(200), one(0), one(0));
    let ins = [
        ("tokens", &token),
        ("past", &past),
        ("last", &last),
        ("counter", &counter),
    ];
    c.bench_function("smollm2/decode_step", |b| {
        b.iter(|| exe.run_read_outputs(&ins, &[0]).unwrap())
    });
}

fn run_cpu_cost(c: &mut Criterion) {
    // 200 tiny steps: the time of run() is dominated by per-step CPU work and submit latency.
    let mut g = Graph::new();
    let mut y = g.input("x", DType::F32, [64]).unwrap();
    for i in 0..200 {
        y = g
            .activation(
                if i % 2 == 0 {
                    Activation::Neg
                } else {
                    Activation::Abs
                },
                y,
            )
            .unwrap();
    }
    g.output(y).unwrap();
    let dev = device();
    let mut exe = Executable::compile(&dev, &g, &CompileOptions::default()).unwrap();
    let x = HostTensor::from_f32(&[64], &[1.0; 64]).unwrap();
    c.bench_function("run_200_steps", |b| {
        b.iter(|| exe.run_read_outputs(&[("x", &x)], &[]).unwrap())
    });
}

fn plan_and_compile(c: &mut Criterion) {
    let w = workloads::minilm(32, 128).unwrap();
    let opts = kiln::plan::PlanOptions::default();
    c.bench_function("plan_minilm", |b| {
        b.iter(|| kiln::plan::plan(&w.graph, &opts).unwrap())
    });
    let dev = device();
    c.bench_function("compile_minilm", |b| {
        b.iter(|| Executable::compile(&dev, &w.graph, &CompileOptions::default()).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = matmul, matmul_cooperative, attention_and_norm, minilm, smollm2, run_cpu_cost, plan_and_compile
}
criterion_main!(benches);
