//! Shader validation with naga: parse, validate with the kernel's capabilities, check the entry
//! point, its workgroup size, and that the Rust params struct matches the WGSL one field by field.

use crate::desc::KernelDesc;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use thiserror::Error;

/// A shader problem, with `file:line:col` where naga knows the location.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ShaderError {
    #[error("{location}: WGSL parse error in kernel `{kernel}`:\n{message}")]
    Parse {
        kernel: &'static str,
        location: String,
        message: String,
    },
    #[error("{location}: validation error in kernel `{kernel}`:\n{message}")]
    Invalid {
        kernel: &'static str,
        location: String,
        message: String,
    },
    #[error("shaders/{file}: kernel `{kernel}`: {message}")]
    Mismatch {
        kernel: &'static str,
        file: &'static str,
        message: String,
    },
}

/// `shaders/FILE:LINE:COL` of a location in a kernel's source. Sources may be several shader
/// files concatenated; each file's first line is a `// @file NAME` marker, which maps the line
/// back to the file it came from.
fn location(file: &str, source: &str, loc: Option<naga::SourceLocation>) -> String {
    let Some(l) = loc else {
        return format!("shaders/{file}");
    };
    let mut name = file;
    let mut first_line = 1u32;
    for (i, text) in source.lines().enumerate() {
        let line = i as u32 + 1;
        if line > l.line_number {
            break;
        }
        if let Some(marked) = text.strip_prefix("// @file ") {
            name = marked.trim();
            first_line = line;
        }
    }
    format!(
        "shaders/{name}:{}:{}",
        l.line_number - first_line + 1,
        l.line_position
    )
}

/// `module` (with its validation `info`) specialised as `k`'s pipeline is: the descriptor's
/// override constants applied to its entry point. The error is naga's, as text.
pub fn with_constants(
    k: &KernelDesc,
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let constants = k
        .constants
        .iter()
        .map(|(name, value)| (name.to_string(), *value))
        .collect();
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        module,
        info,
        Some((naga::ShaderStage::Compute, k.entry)),
        &constants,
    )
    .map_err(|e| e.to_string())?;
    Ok((module.into_owned(), info.into_owned()))
}

/// Validates one kernel. Returns the parsed module on success.
pub fn validate_kernel(k: &KernelDesc) -> Result<naga::Module, ShaderError> {
    let path = format!("shaders/{}", k.file);
    let module = naga::front::wgsl::parse_str(k.source).map_err(|e| ShaderError::Parse {
        kernel: k.name,
        location: location(k.file, k.source, e.location(k.source)),
        message: e.emit_to_string_with_path(k.source, &path),
    })?;
    // `unpack2x16float` and friends are core WGSL; wgpu grants them to every compliant adapter
    // (`DownlevelFlags::SHADER_F16_IN_F32`), naga validates them behind this capability.
    let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if k.needs.f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if k.needs.subgroups {
        caps |= Capabilities::SUBGROUP;
    }
    if k.needs.cooperative_matrix {
        caps |= Capabilities::COOPERATIVE_MATRIX;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| ShaderError::Invalid {
            kernel: k.name,
            location: location(k.file, k.source, e.location(k.source)),
            message: e.emit_to_string_with_path(k.source, &path),
        })?;
    let mismatch = |message: String| ShaderError::Mismatch {
        kernel: k.name,
        file: k.file,
        message,
    };
    // The kernel as its pipeline builds it: with the descriptor's override constants applied
    // (a workgroup size may depend on them).
    let module = with_constants(k, &module, &info)
        .map_err(|e| mismatch(format!("override constants: {e}")))?
        .0;
    let entry = module
        .entry_points
        .iter()
        .find(|e| e.name == k.entry)
        .ok_or_else(|| mismatch(format!("no entry point `{}`", k.entry)))?;
    if entry.stage != naga::ShaderStage::Compute {
        return Err(mismatch(format!(
            "`{}` is not a compute entry point",
            k.entry
        )));
    }
    if entry.workgroup_size != k.workgroup_size {
        return Err(mismatch(format!(
            "workgroup size is {:?} in WGSL but {:?} in the descriptor",
            entry.workgroup_size, k.workgroup_size
        )));
    }
    check_params_layout(k, &module).map_err(mismatch)?;
    check_loops_step(&module).map_err(mismatch)?;
    Ok(module)
}

/// Every loop must have a step (naga's `continuing` block): pipelines are built without wgpu's
/// infinite-loop guard (see `pipelines.rs`), which is sound only while each loop counts towards
/// a bound. `while`, a `for` without an update and a `loop` without `continuing` have none and
/// are refused here, so a new kernel cannot slip one in unreviewed. The check is structural: a
/// loop with a step may still not terminate, so loops still need review.
pub(crate) fn check_loops_step(module: &naga::Module) -> Result<(), String> {
    fn walk(block: &naga::Block, function: &str) -> Result<(), String> {
        for statement in block.iter() {
            match statement {
                naga::Statement::Loop {
                    body, continuing, ..
                } => {
                    if continuing.is_empty() {
                        return Err(format!(
                            "function `{function}` has a loop without a step (`while`, a `for` with \
                             no update or a `loop` without `continuing`); kernels may only use \
                             counted `for` loops"
                        ));
                    }
                    walk(body, function)?;
                    walk(continuing, function)?;
                }
                naga::Statement::Block(b) => walk(b, function)?,
                naga::Statement::If { accept, reject, .. } => {
                    walk(accept, function)?;
                    walk(reject, function)?;
                }
                naga::Statement::Switch { cases, .. } => {
                    for case in cases {
                        walk(&case.body, function)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
    for (_, f) in module.functions.iter() {
        walk(&f.body, f.name.as_deref().unwrap_or("?"))?;
    }
    for e in &module.entry_points {
        walk(&e.function.body, &e.name)?;
    }
    Ok(())
}

/// Compares the descriptor's Rust params layout with the WGSL struct of the same name.
fn check_params_layout(k: &KernelDesc, module: &naga::Module) -> Result<(), String> {
    let want = &k.params;
    let (members, span) = module
        .types
        .iter()
        .find_map(|(_, ty)| match (&ty.name, &ty.inner) {
            (Some(n), naga::TypeInner::Struct { members, span }) if n == want.wgsl_struct => {
                Some((members, *span))
            }
            _ => None,
        })
        .ok_or_else(|| format!("no WGSL struct `{}`", want.wgsl_struct))?;
    let wgsl: Vec<(String, usize)> = members
        .iter()
        .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
        .collect();
    let rust: Vec<(String, usize)> = want
        .fields
        .iter()
        .map(|(n, o)| (n.to_string(), *o))
        .collect();
    if wgsl != rust || span as usize != want.size {
        return Err(format!(
            "params struct `{}` differs between WGSL and Rust:\n  WGSL: size {span}, fields {wgsl:?}\n  Rust: size {}, fields {rust:?}",
            want.wgsl_struct, want.size
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::{Binding, Needs};
    use crate::kernel_params;
    use crate::params::KernelParams;

    kernel_params! {
        pub struct TwoFields as "P" {
            pub a: u32,
            pub b: u32,
        }
    }

    fn desc(source: &'static str) -> KernelDesc {
        KernelDesc {
            name: "test",
            file: "test.wgsl",
            source,
            entry: "main",
            workgroup_size: [64, 1, 1],
            bindings: &[Binding::Uniform],
            params: TwoFields::LAYOUT,
            needs: Needs::default(),
            constants: &[],
        }
    }

    const GOOD: &str = "struct P { a: u32, b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@compute @workgroup_size(64) fn main() { _ = p.a; }";

    #[test]
    fn accepts_a_matching_kernel() {
        validate_kernel(&desc(GOOD)).unwrap();
    }

    #[test]
    fn a_field_added_only_in_wgsl_fails() {
        const SRC: &str = "struct P { a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@compute @workgroup_size(64) fn main() { _ = p.a; }";
        let err = validate_kernel(&desc(SRC)).unwrap_err();
        assert!(matches!(err, ShaderError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("differs between WGSL and Rust"));
    }

    #[test]
    fn parse_errors_carry_file_line_col() {
        const SRC: &str =
            "struct P { a: u32, b: u32 }\n@compute @workgroup_size(64) fn main() { let x = ; }";
        let err = validate_kernel(&desc(SRC)).unwrap_err();
        assert!(err.to_string().starts_with("shaders/test.wgsl:2:"), "{err}");
    }

    #[test]
    fn locations_map_back_through_concatenated_files() {
        const SRC: &str = "// @file a.wgsl\nfn f() {}\n// @file b.wgsl\nstruct P { a: u32, b: u32 }\n@compute @workgroup_size(64) fn main() { let x = ; }";
        let err = validate_kernel(&desc(SRC)).unwrap_err();
        assert!(err.to_string().starts_with("shaders/b.wgsl:3:"), "{err}");
    }

    #[test]
    fn loops_without_a_step_fail() {
        for body in [
            "loop { if p.a > 3u { break; } }",
            "var i = 0u; while i < p.a { i++; }",
            "for (var i = 0u; i < p.a;) { if i == 0u { break; } }",
        ] {
            let src = format!(
                "struct P {{ a: u32, b: u32 }}\n@group(0) @binding(0) var<uniform> p: P;\n\
                 @compute @workgroup_size(64) fn main() {{ {body} }}"
            );
            let err = validate_kernel(&desc(Box::leak(src.into_boxed_str()))).unwrap_err();
            assert!(
                err.to_string().contains("loop without a step"),
                "{body}: {err}"
            );
        }
        const COUNTED: &str = "struct P { a: u32, b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@compute @workgroup_size(64) fn main() { for (var i = 0u; i < p.a; i++) { _ = i; } }";
        validate_kernel(&desc(COUNTED)).unwrap();
    }

    #[test]
    fn wrong_workgroup_size_fails() {
        const SRC: &str = "struct P { a: u32, b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@compute @workgroup_size(32) fn main() { _ = p.a; }";
        assert!(validate_kernel(&desc(SRC)).is_err());
    }
}
