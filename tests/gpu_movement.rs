//! Data movement, casts, gather and where on the Vulkan device against kiln-reference.
//! These kernels move or convert words without arithmetic, so results must be identical.

mod common;

use kiln::ir::{CompareOp, DType, Graph, HostTensor};
use kiln::reference::evaluate;
use kiln::runtime::run_eager;
use proptest::prelude::*;

fn iota(shape: &[usize], scale: f32) -> HostTensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (i as f32 - n as f32 / 2.0) * scale)
        .collect();
    HostTensor::from_f32(shape, &v).unwrap()
}

fn same(g: &Graph, inputs: &[(&str, HostTensor)]) {
    let gpu = run_eager(&common::device(), g, &[], inputs).unwrap_or_else(|e| panic!("{e}"));
    let cpu = evaluate(g, &[], inputs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gpu, cpu, "{g}");
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop::sample::select(vec![1usize, 2, 3, 5, 17]), 1..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn transpose_any_permutation(s in shape(), seed in any::<u64>()) {
        let mut perm: Vec<usize> = (0..s.len()).collect();
        // A seeded Fisher-Yates shuffle.
        let mut r = seed | 1;
        for i in (1..perm.len()).rev() {
            r ^= r << 13; r ^= r >> 7; r ^= r << 17;
            perm.swap(i, (r % (i as u64 + 1)) as usize);
        }
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, s.as_slice()).unwrap();
        let y = g.transpose(x, &perm).unwrap();
        g.output(y).unwrap();
        same(&g, &[("x", iota(&s, 0.5))]);
    }

    #[test]
    fn narrow_concat_expand(s in shape(), axis_pick in any::<prop::sample::Index>()) {
        let axis = axis_pick.index(s.len());
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, s.as_slice()).unwrap();
        let len = s[axis].div_ceil(2);
        let n = g.narrow(x, axis, s[axis] - len, len).unwrap();
        let c = g.concat(&[n, x, n], axis).unwrap();
        // Expand a leading size-1 dim to 3.
        let mut with_one = vec![1];
        with_one.extend(&s);
        let r = g.reshape(x, with_one.as_slice()).unwrap();
        let mut big = with_one.clone();
        big[0] = 3;
        let e = g.expand(r, big.as_slice()).unwrap();
        g.output(c).unwrap();
        g.output(e).unwrap();
        same(&g, &[("x", iota(&s, 1.0))]);
    }
}

#[test]
fn casts_follow_the_ir_rules() {
    let vals = [-300.7f32, -2.5, -0.0, 0.4, 1.0, 2.9, 127.5, 300.2];
    for to in [DType::I32, DType::I64, DType::U8, DType::I8, DType::Bool] {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [8]).unwrap();
        let y = g.cast(x, to).unwrap();
        let back = g.cast(y, DType::F32).unwrap();
        g.output(y).unwrap();
        g.output(back).unwrap();
        same(&g, &[("x", HostTensor::from_f32(&[8], &vals).unwrap())]);
    }
    // Integer to integer, and integer to bool.
    let mut g = Graph::new();
    let x = g.input("x", DType::I32, [5]).unwrap();
    let a = g.cast(x, DType::U8).unwrap();
    let b = g.cast(x, DType::Bool).unwrap();
    let c = g.cast(x, DType::I8).unwrap();
    for o in [a, b, c] {
        g.output(o).unwrap();
    }
    same(
        &g,
        &[(
            "x",
            HostTensor::from_i32(&[5], &[-200, -1, 0, 7, 300]).unwrap(),
        )],
    );
}

#[test]
fn gather_rows_and_inner_axes() {
    for (table, idx_shape, axis) in [
        (vec![7, 3], vec![5], 0),
        (vec![2, 6, 4], vec![2, 3], 1),
        (vec![4, 5], vec![3], 1),
        // Rows of a multiple of four values: `gather_quads`.
        (vec![9, 8], vec![6], 0),
        (vec![3, 5, 12], vec![2, 2], 1),
    ] {
        let mut g = Graph::new();
        let t = g.input("t", DType::F32, table.as_slice()).unwrap();
        let i = g.input("i", DType::I64, idx_shape.as_slice()).unwrap();
        let y = g.gather(t, i, axis).unwrap();
        g.output(y).unwrap();
        let n: usize = idx_shape.iter().product();
        let idx: Vec<f32> = (0..n).map(|k| ((k * 5 + 1) % table[axis]) as f32).collect();
        let it = HostTensor::from_values(DType::I64, &idx_shape, &idx).unwrap();
        same(&g, &[("t", iota(&table, 1.0)), ("i", it)]);
    }
}

#[test]
fn where_broadcasts_a_bool_condition() {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, [3, 4]).unwrap();
    let b = g.input("b", DType::F32, [4]).unwrap();
    let zero = g.constant_f32([1], &[0.0]).unwrap();
    let cond = g.compare(CompareOp::Gt, a, zero).unwrap();
    let y = g.where_(cond, a, b).unwrap();
    g.output(y).unwrap();
    same(&g, &[("a", iota(&[3, 4], 1.0)), ("b", iota(&[4], 10.0))]);
}

/// `dest` `[outer.., rows, inner..]` updated at `start` with `n` rows along `axis`, with an
/// extra reader of `dest` when `keep_old` (then the update cannot be in place).
fn update_rows_graph(dest: &[usize], axis: usize, n: usize, keep_old: bool) -> Graph {
    let mut g = Graph::new();
    let d = g.input("dest", DType::F32, dest).unwrap();
    let mut us = dest.to_vec();
    us[axis] = n;
    let u = g.input("update", DType::F32, us.as_slice()).unwrap();
    let start = g.input("start", DType::I32, [1]).unwrap();
    let y = g.update_rows(d, u, start, axis).unwrap();
    g.output(y).unwrap();
    if keep_old {
        let old = g.activation(kiln::ir::Activation::Neg, d).unwrap();
        g.output(old).unwrap();
    }
    g
}

fn update_rows_inputs(
    dest: &[usize],
    axis: usize,
    n: usize,
    start: i32,
) -> Vec<(&'static str, HostTensor)> {
    let mut us = dest.to_vec();
    us[axis] = n;
    vec![
        ("dest", iota(dest, 0.25)),
        ("update", iota(&us, -1.5)),
        ("start", HostTensor::from_i32(&[1], &[start]).unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn update_rows_at_any_start(s in shape(), axis_pick in any::<prop::sample::Index>(), n in 1usize..4, shift in -3i32..4, keep_old in any::<bool>()) {
        let axis = axis_pick.index(s.len());
        // Starts from before the first row to past the last: outside rows are dropped.
        let start = shift + s[axis] as i32 / 2;
        let g = update_rows_graph(&s, axis, n, keep_old);
        same(&g, &update_rows_inputs(&s, axis, n, start));
    }
}

#[test]
fn an_input_updated_in_place_is_fed_back_and_uploads_are_not_skipped() {
    use kiln::runtime::{CompileOptions, Executable};
    // 96 rows of 16 values: 6 KiB, under the tiny device's 8 KiB binding; the 4 KiB input
    // `pad` lies between the cache and the update, so there the step's operands span more
    // than one binding and the cache is staged in and out of scratch.
    let dest = [1, 96, 2, 8];
    let g = {
        let mut g = Graph::new();
        let d = g.input("dest", DType::F32, dest).unwrap();
        let pad = g.input("pad", DType::F32, [1024]).unwrap();
        let u = g.input("update", DType::F32, [1, 1, 2, 8]).unwrap();
        let start = g.input("start", DType::I32, [1]).unwrap();
        let y = g.update_rows(d, u, start, 1).unwrap();
        g.output(y).unwrap();
        let s = g.reduce(kiln::ir::ReduceOp::Sum, y, &[1], false).unwrap();
        g.output(s).unwrap();
        g.output(pad).unwrap();
        g
    };
    let pad = iota(&[1024], 1.0);
    for dev in [common::device(), common::tiny_device()] {
        let mut exe = Executable::compile(&dev, &g, &CompileOptions::default()).unwrap();
        let plan = exe.plan();
        assert_eq!(plan.inputs_updated_in_place().len(), 1);
        let staged = plan
            .steps
            .iter()
            .any(|s| matches!(s.binding, kiln::plan::Binding::Scratch { .. }) && s.writes == [0]);
        assert_eq!(
            staged,
            dev.info().limits.max_storage_buffer_binding_size == common::TINY_BINDING
        );
        exe.feed_back(0, "dest").unwrap();
        let mut cpu = update_rows_inputs(&dest, 1, 1, 0);
        cpu.push(("pad", pad.clone()));
        let first = exe
            .run(&[
                ("dest", &cpu[0].1),
                ("update", &cpu[1].1),
                ("start", &cpu[2].1),
                ("pad", &pad),
            ])
            .unwrap();
        let mut want = evaluate(&g, &[], &cpu).unwrap();
        assert_eq!(first, want);
        // Three decode-like steps: the cache comes from the GPU, one row is written each time.
        for pos in 1..4 {
            cpu[0].1 = want[0].clone();
            cpu[1].1 = iota(&[1, 1, 2, 8], pos as f32);
            cpu[2].1 = HostTensor::from_i32(&[1], &[pos]).unwrap();
            let got = exe
                .run(&[("update", &cpu[1].1), ("start", &cpu[2].1), ("pad", &pad)])
                .unwrap();
            want = evaluate(&g, &[], &cpu).unwrap();
            assert_eq!(got, want, "position {pos}");
        }
        // Without feedback, the same cache bytes given twice are uploaded both times: the first
        // run changed the slot (row 5), so skipping the second upload would leave that row in.
        let mut exe = Executable::compile(&dev, &g, &CompileOptions::default()).unwrap();
        for start in [5, 7] {
            let mut given = update_rows_inputs(&dest, 1, 1, start);
            given.push(("pad", pad.clone()));
            let refs: Vec<(&str, &HostTensor)> = given.iter().map(|(n, t)| (*n, t)).collect();
            let want = evaluate(&g, &[], &given).unwrap();
            assert_eq!(exe.run(&refs).unwrap(), want, "start {start}");
        }
    }
}

/// Three caches updated at one position (like a decoder's K and V) become one batched
/// dispatch (jobs 0 to 2 of its grid), in place when nothing else reads the old caches, else
/// after copies; on the whole arena and on 8 KiB bindings the results equal the reference's.
#[test]
fn cache_updates_at_one_position_batch() {
    use kiln::plan::StepKind;
    use kiln::runtime::{CompileOptions, Executable};
    for keep_old in [false, true] {
        let mut g = Graph::new();
        let kc = g.input("kc", DType::F32, [1, 16, 2, 8]).unwrap();
        let vc = g.input("vc", DType::F32, [1, 16, 2, 8]).unwrap();
        let wc = g.input("wc", DType::F32, [1, 16, 2, 8]).unwrap();
        let k = g.input("k", DType::F32, [1, 3, 2, 8]).unwrap();
        let v = g.input("v", DType::F32, [1, 3, 2, 8]).unwrap();
        let w = g.input("w", DType::F32, [1, 3, 2, 8]).unwrap();
        let pos = g.input("pos", DType::I32, [1]).unwrap();
        let uk = g.update_rows(kc, k, pos, 1).unwrap();
        let uv = g.update_rows(vc, v, pos, 1).unwrap();
        let uw = g.update_rows(wc, w, pos, 1).unwrap();
        g.output(uk).unwrap();
        g.output(uv).unwrap();
        g.output(uw).unwrap();
        if keep_old {
            let s = g.binary(kiln::ir::BinaryOp::Add, kc, vc).unwrap();
            g.output(s).unwrap();
        }
        for start in [0, 14] {
            let inputs = [
                ("kc", iota(&[1, 16, 2, 8], 0.5)),
                ("vc", iota(&[1, 16, 2, 8], -0.25)),
                ("wc", iota(&[1, 16, 2, 8], 0.125)),
                ("k", iota(&[1, 3, 2, 8], 3.0)),
                ("v", iota(&[1, 3, 2, 8], -2.0)),
                ("w", iota(&[1, 3, 2, 8], 5.0)),
                ("pos", HostTensor::from_i32(&[1], &[start]).unwrap()),
            ];
            let want = evaluate(&g, &[], &inputs).unwrap();
            for dev in [common::device(), common::tiny_device()] {
                let mut exe = Executable::compile(&dev, &g, &CompileOptions::default()).unwrap();
                let plan = exe.plan();
                assert!(plan
                    .steps
                    .iter()
                    .any(|s| matches!(&s.kind, StepKind::Batched { nodes } if nodes.len() == 3)));
                let in_place = plan.inputs_updated_in_place().len();
                // The extra reader reads two of the old caches; the third is still in place.
                assert_eq!(in_place, if keep_old { 1 } else { 3 });
                let refs: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
                assert_eq!(
                    exe.run(&refs).unwrap(),
                    want,
                    "start {start} keep {keep_old}"
                );
            }
        }
    }
}
