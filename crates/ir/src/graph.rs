//! The graph: nodes in topological order, named inputs and params, outputs.

use crate::dtype::DType;
use crate::error::{InferError, IrError};
use crate::infer::{infer, Operand};
use crate::op::Op;
use crate::shape::{Dim, DimBinding, Shape};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// The index of a node in its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One node: an op, its inputs, and the shape and dtype inferred when it was added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
    pub dtype: DType,
    /// An optional label for messages and printing (inputs and params are named by their op).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl Node {
    /// The name of an input or param node.
    pub fn source_name(&self) -> Option<&str> {
        match &self.op {
            Op::Input { name } | Op::Param { name } => Some(name),
            _ => None,
        }
    }
}

/// A tensor graph. Nodes are kept in topological order: every input of a node comes before it.
///
/// Build one with the methods below; each infers the new node's shape and dtype and returns a
/// typed error naming the node when the op does not apply. Graphs loaded from JSON are
/// validated the same way.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawGraph")]
pub struct Graph {
    nodes: Vec<Node>,
    outputs: Vec<NodeId>,
}

/// The unvalidated form a graph is deserialized into.
#[derive(Deserialize)]
struct RawGraph {
    nodes: Vec<Node>,
    #[serde(default)]
    outputs: Vec<NodeId>,
}

impl TryFrom<RawGraph> for Graph {
    type Error = IrError;
    fn try_from(raw: RawGraph) -> Result<Graph, IrError> {
        let g = Graph {
            nodes: raw.nodes,
            outputs: raw.outputs,
        };
        g.validate()?;
        Ok(g)
    }
}

fn node_label(id: usize, label: Option<&str>) -> String {
    match label {
        Some(l) => format!("%{id} \"{l}\""),
        None => format!("%{id}"),
    }
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> Result<&Node, IrError> {
        self.nodes.get(id.0).ok_or(IrError::UnknownNode {
            id: id.0,
            len: self.nodes.len(),
        })
    }

    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The input nodes, in graph order.
    pub fn inputs(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::Input { .. }))
            .map(|(i, n)| (NodeId(i), n))
    }

    /// The param nodes, in graph order.
    pub fn params(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::Param { .. }))
            .map(|(i, n)| (NodeId(i), n))
    }

    /// The input or param called `name`.
    pub fn find_source(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.source_name() == Some(name))
            .map(NodeId)
    }

    /// Marks `id` as a graph output (in call order).
    pub fn output(&mut self, id: NodeId) -> Result<(), IrError> {
        self.node(id)?;
        self.outputs.push(id);
        Ok(())
    }

    /// Gives a node a label, shown in errors and printing.
    pub fn set_label(&mut self, id: NodeId, label: impl Into<String>) -> Result<(), IrError> {
        let len = self.nodes.len();
        let node = self
            .nodes
            .get_mut(id.0)
            .ok_or(IrError::UnknownNode { id: id.0, len })?;
        node.label = Some(label.into());
        Ok(())
    }

    /// Adds a graph input.
    pub fn input(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: impl Into<Shape>,
    ) -> Result<NodeId, IrError> {
        self.add_source(Op::Input { name: name.into() }, dtype, shape.into())
    }

    /// Adds a parameter (weight).
    pub fn param(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: impl Into<Shape>,
    ) -> Result<NodeId, IrError> {
        self.add_source(Op::Param { name: name.into() }, dtype, shape.into())
    }

    /// Adds a constant from its little-endian bytes.
    pub fn constant(
        &mut self,
        dtype: DType,
        shape: impl Into<Shape>,
        data: Vec<u8>,
    ) -> Result<NodeId, IrError> {
        self.add_source(Op::Constant { data }, dtype, shape.into())
    }

    /// Adds an f32 constant.
    pub fn constant_f32(
        &mut self,
        shape: impl Into<Shape>,
        values: &[f32],
    ) -> Result<NodeId, IrError> {
        self.constant(
            DType::F32,
            shape,
            bytemuck::cast_slice::<f32, u8>(values).to_vec(),
        )
    }

    fn add_source(&mut self, op: Op, dtype: DType, shape: Shape) -> Result<NodeId, IrError> {
        let id = self.nodes.len();
        check_source(id, &op, dtype, &shape, None)?;
        if let Some(name) = match &op {
            Op::Input { name } | Op::Param { name } => Some(name),
            _ => None,
        } {
            if self.find_source(name).is_some() {
                return Err(IrError::DuplicateName { name: name.clone() });
            }
        }
        self.nodes.push(Node {
            op,
            inputs: Vec::new(),
            shape,
            dtype,
            label: None,
        });
        Ok(NodeId(id))
    }

    /// Adds any non-source op, inferring its shape and dtype.
    pub fn add(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId, IrError> {
        let id = self.nodes.len();
        let (shape, dtype) = self.infer_node(id, &op, inputs, None)?;
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            shape,
            dtype,
            label: None,
        });
        Ok(NodeId(id))
    }

    fn infer_node(
        &self,
        id: usize,
        op: &Op,
        inputs: &[NodeId],
        label: Option<&str>,
    ) -> Result<(Shape, DType), IrError> {
        if op.is_source() {
            return Err(IrError::Node {
                node: node_label(id, label),
                op: op.name(),
                source: InferError::Attr("use input(), param() or constant() for sources".into()),
            });
        }
        let mut operands = Vec::with_capacity(inputs.len());
        for &i in inputs {
            if i.0 >= id {
                return Err(IrError::NotTopological {
                    node: id,
                    input: i.0,
                });
            }
            let n = &self.nodes[i.0];
            operands.push(Operand {
                shape: &n.shape,
                dtype: n.dtype,
            });
        }
        infer(op, &operands).map_err(|source| IrError::Node {
            node: node_label(id, label),
            op: op.name(),
            source,
        })
    }

    /// Checks the whole graph: topological order, every recorded shape and dtype equal to what
    /// its op infers, unique input/param names, at least one output, outputs in range.
    pub fn validate(&self) -> Result<(), IrError> {
        let mut names = HashSet::new();
        for (id, node) in self.nodes.iter().enumerate() {
            if node.op.is_source() {
                check_source(id, &node.op, node.dtype, &node.shape, node.label.as_deref())?;
                if !node.inputs.is_empty() {
                    return Err(IrError::Node {
                        node: node_label(id, node.label.as_deref()),
                        op: node.op.name(),
                        source: InferError::Arity {
                            expected: "0".into(),
                            got: node.inputs.len(),
                        },
                    });
                }
                if let Some(name) = node.source_name() {
                    if !names.insert(name) {
                        return Err(IrError::DuplicateName { name: name.into() });
                    }
                }
                continue;
            }
            let (shape, dtype) =
                self.infer_node(id, &node.op, &node.inputs, node.label.as_deref())?;
            if shape != node.shape || dtype != node.dtype {
                return Err(IrError::StaleShape {
                    node: id,
                    recorded: node.shape.to_string(),
                    recorded_dtype: node.dtype,
                    inferred: shape.to_string(),
                    inferred_dtype: dtype,
                });
            }
        }
        if self.outputs.is_empty() {
            return Err(IrError::NoOutputs);
        }
        for o in &self.outputs {
            self.node(*o)?;
        }
        Ok(())
    }

    /// The graph as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain data structs with string keys cannot fail.
        serde_json::to_string_pretty(self).expect("graph serialization is infallible")
    }

    /// Loads and validates a graph from JSON.
    ///
    /// Malformed JSON is [`IrError::Json`]; a well-formed graph that fails validation gives the
    /// typed error of [`Graph::validate`] (not flattened into a JSON error message).
    pub fn from_json(json: &str) -> Result<Graph, IrError> {
        let raw: RawGraph = serde_json::from_str(json).map_err(|e| IrError::Json(e.to_string()))?;
        Graph::try_from(raw)
    }

    /// The names of every symbol used by the graph, in order of first appearance.
    pub fn symbols(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in &self.nodes {
            for s in n.shape.symbols() {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
        }
        out
    }

    /// Infers the value of every symbol from the concrete shapes of the named inputs.
    pub fn infer_binding(&self, shapes: &[(&str, &[usize])]) -> Result<DimBinding, IrError> {
        let mut binding = DimBinding::new();
        for &(name, dims) in shapes {
            let node = self
                .inputs()
                .find(|(_, n)| n.source_name() == Some(name))
                .map(|(_, n)| n)
                .ok_or_else(|| IrError::UnknownInput { name: name.into() })?;
            if node.shape.rank() != dims.len() {
                return Err(IrError::InputShape {
                    name: name.into(),
                    detail: format!("expected rank {}, got {:?}", node.shape.rank(), dims),
                });
            }
            for (d, &v) in node.shape.0.iter().zip(dims) {
                match d {
                    Dim::Static(n) if *n != v => {
                        return Err(IrError::InputShape {
                            name: name.into(),
                            detail: format!("expected {}, got {:?}", node.shape, dims),
                        })
                    }
                    Dim::Static(_) => {}
                    Dim::Sym { name: sym, max } => {
                        if let Some(m) = max {
                            if v > *m {
                                return Err(IrError::AboveBound {
                                    symbol: sym.clone(),
                                    value: v,
                                    max: *m,
                                });
                            }
                        }
                        match binding.get(sym) {
                            Some(prev) if prev != v => {
                                return Err(IrError::ConflictingBinding {
                                    symbol: sym.clone(),
                                    first: prev,
                                    second: v,
                                })
                            }
                            _ => {
                                binding.set(sym.clone(), v);
                            }
                        }
                    }
                }
            }
        }
        Ok(binding)
    }

    /// A copy of the graph with every bound symbol replaced by its value (checked against its
    /// bound), revalidated. Symbols missing from `binding` stay symbolic.
    pub fn bind(&self, binding: &DimBinding) -> Result<Graph, IrError> {
        let subst = |shape: &Shape| -> Result<Shape, IrError> {
            let mut dims = Vec::with_capacity(shape.rank());
            for d in &shape.0 {
                dims.push(match d {
                    Dim::Sym { name, max } => match binding.get(name) {
                        Some(v) => {
                            if let Some(m) = max {
                                if v > *m {
                                    return Err(IrError::AboveBound {
                                        symbol: name.clone(),
                                        value: v,
                                        max: *m,
                                    });
                                }
                            }
                            Dim::Static(v)
                        }
                        None => d.clone(),
                    },
                    Dim::Static(_) => d.clone(),
                });
            }
            Ok(Shape(dims))
        };
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let mut n = n.clone();
            n.shape = subst(&n.shape)?;
            match &mut n.op {
                Op::Reshape { shape } | Op::Expand { shape } => *shape = subst(shape)?,
                _ => {}
            }
            nodes.push(n);
        }
        let g = Graph {
            nodes,
            outputs: self.outputs.clone(),
        };
        g.validate()?;
        Ok(g)
    }
}

fn check_source(
    id: usize,
    op: &Op,
    dtype: DType,
    shape: &Shape,
    label: Option<&str>,
) -> Result<(), IrError> {
    let err = |source| IrError::Node {
        node: node_label(id, label),
        op: op.name(),
        source,
    };
    if let Some(name) = match op {
        Op::Input { name } | Op::Param { name } => Some(name),
        _ => None,
    } {
        if name.is_empty() {
            return Err(err(InferError::Attr("the name is empty".into())));
        }
    }
    if dtype.is_quantized() {
        let last = shape.0.last().and_then(Dim::as_static);
        let ok = matches!(
            (last, dtype.storage_bytes(0, last.unwrap_or(1))),
            (Some(_), Some(_))
        );
        if !ok {
            return Err(err(InferError::Shape(format!(
                "a {dtype} tensor needs a static last axis that is a whole number of blocks, got {shape}"
            ))));
        }
    }
    if let Op::Constant { data } = op {
        let Some(dims) = shape.as_static() else {
            return Err(err(InferError::Shape(format!(
                "a constant needs a static shape, got {shape}"
            ))));
        };
        // A checked product: a shape too large to count is an error, not an overflow.
        let expected = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|numel| dtype.storage_bytes(numel, dims.last().copied().unwrap_or(1)));
        if expected != Some(data.len()) {
            return Err(err(InferError::Shape(format!(
                "{} bytes of data for a {dtype}{shape} constant (expected {expected:?})",
                data.len()
            ))));
        }
    }
    Ok(())
}
