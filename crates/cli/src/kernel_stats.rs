//! `kiln kernel-stats`: what the Vulkan driver compiled each kernel into (registers, workgroup
//! memory, spills, instruction counts: whatever statistics the driver reports), read through
//! `VK_KHR_pipeline_executable_properties`.
//!
//! wgpu does not expose pipeline statistics, so this builds each kernel a second time outside
//! wgpu, on a Vulkan device of its own: the WGSL is translated to SPIR-V by naga with the options
//! kiln's pipelines use (no bounds checks, no loop guard, workgroup memory zeroed natively where
//! the device can), override constants applied, and handed to the driver with the capture
//! flags. Register counts bound how many workgroups share a multiprocessor, which the timings
//! alone cannot show. `KILN_SHADER_DIR` replaces sources here as it does for pipelines.

use ash::vk;
use kiln_kernels::{all_kernels, kernel_source, Binding, KernelDesc};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// Runs the command: statistics of every kernel whose name is in `only` (all when empty);
/// with `ir_dir`, also writes each executable's internal representations there.
pub fn run(only: &[String], ir_dir: Option<&Path>) -> Result<(), String> {
    let kernels: Vec<&KernelDesc> = all_kernels()
        .into_iter()
        .filter(|k| only.is_empty() || only.iter().any(|n| n == k.name))
        .collect();
    if let Some(missing) = only
        .iter()
        .find(|n| !kernels.iter().any(|k| k.name == n.as_str()))
    {
        return Err(format!(
            "no kernel named `{missing}` (see shaders/ and all_kernels)"
        ));
    }
    if let Some(dir) = ir_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let gpu = StatsDevice::new()?;
    println!("{}", gpu.description);
    for k in kernels {
        match gpu.kernel_report(k, ir_dir) {
            Ok(lines) => {
                for line in lines {
                    println!("{:<22} {line}", k.name);
                }
            }
            Err(e) => println!("{:<22} not built: {e}", k.name),
        }
    }
    Ok(())
}

/// The feature structs the tool queries and enables (the core ones of Vulkan 1.1 to 1.3, pipeline
/// executable info, cooperative matrices).
#[derive(Default)]
struct Features {
    v11: vk::PhysicalDeviceVulkan11Features<'static>,
    v12: vk::PhysicalDeviceVulkan12Features<'static>,
    v13: vk::PhysicalDeviceVulkan13Features<'static>,
    coop: vk::PhysicalDeviceCooperativeMatrixFeaturesKHR<'static>,
    exec: vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR<'static>,
}

impl Features {
    /// The structs linked into one `PhysicalDeviceFeatures2` chain, for a query or for device
    /// creation: Vulkan 1.3's only on a 1.3 device, cooperative matrices only with the
    /// extension. Each struct's link is reset first, since an earlier chain left it set.
    fn chain(&mut self, v13: bool, coop: bool) -> vk::PhysicalDeviceFeatures2<'_> {
        self.v11.p_next = std::ptr::null_mut();
        self.v12.p_next = std::ptr::null_mut();
        self.v13.p_next = std::ptr::null_mut();
        self.coop.p_next = std::ptr::null_mut();
        self.exec.p_next = std::ptr::null_mut();
        let mut chain = vk::PhysicalDeviceFeatures2::default()
            .push_next(&mut self.v11)
            .push_next(&mut self.v12)
            .push_next(&mut self.exec);
        if v13 {
            chain = chain.push_next(&mut self.v13);
        }
        if coop {
            chain = chain.push_next(&mut self.coop);
        }
        chain
    }
}

/// A Vulkan device created with pipeline executable statistics enabled.
struct StatsDevice {
    // Kept alive for `instance` and `device`.
    _entry: ash::Entry,
    instance: ash::Instance,
    device: ash::Device,
    executables: ash::khr::pipeline_executable_properties::Device,
    zero_init_native: bool,
    spirv_version: (u8, u8),
    description: String,
}

fn vk_err(what: &str) -> impl Fn(vk::Result) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl StatsDevice {
    fn new() -> Result<Self, String> {
        // SAFETY: loading the system's Vulkan loader; its entry points are used as documented.
        let entry = unsafe { ash::Entry::load() }
            .map_err(|e| format!("no Vulkan loader on this machine: {e}"))?;
        let app = vk::ApplicationInfo::default()
            .application_name(c"kiln kernel-stats")
            .api_version(vk::API_VERSION_1_3);
        // SAFETY: a valid create info with no layers or extensions.
        let instance = unsafe {
            entry.create_instance(
                &vk::InstanceCreateInfo::default().application_info(&app),
                None,
            )
        }
        .map_err(vk_err("creating a Vulkan instance"))?;
        match Self::open(entry.clone(), instance.clone()) {
            Ok(device) => Ok(device),
            Err(e) => {
                // SAFETY: nothing created from the instance outlives this error path.
                unsafe { instance.destroy_instance(None) };
                Err(e)
            }
        }
    }

    fn open(entry: ash::Entry, instance: ash::Instance) -> Result<Self, String> {
        // SAFETY: queries on a live instance.
        let physical = unsafe { instance.enumerate_physical_devices() }
            .map_err(vk_err("listing Vulkan devices"))?;
        // The device wgpu would prefer: a discrete GPU, else an integrated one, else any.
        let rank = |pd: &vk::PhysicalDevice| {
            // SAFETY: `pd` came from this instance.
            match unsafe { instance.get_physical_device_properties(*pd) }.device_type {
                vk::PhysicalDeviceType::DISCRETE_GPU => 0,
                vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
                _ => 2,
            }
        };
        let pd = *physical
            .iter()
            .min_by_key(|pd| rank(pd))
            .ok_or("no Vulkan device")?;
        // SAFETY: `pd` came from this instance.
        let props = unsafe { instance.get_physical_device_properties(pd) };
        let name = props
            .device_name_as_c_str()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "(unnamed)".into());
        let driver_version = props.driver_version;
        let api = props.api_version;
        // SAFETY: as above.
        let extensions = unsafe { instance.enumerate_device_extension_properties(pd) }
            .map_err(vk_err("listing device extensions"))?;
        let has = |wanted: &CStr| {
            extensions
                .iter()
                .any(|e| e.extension_name_as_c_str() == Ok(wanted))
        };
        let exec_ext = ash::khr::pipeline_executable_properties::NAME;
        if !has(exec_ext) {
            return Err(format!(
                "{name} does not offer {} (no pipeline statistics)",
                exec_ext.to_string_lossy()
            ));
        }
        let coop = has(ash::khr::cooperative_matrix::NAME);
        let v13 = api >= vk::API_VERSION_1_3;

        // Enable every feature the device has in these structs (queried, then passed back to
        // device creation): kernels may need f16, the Vulkan memory model or cooperative
        // matrices; the device only compiles pipelines.
        let mut features = Features::default();
        // SAFETY: every struct in the chain is valid for this device's API version.
        unsafe { instance.get_physical_device_features2(pd, &mut features.chain(v13, coop)) };
        if features.exec.pipeline_executable_info != vk::TRUE {
            return Err(format!("{name} reports no pipelineExecutableInfo feature"));
        }
        let zero_init_native =
            v13 && features.v13.shader_zero_initialize_workgroup_memory == vk::TRUE;
        // SAFETY: as above.
        let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
        let family = families
            .iter()
            .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .ok_or_else(|| format!("{name} has no compute queue"))? as u32;
        let priorities = [1.0];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family)
            .queue_priorities(&priorities)];
        let mut names = vec![exec_ext.as_ptr()];
        if coop {
            names.push(ash::khr::cooperative_matrix::NAME.as_ptr());
        }
        let mut enabled = features.chain(v13, coop);
        let create = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&names)
            .push_next(&mut enabled);
        // SAFETY: the features enabled are those the device reported; the extensions exist.
        let device = unsafe { instance.create_device(pd, &create, None) }
            .map_err(vk_err("creating the Vulkan device"))?;
        let executables = ash::khr::pipeline_executable_properties::Device::new(&instance, &device);
        let spirv_version = if v13 {
            (1, 6)
        } else if api >= vk::API_VERSION_1_2 {
            (1, 5)
        } else {
            (1, 3)
        };
        let description = format!(
            "{name} (Vulkan {}.{}.{}, driver version {driver_version:#x}; workgroup memory zeroed {})",
            vk::api_version_major(api),
            vk::api_version_minor(api),
            vk::api_version_patch(api),
            if zero_init_native { "natively" } else { "by the shader" },
        );
        Ok(Self {
            _entry: entry,
            instance,
            device,
            executables,
            zero_init_native,
            spirv_version,
            description,
        })
    }

    /// One line per executable of `k`'s pipeline: its name and every statistic.
    fn kernel_report(&self, k: &KernelDesc, ir_dir: Option<&Path>) -> Result<Vec<String>, String> {
        let words = spirv(k, self.spirv_version, self.zero_init_native)?;
        let bindings: Vec<vk::DescriptorSetLayoutBinding> = k
            .bindings
            .iter()
            .enumerate()
            .map(|(i, b)| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(i as u32)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
                    .descriptor_type(match b {
                        Binding::Uniform => vk::DescriptorType::UNIFORM_BUFFER_DYNAMIC,
                        Binding::StorageRead | Binding::StorageReadWrite | Binding::ArenaVec4 => {
                            vk::DescriptorType::STORAGE_BUFFER
                        }
                    })
            })
            .collect();
        let d = &self.device;
        let mut cleanup = Cleanup {
            device: Some(d),
            ..Cleanup::default()
        };
        // SAFETY: each create info is valid; every object is destroyed by `cleanup`.
        unsafe {
            cleanup.set_layout = d
                .create_descriptor_set_layout(
                    &vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings),
                    None,
                )
                .map_err(vk_err("descriptor set layout"))?;
            let set_layouts = [cleanup.set_layout];
            cleanup.layout = d
                .create_pipeline_layout(
                    &vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts),
                    None,
                )
                .map_err(vk_err("pipeline layout"))?;
            cleanup.module = d
                .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)
                .map_err(vk_err("shader module"))?;
        }
        let entry = CString::new(k.entry).map_err(|e| e.to_string())?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(cleanup.module)
            .name(&entry);
        let create = vk::ComputePipelineCreateInfo::default()
            .flags(
                vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR
                    | vk::PipelineCreateFlags::CAPTURE_INTERNAL_REPRESENTATIONS_KHR,
            )
            .stage(stage)
            .layout(cleanup.layout);
        // SAFETY: a valid create info; the pipeline is destroyed by `cleanup`.
        cleanup.pipeline =
            unsafe { d.create_compute_pipelines(vk::PipelineCache::null(), &[create], None) }
                .map_err(|(_, e)| format!("compute pipeline: {e}"))?
                .into_iter()
                .next()
                .ok_or("the driver returned no pipeline")?;
        let info = vk::PipelineInfoKHR::default().pipeline(cleanup.pipeline);
        // SAFETY: the pipeline was created with the capture flags on a device with the feature.
        let executables = unsafe { self.executables.get_pipeline_executable_properties(&info) }
            .map_err(vk_err("executable properties"))?;
        let mut lines = Vec::new();
        for (index, exe) in executables.iter().enumerate() {
            let which = vk::PipelineExecutableInfoKHR::default()
                .pipeline(cleanup.pipeline)
                .executable_index(index as u32);
            // SAFETY: as above.
            let stats = unsafe { self.executables.get_pipeline_executable_statistics(&which) }
                .map_err(vk_err("executable statistics"))?;
            let stats: Vec<String> = stats.iter().map(statistic).collect();
            let exe_name = exe
                .name_as_c_str()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let subgroup = exe.subgroup_size;
            lines.push(format!(
                "[{exe_name}, subgroup {subgroup}] {}",
                stats.join(", ")
            ));
            if let Some(dir) = ir_dir {
                self.write_representations(&which, &dir.join(format!("{}.{index}", k.name)))?;
            }
        }
        Ok(lines)
    }

    /// Writes an executable's internal representations (driver IR, assembly) to `stem.*`.
    fn write_representations(
        &self,
        which: &vk::PipelineExecutableInfoKHR<'_>,
        stem: &Path,
    ) -> Result<(), String> {
        let fp = self.executables.fp();
        let handle = self.executables.device();
        let call = |count: &mut u32, reps: *mut vk::PipelineExecutableInternalRepresentationKHR| {
            // SAFETY: the two-call idiom: `reps` is null or holds `count` entries whose data
            // pointers are null or point at `data_size` bytes.
            unsafe {
                (fp.get_pipeline_executable_internal_representations_khr)(
                    handle, which, count, reps,
                )
            }
        };
        let mut count = 0;
        call(&mut count, std::ptr::null_mut())
            .result()
            .map_err(vk_err("internal representations"))?;
        let mut reps =
            vec![vk::PipelineExecutableInternalRepresentationKHR::default(); count as usize];
        call(&mut count, reps.as_mut_ptr())
            .result()
            .map_err(vk_err("internal representations"))?;
        let mut buffers: Vec<Vec<u8>> = reps.iter().map(|r| vec![0u8; r.data_size]).collect();
        for (r, b) in reps.iter_mut().zip(buffers.iter_mut()) {
            r.p_data = b.as_mut_ptr().cast();
        }
        call(&mut count, reps.as_mut_ptr())
            .result()
            .map_err(vk_err("internal representations"))?;
        for (i, (r, data)) in reps.iter().zip(&buffers).enumerate() {
            let name = r
                .name_as_c_str()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let ext = if r.is_text == vk::TRUE { "txt" } else { "bin" };
            let path = PathBuf::from(format!("{}.{i}.{ext}", stem.display()));
            // Text representations end with a NUL.
            let end = if r.is_text == vk::TRUE {
                data.iter().position(|&c| c == 0).unwrap_or(data.len())
            } else {
                data.len()
            };
            std::fs::write(&path, &data[..end]).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("wrote {} ({name})", path.display());
        }
        Ok(())
    }
}

/// The SPIR-V (of `version`) of `k`'s entry point, translated as kiln's pipelines are: override
/// constants applied, no bounds checks or loop guard, workgroup memory zeroed by the driver
/// (`zero_init_native`) or by the shader, as wgpu does.
fn spirv(k: &KernelDesc, version: (u8, u8), zero_init_native: bool) -> Result<Vec<u32>, String> {
    use naga::back::spv;
    let (source, _) = kernel_source(k);
    let module = naga::front::wgsl::parse_str(&source)
        .map_err(|e| e.emit_to_string_with_path(&source, k.file))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string_with_path(&source, k.file))?;
    let (module, info) = kiln_kernels::validate::with_constants(k, &module, &info)
        .map_err(|e| format!("override constants: {e}"))?;
    let unchecked = naga::proc::BoundsCheckPolicy::Unchecked;
    let options = spv::Options {
        lang_version: version,
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: unchecked,
            buffer: unchecked,
            image_load: unchecked,
            binding_array: unchecked,
        },
        zero_initialize_workgroup_memory: if zero_init_native {
            spv::ZeroInitializeWorkgroupMemoryMode::Native
        } else {
            spv::ZeroInitializeWorkgroupMemoryMode::Polyfill
        },
        force_loop_bounding: false,
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        entry_point: k.entry.to_string(),
        shader_stage: naga::ShaderStage::Compute,
    };
    spv::write_vec(&module, &info, &options, Some(&pipeline)).map_err(|e| e.to_string())
}

impl Drop for StatsDevice {
    fn drop(&mut self) {
        // SAFETY: every pipeline object was destroyed by its `Cleanup`; nothing is in flight.
        unsafe {
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

/// `name=value` of one statistic.
fn statistic(s: &vk::PipelineExecutableStatisticKHR<'_>) -> String {
    let name = s
        .name_as_c_str()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // SAFETY: the union member read is the one `format` names.
    let value = unsafe {
        match s.format {
            vk::PipelineExecutableStatisticFormatKHR::BOOL32 => {
                (s.value.b32 == vk::TRUE).to_string()
            }
            vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::FLOAT64 => s.value.f64.to_string(),
            _ => "?".into(),
        }
    };
    format!("{name}={value}")
}

/// The objects of one kernel's pipeline, destroyed when it goes out of scope.
#[derive(Default)]
struct Cleanup<'a> {
    device: Option<&'a ash::Device>,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    module: vk::ShaderModule,
    pipeline: vk::Pipeline,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let Some(d) = self.device else { return };
        // SAFETY: the objects were created on `d` (or are null, which destroy ignores) and no
        // command uses them: the pipeline is never bound.
        unsafe {
            d.destroy_pipeline(self.pipeline, None);
            d.destroy_shader_module(self.module, None);
            d.destroy_pipeline_layout(self.layout, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_translates_with_its_constants() {
        for k in all_kernels() {
            for zero_init_native in [false, true] {
                let words = spirv(k, (1, 3), zero_init_native)
                    .unwrap_or_else(|e| panic!("{}: {e}", k.name));
                assert_eq!(
                    words.first(),
                    Some(&0x0723_0203),
                    "{}: SPIR-V magic",
                    k.name
                );
            }
        }
    }

    #[test]
    fn an_unknown_kernel_is_named() {
        let err = run(&["no_such_kernel".into()], None).unwrap_err();
        assert!(err.contains("no_such_kernel"), "{err}");
    }
}
