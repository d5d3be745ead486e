//! JSON round trips of random valid graphs, the text form, and typed errors from tampered JSON.

use kiln_ir::*;
use proptest::prelude::*;
use serde_json::{json, Value};

/// One random building step. The numbers pick operands (modulo the node count) and attributes;
/// a step whose builder call rejects the random combination is skipped.
#[derive(Debug, Clone)]
struct Step {
    kind: u8,
    a: usize,
    b: usize,
    c: usize,
    f: f32,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..31,
        any::<usize>(),
        any::<usize>(),
        any::<usize>(),
        0.0f32..1.0,
    )
        .prop_map(|(kind, a, b, c, f)| Step { kind, a, b, c, f })
}

/// The dims random inputs are made of: small static sizes and two bounded symbols.
fn pick_dim(n: usize) -> Dim {
    match n % 7 {
        0 => Dim::Static(1),
        1 => Dim::Static(2),
        2 => Dim::Static(3),
        3 => Dim::Static(4),
        4 => Dim::Static(8),
        5 => Dim::bounded("seq", 16),
        _ => Dim::bounded("batch", 4),
    }
}

fn pick_shape(n: usize) -> Shape {
    let rank = n % 4;
    Shape(
        (0..rank)
            .map(|i| pick_dim(n / 4 / 7usize.pow(i as u32)))
            .collect(),
    )
}

fn pick_act(n: usize) -> Activation {
    ALL_ACTIVATIONS[n % ALL_ACTIVATIONS.len()]
}

struct Builder {
    g: Graph,
    fresh: usize,
}

impl Builder {
    fn name(&mut self, prefix: &str) -> String {
        self.fresh += 1;
        format!("{prefix}{}", self.fresh)
    }

    fn pick(&self, n: usize) -> NodeId {
        NodeId(n % self.g.len())
    }

    fn shape(&self, id: NodeId) -> Shape {
        self.g.node(id).unwrap().shape.clone()
    }

    fn input(&mut self, dtype: DType, shape: impl Into<Shape>) -> Result<NodeId, IrError> {
        let name = self.name("in");
        self.g.input(name, dtype, shape)
    }

    fn param(&mut self, dtype: DType, shape: impl Into<Shape>) -> Result<NodeId, IrError> {
        let name = self.name("w");
        self.g.param(name, dtype, shape)
    }

    /// A node with `a`'s dtype whose shape broadcasts with `a`'s (`a` itself at worst), picked
    /// by `n` among them; with `any_dtype`, any non-quantized node that broadcasts.
    fn partner(&self, a: NodeId, n: usize, any_dtype: bool) -> NodeId {
        let na = self.g.node(a).unwrap();
        let fits: Vec<NodeId> = (0..self.g.len())
            .map(NodeId)
            .filter(|&id| {
                let nb = self.g.node(id).unwrap();
                let dtype_ok = if any_dtype {
                    !nb.dtype.is_quantized()
                } else {
                    nb.dtype == na.dtype
                };
                dtype_ok && broadcast_shapes(&na.shape, &nb.shape).is_some()
            })
            .collect();
        if fits.is_empty() {
            return a;
        }
        fits[n % fits.len()]
    }

    /// A param shaped like the last axis of `x` (for norms and biases).
    fn vector_for(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        let n = self.g.node(x)?;
        let (dt, last) = (n.dtype, n.shape.0.last().cloned());
        let last = last.ok_or(IrError::NoOutputs)?;
        self.param(dt, Shape(vec![last]))
    }

    /// Applies one step; an error means the random combination was invalid.
    fn apply(&mut self, s: &Step) -> Result<NodeId, IrError> {
        let a = self.pick(s.a);
        let b = self.pick(s.b);
        match s.kind {
            0 => {
                let dt = [DType::F32, DType::F16, DType::I32, DType::Bool][s.b % 4];
                self.input(dt, pick_shape(s.c))
            }
            1 => {
                let dt = [DType::F32, DType::Q8_0, DType::Q4_0, DType::Q4_1][s.b % 4];
                let rows = 1 + s.c % 4;
                let cols = if dt.is_quantized() { 32 } else { 8 };
                self.param(dt, [rows, cols * (1 + s.a % 2)])
            }
            2 => {
                let n = 1 + s.c % 5;
                if s.b.is_multiple_of(2) {
                    let vals: Vec<f32> = (0..n).map(|i| i as f32 * s.f).collect();
                    self.g.constant_f32([n], &vals)
                } else {
                    let vals: Vec<i32> = (0..n as i32).collect();
                    let bytes = bytemuck::cast_slice::<i32, u8>(&vals).to_vec();
                    self.g.constant(DType::I32, [1, n], bytes)
                }
            }
            3 => {
                let kind = [
                    BinaryOp::Add,
                    BinaryOp::Sub,
                    BinaryOp::Mul,
                    BinaryOp::Div,
                    BinaryOp::Max,
                    BinaryOp::Min,
                    BinaryOp::Pow,
                ][s.c % 7];
                let b = if s.b.is_multiple_of(4) {
                    b
                } else {
                    self.partner(a, s.b, false)
                };
                self.g.binary(kind, a, b)
            }
            4 => {
                let kind = [
                    CompareOp::Eq,
                    CompareOp::Ne,
                    CompareOp::Lt,
                    CompareOp::Le,
                    CompareOp::Gt,
                    CompareOp::Ge,
                ][s.c % 6];
                let b = if s.b.is_multiple_of(4) {
                    b
                } else {
                    self.partner(a, s.b, false)
                };
                self.g.compare(kind, a, b)
            }
            5 => {
                let cond = self.partner(a, s.c, true);
                let b = self.partner(a, s.b, false);
                self.g.where_(cond, a, b)
            }
            6 => self.g.activation(pick_act(s.c), a),
            7 => {
                // Reshapes that keep the element count: reversed dims, a leading 1, or flat.
                let sh = self.shape(a);
                let target = match s.c % 3 {
                    0 => Shape(sh.0.iter().rev().cloned().collect()),
                    1 => Shape([vec![Dim::Static(1)], sh.0.clone()].concat()),
                    _ => {
                        let mut d: Vec<Dim> =
                            sh.0.iter()
                                .filter(|d| d.as_static().is_none())
                                .cloned()
                                .collect();
                        let n: usize = sh.0.iter().filter_map(Dim::as_static).product();
                        d.push(Dim::Static(n));
                        Shape(d)
                    }
                };
                self.g.reshape(a, target)
            }
            8 => {
                let r = self.shape(a).rank();
                let perm: Vec<usize> = (0..r).map(|i| (i + s.c) % r.max(1)).collect();
                self.g.transpose(a, &perm)
            }
            9 => {
                let sh = self.shape(a);
                let axis = s.b % sh.rank().max(1);
                let size = sh.0.get(axis).and_then(Dim::as_static).unwrap_or(1);
                let start = s.c % size.max(1);
                let len = (s.c / 7) % (size - start.min(size) + 1);
                self.g.narrow(a, axis, start, len)
            }
            10 => {
                // Along a static axis of a; with a itself, or also with another node.
                let sh = self.shape(a);
                let statics: Vec<usize> = (0..sh.rank())
                    .filter(|&i| sh.0[i].as_static().is_some())
                    .collect();
                let axis = statics
                    .get(s.c % statics.len().max(1))
                    .copied()
                    .unwrap_or(0);
                let xs = if s.b.is_multiple_of(3) {
                    vec![a, b, a]
                } else {
                    vec![a; 1 + s.b % 3]
                };
                self.g.concat(&xs, axis)
            }
            11 => {
                let r = self.shape(a).rank();
                let axes: Vec<usize> = (0..r).filter(|i| s.b >> i & 1 == 1).collect();
                let kind = [
                    ReduceOp::Sum,
                    ReduceOp::Mean,
                    ReduceOp::Max,
                    ReduceOp::Min,
                    ReduceOp::Prod,
                ][s.c % 5];
                self.g.reduce(kind, a, &axes, s.c.is_multiple_of(2))
            }
            12 => {
                let axis = s.c % self.shape(a).rank().max(1);
                self.g.softmax(a, axis)
            }
            13 => {
                let eps = s.f * 1e-3;
                let gamma = if !s.c.is_multiple_of(3) {
                    Some(self.vector_for(a)?)
                } else {
                    None
                };
                let beta = if s.c % 3 > 1 {
                    Some(self.vector_for(a)?)
                } else {
                    None
                };
                if s.b.is_multiple_of(2) {
                    self.g.layer_norm(a, gamma, beta, eps)
                } else {
                    self.g.rms_norm(a, gamma, eps)
                }
            }
            14 => {
                let kind = if s.b.is_multiple_of(2) {
                    NormKind::Layer
                } else {
                    NormKind::Rms
                };
                let bias = if s.c.is_multiple_of(2) {
                    Some(self.vector_for(a)?)
                } else {
                    None
                };
                let gamma = if !s.c.is_multiple_of(3) {
                    Some(self.vector_for(a)?)
                } else {
                    None
                };
                let beta = if s.c % 3 > 1 {
                    Some(self.vector_for(a)?)
                } else {
                    None
                };
                self.g
                    .fused_residual_norm(kind, a, a, bias, gamma, beta, s.f)
            }
            15 => {
                // a × a new weight (either orientation), or a × b when they fit.
                let n = self.g.node(a)?;
                let (dt, k) = (
                    n.dtype,
                    n.shape.0.last().cloned().ok_or(IrError::NoOutputs)?,
                );
                let out = Dim::Static(1 + s.c % 5);
                match s.c % 3 {
                    0 => {
                        let w = self.param(dt, Shape(vec![k, out]))?;
                        self.g.matmul(a, w)
                    }
                    1 => {
                        let w = self.param(dt, Shape(vec![out, k]))?;
                        self.g.matmul_t(a, w)
                    }
                    _ => self.g.matmul(a, b),
                }
            }
            16 => {
                let n = self.g.node(a)?;
                let (dt, k) = (
                    n.dtype,
                    n.shape.0.last().cloned().ok_or(IrError::NoOutputs)?,
                );
                let out = 1 + s.c % 5;
                let w = self.param(dt, Shape(vec![Dim::Static(out), k]))?;
                let bias = if s.b.is_multiple_of(2) {
                    Some(self.param(dt, [out])?)
                } else {
                    None
                };
                let act = (!s.b.is_multiple_of(3)).then(|| pick_act(s.c / 5));
                self.g.fused_matmul_bias_act(a, w, bias, act, true)
            }
            17 => {
                // Attention on fresh q, k, v inputs with random geometry.
                let kv_heads = 1 + s.a % 2;
                let heads = kv_heads * (1 + s.b % 3);
                let head_dim = [2, 4, 8][s.c % 3];
                let layout = if s.c.is_multiple_of(2) {
                    HeadLayout::Bshd
                } else {
                    HeadLayout::Bhsd
                };
                let mask = [
                    AttentionMask::None,
                    AttentionMask::Causal,
                    AttentionMask::Bias,
                    AttentionMask::KeyPadding,
                ][(s.c / 3) % 4];
                let has_past_len = s.b % 2 == 1;
                let seq_q = Dim::bounded("seq", 16);
                let seq_k = if has_past_len {
                    Dim::Static(16)
                } else {
                    seq_q.clone()
                };
                let batch = Dim::Static(1 + s.a % 3);
                let arrange = |h: usize, s: Dim| match layout {
                    HeadLayout::Bshd => Shape(vec![
                        batch.clone(),
                        s,
                        Dim::Static(h),
                        Dim::Static(head_dim),
                    ]),
                    HeadLayout::Bhsd => Shape(vec![
                        batch.clone(),
                        Dim::Static(h),
                        s,
                        Dim::Static(head_dim),
                    ]),
                };
                let q = self.input(DType::F32, arrange(heads, seq_q.clone()))?;
                let k = self.input(DType::F32, arrange(kv_heads, seq_k.clone()))?;
                let v = self.input(DType::F32, arrange(kv_heads, seq_k.clone()))?;
                let mut inputs = vec![q, k, v];
                match mask {
                    AttentionMask::Bias => inputs.push(self.input(
                        DType::F32,
                        Shape(vec![Dim::Static(1), Dim::Static(1), seq_q, seq_k]),
                    )?),
                    AttentionMask::KeyPadding => {
                        inputs.push(self.input(DType::Bool, Shape(vec![batch.clone(), seq_k]))?)
                    }
                    _ => {}
                }
                if has_past_len {
                    inputs.push(self.input(DType::I32, [1])?);
                }
                let op = Op::Attention {
                    num_heads: heads,
                    num_kv_heads: kv_heads,
                    head_dim,
                    scale: s.f + 0.125,
                    mask,
                    layout,
                    has_past_len,
                };
                self.g.add(op, &inputs)
            }
            18 => {
                let head_dim = [4, 8][s.b % 2];
                let layout = if s.c.is_multiple_of(2) {
                    HeadLayout::Bshd
                } else {
                    HeadLayout::Bhsd
                };
                let x = self.input(
                    DType::F32,
                    Shape(vec![
                        Dim::Static(1),
                        Dim::bounded("seq", 16),
                        Dim::Static(2),
                        Dim::Static(head_dim),
                    ]),
                )?;
                let has_offset_input = s.c.is_multiple_of(3);
                let mut inputs = vec![x];
                if has_offset_input {
                    inputs.push(self.input(DType::U32, Shape::scalar())?);
                }
                let op = Op::Rope {
                    head_dim,
                    rotary_dims: 2 * (1 + s.a % (head_dim / 2)),
                    theta: 1.0 + s.f * 1e5,
                    style: if s.b.is_multiple_of(3) {
                        RopeStyle::Interleaved
                    } else {
                        RopeStyle::RotateHalf
                    },
                    layout,
                    position_offset: s.c % 100,
                    has_offset_input,
                };
                self.g.add(op, &inputs)
            }
            19 => {
                let axis = s.c % self.shape(a).rank().max(1);
                self.g.cumsum(a, axis, s.b.is_multiple_of(2))
            }
            20 => self.g.argmax(a),
            21 => {
                let out = if s.b.is_multiple_of(2) {
                    TopKOutput::Values
                } else {
                    TopKOutput::Indices
                };
                self.g.topk(a, 1 + s.c % 4, out)
            }
            22 => {
                let has_counter = s.b.is_multiple_of(2);
                let mut inputs = vec![a];
                if has_counter {
                    inputs.push(self.input(DType::U32, [1])?);
                }
                let op = Op::Sample {
                    top_k: s.c % 10,
                    top_p: 1.0 - s.f * 0.99,
                    temperature: [0.0, 0.7, 1.0][s.c % 3],
                    seed: s.a as u64,
                    has_counter,
                };
                self.g.add(op, &inputs)
            }
            23 => {
                let idx = self.input(DType::I32, pick_shape(s.c))?;
                let axis = s.b % self.shape(a).rank().max(1);
                self.g.gather(a, idx, axis)
            }
            24 => {
                let to = [
                    DType::F32,
                    DType::F16,
                    DType::BF16,
                    DType::I32,
                    DType::U8,
                    DType::Bool,
                ][s.c % 6];
                self.g.cast(a, to)
            }
            25 => {
                let mut d = vec![Dim::Static(1 + s.c % 3)];
                d.extend(self.shape(a).0.iter().map(|x| {
                    if *x == Dim::Static(1) {
                        Dim::Static(2)
                    } else {
                        x.clone()
                    }
                }));
                self.g.expand(a, Shape(d))
            }
            26 => {
                let label = format!("label {}", s.c % 100);
                self.g.set_label(a, label)?;
                Ok(a)
            }
            27 => {
                // A quantized weight [N, 32k] against a fresh activation [.., 32k].
                let dt = [DType::Q4_0, DType::Q4_1, DType::Q8_0][s.c % 3];
                let k = 32 * (1 + s.b % 2);
                let x = self.input(
                    DType::F32,
                    Shape(vec![Dim::bounded("seq", 16), Dim::Static(k)]),
                )?;
                let w = self.param(dt, [1 + s.a % 4, k])?;
                if s.c.is_multiple_of(2) {
                    self.g.matmul_t(x, w)
                } else {
                    self.g
                        .fused_matmul_bias_act(x, w, None, Some(Activation::Silu), true)
                }
            }
            28 => {
                // An embedding lookup in a quantized table.
                let table = self.param(DType::Q8_0, [1 + s.a % 10, 32])?;
                let idx = self.input(DType::I32, Shape(vec![Dim::bounded("seq", 16)]))?;
                self.g.gather(table, idx, 0)
            }
            29 => {
                // A row update (a KV cache write) at a dynamic start, along axis 1 of a
                // [1, 16, 2, 4] cache, with a start of either integer dtype.
                let dest = self.input(DType::F32, [1, 16, 2, 4])?;
                let rows = Dim::bounded("seq", 16);
                let update = self.input(
                    DType::F32,
                    Shape(vec![Dim::Static(1), rows, Dim::Static(2), Dim::Static(4)]),
                )?;
                let start = self.input([DType::U32, DType::I32][s.c % 2], Shape::scalar())?;
                self.g.update_rows(dest, update, start, 1)
            }
            _ => {
                // Invalid on purpose: an empty reduce must be rejected and leave no node.
                let len = self.g.len();
                let r = self.g.reduce(ReduceOp::Sum, a, &[], false);
                assert!(r.is_err() && self.g.len() == len);
                r
            }
        }
    }
}

fn random_graph(steps: &[Step], outputs: &[usize]) -> Graph {
    let mut b = Builder {
        g: Graph::new(),
        fresh: 0,
    };
    b.g.input(
        "x",
        DType::F32,
        Shape(vec![Dim::bounded("seq", 16), Dim::Static(8)]),
    )
    .unwrap();
    b.g.input(
        "h",
        DType::F32,
        Shape(vec![
            Dim::bounded("batch", 4),
            Dim::bounded("seq", 16),
            Dim::Static(8),
        ]),
    )
    .unwrap();
    b.g.input("ids", DType::I32, Shape(vec![Dim::bounded("seq", 16)]))
        .unwrap();
    b.g.param("w", DType::F32, [8, 8]).unwrap();
    for s in steps {
        let before = b.g.len();
        match b.apply(s) {
            // A successful step ends on a node that exists.
            Ok(id) => assert!(id.0 < b.g.len()),
            // A rejected builder call never leaves a half-built node behind (params created for
            // it before the failure may stay; they are valid nodes).
            Err(_) => assert!(b.g.len() >= before),
        }
    }
    let n = b.g.len();
    b.g.output(NodeId(n - 1)).unwrap();
    for &o in outputs {
        b.g.output(NodeId(o % n)).unwrap();
    }
    b.g
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn json_roundtrip_of_random_graphs(
        steps in prop::collection::vec(step(), 1..40),
        outputs in prop::collection::vec(any::<usize>(), 0..3),
    ) {
        let g = random_graph(&steps, &outputs);
        prop_assert_eq!(g.validate(), Ok(()));
        let json = g.to_json();
        let back = Graph::from_json(&json);
        prop_assert_eq!(back.as_ref(), Ok(&g), "json:\n{}", json);
        // Serializing again gives the same text.
        prop_assert_eq!(back.unwrap().to_json(), json);

        // The text form names every node on its own line, and the outputs.
        let text = g.to_string();
        prop_assert_eq!(text.lines().count(), g.len() + 1);
        for (i, line) in text.lines().skip(1).enumerate() {
            let prefix = format!("  %{i} = {}", g.nodes()[i].op.name());
            prop_assert!(line.starts_with(&prefix), "line {:?} should start with {:?}", line, prefix);
        }
        for o in g.outputs() {
            prop_assert!(text.lines().next().unwrap().contains(&o.to_string()));
        }
    }

    /// Replacing any number in a valid graph's JSON by another never panics; whatever loads is
    /// valid and round-trips.
    #[test]
    fn tampered_numbers_never_panic(
        steps in prop::collection::vec(step(), 1..20),
        which in any::<prop::sample::Index>(),
        value in prop_oneof![0u64..20, Just(u32::MAX as u64), Just(1u64 << 40), Just(u64::MAX)],
    ) {
        let g = random_graph(&steps, &[]);
        let mut v: Value = serde_json::from_str(&g.to_json()).unwrap();
        let mut numbers = Vec::new();
        collect_numbers(&mut v, &mut numbers);
        let target = which.index(numbers.len());
        let mut k = 0;
        replace_number(&mut v, target, value, &mut k);
        if let Ok(loaded) = Graph::from_json(&v.to_string()) {
            prop_assert_eq!(loaded.validate(), Ok(()));
            prop_assert_eq!(Graph::from_json(&loaded.to_json()), Ok(loaded.clone()));
            let _ = loaded.to_string();
        }
    }
}

fn collect_numbers(v: &mut Value, out: &mut Vec<()>) {
    match v {
        Value::Number(_) => out.push(()),
        Value::Array(a) => a.iter_mut().for_each(|x| collect_numbers(x, out)),
        Value::Object(o) => o.values_mut().for_each(|x| collect_numbers(x, out)),
        _ => {}
    }
}

fn replace_number(v: &mut Value, target: usize, value: u64, k: &mut usize) {
    match v {
        Value::Number(_) => {
            if *k == target {
                *v = json!(value);
            }
            *k += 1;
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|x| replace_number(x, target, value, k)),
        Value::Object(o) => o
            .values_mut()
            .for_each(|x| replace_number(x, target, value, k)),
        _ => {}
    }
}

/// f32 attributes survive JSON exactly, whatever their bits.
#[test]
fn float_attributes_roundtrip_exactly() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&(0.0f32..1e3, 1e-30f32..1.0), |(eps, scale)| {
            let mut g = Graph::new();
            let x = g.input("x", DType::F32, [1, 2, 1, 4]).unwrap();
            let n = g.rms_norm(x, None, eps).unwrap();
            let op = Op::Attention {
                num_heads: 1,
                num_kv_heads: 1,
                head_dim: 4,
                scale,
                mask: AttentionMask::None,
                layout: HeadLayout::Bshd,
                has_past_len: false,
            };
            let y = g.add(op, &[n, n, n]).unwrap();
            g.output(y).unwrap();
            prop_assert_eq!(Graph::from_json(&g.to_json()), Ok(g));
            Ok(())
        })
        .unwrap();
}

// ---- Tampered JSON: each gives its typed error. ----

/// x: f32[seq<=8, 4] → %1 relu → %2 x + const [4] → output %2. Returned as JSON.
fn small_graph_json() -> Value {
    let mut g = Graph::new();
    let x = g
        .input(
            "x",
            DType::F32,
            Shape(vec![Dim::bounded("seq", 8), Dim::Static(4)]),
        )
        .unwrap();
    let r = g.activation(Activation::Relu, x).unwrap();
    let c = g.constant_f32([4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let y = g.add_op(r, c).unwrap();
    g.output(y).unwrap();
    assert!(Graph::from_json(&g.to_json()).is_ok());
    serde_json::from_str(&g.to_json()).unwrap()
}

fn load(v: &Value) -> Result<Graph, IrError> {
    Graph::from_json(&v.to_string())
}

#[test]
fn changed_recorded_shape_is_stale() {
    let mut v = small_graph_json();
    // relu of [seq, 4] recorded as [seq, 5].
    v["nodes"][1]["shape"][1] = json!(5);
    match load(&v) {
        Err(IrError::StaleShape {
            node: 1,
            recorded,
            inferred,
            ..
        }) => {
            assert_eq!(recorded, "[seq<=8, 5]");
            assert_eq!(inferred, "[seq<=8, 4]");
        }
        other => panic!("{other:?}"),
    }
    // A changed dtype is stale too.
    let mut v = small_graph_json();
    v["nodes"][3]["dtype"] = json!("f16");
    assert!(matches!(
        load(&v),
        Err(IrError::StaleShape {
            node: 3,
            recorded_dtype: DType::F16,
            inferred_dtype: DType::F32,
            ..
        })
    ));
}

#[test]
fn dangling_and_forward_references() {
    // An input id past the end of the graph: it does not come before node 3.
    let mut v = small_graph_json();
    v["nodes"][3]["inputs"][1] = json!(99);
    assert_eq!(
        load(&v),
        Err(IrError::NotTopological { node: 3, input: 99 })
    );
    // A forward reference: relu (%1) reading the add (%3).
    let mut v = small_graph_json();
    v["nodes"][1]["inputs"][0] = json!(3);
    assert_eq!(load(&v), Err(IrError::NotTopological { node: 1, input: 3 }));
    // A node reading itself.
    let mut v = small_graph_json();
    v["nodes"][1]["inputs"][0] = json!(1);
    assert_eq!(load(&v), Err(IrError::NotTopological { node: 1, input: 1 }));
    // A dangling output.
    let mut v = small_graph_json();
    v["outputs"] = json!([3, 7]);
    assert_eq!(load(&v), Err(IrError::UnknownNode { id: 7, len: 4 }));
}

#[test]
fn duplicate_names_and_missing_outputs() {
    let mut v = small_graph_json();
    // Turn the constant into a second input called "x".
    v["nodes"][2]["op"] = json!({"op": "input", "name": "x"});
    assert_eq!(load(&v), Err(IrError::DuplicateName { name: "x".into() }));
    // An input and a param may not share a name either.
    let mut v = small_graph_json();
    v["nodes"][2]["op"] = json!({"op": "param", "name": "x"});
    assert_eq!(load(&v), Err(IrError::DuplicateName { name: "x".into() }));

    let mut v = small_graph_json();
    v["outputs"] = json!([]);
    assert_eq!(load(&v), Err(IrError::NoOutputs));
    let mut v = small_graph_json();
    v.as_object_mut().unwrap().remove("outputs");
    assert_eq!(load(&v), Err(IrError::NoOutputs));
}

#[test]
fn bad_sources_are_node_errors() {
    // The f32[4] constant with 12 bytes instead of 16.
    let mut v = small_graph_json();
    v["nodes"][2]["op"]["data"]
        .as_array_mut()
        .unwrap()
        .truncate(12);
    match load(&v) {
        Err(
            e @ IrError::Node {
                op: "constant",
                source: InferError::Shape(_),
                ..
            },
        ) => assert!(e.to_string().starts_with("node %2 (constant)"), "{e}"),
        other => panic!("{other:?}"),
    }
    // A constant with an astronomically large shape: an error, not an overflow.
    let mut v = small_graph_json();
    v["nodes"][2]["shape"] = json!([1u64 << 40, 1u64 << 40]);
    assert!(matches!(
        load(&v),
        Err(IrError::Node {
            op: "constant",
            source: InferError::Shape(_),
            ..
        })
    ));
    // A huge input used as an attention past length or a concat part: errors, not overflows.
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [1, 1, 1, 2]).unwrap();
    let p = g.input("past", DType::I32, [1]).unwrap();
    let op = Op::Attention {
        num_heads: 1,
        num_kv_heads: 1,
        head_dim: 2,
        scale: 1.0,
        mask: AttentionMask::None,
        layout: HeadLayout::Bshd,
        has_past_len: true,
    };
    let a = g.add(op, &[x, x, x, p]).unwrap();
    let c = g.concat(&[x, x], 0).unwrap();
    g.output(a).unwrap();
    g.output(c).unwrap();
    let mut v: Value = serde_json::from_str(&g.to_json()).unwrap();
    v["nodes"][1]["shape"] = json!([1u64 << 40, 1u64 << 40]);
    assert!(matches!(
        load(&v),
        Err(IrError::Node {
            op: "attention",
            source: InferError::Shape(_),
            ..
        })
    ));
    let mut v: Value = serde_json::from_str(&g.to_json()).unwrap();
    v["nodes"][0]["shape"][0] = json!(u64::MAX / 2 + 1);
    v["nodes"][2]["shape"][0] = json!(u64::MAX / 2 + 1);
    assert!(matches!(
        load(&v),
        Err(IrError::Node {
            op: "concat",
            source: InferError::Shape(_),
            ..
        })
    ));
    // A source with inputs.
    let mut v = small_graph_json();
    v["nodes"][0]["inputs"] = json!([0]);
    assert!(matches!(
        load(&v),
        Err(IrError::Node {
            op: "input",
            source: InferError::Arity { got: 1, .. },
            ..
        })
    ));
    // An op that now rejects its inputs: relu on a bool input.
    let mut v = small_graph_json();
    v["nodes"][0]["dtype"] = json!("bool");
    assert!(matches!(
        load(&v),
        Err(IrError::Node {
            op: "activation",
            source: InferError::DType { .. },
            ..
        })
    ));
    // The label shows in the message of a node error.
    let mut v = small_graph_json();
    v["nodes"][3]["label"] = json!("the sum");
    v["nodes"][3]["inputs"] = json!([1]);
    let e = load(&v).unwrap_err();
    assert!(matches!(
        e,
        IrError::Node {
            source: InferError::Arity { .. },
            ..
        }
    ));
    assert!(
        e.to_string().starts_with("node %3 \"the sum\" (binary)"),
        "{e}"
    );
}

#[test]
fn malformed_json_is_a_json_error() {
    for text in [
        "",
        "{",
        "[]",
        r#"{"nodes": 3}"#,
        r#"{"nodes": [{"op": {"op": "frobnicate"}, "shape": [], "dtype": "f32"}], "outputs": [0]}"#,
        r#"{"nodes": [{"op": {"op": "input", "name": "x"}, "shape": [-1], "dtype": "f32"}], "outputs": [0]}"#,
        r#"{"nodes": [{"op": {"op": "input", "name": "x"}, "shape": [2], "dtype": "f64"}], "outputs": [0]}"#,
    ] {
        assert!(
            matches!(Graph::from_json(text), Err(IrError::Json(_))),
            "{text}: {:?}",
            Graph::from_json(text)
        );
    }
}

#[test]
fn json_is_readable() {
    // The documented compact forms: dims as numbers or {name, max}, ops tagged by name.
    let v = small_graph_json();
    assert_eq!(
        v["nodes"][0],
        json!({"op": {"op": "input", "name": "x"}, "shape": [{"name": "seq", "max": 8}, 4], "dtype": "f32"})
    );
    assert_eq!(
        v["nodes"][1]["op"],
        json!({"op": "activation", "kind": "relu"})
    );
    assert_eq!(v["nodes"][3]["inputs"], json!([1, 2]));
    assert_eq!(v["outputs"], json!([3]));
}
