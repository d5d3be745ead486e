//! Legalization: rewrite ops the kernels cannot run into ops they can, or fail naming the op.
//!
//! kiln's kernels compute in f32 over 4-byte words. Integer arithmetic, comparisons, reductions
//! and cumulative sums are rewritten as cast → f32 op → cast back, which is exactly the IR's
//! semantics (the reference also computes integers through f32). Ops on f16/bf16 values have
//! no kernel yet and are rejected here, so nothing unsupported reaches the runtime. (Quantized
//! matmul weights and gather tables pass: their kernels dequantize on the fly.)

use crate::error::{node_name, PlanError};
use kiln_ir::{DType, Graph, Node, NodeId, Op};

/// The legalized graph and, for every node of the original, its node in the new one.
#[derive(Debug, Clone)]
pub struct Legalized {
    pub graph: Graph,
    pub map: Vec<NodeId>,
}

fn unsupported(g: &Graph, id: usize, why: &str) -> PlanError {
    PlanError::UnsupportedOp {
        node: format!("{} [{why}]", node_name(g, NodeId(id))),
        op: g.nodes()[id].op.name(),
    }
}

/// Ops whose integer form is computed through f32.
fn computes_through_f32(op: &Op) -> bool {
    matches!(
        op,
        Op::Binary { .. } | Op::Compare { .. } | Op::Reduce { .. } | Op::Cumsum { .. }
    )
}

/// Whether the op computes on its (first) input's values, so that value's dtype must be f32.
fn computes(op: &Op) -> bool {
    !matches!(
        op,
        Op::Input { .. }
            | Op::Param { .. }
            | Op::Constant { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Narrow { .. }
            | Op::Concat { .. }
            | Op::Expand { .. }
            | Op::Gather { .. }
            | Op::UpdateRows { .. }
            | Op::Cast { .. }
            | Op::Where
    )
}

pub fn legalize(g: &Graph) -> Result<Legalized, PlanError> {
    let mut out = Graph::new();
    let mut map: Vec<NodeId> = Vec::with_capacity(g.len());
    for (id, node) in g.nodes().iter().enumerate() {
        let inputs: Vec<NodeId> = node.inputs.iter().map(|i| map[i.0]).collect();
        check(g, id, node)?;
        let new = match &node.op {
            Op::Input { name } => out.input(name.clone(), node.dtype, node.shape.clone())?,
            Op::Param { name } => out.param(name.clone(), node.dtype, node.shape.clone())?,
            Op::Constant { data } => out.constant(node.dtype, node.shape.clone(), data.clone())?,
            op if computes_through_f32(op) && g.nodes()[node.inputs[0].0].dtype.is_integer() => {
                let cast: Vec<NodeId> = inputs
                    .iter()
                    .map(|&i| out.cast(i, DType::F32))
                    .collect::<Result<_, _>>()?;
                let y = out.add(op.clone(), &cast)?;
                if node.dtype == out.node(y)?.dtype {
                    y
                } else {
                    out.cast(y, node.dtype)?
                }
            }
            op => out.add(op.clone(), &inputs)?,
        };
        if let Some(l) = &node.label {
            out.set_label(new, l.clone())?;
        }
        map.push(new);
    }
    for o in g.outputs() {
        out.output(map[o.0])?;
    }
    Ok(Legalized { graph: out, map })
}

fn check(g: &Graph, id: usize, node: &Node) -> Result<(), PlanError> {
    let dtype_of = |k: usize| g.nodes()[node.inputs[k].0].dtype;
    if computes(&node.op) && !computes_through_f32(&node.op) {
        for k in 0..node.inputs.len() {
            let dt = dtype_of(k);
            if matches!(dt, DType::F16 | DType::BF16) {
                return Err(unsupported(
                    g,
                    id,
                    "f16/bf16 values are not computed on yet",
                ));
            }
        }
    }
    match &node.op {
        Op::Cast { to }
            if matches!(to, DType::F16 | DType::BF16)
                || matches!(dtype_of(0), DType::F16 | DType::BF16) =>
        {
            Err(unsupported(
                g,
                id,
                "casts to or from f16/bf16 are not supported yet",
            ))
        }
        Op::Cast { to: DType::U32 } if dtype_of(0).is_float() || dtype_of(0) == DType::Bool => Err(
            unsupported(g, id, "float to u32 casts are not supported yet"),
        ),
        op if computes_through_f32(op) && matches!(dtype_of(0), DType::F16 | DType::BF16) => Err(
            unsupported(g, id, "f16/bf16 values are not computed on yet"),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::BinaryOp;

    #[test]
    fn integer_arithmetic_goes_through_f32() {
        let mut g = Graph::new();
        let a = g.input("a", DType::I32, [4]).unwrap();
        let b = g.input("b", DType::I32, [4]).unwrap();
        let y = g.binary(BinaryOp::Add, a, b).unwrap();
        g.output(y).unwrap();
        let l = legalize(&g).unwrap();
        let ops: Vec<&str> = l.graph.nodes().iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, ["input", "input", "cast", "cast", "binary", "cast"]);
        assert_eq!(l.graph.node(l.map[2]).unwrap().dtype, DType::I32);
    }

    #[test]
    fn unsupported_ops_are_named() {
        let mut g = Graph::new();
        let x = g.input("x", DType::F16, [2, 32]).unwrap();
        let w = g.param("w", DType::F16, [8, 32]).unwrap();
        let y = g.matmul_t(x, w).unwrap();
        g.set_label(y, "proj").unwrap();
        g.output(y).unwrap();
        let err = legalize(&g).unwrap_err();
        assert!(matches!(err, PlanError::UnsupportedOp { op: "matmul", .. }));
        assert!(err.to_string().contains("%2 \"proj\""), "{err}");
    }

    #[test]
    fn quantized_weights_and_tables_pass() {
        let mut g = Graph::new();
        let ids = g.input("ids", DType::I32, [2]).unwrap();
        let table = g.param("table", DType::Q8_0, [16, 32]).unwrap();
        let w = g.param("w", DType::Q4_1, [8, 32]).unwrap();
        let x = g.gather(table, ids, 0).unwrap();
        let y = g.matmul_t(x, w).unwrap();
        g.output(y).unwrap();
        let l = legalize(&g).unwrap();
        let ops: Vec<&str> = l.graph.nodes().iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, ["input", "param", "param", "gather", "matmul"]);
    }
}
