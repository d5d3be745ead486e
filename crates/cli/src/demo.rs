//! `kiln demo`: a small graph run on the GPU, printed next to the CPU reference.

use kiln_ir::{Activation, BinaryOp, DType, Graph, HostTensor};
use kiln_runtime::{run_eager, Device, DeviceOptions};

pub fn run() -> Result<(), String> {
    // y = gelu(x * scale + bias), with scale and bias broadcast along the rows of x.
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, [2, 4])
        .map_err(|e| e.to_string())?;
    let scale = g
        .param("scale", DType::F32, [4])
        .map_err(|e| e.to_string())?;
    let bias = g
        .param("bias", DType::F32, [1, 4])
        .map_err(|e| e.to_string())?;
    let scaled = g
        .binary(BinaryOp::Mul, x, scale)
        .map_err(|e| e.to_string())?;
    let shifted = g
        .binary(BinaryOp::Add, scaled, bias)
        .map_err(|e| e.to_string())?;
    let y = g
        .activation(Activation::Gelu, shifted)
        .map_err(|e| e.to_string())?;
    g.output(y).map_err(|e| e.to_string())?;

    let t = |shape: &[usize], v: &[f32]| HostTensor::from_f32(shape, v).map_err(|e| e.to_string());
    let params = [
        ("scale", t(&[4], &[1.0, 0.5, -1.0, 2.0])?),
        ("bias", t(&[1, 4], &[0.0, 0.25, 0.5, -1.0])?),
    ];
    let inputs = [(
        "x",
        t(&[2, 4], &[-2.0, -1.0, 0.0, 1.0, 0.5, 1.5, 2.5, 3.0])?,
    )];

    let dev = Device::new(&DeviceOptions::default()).map_err(|e| e.to_string())?;
    let a = &dev.info().adapter;
    println!(
        "adapter: {} ({:?}, driver {} {})",
        a.name, a.backend, a.driver, a.driver_info
    );
    print!("{g}");
    let gpu = run_eager(&dev, &g, &params, &inputs).map_err(|e| e.to_string())?;
    let cpu = kiln_reference::evaluate(&g, &params, &inputs).map_err(|e| e.to_string())?;
    let (gpu, cpu) = (gpu[0].to_f32(), cpu[0].to_f32());
    println!("gpu:       {gpu:?}");
    println!("reference: {cpu:?}");
    let worst = gpu
        .iter()
        .zip(&cpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("max |gpu - reference| = {worst:e}");
    if worst > 1e-5 {
        return Err(format!(
            "the GPU result differs from the reference by {worst}"
        ));
    }
    Ok(())
}
