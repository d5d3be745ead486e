//! `kiln info`: adapters, the chosen device, its limits and features.

use kiln_runtime::{list_adapters, Device, DeviceOptions};

pub fn run() -> Result<(), String> {
    let options = DeviceOptions::default();
    println!("adapters:");
    for a in list_adapters(&options) {
        println!(
            "  {} ({:?}, {:?}, driver {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        );
    }
    let dev = Device::new(&options).map_err(|e| e.to_string())?;
    let info = dev.info();
    let a = &info.adapter;
    let l = &info.limits;
    println!("chosen: {}", a.name);
    println!("  backend:  {:?}", a.backend);
    println!("  type:     {:?}", a.device_type);
    println!("  driver:   {} {}", a.driver, a.driver_info);
    println!("  limits:");
    println!(
        "    max_storage_buffer_binding_size  {}",
        l.max_storage_buffer_binding_size
    );
    println!("    max_buffer_size                  {}", l.max_buffer_size);
    println!(
        "    max_compute_workgroup_storage    {}",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "    max_compute_invocations          {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "    max_storage_buffers_per_stage    {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "    storage_buffer_offset_alignment  {}",
        l.min_storage_buffer_offset_alignment
    );
    println!(
        "    uniform_buffer_offset_alignment  {}",
        l.min_uniform_buffer_offset_alignment
    );
    println!("  features used by kiln: {:?}", info.features);
    println!(
        "  subgroup size: {}..={}; cooperative-matrix matmul (f16 inputs): {}",
        info.adapter.subgroup_min_size,
        info.adapter.subgroup_max_size,
        if info.cooperative_f16 {
            "available (compile with MatmulInputs::F16WhereFaster)"
        } else {
            "not available"
        }
    );
    Ok(())
}
