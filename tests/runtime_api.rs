//! The Executable's API: every user mistake is a typed error naming the tensor and leaves the
//! executable usable; GPU-resident state; upload skipping; partial readback.

mod common;

use kiln::ir::{Activation, BinaryOp, DType, Graph, HostTensor};
use kiln::runtime::{CompileError, CompileOptions, Executable, RunError};

fn f32s(shape: &[usize], v: &[f32]) -> HostTensor {
    HostTensor::from_f32(shape, v).unwrap()
}

/// out0 = relu(x * w), out1 = state + x (state is fed back from out1).
fn graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [4]).unwrap();
    let state = g.input("state", DType::F32, [4]).unwrap();
    let w = g.param("w", DType::F32, [4]).unwrap();
    let y = g.binary(BinaryOp::Mul, x, w).unwrap();
    let y = g.activation(Activation::Relu, y).unwrap();
    let s = g.add_op(state, x).unwrap();
    g.output(y).unwrap();
    g.output(s).unwrap();
    g
}

fn compiled() -> Executable {
    Executable::compile(&common::device(), &graph(), &CompileOptions::default()).unwrap()
}

#[test]
fn every_user_mistake_is_a_typed_error_and_the_next_run_works() {
    let mut exe = compiled();
    let x = f32s(&[4], &[1.0, -2.0, 3.0, -4.0]);
    let st = f32s(&[4], &[0.0; 4]);
    let good_run = |exe: &mut Executable| {
        let out = exe.run(&[("x", &x), ("state", &st)]).unwrap();
        assert_eq!(out[0].to_f32(), [2.0, 0.0, 6.0, 0.0]);
    };

    // Params.
    let err = exe.run(&[("x", &x), ("state", &st)]).unwrap_err();
    assert!(
        matches!(err, RunError::MissingParam { ref name } if name == "w"),
        "{err}"
    );
    let err = exe.set_param("nope", &f32s(&[4], &[1.0; 4])).unwrap_err();
    assert!(
        matches!(err, RunError::UnknownParam { ref name } if name == "nope"),
        "{err}"
    );
    let err = exe.set_param("w", &f32s(&[2, 2], &[1.0; 4])).unwrap_err();
    assert!(
        matches!(err, RunError::Mismatch { ref name, .. } if name == "w"),
        "{err}"
    );
    let err = exe.set_param_bytes("w", &[0u8; 15]).unwrap_err();
    assert!(err.to_string().contains("`w`"), "{err}");
    exe.set_param_bytes("w", bytemuck_f32(&[2.0; 4])).unwrap();
    good_run(&mut exe);

    // Inputs.
    let err = exe.run(&[("x", &x)]).unwrap_err();
    assert!(
        matches!(err, RunError::MissingInput { ref name } if name == "state"),
        "{err}"
    );
    let err = exe
        .run(&[("x", &x), ("state", &st), ("y", &x)])
        .unwrap_err();
    assert!(
        matches!(err, RunError::UnknownInput { ref name } if name == "y"),
        "{err}"
    );
    let wrong_dtype = HostTensor::from_i32(&[4], &[1; 4]).unwrap();
    let err = exe.run(&[("x", &wrong_dtype), ("state", &st)]).unwrap_err();
    assert!(
        matches!(err, RunError::Mismatch { ref name, .. } if name == "x"),
        "{err}"
    );
    let wrong_shape = f32s(&[2, 2], &[1.0; 4]);
    let err = exe.run(&[("x", &wrong_shape), ("state", &st)]).unwrap_err();
    assert!(
        matches!(err, RunError::Mismatch { ref name, .. } if name == "x"),
        "{err}"
    );
    let bad_bytes = HostTensor {
        dtype: DType::F32,
        shape: vec![4],
        bytes: vec![0; 3],
    };
    let err = exe.run(&[("x", &bad_bytes), ("state", &st)]).unwrap_err();
    assert!(
        matches!(err, RunError::Mismatch { ref name, .. } if name == "x"),
        "{err}"
    );
    good_run(&mut exe);

    // Outputs and feedback.
    let err = exe
        .run_read_outputs(&[("x", &x), ("state", &st)], &[2])
        .unwrap_err();
    assert!(
        matches!(err, RunError::InvalidOutput { index: 2, count: 2 }),
        "{err}"
    );
    let err = exe.feed_back(5, "state").unwrap_err();
    assert!(
        matches!(err, RunError::InvalidOutput { index: 5, .. }),
        "{err}"
    );
    let err = exe.feed_back(1, "nope").unwrap_err();
    assert!(matches!(err, RunError::UnknownInput { .. }), "{err}");
    good_run(&mut exe);
    let err = exe.read_input("nope").unwrap_err();
    assert!(matches!(err, RunError::UnknownInput { .. }), "{err}");
}

#[test]
fn a_graph_the_kernels_cannot_run_fails_to_compile_naming_the_op() {
    let mut g = Graph::new();
    // f16 values have no kernels yet (quantized weights do now).
    let x = g.input("x", DType::F16, [2, 32]).unwrap();
    let w = g.param("w", DType::F16, [8, 32]).unwrap();
    let y = g.matmul_t(x, w).unwrap();
    g.output(y).unwrap();
    let err = Executable::compile(&common::device(), &g, &CompileOptions::default()).unwrap_err();
    assert!(matches!(err, CompileError::Plan(_)), "{err}");
    assert!(err.to_string().contains("matmul"), "{err}");
}

#[test]
fn fed_back_state_stays_on_the_gpu_and_uploads_stay_correct() {
    let mut exe = compiled();
    exe.set_param("w", &f32s(&[4], &[1.0; 4])).unwrap();
    exe.feed_back(1, "state").unwrap();
    let x = f32s(&[4], &[1.0, 1.0, 1.0, 1.0]);
    let zero = f32s(&[4], &[0.0; 4]);
    // First run with explicit zero state, then three runs on fed-back state.
    let out = exe.run(&[("x", &x), ("state", &zero)]).unwrap();
    assert_eq!(out[1].to_f32(), [1.0; 4]);
    for k in 2..=4 {
        let out = exe.run_read_outputs(&[("x", &x)], &[1]).unwrap();
        assert_eq!(out[0].to_f32(), [k as f32; 4]);
    }
    assert_eq!(exe.read_input("state").unwrap().to_f32(), [4.0; 4]);
    // Passing the same zero tensor again must upload it (the GPU copy changed meanwhile).
    let out = exe.run(&[("x", &x), ("state", &zero)]).unwrap();
    assert_eq!(out[1].to_f32(), [1.0; 4]);
}

#[test]
fn unchanged_inputs_are_not_uploaded_again() {
    let mut exe = compiled();
    exe.set_param("w", &f32s(&[4], &[1.0; 4])).unwrap();
    let x = f32s(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let st = f32s(&[4], &[0.0; 4]);
    exe.run(&[("x", &x), ("state", &st)]).unwrap();
    assert_eq!(exe.upload_count(), 2);
    exe.run(&[("x", &x), ("state", &st)]).unwrap();
    assert_eq!(exe.upload_count(), 2, "nothing changed");
    let x2 = f32s(&[4], &[5.0, 2.0, 3.0, 4.0]);
    let out = exe.run(&[("x", &x2), ("state", &st)]).unwrap();
    assert_eq!(exe.upload_count(), 3);
    assert_eq!(out[0].to_f32(), [5.0, 2.0, 3.0, 4.0]);
    // A forgotten input is an error, never the stale value of an earlier run.
    assert!(matches!(
        exe.run(&[("x", &x2)]),
        Err(RunError::MissingInput { .. })
    ));
}

#[test]
fn partial_readback_returns_the_requested_outputs_in_order() {
    let mut exe = compiled();
    exe.set_param("w", &f32s(&[4], &[-1.0; 4])).unwrap();
    let x = f32s(&[4], &[1.0, -2.0, 3.0, -4.0]);
    let st = f32s(&[4], &[10.0; 4]);
    let out = exe
        .run_read_outputs(&[("x", &x), ("state", &st)], &[1, 0])
        .unwrap();
    assert_eq!(out[0].to_f32(), [11.0, 8.0, 13.0, 6.0]);
    assert_eq!(out[1].to_f32(), [0.0, 2.0, 0.0, 4.0]);
    assert_eq!(exe.output_dtypes(), [DType::F32, DType::F32]);
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

#[test]
fn a_run_submits_once_and_creates_no_buffer_bind_group_or_pipeline() {
    // A device of its own: the shared one is used by tests running in parallel.
    let dev = kiln::runtime::Device::new(&kiln::runtime::DeviceOptions {
        backends: Some(kiln::runtime::wgpu::Backends::VULKAN),
        ..Default::default()
    })
    .unwrap();
    let mut exe = Executable::compile(&dev, &graph(), &CompileOptions::default()).unwrap();
    exe.set_param("w", &f32s(&[4], &[1.0; 4])).unwrap();
    exe.feed_back(1, "state").unwrap();
    let x = f32s(&[4], &[1.0; 4]);
    let st = f32s(&[4], &[0.0; 4]);
    exe.run(&[("x", &x), ("state", &st)]).unwrap();
    let before = dev.counts();
    for i in 0..5 {
        let xi = f32s(&[4], &[i as f32; 4]);
        exe.run(&[("x", &xi)]).unwrap();
    }
    let after = dev.counts();
    assert_eq!(after.submits - before.submits, 5, "one submit per run");
    assert_eq!(
        (after.buffers, after.bind_groups, after.pipelines),
        (before.buffers, before.bind_groups, before.pipelines)
    );
}

/// `profile` times every step and `profile_run` the whole run; both upload like a run, and the
/// executable computes the same afterwards. A device without timestamps says so.
#[test]
fn profiling_times_steps_and_whole_runs() {
    let mut exe = compiled();
    exe.set_param("w", &f32s(&[4], &[1.0, -1.0, 2.0, 0.5]))
        .unwrap();
    let x = f32s(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let s = f32s(&[4], &[0.0; 4]);
    let inputs = [("x", &x), ("state", &s)];
    match (exe.profile(&inputs), exe.profile_run(&inputs)) {
        (Ok(steps), Ok(total)) => {
            assert_eq!(steps.len(), exe.plan().steps.len());
            assert!(steps
                .iter()
                .all(|t| t.gpu_ns.is_finite() && t.gpu_ns >= 0.0));
            assert!(total.is_finite() && total >= 0.0);
        }
        (Err(RunError::Unsupported { detail, .. }), Err(RunError::Unsupported { .. })) => {
            assert!(detail.contains("TIMESTAMP_QUERY"), "{detail}");
        }
        (a, b) => panic!("profile and profile_run disagree: {a:?} / {b:?}"),
    }
    let out = exe.run(&inputs).unwrap();
    assert_eq!(out[0].to_f32(), [1.0, 0.0, 6.0, 2.0]);
}

/// Feedback registered at a short extent still carries the whole state at a longer one.
#[test]
fn feedback_set_up_at_a_short_extent_copies_whole_states_later() {
    use kiln::ir::{Dim, Shape};
    let shape = Shape(vec![Dim::bounded("seq", 8), Dim::Static(4)]);
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape.clone()).unwrap();
    let state = g.input("state", DType::F32, shape).unwrap();
    let s = g.add_op(state, x).unwrap();
    g.output(s).unwrap();
    let mut exe = Executable::compile(&common::device(), &g, &CompileOptions::default()).unwrap();
    exe.set_active_extent("seq", 2).unwrap();
    exe.feed_back(0, "state").unwrap();
    let ones = f32s(&[8, 4], &[1.0; 32]);
    let zeros = f32s(&[8, 4], &[0.0; 32]);
    let first = exe.run(&[("x", &ones), ("state", &zeros)]).unwrap();
    assert_eq!(first[0].to_f32(), vec![1.0; 32]);
    // The state comes back from the GPU: every one of the 8 rows, not only the first 2.
    let second = exe.run(&[("x", &ones)]).unwrap();
    assert_eq!(second[0].to_f32(), vec![2.0; 32]);
}

/// A run refused for a bad input leaves the active extent where it was.
#[test]
fn a_refused_run_does_not_change_the_extent() {
    use kiln::ir::{Dim, Shape};
    let shape = Shape(vec![Dim::bounded("seq", 8), Dim::Static(4)]);
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape.clone()).unwrap();
    let y = g.input("y", DType::F32, shape).unwrap();
    let s = g.add_op(x, y).unwrap();
    g.output(s).unwrap();
    let mut exe = Executable::compile(&common::device(), &g, &CompileOptions::default()).unwrap();
    exe.set_active_extent("seq", 2).unwrap();
    let x3 = f32s(&[3, 4], &[1.0; 12]);
    let bad = HostTensor::from_i32(&[3, 4], &[1; 12]).unwrap(); // wrong dtype
    assert!(matches!(
        exe.run(&[("x", &x3), ("y", &bad)]),
        Err(RunError::Mismatch { .. })
    ));
    assert_eq!(exe.active_extent().get("seq"), Some(2));
    let out = exe.run(&[("x", &x3), ("y", &x3)]).unwrap();
    assert_eq!(out[0].to_f32(), vec![2.0; 12]);
}

/// More dispatches than one query set can time is a typed error, not a device panic.
#[test]
fn profiling_more_dispatches_than_a_query_set_holds_is_an_error() {
    let mut g = Graph::new();
    let mut y = g.input("x", DType::F32, [4]).unwrap();
    for i in 0..2100 {
        let act = if i % 2 == 0 {
            Activation::Neg
        } else {
            Activation::Abs
        };
        y = g.activation(act, y).unwrap();
    }
    g.output(y).unwrap();
    let mut exe = Executable::compile(&common::device(), &g, &CompileOptions::default()).unwrap();
    // The premise: no fusion brought the dispatches under the 2048 queries' worth.
    assert!(exe.dispatch_count() > 2048, "{}", exe.dispatch_count());
    let x = f32s(&[4], &[1.0, -2.0, 3.0, -4.0]);
    match exe.profile(&[("x", &x)]) {
        Err(RunError::Unsupported { detail, .. }) => {
            assert!(
                detail.contains("TIMESTAMP_QUERY") || detail.contains("query set"),
                "{detail}"
            )
        }
        other => panic!("expected a typed refusal, got {other:?}"),
    }
    // The whole-run measure needs two timestamps only.
    assert!(
        exe.profile_run(&[("x", &x)]).is_ok_and(|ns| ns >= 0.0)
            || !common::device()
                .info()
                .features
                .contains(kiln::runtime::wgpu::Features::TIMESTAMP_QUERY)
    );
}

/// A run encodes the next run's commands after its submit; the next run submits them only if
/// they still fit: the same outputs read, the same extent, no feedback added since. Each case
/// here changes one of those between runs and checks the values.
#[test]
fn commands_encoded_ahead_follow_the_outputs_extent_and_feedback() {
    use kiln::ir::{Dim, Shape};
    let shape = Shape(vec![Dim::bounded("seq", 8), Dim::Static(2)]);
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape.clone()).unwrap();
    let state = g.input("state", DType::F32, shape).unwrap();
    let s = g.add_op(state, x).unwrap();
    let twice = g.add_op(s, s).unwrap();
    g.output(s).unwrap();
    g.output(twice).unwrap();
    let mut exe = Executable::compile(&common::device(), &g, &CompileOptions::default()).unwrap();
    let rows = |n: usize, v: f32| f32s(&[n, 2], &vec![v; 2 * n]);
    let (one, zero) = (rows(2, 1.0), rows(2, 0.0));

    let out = exe.run(&[("x", &one), ("state", &zero)]).unwrap();
    assert_eq!(
        (out[0].to_f32(), out[1].to_f32()),
        (vec![1.0; 4], vec![2.0; 4])
    );
    // Other outputs read, then none, then the first again.
    let out = exe
        .run_read_outputs(&[("x", &one), ("state", &zero)], &[1])
        .unwrap();
    assert_eq!(out[0].to_f32(), vec![2.0; 4]);
    exe.run_read_outputs(&[("x", &one), ("state", &zero)], &[])
        .unwrap();
    let out = exe
        .run_read_outputs(&[("x", &one), ("state", &zero)], &[0])
        .unwrap();
    assert_eq!(out[0].to_f32(), vec![1.0; 4]);
    // Feedback added after runs: the next run copies the sum into the state.
    exe.feed_back(0, "state").unwrap();
    exe.run(&[("x", &one), ("state", &zero)]).unwrap();
    let out = exe.run(&[("x", &one)]).unwrap();
    assert_eq!(out[0].to_f32(), vec![2.0; 4]);
    // Another extent: other grids and readback sizes.
    let (three, zero3) = (rows(3, 3.0), rows(3, 0.0));
    let out = exe.run(&[("x", &three), ("state", &zero3)]).unwrap();
    assert_eq!(
        (out[0].to_f32(), out[1].to_f32()),
        (vec![3.0; 6], vec![6.0; 6])
    );
    let out = exe.run(&[("x", &three)]).unwrap();
    assert_eq!(out[0].to_f32(), vec![6.0; 6]);
    // Back to two rows, the state given again.
    let out = exe.run(&[("x", &one), ("state", &zero)]).unwrap();
    assert_eq!(out[1].to_f32(), vec![2.0; 4]);
}
