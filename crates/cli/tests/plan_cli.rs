//! `kiln plan` end to end: text, JSON and SVG output, and a one-line error for a bad file.

use kiln_ir::{Activation, DType, Graph};
use std::process::Command;

fn graph_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [4, 32]).unwrap();
    let w = g.param("w", DType::F32, [32, 32]).unwrap();
    let b = g.param("b", DType::F32, [32]).unwrap();
    let m = g.matmul(x, w).unwrap();
    let y = g.add_op(m, b).unwrap();
    let y = g.activation(Activation::Gelu, y).unwrap();
    let s = g.add_op(y, x).unwrap();
    let n = g.layer_norm(s, Some(b), Some(b), 1e-5).unwrap();
    g.output(n).unwrap();
    let path = dir.join("graph.json");
    std::fs::write(&path, g.to_json()).unwrap();
    path
}

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn plan_prints_text_json_and_svg() {
    let dir = std::env::temp_dir().join(format!("kiln-plan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = graph_file(&dir);
    let p = path.to_str().unwrap();

    let out = kiln(&["plan", p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("matmul_epilogue") && text.contains("residual_norm"),
        "{text}"
    );
    assert!(text.contains("lower bound"), "{text}");

    let svg = dir.join("t.svg");
    let out = kiln(&["plan", p, "--json", "--svg", svg.to_str().unwrap()]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["arena_bytes", "lower_bound_bytes", "steps"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["steps"].as_array().unwrap().len(), 2);
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.starts_with("<svg") && drawing.contains("<rect"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_graph_file_is_one_line_and_a_failure() {
    let out = kiln(&["plan", "/nonexistent/graph.json"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("kiln: cannot read"), "{err}");
}

#[test]
fn profile_prints_a_time_per_step() {
    let dir = std::env::temp_dir().join(format!("kiln-profile-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = graph_file(&dir);
    let out = kiln(&["profile", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("GPU µs") && text.contains("total GPU time"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("matmul_epilogue"))
            .count(),
        1,
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plan_of_the_real_models() {
    for model in ["minilm", "smollm2"] {
        let out = kiln(&["plan", "--model", model, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (arena, lower) = (
            v["arena_bytes"].as_f64().unwrap(),
            v["lower_bound_bytes"].as_f64().unwrap(),
        );
        assert!(
            arena >= lower && arena <= lower * 1.10,
            "{model}: {arena} vs {lower}"
        );
    }
}
