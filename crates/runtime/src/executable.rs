//! A graph compiled for a device: planned once, then run many times with prebuilt bind groups,
//! one compute pass per stretch of kernels and one submit per run.

use crate::device::Device;
use crate::error::RunError;
use crate::steps::dims_at;
use crate::transfer::{from_arena, to_arena};
use kiln_ir::{DType, Graph, HostTensor, Op};
use kiln_kernels::families::matmul::{fill_slots, split_k_words, SplitWorkspace};
use kiln_kernels::{Dispatch, KernelDesc, LowerError, PipelineError};
use kiln_plan::{Binding, ExecutionPlan, FusionOptions, PlanError, PlanOptions, StoragePolicy};
use std::collections::HashMap;
use thiserror::Error;

/// How to compile.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    pub fusion: FusionOptions,
    pub matmul_inputs: MatmulInputs,
}

/// The precision f32 matmuls read their inputs at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MatmulInputs {
    /// f32 throughout: results match the CPU reference to f32 rounding.
    #[default]
    F32,
    /// Where the device has cooperative matrices (see
    /// [`DeviceInfo::cooperative_f16`](crate::DeviceInfo)), f32 matmuls round their inputs to
    /// f16 and accumulate in f32 on tensor cores; elsewhere they stay f32. Expect relative
    /// errors of a few 1e-4 (2.4–2.9e-4 measured on unit-scale inputs, docs/PERFORMANCE.md;
    /// f16 has an 11-bit significand) and infinities for inputs beyond ±65504. [`Executable::uses_cooperative_matrix`] tells which one was chosen.
    F16WhereFaster,
}

#[derive(Debug, Clone, Error)]
pub enum CompileError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("step {step} ({what}): {source}")]
    Lower {
        step: usize,
        what: String,
        #[source]
        source: LowerError,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("the outputs need {bytes} bytes of readback, more than the largest buffer ({limit})")]
    ReadbackTooLarge { bytes: u64, limit: u64 },
    #[error(
        "the dispatches' params need {bytes} bytes, beyond the 4 GiB a dynamic offset reaches"
    )]
    ParamsTooLarge { bytes: u64 },
    #[error(
        "the device refused the executable's resources (arena of {arena_bytes} bytes): {message}"
    )]
    Device { arena_bytes: u64, message: String },
}

/// A named input or param: where it lives and what it holds.
#[derive(Debug, Clone)]
struct Source {
    offset: u64,
    dtype: DType,
    shape: kiln_ir::Shape,
    /// Whether the shape has a symbolic dim (its stored layout follows the extent).
    symbolic: bool,
    /// The host bytes last uploaded (as given, before conversion to arena words), to skip
    /// unchanged uploads with one comparison; `None` once the GPU copy may differ.
    uploaded: Option<Vec<u8>>,
    set: bool,
    /// Whether a step overwrites it in place (then every run ends with its slot changed).
    updated_in_place: bool,
}

/// One GPU action of a run, in order.
#[derive(Debug)]
enum Action {
    Dispatch {
        pipeline: wgpu::ComputePipeline,
        bind_group: wgpu::BindGroup,
        groups: [u32; 3],
        kernel: &'static kiln_kernels::KernelDesc,
        /// Where its params sit in the uniform buffer: the bind group's dynamic offset (the
        /// bind group is shared by the dispatches of one kernel over one storage window).
        uniform_at: u32,
    },
    /// A transfer between the arena and scratch (staging): ends the current compute pass.
    Copy {
        to_scratch: bool,
        arena_offset: u64,
        scratch_offset: u64,
        bytes: u64,
    },
}

#[derive(Debug, Clone)]
struct Output {
    offset: u64,
    dtype: DType,
    shape: kiln_ir::Shape,
    /// Where it lands in the readback buffer.
    staging_offset: u64,
}

/// The GPU time of one step, from [`Executable::profile`].
#[derive(Debug, Clone, PartialEq)]
pub struct StepTime {
    pub step: usize,
    pub name: String,
    /// The step's dispatches that ran (a split matmul's empty ones are left out).
    pub dispatches: usize,
    pub gpu_ns: f64,
}

/// A copy of an output into an input after every run (GPU-resident state, e.g. a KV cache).
#[derive(Debug, Clone)]
struct Feedback {
    output: usize,
    input: String,
}

/// A compiled graph.
#[derive(Debug)]
pub struct Executable {
    device: Device,
    plan: ExecutionPlan,
    arena: wgpu::Buffer,
    scratch: Option<wgpu::Buffer>,
    readback: wgpu::Buffer,
    actions: Vec<Action>,
    inputs: HashMap<String, Source>,
    params: HashMap<String, Source>,
    outputs: Vec<Output>,
    feedback: Vec<Feedback>,
    /// The buffer fed-back outputs hop through (the arena cannot be copied onto itself),
    /// created by `feed_back`, never during a run.
    hop: Option<wgpu::Buffer>,
    /// Number of dispatches per run.
    dispatch_count: usize,
    uniform: wgpu::Buffer,
    /// For every step, the indices of its dispatches in `actions`.
    step_actions: Vec<Vec<usize>>,
    /// Every bounded symbol with its bound, and the current value of each.
    bounds: Vec<(String, usize)>,
    extent: kiln_ir::DimBinding,
    /// Input uploads performed so far (unchanged inputs are skipped).
    uploads: u64,
    /// CPU time of the last run up to its submit (validation, uploads, encoding).
    last_cpu_ns: u64,
    /// CPU time the last run spent after its submit encoding the next run's commands.
    last_ahead_ns: u64,
    /// Which kernels the device lets the lowering pick (the same at every extent).
    fit: KernelFit,
    /// The split-k workspace as allocated (the words the lowering at the bounds used, possibly
    /// none), offered again when steps that follow the extent are lowered anew.
    workspace: Option<SplitWorkspace>,
    /// The next run's commands, encoded after the last run's submit while the GPU worked on
    /// it; dropped when the extent or the feedback changes.
    prepared: Option<Prepared>,
}

/// A run's commands, encoded ahead of the run.
#[derive(Debug)]
struct Prepared {
    /// The outputs the commands copy into the readback buffer.
    indices: Vec<usize>,
    commands: wgpu::CommandBuffer,
}

impl Executable {
    /// Plans `graph` for `device`, lowers every step, and creates every buffer, pipeline and
    /// bind group a run needs.
    pub fn compile(
        device: &Device,
        graph: &Graph,
        options: &CompileOptions,
    ) -> Result<Executable, CompileError> {
        let _span = tracing::info_span!("compile", nodes = graph.len()).entered();
        let limits = &device.info().limits;
        let plan_options = PlanOptions {
            limits: kiln_plan::DeviceLimits {
                max_storage_binding: limits.max_storage_buffer_binding_size,
                max_buffer: limits.max_buffer_size,
                binding_alignment: 256,
            },
            capabilities: kiln_plan::Capabilities {
                f16: device.info().features.contains(wgpu::Features::SHADER_F16),
                subgroups: device.info().features.contains(wgpu::Features::SUBGROUP),
                cooperative_matrix: if device.info().cooperative_f16 {
                    vec![[16, 16, 16]]
                } else {
                    Vec::new()
                },
            },
            fusion: options.fusion,
            storage: StoragePolicy::Words,
        };
        let plan = kiln_plan::plan(graph, &plan_options)?;
        let fit = KernelFit {
            cooperative: options.matmul_inputs == MatmulInputs::F16WhereFaster
                && device.info().cooperative_f16,
            max_invocations: crate::device::max_invocations(limits),
        };
        // Lower every step (the workspace, if any, lies past the planned arena).
        let (extent, bounds) = bounds_of(&plan);
        let workspace = split_workspace(&plan, limits, fit);
        let mut lowered: Vec<(Vec<Dispatch>, &kiln_plan::Step)> = Vec::new();
        let mut workspace_words = 0;
        for (i, step) in plan.steps.iter().enumerate() {
            let d = lower_step(&plan, step, &extent, fit, workspace).map_err(|source| {
                CompileError::Lower {
                    step: i,
                    what: step_name(&plan, step),
                    source,
                }
            })?;
            workspace_words = workspace_words.max(split_k_words(&d));
            lowered.push((d, step));
        }
        // The words the lowering at the bounds used (possibly none: a last wave run apart on
        // 64x64 tiles needs no partial sums, but the offer keeps steps at other extents
        // lowering alike).
        let workspace = workspace.map(|w| SplitWorkspace {
            words: workspace_words,
            ..w
        });
        let arena_bytes = match workspace {
            Some(w) if w.words > 0 => u64::from(w.offset) * 4 + w.words as u64 * 4,
            _ => plan.arena_bytes,
        };
        // An allocation the device cannot make (out of memory) or refuses becomes a typed
        // error below instead of wgpu's default panic. (Early returns drop the guards, which
        // pops the scopes.)
        let out_of_memory = device
            .wgpu_device()
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = device
            .wgpu_device()
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln arena"),
            size: arena_bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let scratch = (plan.scratch_bytes > 0).then(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln scratch"),
                size: plan.scratch_bytes.next_multiple_of(4),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        });

        let align = limits.min_uniform_buffer_offset_alignment as usize;
        let mut uniform = Vec::new();
        for (ds, _) in &lowered {
            for d in ds {
                uniform.resize(uniform.len().next_multiple_of(align), 0);
                uniform.extend_from_slice(&d.params);
            }
        }
        uniform.resize(uniform.len().max(16), 0);
        let uniform_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("kiln params"),
            contents: &uniform,
            // COPY_DST: the params of extent-dependent steps are rewritten on extent changes.
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        });
        let mut actions = Vec::new();
        // One bind group per kernel and storage window, shared through dynamic offsets: fewer
        // objects for wgpu to track on every submit.
        let mut bind_groups: HashMap<(&'static str, bool, u64, u64), wgpu::BindGroup> =
            HashMap::new();
        let mut step_actions = Vec::with_capacity(lowered.len());
        let mut at = 0usize;
        let mut dispatch_count = 0;
        for (ds, step) in &lowered {
            let mut mine = Vec::with_capacity(ds.len());
            for s in step.staged.iter().filter(|s| s.copy_in) {
                actions.push(Action::Copy {
                    to_scratch: true,
                    arena_offset: s.arena_offset,
                    scratch_offset: s.scratch_offset,
                    bytes: s.bytes,
                });
            }
            let (buffer, offset, size) = match step.binding {
                // The whole planned arena, and past it the split-k workspace.
                Binding::Arena { offset: 0, size } if size == plan.arena_bytes => {
                    (&arena, 0, arena_bytes)
                }
                Binding::Arena { offset, size } => (&arena, offset, size),
                Binding::Scratch { size } => match &scratch {
                    Some(s) => (s, 0, size),
                    None => (&arena, 0, size),
                },
            };
            let scratch_bound = matches!(step.binding, Binding::Scratch { .. });
            for d in ds {
                at = at.next_multiple_of(align);
                let compiled = device.pipelines().get(d.kernel)?;
                if !step.extent.is_empty() {
                    prepare_extent_variants(device, d.kernel, fit)?;
                }
                let key = (d.kernel.name, scratch_bound, offset, size);
                let bind_group = match bind_groups.get(&key) {
                    Some(b) => b,
                    None => {
                        let storage = wgpu::BufferBinding {
                            buffer,
                            offset,
                            size: wgpu::BufferSize::new(size.next_multiple_of(4)),
                        };
                        let params = wgpu::BufferBinding {
                            buffer: &uniform_buf,
                            offset: 0,
                            size: wgpu::BufferSize::new(d.params.len() as u64),
                        };
                        let b = device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some(d.kernel.name),
                            layout: &compiled.bind_group_layout,
                            entries: &crate::bind::entries(d.kernel, storage, params),
                        });
                        bind_groups.entry(key).or_insert(b)
                    }
                }
                .clone();
                mine.push(actions.len());
                actions.push(Action::Dispatch {
                    pipeline: compiled.pipeline.clone(),
                    bind_group,
                    groups: d.groups,
                    kernel: d.kernel,
                    uniform_at: u32::try_from(at).map_err(|_| CompileError::ParamsTooLarge {
                        bytes: uniform.len() as u64,
                    })?,
                });
                at += d.params.len();
                dispatch_count += 1;
            }
            step_actions.push(mine);
            for s in step.staged.iter().filter(|s| s.copy_back) {
                actions.push(Action::Copy {
                    to_scratch: false,
                    arena_offset: s.arena_offset,
                    scratch_offset: s.scratch_offset,
                    bytes: s.bytes,
                });
            }
        }

        let mut inputs = HashMap::new();
        let mut params = HashMap::new();
        let in_place = plan.inputs_updated_in_place();
        for (id, node) in plan.graph.nodes().iter().enumerate() {
            let source = |offset| Source {
                offset,
                dtype: node.dtype,
                shape: node.shape.clone(),
                symbolic: !node.shape.is_static(),
                uploaded: None,
                set: false,
                updated_in_place: in_place.contains(&id),
            };
            let offset = plan.offset(id).unwrap_or(0);
            match &node.op {
                Op::Input { name } => {
                    inputs.insert(name.clone(), source(offset));
                }
                Op::Param { name } => {
                    params.insert(name.clone(), source(offset));
                }
                Op::Constant { data } => {
                    let t = HostTensor {
                        dtype: node.dtype,
                        shape: node.shape.upper_bounds().unwrap_or_default(),
                        bytes: data.clone(),
                    };
                    let bytes = to_arena(&t);
                    if !bytes.is_empty() {
                        device.queue().write_buffer(&arena, offset, &bytes);
                    }
                }
                _ => {}
            }
        }
        let mut outputs = Vec::new();
        let mut staging = 0u64;
        for o in plan.graph.outputs() {
            let t = &plan.tensors[o.0];
            let bytes = t.bytes.next_multiple_of(4);
            outputs.push(Output {
                offset: plan.offset(o.0).unwrap_or(0),
                dtype: t.dtype,
                shape: plan.graph.nodes()[o.0].shape.clone(),
                staging_offset: staging,
            });
            staging += bytes;
        }
        if staging > device.info().limits.max_buffer_size {
            return Err(CompileError::ReadbackTooLarge {
                bytes: staging,
                limit: device.info().limits.max_buffer_size,
            });
        }
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln readback"),
            size: staging.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let errors = [
            pollster::block_on(invalid.pop()),
            pollster::block_on(out_of_memory.pop()),
        ];
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(CompileError::Device {
                arena_bytes: plan.arena_bytes,
                message: e.to_string(),
            });
        }
        tracing::info!(
            steps = plan.steps.len(),
            dispatches = dispatch_count,
            arena = plan.arena_bytes,
            "compiled"
        );
        Ok(Executable {
            device: device.clone(),
            plan,
            arena,
            scratch,
            readback,
            actions,
            inputs,
            params,
            outputs,
            feedback: Vec::new(),
            hop: None,
            dispatch_count,
            uniform: uniform_buf,
            step_actions,
            bounds,
            extent,
            uploads: 0,
            last_cpu_ns: 0,
            last_ahead_ns: 0,
            prepared: None,
            fit,
            workspace,
        })
    }

    /// Whether f32 matmuls run on cooperative matrices with f16 inputs (asked for with
    /// [`MatmulInputs::F16WhereFaster`] and supported by the device).
    pub fn uses_cooperative_matrix(&self) -> bool {
        self.fit.cooperative
    }

    /// The plan this executable runs.
    pub fn plan(&self) -> &ExecutionPlan {
        &self.plan
    }

    /// How many input uploads runs have performed (an input equal to the one already on the
    /// device is not uploaded again).
    pub fn upload_count(&self) -> u64 {
        self.uploads
    }

    /// CPU time the last run spent before its submit: validating, uploading changed inputs and,
    /// unless the previous run (with the same extent and outputs) encoded its commands ahead
    /// while the GPU worked, encoding every dispatch. The GPU wait and readback, and the next
    /// run's encoding after the submit, are not included.
    pub fn last_run_cpu_ns(&self) -> u64 {
        self.last_cpu_ns
    }

    /// CPU time the last run spent after its submit encoding the next run's commands (which
    /// overlaps the GPU's work on the last run). With [`Executable::last_run_cpu_ns`], the
    /// CPU cost of a run apart from waiting for the GPU.
    pub fn last_run_ahead_ns(&self) -> u64 {
        self.last_ahead_ns
    }

    /// Kernel dispatches per run.
    pub fn dispatch_count(&self) -> usize {
        self.dispatch_count
    }

    /// The kernel of every dispatch that runs at the active extent, in run order: which
    /// variant each step got (it may change with the extent, and with the device's limits).
    /// A split matmul's empty dispatches at an extent that does not split are left out.
    pub fn kernel_names(&self) -> Vec<&'static str> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Dispatch { kernel, groups, .. } if !groups.contains(&0) => {
                    Some(kernel.name)
                }
                _ => None,
            })
            .collect()
    }

    /// The dtypes of the outputs, in order.
    pub fn output_dtypes(&self) -> Vec<DType> {
        self.outputs.iter().map(|o| o.dtype).collect()
    }

    /// Sets a param from a host tensor: its dtype and shape must be the param's.
    pub fn set_param(&mut self, name: &str, value: &HostTensor) -> Result<(), RunError> {
        let src = self
            .params
            .get_mut(name)
            .ok_or_else(|| RunError::UnknownParam { name: name.into() })?;
        check_tensor(name, src, &self.extent, value)?;
        let bytes = to_arena(value);
        self.device
            .queue()
            .write_buffer(&self.arena, src.offset, &bytes);
        src.set = true;
        Ok(())
    }

    /// Sets a param from raw little-endian bytes of its dtype (e.g. a slice of a weights file).
    pub fn set_param_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), RunError> {
        let src = self
            .params
            .get(name)
            .ok_or_else(|| RunError::UnknownParam { name: name.into() })?;
        let dims = dims_at(&src.shape, &self.extent);
        let t = HostTensor::from_bytes(src.dtype, &dims, bytes.to_vec()).map_err(|e| {
            RunError::Mismatch {
                name: name.into(),
                expected: format!("{}{:?}", src.dtype, dims),
                got: e.to_string(),
            }
        })?;
        self.set_param(name, &t)
    }

    /// After every run, copy output `output` into input `input` on the GPU (both must have the
    /// same dtype and shape). The input then need not be passed to `run`; passing it uploads
    /// the new value.
    pub fn feed_back(&mut self, output: usize, input: &str) -> Result<(), RunError> {
        let out = self.outputs.get(output).ok_or(RunError::InvalidOutput {
            index: output,
            count: self.outputs.len(),
        })?;
        let inp = self
            .inputs
            .get(input)
            .ok_or_else(|| RunError::UnknownInput { name: input.into() })?;
        if out.dtype != inp.dtype || !out.shape.same_extents(&inp.shape) {
            return Err(RunError::Mismatch {
                name: input.into(),
                expected: format!("{}{}", inp.dtype, inp.shape),
                got: format!("output {output}: {}{}", out.dtype, out.shape),
            });
        }
        // Sized for the bound, so the copy stays whole at any later extent.
        let bound = dims_at(&out.shape, &kiln_ir::DimBinding::new());
        let need = crate::transfer::words(
            out.dtype,
            bound.iter().product(),
            bound.last().copied().unwrap_or(1),
        )
        .unwrap_or(0) as u64
            * 4;
        let need = need.max(4);
        // An input updated in place is its own output: nothing to copy, no hop needed.
        let in_place = out.offset == inp.offset;
        if !in_place && self.hop.as_ref().is_none_or(|h| h.size() < need) {
            // As in compile: a refused allocation is an error, not wgpu's panic.
            let wdev = self.device.wgpu_device();
            let out_of_memory = wdev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let invalid = wdev.push_error_scope(wgpu::ErrorFilter::Validation);
            let hop = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln feedback"),
                size: need,
                usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let errors = [
                pollster::block_on(invalid.pop()),
                pollster::block_on(out_of_memory.pop()),
            ];
            if let Some(e) = errors.into_iter().flatten().next() {
                return Err(RunError::Device(format!(
                    "the feedback buffer of {need} bytes: {e}"
                )));
            }
            self.hop = Some(hop);
        }
        self.feedback.push(Feedback {
            output,
            input: input.into(),
        });
        // Prepared commands lack the new copy.
        self.prepared = None;
        Ok(())
    }

    /// The current value of every bounded symbol.
    pub fn active_extent(&self) -> &kiln_ir::DimBinding {
        &self.extent
    }

    /// Sets the actual value of a bounded symbol (e.g. the sequence length). Every step then
    /// computes exactly that extent: tensors are stored contiguously at the active dims inside
    /// slots laid out for the bound, and the per-step params of the steps that depend on the
    /// symbol are rewritten. Nothing is recompiled or reallocated.
    pub fn set_active_extent(&mut self, symbol: &str, value: usize) -> Result<(), RunError> {
        let max = self
            .bounds
            .iter()
            .find(|(n, _)| n == symbol)
            .map(|(_, m)| *m)
            .ok_or_else(|| RunError::UnknownSymbol {
                symbol: symbol.into(),
            })?;
        if value == 0 || value > max {
            return Err(RunError::ExtentOutOfRange {
                symbol: symbol.into(),
                value,
                max,
            });
        }
        let mut extent = self.extent.clone();
        extent.set(symbol, value);
        self.apply_extent(extent)
    }

    /// Makes `extent` (every symbol's value, already checked against its bound) the active
    /// one: every step that depends on a changed symbol is lowered once, against all the new
    /// values together, and nothing changes unless every step lowers. A step keeps its bind
    /// groups: params and grid may change, and its kernel only for another variant of the same
    /// operation (`kiln_kernels::extent_variants`), whose pipeline compile already built.
    fn apply_extent(&mut self, extent: kiln_ir::DimBinding) -> Result<(), RunError> {
        let changed: Vec<String> = extent
            .iter()
            .filter(|(sym, v)| self.extent.get(sym) != Some(*v))
            .map(|(sym, _)| sym.to_string())
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        // Prepared commands hold the old grids, pipelines and readback sizes.
        self.prepared = None;
        let mut updates = Vec::new();
        for (i, step) in self.plan.steps.iter().enumerate() {
            if !step.extent.iter().any(|e| changed.contains(&e.symbol)) {
                continue;
            }
            // A step keeps its recorded dispatches: where a split matmul's count changes with
            // the rows, the missing ones run empty (`fill_slots`), and a count above the
            // recorded one gives up the split.
            let slots: Vec<&'static KernelDesc> = self.step_actions[i]
                .iter()
                .filter_map(|&a| match &self.actions[a] {
                    Action::Dispatch { kernel, .. } => Some(*kernel),
                    Action::Copy { .. } => None,
                })
                .collect();
            let lower = |workspace| {
                lower_step(&self.plan, step, &extent, self.fit, workspace)
                    .map(|ds| fill_slots(ds, &slots))
                    .map_err(|e| RunError::Unsupported {
                        node: i,
                        op: "step",
                        detail: e.to_string(),
                    })
            };
            let ds = match lower(self.workspace)? {
                Some(ds) => Some(ds),
                None => lower(None)?,
            }
            .unwrap_or_default();
            if ds.len() != self.step_actions[i].len() {
                return Err(RunError::Unsupported {
                    node: i,
                    op: "step",
                    detail: "its dispatch count changes with the extent".into(),
                });
            }
            let mut pipelines = Vec::with_capacity(ds.len());
            for (d, &a) in ds.iter().zip(&self.step_actions[i]) {
                // step_actions lists dispatch actions only; anything else is refused, not
                // assumed.
                let Action::Dispatch { kernel, .. } = &self.actions[a] else {
                    return Err(RunError::Unsupported {
                        node: i,
                        op: "step",
                        detail: "its recorded action is not a dispatch".into(),
                    });
                };
                let variant = kiln_kernels::extent_variants(kernel)
                    .iter()
                    .any(|v| v.name == d.kernel.name);
                if kernel.name == d.kernel.name {
                    pipelines.push(None);
                } else if variant && kernel.binds_like(d.kernel) {
                    pipelines.push(Some(
                        self.device.pipelines().get(d.kernel)?.pipeline.clone(),
                    ));
                } else {
                    return Err(RunError::Unsupported {
                        node: i,
                        op: "step",
                        detail: format!(
                            "its kernel `{}` would become `{}`, which is not a variant of it",
                            kernel.name, d.kernel.name
                        ),
                    });
                }
            }
            updates.push((i, ds, pipelines));
        }
        for (i, ds, pipelines) in updates {
            for ((d, &a), new_pipeline) in ds.into_iter().zip(&self.step_actions[i]).zip(pipelines)
            {
                if let Action::Dispatch {
                    groups,
                    kernel,
                    pipeline,
                    uniform_at,
                    ..
                } = &mut self.actions[a]
                {
                    if let Some(p) = new_pipeline {
                        *pipeline = p;
                    }
                    *kernel = d.kernel;
                    *groups = d.groups;
                    self.device.queue().write_buffer(
                        &self.uniform,
                        u64::from(*uniform_at),
                        &d.params,
                    );
                }
            }
        }
        self.extent = extent;
        for src in self.inputs.values_mut().filter(|s| s.symbolic) {
            // Stored at other dims now: the next upload must not be skipped.
            src.uploaded = None;
        }
        Ok(())
    }

    /// Runs and returns every output.
    pub fn run(&mut self, inputs: &[(&str, &HostTensor)]) -> Result<Vec<HostTensor>, RunError> {
        let all: Vec<usize> = (0..self.outputs.len()).collect();
        self.run_read_outputs(inputs, &all)
    }

    /// Runs and returns only the outputs at `indices`, in that order.
    pub fn run_read_outputs(
        &mut self,
        inputs: &[(&str, &HostTensor)],
        indices: &[usize],
    ) -> Result<Vec<HostTensor>, RunError> {
        let _span = tracing::debug_span!("run").entered();
        let started = std::time::Instant::now();
        // Validate everything before touching the GPU, so a mistake leaves no partial state.
        for &i in indices {
            if i >= self.outputs.len() {
                return Err(RunError::InvalidOutput {
                    index: i,
                    count: self.outputs.len(),
                });
            }
        }
        for (name, _) in inputs {
            if !self.inputs.contains_key(*name) {
                return Err(RunError::UnknownInput {
                    name: name.to_string(),
                });
            }
        }
        // The extent the inputs ask for is checked with everything else before it is applied.
        let wanted = self.input_extents(inputs)?;
        let mut extent = self.extent.clone();
        for (sym, v) in &wanted {
            extent.set(sym, *v);
        }
        for (name, t) in inputs {
            check_tensor(name, &self.inputs[*name], &extent, t)?;
        }
        for name in self.inputs.keys() {
            let given = inputs.iter().any(|(n, _)| n == name);
            let fed = self.feedback.iter().any(|f| &f.input == name);
            // Every input is given each run (unchanged ones are not re-uploaded), except those
            // fed back on the GPU: stale data never stands in for a forgotten input.
            if !given && !fed {
                return Err(RunError::MissingInput { name: name.clone() });
            }
        }
        if let Some((name, _)) = self.params.iter().find(|(_, p)| !p.set) {
            return Err(RunError::MissingParam { name: name.clone() });
        }
        // All symbols at once: one lowering per affected step, and no half-applied extent.
        self.apply_extent(extent)?;

        let queue = self.device.queue();
        for (name, t) in inputs {
            let src = self.inputs.get_mut(*name).expect("checked above");
            if src.uploaded.as_deref() != Some(t.bytes.as_slice()) {
                queue.write_buffer(&self.arena, src.offset, &to_arena(t));
                let kept = src.uploaded.get_or_insert_with(Vec::new);
                kept.clear();
                kept.extend_from_slice(&t.bytes);
                self.uploads += 1;
            }
        }

        let sizes: Vec<u64> = indices
            .iter()
            .map(|&i| self.bytes_at(self.outputs[i].dtype, &self.outputs[i].shape))
            .collect();
        // The prepared commands' index list is kept for the next ones (no allocation per run).
        let (commands, mut kept) = match self.prepared.take() {
            Some(p) if p.indices == indices => (p.commands, p.indices),
            other => (
                self.encode_run(indices, &sizes),
                other.map(|p| p.indices).unwrap_or_default(),
            ),
        };
        self.device.submit([commands]);
        self.last_cpu_ns = started.elapsed().as_nanos() as u64;
        // Encoding a run costs the CPU about 2 µs per dispatch in wgpu (MiniLM 32 x 128: 0.13
        // ms for 67 dispatches on the H200's host), time in which the GPU would idle. Encoded
        // now, while the GPU works on this run, the next run with the same extent and outputs
        // only submits them.
        let submitted = std::time::Instant::now();
        kept.clear();
        kept.extend_from_slice(indices);
        self.prepared = Some(Prepared {
            indices: kept,
            commands: self.encode_run(indices, &sizes),
        });
        self.last_ahead_ns = submitted.elapsed().as_nanos() as u64;
        for f in &self.feedback {
            if let Some(src) = self.inputs.get_mut(&f.input) {
                src.uploaded = None;
            }
        }
        for src in self.inputs.values_mut().filter(|s| s.updated_in_place) {
            src.uploaded = None;
        }
        let data = crate::readback::map_read_range(
            &self.device,
            &self.readback,
            indices
                .iter()
                .zip(&sizes)
                .map(|(&i, &bytes)| (self.outputs[i].staging_offset, bytes)),
        )?;
        Ok(indices
            .iter()
            .zip(data)
            .map(|(&i, bytes)| {
                let o = &self.outputs[i];
                from_arena(o.dtype, &dims_at(&o.shape, &self.extent), &bytes)
            })
            .collect())
    }

    /// Runs once with GPU timestamps around every dispatch (each in a pass of its own) and
    /// returns the GPU time of each step, in plan order. Needs `TIMESTAMP_QUERY`.
    pub fn profile(&mut self, inputs: &[(&str, &HostTensor)]) -> Result<Vec<StepTime>, RunError> {
        // Upload and validate exactly as a run does.
        self.run_read_outputs(inputs, &[])?;
        let count = self.dispatch_count.max(1) as u32 * 2;
        let ticks = self.timestamps(count, |encoder, queries| {
            self.encode_profiled(encoder, queries)
        })?;
        let period = self.device.queue().get_timestamp_period() as f64;
        let mut times = Vec::with_capacity(self.plan.steps.len());
        // The timestamp pair of every dispatch that runs (empty ones are not encoded).
        let mut index_of = std::collections::HashMap::new();
        let mut k = 0usize;
        for (ai, a) in self.actions.iter().enumerate() {
            if matches!(a, Action::Dispatch { groups, .. } if !groups.contains(&0)) {
                index_of.insert(ai, k);
                k += 1;
            }
        }
        for (si, step) in self.plan.steps.iter().enumerate() {
            let mut ns = 0.0;
            let mut dispatches = 0;
            for d in self.step_actions[si].iter().filter_map(|a| index_of.get(a)) {
                ns += ticks[2 * d + 1].saturating_sub(ticks[2 * d]) as f64 * period;
                dispatches += 1;
            }
            times.push(StepTime {
                step: si,
                name: step_name(&self.plan, step),
                dispatches,
                gpu_ns: ns,
            });
        }
        Ok(times)
    }

    /// The GPU time in nanoseconds of one whole run's work, encoded as `run` encodes it (one
    /// compute pass, split only around staging copies) between two timestamps, after
    /// uploading `inputs` as a run does. Unlike [`Executable::profile`], which gives every
    /// dispatch a pass of its own, this includes the barriers between dispatches and nothing
    /// else.
    pub fn profile_run(&mut self, inputs: &[(&str, &HostTensor)]) -> Result<f64, RunError> {
        self.run_read_outputs(inputs, &[])?;
        let ticks = self.timestamps(2, |encoder, queries| {
            // Empty passes carry the timestamps: one before the run's work, one after.
            let mark = |encoder: &mut wgpu::CommandEncoder, begin: bool| {
                let index = Some(u32::from(!begin));
                drop(encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("kiln profile mark"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: queries,
                        beginning_of_pass_write_index: index.filter(|_| begin),
                        end_of_pass_write_index: index.filter(|_| !begin),
                    }),
                }));
            };
            mark(encoder, true);
            self.encode(encoder);
            mark(encoder, false);
            2
        })?;
        let period = self.device.queue().get_timestamp_period() as f64;
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * period)
    }

    /// Encodes with `encode` (which returns how many of the `count` queries it wrote), resolves
    /// the timestamps, submits and reads them back.
    fn timestamps(
        &self,
        count: u32,
        encode: impl FnOnce(&mut wgpu::CommandEncoder, &wgpu::QuerySet) -> u32,
    ) -> Result<Vec<u64>, RunError> {
        if !self
            .device
            .info()
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return Err(RunError::Unsupported {
                node: 0,
                op: "profile",
                detail: "the device has no TIMESTAMP_QUERY".into(),
            });
        }
        if count > wgpu::QUERY_SET_MAX_QUERIES {
            return Err(RunError::Unsupported {
                node: 0,
                op: "profile",
                detail: format!(
                    "{} timestamps, more than one query set holds ({}): profile fewer dispatches",
                    count,
                    wgpu::QUERY_SET_MAX_QUERIES
                ),
            });
        }
        let wdev = self.device.wgpu_device();
        let queries = wdev.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kiln profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln profile resolve"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln profile read"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = wdev.create_command_encoder(&Default::default());
        let written = encode(&mut encoder, &queries);
        encoder.resolve_query_set(&queries, 0..written.max(2), &resolve, 0);
        encoder.copy_buffer_to_buffer(&resolve, 0, &read, 0, count as u64 * 8);
        self.device.submit([encoder.finish()]);
        let data = crate::readback::map_read(&self.device, &read)?;
        Ok(data
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect())
    }

    /// Encodes every action, each dispatch in a pass of its own between two timestamps;
    /// returns the number of queries written.
    fn encode_profiled(&self, encoder: &mut wgpu::CommandEncoder, queries: &wgpu::QuerySet) -> u32 {
        let mut q = 0u32;
        for action in &self.actions {
            match action {
                // An empty dispatch (see `encode`) gets no pass and no timestamps.
                Action::Dispatch { groups, .. } if groups.contains(&0) => {}
                Action::Dispatch {
                    pipeline,
                    bind_group,
                    groups,
                    uniform_at,
                    ..
                } => {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("kiln profile"),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: queries,
                            beginning_of_pass_write_index: Some(q),
                            end_of_pass_write_index: Some(q + 1),
                        }),
                    });
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, bind_group, &[*uniform_at]);
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                    q += 2;
                }
                Action::Copy {
                    to_scratch,
                    arena_offset,
                    scratch_offset,
                    bytes,
                } => {
                    if let Some(scratch) = &self.scratch {
                        let b = bytes.next_multiple_of(4);
                        if *to_scratch {
                            encoder.copy_buffer_to_buffer(
                                &self.arena,
                                *arena_offset,
                                scratch,
                                *scratch_offset,
                                b,
                            );
                        } else {
                            encoder.copy_buffer_to_buffer(
                                scratch,
                                *scratch_offset,
                                &self.arena,
                                *arena_offset,
                                b,
                            );
                        }
                    }
                }
            }
        }
        q
    }

    /// Reads the current GPU value of an input (e.g. state fed back from an output).
    pub fn read_input(&self, name: &str) -> Result<HostTensor, RunError> {
        let src = self
            .inputs
            .get(name)
            .ok_or_else(|| RunError::UnknownInput { name: name.into() })?;
        let bytes = self.bytes_at(src.dtype, &src.shape);
        let wdev = self.device.wgpu_device();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln read_input"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = wdev.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.arena, src.offset, &staging, 0, bytes);
        self.device.submit([encoder.finish()]);
        let data = crate::readback::map_read(&self.device, &staging)?;
        Ok(from_arena(
            src.dtype,
            &dims_at(&src.shape, &self.extent),
            &data,
        ))
    }

    /// Arena bytes of a tensor at the active extent (whole words).
    fn bytes_at(&self, dtype: DType, shape: &kiln_ir::Shape) -> u64 {
        let dims = dims_at(shape, &self.extent);
        let numel: usize = dims.iter().product();
        crate::transfer::words(dtype, numel, dims.last().copied().unwrap_or(1)).unwrap_or(0) as u64
            * 4
    }

    /// The value of every symbol that the given inputs' shapes determine, each within its
    /// bound (not applied yet).
    fn input_extents(
        &self,
        inputs: &[(&str, &HostTensor)],
    ) -> Result<Vec<(String, usize)>, RunError> {
        let mut wanted: Vec<(String, usize)> = Vec::new();
        for (name, t) in inputs {
            let src = &self.inputs[*name];
            if !src.symbolic || t.shape.len() != src.shape.rank() {
                continue;
            }
            for (d, &v) in src.shape.dims().iter().zip(&t.shape) {
                if let kiln_ir::Dim::Sym { name: sym, .. } = d {
                    match wanted.iter().find(|(s, _)| s == sym) {
                        Some((_, prev)) if *prev != v => {
                            return Err(RunError::Mismatch {
                                name: name.to_string(),
                                expected: format!("{sym} = {prev} as in the other inputs"),
                                got: format!("{sym} = {v}"),
                            })
                        }
                        Some(_) => {}
                        None => wanted.push((sym.clone(), v)),
                    }
                }
            }
        }
        for (sym, v) in &wanted {
            let max = self
                .bounds
                .iter()
                .find(|(n, _)| n == sym)
                .map_or(0, |(_, m)| *m);
            if *v == 0 || *v > max {
                return Err(RunError::ExtentOutOfRange {
                    symbol: sym.clone(),
                    value: *v,
                    max,
                });
            }
        }
        Ok(wanted)
    }

    /// A run's commands: every dispatch, the copies of the outputs at `indices` (`sizes` bytes
    /// each) into the readback buffer, and the feedback copies.
    fn encode_run(&self, indices: &[usize], sizes: &[u64]) -> wgpu::CommandBuffer {
        let wdev = self.device.wgpu_device();
        let mut encoder = wdev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("kiln run"),
        });
        self.encode(&mut encoder);
        for (&i, &bytes) in indices.iter().zip(sizes) {
            let o = &self.outputs[i];
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(
                    &self.arena,
                    o.offset,
                    &self.readback,
                    o.staging_offset,
                    bytes,
                );
            }
        }
        self.encode_feedback(&mut encoder);
        encoder.finish()
    }

    /// Encodes every action: dispatches in compute passes, broken only by staging copies.
    fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut i = 0;
        while i < self.actions.len() {
            if let Action::Copy {
                to_scratch,
                arena_offset,
                scratch_offset,
                bytes,
            } = self.actions[i]
            {
                if let Some(scratch) = &self.scratch {
                    let bytes = bytes.next_multiple_of(4);
                    if to_scratch {
                        encoder.copy_buffer_to_buffer(
                            &self.arena,
                            arena_offset,
                            scratch,
                            scratch_offset,
                            bytes,
                        );
                    } else {
                        encoder.copy_buffer_to_buffer(
                            scratch,
                            scratch_offset,
                            &self.arena,
                            arena_offset,
                            bytes,
                        );
                    }
                }
                i += 1;
                continue;
            }
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kiln"),
                timestamp_writes: None,
            });
            let mut current: Option<&wgpu::ComputePipeline> = None;
            while let Some(Action::Dispatch {
                pipeline,
                bind_group,
                groups,
                uniform_at,
                ..
            }) = self.actions.get(i)
            {
                i += 1;
                // An empty dispatch (a split matmul's slot at an extent that does not split).
                if groups.contains(&0) {
                    continue;
                }
                // Consecutive dispatches of one kernel keep the pipeline set.
                if current != Some(pipeline) {
                    pass.set_pipeline(pipeline);
                    current = Some(pipeline);
                }
                pass.set_bind_group(0, bind_group, &[*uniform_at]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
        }
    }

    /// Copies fed-back outputs into their inputs, through the hop buffer (the arena cannot be
    /// copied onto itself). An output that is its input updated in place needs no copy.
    fn encode_feedback(&self, encoder: &mut wgpu::CommandEncoder) {
        let Some(hop) = &self.hop else {
            return;
        };
        for f in &self.feedback {
            let o = &self.outputs[f.output];
            let i = &self.inputs[&f.input];
            // The hop holds the output at its bound (`feed_back`), so this never truncates.
            let bytes = self.bytes_at(o.dtype, &o.shape).min(hop.size());
            if bytes > 0 && o.offset != i.offset {
                encoder.copy_buffer_to_buffer(&self.arena, o.offset, hop, 0, bytes);
                encoder.copy_buffer_to_buffer(hop, 0, &self.arena, i.offset, bytes);
            }
        }
    }
}

fn step_name(plan: &ExecutionPlan, step: &kiln_plan::Step) -> String {
    match step.kind {
        kiln_plan::StepKind::Op { node } => {
            format!(
                "{} {}",
                plan.graph.nodes()[node].op.name(),
                plan.tensors[node].name
            )
        }
        ref k => k.name().to_string(),
    }
}

fn check_tensor(
    name: &str,
    src: &Source,
    extent: &kiln_ir::DimBinding,
    t: &HostTensor,
) -> Result<(), RunError> {
    let dims = dims_at(&src.shape, extent);
    // No copy of the bytes: this runs for every input of every run.
    if t.dtype != src.dtype || t.shape != dims || !t.is_consistent() {
        return Err(RunError::Mismatch {
            name: name.into(),
            expected: format!("{}{:?}", src.dtype, dims),
            got: format!("{}{:?} ({} bytes)", t.dtype, t.shape, t.bytes.len()),
        });
    }
    Ok(())
}

/// What the device lets the lowering pick, decided once per executable.
#[derive(Debug, Clone, Copy)]
struct KernelFit {
    /// Whether f32 matmuls run on cooperative matrices (f16 inputs).
    cooperative: bool,
    /// The most invocations a (one-dimensional) workgroup may have on the device.
    max_invocations: u32,
}

/// Builds the pipelines a dispatch of `kernel` may switch to on extent changes, so that
/// `set_active_extent` finds them cached (the cooperative kernel only where it is used).
fn prepare_extent_variants(
    device: &Device,
    kernel: &'static kiln_kernels::KernelDesc,
    fit: KernelFit,
) -> Result<(), PipelineError> {
    use kiln_kernels::families::matmul::replaced_by_cooperative;
    for v in kiln_kernels::extent_variants(kernel) {
        // Only the kernels this executable can pick: the cooperative one replaces the tiled
        // f32 kernels exactly when it is used, and none has more invocations than allowed.
        let unused = if fit.cooperative {
            replaced_by_cooperative(v)
        } else {
            v.needs.cooperative_matrix
        } || v.invocations() > fit.max_invocations;
        if unused {
            continue;
        }
        device.pipelines().get(v)?;
    }
    Ok(())
}

/// The dispatches of `step` at `extent`, with f32 matmuls on the cooperative kernel when
/// `fit.cooperative` and within the device's workgroup size (the same choices at every
/// extent, so a step keeps its pipelines).
fn lower_step(
    plan: &ExecutionPlan,
    step: &kiln_plan::Step,
    extent: &kiln_ir::DimBinding,
    fit: KernelFit,
    workspace: Option<SplitWorkspace>,
) -> Result<Vec<Dispatch>, LowerError> {
    use kiln_kernels::families::matmul::{fit_invocation_limit, use_cooperative};
    let mut ds = crate::steps::lower_step(plan, step, extent, workspace)?;
    fit_invocation_limit(&mut ds, fit.max_invocations);
    if fit.cooperative {
        use_cooperative(&mut ds)?;
    }
    Ok(ds)
}

/// Every symbol at its bound (the extent a plan is compiled at), and the bounds in the order
/// the symbols first appear.
fn bounds_of(plan: &ExecutionPlan) -> (kiln_ir::DimBinding, Vec<(String, usize)>) {
    let mut bounds = Vec::new();
    let mut extent = kiln_ir::DimBinding::new();
    for node in plan.graph.nodes() {
        for d in node.shape.dims() {
            if let kiln_ir::Dim::Sym { name, max: Some(m) } = d {
                if extent.get(name).is_none() {
                    extent.set(name.clone(), *m);
                    bounds.push((name.clone(), *m));
                }
            }
        }
    }
    (extent, bounds)
}

/// The split-k workspace steps may use: past the planned arena, in the same buffer and
/// binding. Only where every step binds the whole arena (so the binding can grow to cover it),
/// up to what one binding and one buffer allow, capped at [`MAX_WORKSPACE_BYTES`]; none with
/// cooperative matmuls (their kernel covers all of k).
fn split_workspace(
    plan: &ExecutionPlan,
    limits: &wgpu::Limits,
    fit: KernelFit,
) -> Option<SplitWorkspace> {
    let whole_arena = plan.steps.iter().all(
        |s| matches!(s.binding, Binding::Arena { offset: 0, size } if size == plan.arena_bytes),
    );
    if fit.cooperative || !whole_arena {
        return None;
    }
    let offset = plan.arena_bytes.next_multiple_of(256);
    let limit = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
        .min(offset + MAX_WORKSPACE_BYTES);
    let words = limit.checked_sub(offset)? / 4;
    Some(SplitWorkspace {
        offset: u32::try_from(offset / 4).ok()?,
        words: usize::try_from(words).ok()?,
        sum_absorbed: false,
    })
}

/// The largest split-k workspace an executable allocates (MiniLM at 32 x 128 uses 25 MB).
const MAX_WORKSPACE_BYTES: u64 = 256 << 20;
