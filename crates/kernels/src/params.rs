//! Typed kernel parameters: a Rust `Pod` struct per WGSL params struct, with its layout.

/// The layout of a params struct as Rust sees it: what validation compares with the WGSL one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamsLayout {
    /// The name of the matching struct in the kernel's WGSL source.
    pub wgsl_struct: &'static str,
    /// `size_of` the Rust struct.
    pub size: usize,
    /// Every field, in declaration order, with its byte offset.
    pub fields: &'static [(&'static str, usize)],
}

/// A `#[repr(C)]` params struct uploaded as a kernel's uniform.
pub trait KernelParams: bytemuck::Pod {
    const LAYOUT: ParamsLayout;
}

/// Declares a `#[repr(C)]`, `Pod` params struct and its [`ParamsLayout`] in one go, so the
/// field list used by validation cannot drift from the struct itself.
#[macro_export]
macro_rules! kernel_params {
    (
        $(#[$meta:meta])*
        pub struct $name:ident as $wgsl:literal {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty ),*
        }

        impl $crate::params::KernelParams for $name {
            const LAYOUT: $crate::params::ParamsLayout = $crate::params::ParamsLayout {
                wgsl_struct: $wgsl,
                size: ::std::mem::size_of::<$name>(),
                fields: &[ $( (stringify!($field), ::std::mem::offset_of!($name, $field)) ),* ],
            };
        }
    };
}
