//! The planner proper: legalize, fuse, schedule, place, window.

use crate::arena::{lower_bound, peak_step, place, Interval};
use crate::error::{node_name, PlanError};
use crate::fusion::{self, FusionState};
use crate::legalize::legalize;
use crate::options::{PlanOptions, StoragePolicy, SLOT_ALIGN};
use crate::step::{Binding, ExtentDep, Staged, Step, StepKind};
use kiln_ir::{DType, Dim, Graph, NodeId, Op};
use serde::Serialize;

/// Where a node's value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Placement {
    /// Not materialized: absorbed into a fused step.
    Absent,
    /// Its own slot in the arena.
    Slot { offset: u64 },
    /// Aliases bytes of the slot of `of`, starting at `offset` (absolute in the arena).
    View { of: usize, offset: u64 },
}

/// One node's memory: placement, size at the bound, lifetime in steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSlot {
    pub node: usize,
    pub name: String,
    pub dtype: DType,
    pub shape: String,
    pub bytes: u64,
    pub placement: Placement,
    /// First and last step (inclusive) during which the slot is live; `None` for views and
    /// absent nodes.
    pub live: Option<(usize, usize)>,
}

/// A planned graph: arena layout, steps, windows.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionPlan {
    /// The legalized graph the steps refer to.
    pub graph: Graph,
    /// For each node of the graph given to [`plan`], its node in `graph`.
    pub node_map: Vec<usize>,
    pub tensors: Vec<TensorSlot>,
    pub steps: Vec<Step>,
    pub arena_bytes: u64,
    pub lower_bound_bytes: u64,
    pub scratch_bytes: u64,
    /// Whether the whole arena fits one storage binding (then every step binds all of it).
    pub whole_arena: bool,
}

impl ExecutionPlan {
    /// The plan as pretty JSON (with at least `arena_bytes`, `lower_bound_bytes`, `steps`).
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string_pretty(self).expect("plan serialization is infallible")
    }

    /// The graph inputs some step overwrites in place (a row update of an input read by
    /// nothing else): after a run their slots hold the updated values, not what was uploaded.
    pub fn inputs_updated_in_place(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .steps
            .iter()
            .flat_map(|s| s.writes.iter().copied())
            .filter(|&w| matches!(self.graph.nodes()[w].op, Op::Input { .. }))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// `arena_bytes / lower_bound_bytes` (1.0 is optimal).
    pub fn ratio(&self) -> f64 {
        self.arena_bytes as f64 / self.lower_bound_bytes.max(1) as f64
    }

    /// The node whose slot `node` uses (itself unless it is a view).
    pub fn root(&self, node: usize) -> usize {
        match self.tensors[node].placement {
            Placement::View { of, .. } => of,
            _ => node,
        }
    }

    /// The absolute arena offset of `node`'s first byte, if materialized.
    pub fn offset(&self, node: usize) -> Option<u64> {
        match self.tensors[node].placement {
            Placement::Slot { offset } | Placement::View { offset, .. } => Some(offset),
            Placement::Absent => None,
        }
    }
}

/// Plans `graph` for a device.
pub fn plan(graph: &Graph, options: &PlanOptions) -> Result<ExecutionPlan, PlanError> {
    graph.validate()?;
    let legal = legalize(graph)?;
    let g = &legal.graph;
    let bytes = sizes(g, options.storage)?;
    // No tensor may exceed the largest buffer; this also keeps the placement's sums of sizes
    // far from u64 overflow.
    if let Some((i, &b)) = bytes
        .iter()
        .enumerate()
        .find(|(_, &b)| b > options.limits.max_buffer)
    {
        return Err(PlanError::TensorOverBuffer {
            node: node_name(g, NodeId(i)),
            bytes: b,
            limit: options.limits.max_buffer,
        });
    }

    let mut st = FusionState::new(g);
    let f = options.fusion;
    if f.matmul_epilogue {
        fusion::epilogue::run(&mut st);
    }
    if f.qkv_split {
        fusion::qkv::run(&mut st);
    }
    if f.residual_norm {
        fusion::residual::run(&mut st);
    }
    if f.packed_attention {
        fusion::packed_attention::run(&mut st);
    }
    if f.activation_binary {
        fusion::act_binary::run(&mut st);
    }
    if f.sibling_matmuls {
        fusion::siblings::run(&mut st);
    }
    if f.norm_prologue {
        fusion::norm_prologue::run(&mut st);
    }
    // After the norm prologue, which folds residual norms into the matmuls that read them.
    if f.matmul_norm {
        fusion::matmul_norm::run(&mut st);
    }
    if f.batch {
        fusion::batch::run(&mut st);
    }

    let mut placement = vec![Placement::Absent; g.len()];
    let mut steps_unordered: Vec<(StepKind, Vec<usize>, Vec<usize>)> = Vec::new();
    // Groups first, so the slots they write are known when views of them are resolved.
    for grp in st.groups.iter().filter(|grp| !grp.writes.is_empty()) {
        let mut writes = Vec::with_capacity(grp.writes.len());
        for &w in &grp.writes {
            // A batched row update of an input may still be in place (see below).
            if let Some(dest) = in_place_dest(&st, w) {
                placement[w] = Placement::View {
                    of: dest,
                    offset: 0,
                };
                writes.push(dest);
            } else {
                placement[w] = Placement::Slot { offset: 0 };
                writes.push(w);
            }
        }
        let covered: Vec<usize> = grp.writes.iter().chain(&grp.internal).copied().collect();
        steps_unordered.push((grp.kind.clone(), writes, covered));
    }
    for (id, node) in g.nodes().iter().enumerate() {
        if st.claimed[id].is_some() {
            continue;
        }
        if node.op.is_source() {
            placement[id] = Placement::Slot { offset: 0 };
        } else if let Some(offset) = view_offset(g, id, options.storage) {
            let parent = node.inputs[0].0;
            placement[id] = match placement[parent] {
                Placement::View { of, offset: o } => Placement::View {
                    of,
                    offset: o + offset,
                },
                Placement::Slot { .. } => Placement::View { of: parent, offset },
                // A fused-away parent cannot be aliased; compute the node instead.
                Placement::Absent => {
                    steps_unordered.push((StepKind::Op { node: id }, vec![id], vec![id]));
                    Placement::Slot { offset: 0 }
                }
            };
        } else if let Some(dest) = in_place_dest(&st, id) {
            // The step writes the input's own slot; readers of the result read that slot.
            placement[id] = Placement::View {
                of: dest,
                offset: 0,
            };
            steps_unordered.push((StepKind::Op { node: id }, vec![dest], vec![id]));
        } else {
            steps_unordered.push((StepKind::Op { node: id }, vec![id], vec![id]));
            placement[id] = Placement::Slot { offset: 0 };
        }
    }
    for (_, writes, _) in &steps_unordered {
        for &w in writes {
            placement[w] = Placement::Slot { offset: 0 };
        }
    }
    let root = |n: usize, placement: &[Placement]| match placement[n] {
        Placement::View { of, .. } => of,
        _ => n,
    };

    // Reads: inputs of covered nodes from outside the step, resolved to their slots.
    let mut pending: Vec<Pending> = steps_unordered
        .into_iter()
        .map(|(kind, writes, covered)| {
            let mut reads = Vec::new();
            for &c in &covered {
                for inp in &g.nodes()[c].inputs {
                    let r = root(inp.0, &placement);
                    if !covered.contains(&inp.0) && !reads.contains(&r) {
                        reads.push(r);
                    }
                }
            }
            Pending {
                kind,
                writes,
                covered,
                reads,
            }
        })
        .collect();
    let order = schedule(&pending)?;
    let mut ordered = Vec::with_capacity(order.len());
    for i in order {
        ordered.push(std::mem::take(&mut pending[i]));
    }

    // Liveness of every slot.
    let n_steps = ordered.len();
    let last = n_steps.saturating_sub(1);
    let mut live: Vec<Option<(usize, usize)>> = vec![None; g.len()];
    for (id, node) in g.nodes().iter().enumerate() {
        if node.op.is_source() {
            // Inputs persist between runs (unchanged ones are not re-uploaded); params and
            // constants are written once.
            live[id] = Some((0, last));
        }
    }
    for (s, Pending { writes, reads, .. }) in ordered.iter().enumerate() {
        for &w in writes {
            // An input updated in place keeps its life from the start.
            live[w] = Some(live[w].map_or((s, s), |(b, d)| (b, d.max(s))));
        }
        for &r in reads {
            if let Some((b, d)) = live[r] {
                live[r] = Some((b, d.max(s)));
            }
        }
    }
    for o in g.outputs() {
        let r = root(o.0, &placement);
        if let Some((b, _)) = live[r] {
            live[r] = Some((b, last));
        }
    }

    // Placement.
    let slots: Vec<usize> = (0..g.len())
        .filter(|&i| matches!(placement[i], Placement::Slot { .. }))
        .collect();
    let intervals: Vec<Interval> = slots
        .iter()
        .map(|&i| {
            let (birth, death) = live[i].unwrap_or((0, 0));
            Interval {
                bytes: bytes[i],
                birth,
                death,
            }
        })
        .collect();
    let (offsets, arena_bytes) = place(&intervals, SLOT_ALIGN);
    let lower = lower_bound(&intervals);
    for (k, &i) in slots.iter().enumerate() {
        placement[i] = Placement::Slot { offset: offsets[k] };
    }
    for i in 0..g.len() {
        if let Placement::View { of, offset } = placement[i] {
            if let Placement::Slot { offset: base } = placement[of] {
                placement[i] = Placement::View {
                    of,
                    offset: base + offset,
                };
            }
        }
    }
    let arena_bytes = arena_bytes.max(SLOT_ALIGN);
    if arena_bytes > options.limits.max_buffer {
        let (peak, at) = peak_step(&intervals);
        // The largest tensor live at the peak names it.
        let named = (0..intervals.len())
            .filter(|&k| intervals[k].birth <= at && at <= intervals[k].death)
            .max_by_key(|&k| intervals[k].bytes)
            .map_or_else(
                || "no tensor".to_string(),
                |k| node_name(g, NodeId(slots[k])),
            );
        return Err(PlanError::ArenaTooLarge {
            bytes: arena_bytes,
            limit: options.limits.max_buffer,
            peak,
            peak_tensor: named,
        });
    }

    let tensors: Vec<TensorSlot> = g
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| TensorSlot {
            node: i,
            name: node_name(g, NodeId(i)),
            dtype: n.dtype,
            shape: n.shape.to_string(),
            bytes: bytes[i],
            placement: placement[i],
            live: if matches!(placement[i], Placement::Slot { .. }) {
                live[i]
            } else {
                None
            },
        })
        .collect();

    let whole_arena = arena_bytes <= options.limits.max_storage_binding;
    let mut steps = Vec::with_capacity(n_steps);
    let mut scratch_bytes = 0u64;
    for (
        s,
        Pending {
            kind,
            writes,
            covered,
            reads,
        },
    ) in ordered.into_iter().enumerate()
    {
        let (binding, staged) = if whole_arena {
            (
                Binding::Arena {
                    offset: 0,
                    size: arena_bytes,
                },
                Vec::new(),
            )
        } else {
            window(g, s, &kind, &reads, &writes, &tensors, options)?
        };
        if let Binding::Scratch { size } = binding {
            scratch_bytes = scratch_bytes.max(size);
        }
        let mut extent = Vec::new();
        for &n in covered.iter().chain(&reads) {
            for (axis, d) in g.nodes()[n].shape.dims().iter().enumerate() {
                if let Dim::Sym { name, .. } = d {
                    extent.push(ExtentDep {
                        node: n,
                        axis,
                        symbol: name.clone(),
                    });
                }
            }
        }
        steps.push(Step {
            kind,
            reads,
            writes,
            binding,
            staged,
            extent,
        });
    }

    Ok(ExecutionPlan {
        graph: legal.graph.clone(),
        node_map: legal.map.iter().map(|n| n.0).collect(),
        tensors,
        steps,
        arena_bytes,
        lower_bound_bytes: lower,
        scratch_bytes,
        whole_arena,
    })
}

/// A step before scheduling: what it is, writes, absorbs and reads.
#[derive(Debug, Default)]
struct Pending {
    kind: StepKind,
    writes: Vec<usize>,
    covered: Vec<usize>,
    reads: Vec<usize>,
}

/// Bytes of every node at the bound, rounded up to whole 4-byte words.
fn sizes(g: &Graph, policy: StoragePolicy) -> Result<Vec<u64>, PlanError> {
    g.nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let dims = n.shape.upper_bounds().ok_or_else(|| PlanError::Unbounded {
                node: node_name(g, NodeId(i)),
                shape: n.shape.to_string(),
            })?;
            let numel = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| PlanError::Overflow {
                    node: node_name(g, NodeId(i)),
                })?;
            let b = policy
                .bytes(n.dtype, numel, dims.last().copied().unwrap_or(1))
                .and_then(|b| b.checked_next_multiple_of(4))
                .ok_or_else(|| PlanError::Overflow {
                    node: node_name(g, NodeId(i)),
                })?;
            Ok(b)
        })
        .collect()
}

/// The graph input that row update `id` may overwrite in place: one read by nothing else (so
/// no step needs its old value) and not also the update or the start (which the kernel reads
/// while writing).
fn in_place_dest(st: &FusionState<'_>, id: usize) -> Option<usize> {
    let node = st.node(id);
    if !matches!(node.op, Op::UpdateRows { .. }) {
        return None;
    }
    let dest = node.inputs[0].0;
    let input = matches!(st.node(dest).op, Op::Input { .. });
    let only_reader = st.sole_consumer(dest) == Some(id);
    let distinct = node.inputs[1..].iter().all(|i| i.0 != dest);
    (input && only_reader && distinct).then_some(dest)
}

/// The byte offset into its input at which node `id` can alias it, if it is a view: a
/// reshape, a cast that keeps the stored words, or a narrow whose slice is contiguous.
fn view_offset(g: &Graph, id: usize, policy: StoragePolicy) -> Option<u64> {
    let node = &g.nodes()[id];
    let input = &g.nodes()[node.inputs.first()?.0];
    match &node.op {
        Op::Reshape { .. } => Some(0),
        Op::Cast { to } => {
            let same_words = *to == input.dtype
                || (policy == StoragePolicy::Words
                    && input.dtype == DType::Bool
                    && *to == DType::F32);
            same_words.then_some(0)
        }
        Op::Narrow { axis, start, .. } => {
            let dims = input.shape.upper_bounds()?;
            // Contiguous when every dim before the axis is 1 and the axis itself is static.
            if dims[..*axis].iter().any(|&d| d != 1)
                || input.shape.dims().iter().any(|d| d.as_static().is_none())
            {
                return None;
            }
            let inner = dims[axis + 1..]
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))?;
            policy.bytes(input.dtype, start.checked_mul(inner)?, *dims.last()?)
        }
        _ => None,
    }
}

/// A topological order of steps: a step runs after every step writing what it reads, and
/// among ready steps the one with the smallest node id goes first (graph order).
fn schedule(steps: &[Pending]) -> Result<Vec<usize>, PlanError> {
    let mut writer = std::collections::HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for &w in &step.writes {
            writer.insert(w, i);
        }
    }
    let n = steps.len();
    let mut indegree = vec![0usize; n];
    let mut dependents = vec![Vec::new(); n];
    for (i, step) in steps.iter().enumerate() {
        let mut deps: Vec<usize> = step
            .reads
            .iter()
            .filter_map(|r| writer.get(r).copied())
            .filter(|&d| d != i)
            .collect();
        deps.sort_unstable();
        deps.dedup();
        indegree[i] = deps.len();
        for d in deps {
            dependents[d].push(i);
        }
    }
    // By the nodes a step computes (an in-place step writes an input's slot, whose id is low).
    let key = |i: usize| steps[i].covered.iter().copied().min().unwrap_or(usize::MAX);
    let mut ready: std::collections::BTreeSet<(usize, usize)> = (0..n)
        .filter(|&i| indegree[i] == 0)
        .map(|i| (key(i), i))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(first) = ready.pop_first() {
        let i = first.1;
        order.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert((key(d), d));
            }
        }
    }
    // Steps left over sit on a cycle or after one, which only a fusion bug could create; the
    // error names the first of them (not necessarily one on the cycle).
    if order.len() == n {
        Ok(order)
    } else {
        let stuck = (0..n).find(|i| !order.contains(i)).unwrap_or(0);
        Err(PlanError::Cycle {
            what: steps[stuck].kind.name().to_string(),
        })
    }
}

/// The binding of one step when the arena exceeds one binding: a window over its operands, or
/// staging through scratch when they are too far apart.
fn window(
    g: &Graph,
    step: usize,
    kind: &StepKind,
    reads: &[usize],
    writes: &[usize],
    tensors: &[TensorSlot],
    options: &PlanOptions,
) -> Result<(Binding, Vec<Staged>), PlanError> {
    let limit = options.limits.max_storage_binding;
    let align = options.limits.binding_alignment.max(4);
    // (node, offset, bytes, read, written); a slot updated in place is both.
    let mut operands: Vec<(usize, u64, u64, bool, bool)> = Vec::new();
    for (n, written) in reads
        .iter()
        .map(|&r| (r, false))
        .chain(writes.iter().map(|&w| (w, true)))
    {
        let Placement::Slot { offset } = tensors[n].placement else {
            continue;
        };
        match operands.iter_mut().find(|o| o.0 == n) {
            Some(o) => o.4 |= written,
            None => operands.push((n, offset, tensors[n].bytes, !written, written)),
        }
    }
    for &(n, _, b, _, _) in &operands {
        if b > limit {
            return Err(PlanError::TensorTooLarge {
                node: node_name(g, NodeId(n)),
                bytes: b,
                limit,
            });
        }
    }
    let lo = operands.iter().map(|o| o.1).min().unwrap_or(0) / align * align;
    let hi = operands.iter().map(|o| o.1 + o.2).max().unwrap_or(lo);
    if hi - lo <= limit {
        return Ok((
            Binding::Arena {
                offset: lo,
                size: (hi - lo).max(4),
            },
            Vec::new(),
        ));
    }
    let mut at = 0u64;
    let mut staged = Vec::with_capacity(operands.len());
    for &(n, offset, b, read, written) in &operands {
        staged.push(Staged {
            node: n,
            arena_offset: offset,
            scratch_offset: at,
            bytes: b,
            copy_in: read,
            copy_back: written,
        });
        at = (at + b).next_multiple_of(align);
    }
    if at > limit {
        return Err(PlanError::StepTooLarge {
            step,
            what: kind.name().to_string(),
            bytes: at,
            limit,
        });
    }
    Ok((Binding::Scratch { size: at.max(4) }, staged))
}
