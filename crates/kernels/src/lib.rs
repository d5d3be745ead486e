//! kiln's WGSL kernels: sources embedded from `shaders/`, a descriptor and a typed `Pod` params
//! struct per kernel, naga validation of both, and a per-device pipeline cache.

pub mod desc;
pub mod dispatch;
pub mod families;
pub mod lower;
pub mod params;
pub mod pipelines;
pub mod validate;

pub use desc::{Binding, KernelDesc, Needs};
pub use lower::{lower, Dispatch, LowerError, Operand, Repr};
pub use params::{KernelParams, ParamsLayout};
pub use pipelines::{kernel_source, PipelineCache, PipelineError};
pub use validate::{validate_kernel, ShaderError};

/// Every kernel kiln ships, for validation and tools.
pub fn all_kernels() -> Vec<&'static KernelDesc> {
    use families::*;
    vec![
        &elementwise::BINARY,
        &elementwise::BINARY_QUADS,
        &elementwise::UNARY,
        &elementwise::WHERE,
        &matmul::MATMUL,
        &matmul::MATMUL_VEC4,
        &matmul::MATMUL_K8,
        &matmul::MATMUL_K8_VEC4,
        &matmul::MATMUL_WIDE,
        &matmul::MATMUL_WIDE_VEC4,
        &matmul::MATMUL_WIDE_QUADS,
        &matmul::MATMUL_KN,
        &matmul::MATMUL_VEC4_KN,
        &matmul::MATMUL_K8_KN,
        &matmul::MATMUL_K8_VEC4_KN,
        &matmul::MATMUL_WIDE_KN,
        &matmul::MATMUL_WIDE_VEC4_KN,
        &matmul::MATMUL_WIDE_QUADS_KN,
        &matmul::MATMUL_SKINNY,
        &matmul::MATMUL_SKINNY_VEC4,
        &matmul::MATMUL_SKINNY_NARROW,
        &matmul::MATMUL_SKINNY_NARROW_VEC4,
        &matmul::MATMUL_COOP,
        &matmul::MATMUL_SPLIT_SUM,
        &matmul::MATMUL_SPLIT_SUM_QUADS,
        &norm::NORM,
        &norm::NORM_MANY_ROWS,
        &movement::STRIDED_COPY,
        &movement::GATHER,
        &movement::GATHER_QUADS,
        &movement::UPDATE_ROWS,
        &attention::ATTENTION,
        &attention::ATTENTION_ROW,
        &attention::ATTENTION_BLOCK,
        &attention::ATTENTION_BLOCK_BIAS,
        &rope::ROPE,
        &reduce::REDUCE,
        &reduce::SOFTMAX,
        &reduce::CUMSUM,
        &select::ARGMAX,
        &select::TOPK,
        &select::SAMPLE,
        &quant::QUANT_GEMV,
        &quant::QUANT_TILED,
        &quant::QUANT_GATHER,
    ]
}

/// The kernels a planned dispatch of `kernel` may switch to when the active extent changes
/// (each binds like it; see [`KernelDesc::binds_like`]), `kernel` among them; empty for kernels
/// that keep one entry point at every extent. The runtime builds their pipelines at compile
/// time, so an extent change never compiles a shader.
pub fn extent_variants(kernel: &KernelDesc) -> &'static [&'static KernelDesc] {
    let families: [&'static [&'static KernelDesc]; 6] = [
        &families::attention::EXTENT_VARIANTS,
        &families::elementwise::EXTENT_VARIANTS,
        &families::matmul::EXTENT_VARIANTS,
        &families::movement::EXTENT_VARIANTS,
        &families::norm::EXTENT_VARIANTS,
        &families::quant::EXTENT_VARIANTS,
    ];
    families
        .into_iter()
        .find(|f| f.iter().any(|k| k.name == kernel.name))
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_shipped_kernel_validates() {
        for k in super::all_kernels() {
            if let Err(e) = super::validate_kernel(k) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn every_extent_variant_is_shipped() {
        let all = super::all_kernels();
        for k in &all {
            for v in super::extent_variants(k) {
                assert!(
                    all.iter().any(|a| a.name == v.name),
                    "{} is an extent variant of {} but not in all_kernels",
                    v.name,
                    k.name
                );
            }
        }
    }

    #[test]
    fn extent_variants_bind_alike() {
        // The runtime swaps a dispatch's pipeline for a variant's under the same bind group.
        for k in super::all_kernels() {
            for v in super::extent_variants(k) {
                assert!(k.binds_like(v), "{} and its variant {}", k.name, v.name);
            }
        }
    }

    #[test]
    fn kernel_names_are_unique() {
        let mut names: Vec<_> = super::all_kernels().iter().map(|k| k.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
    }
}
