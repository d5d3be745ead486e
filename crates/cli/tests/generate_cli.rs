//! `kiln generate` end to end (fetches the model into the cache when missing).

use std::process::Command;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_holds_prompt_ids_token_ids_and_text() {
    let out = kiln(&["generate", "--json", "-n", "3", "The capital of France is"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("exactly one JSON value");
    assert_eq!(
        v["prompt_ids"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert_eq!(v["token_ids"].as_array().unwrap().len(), 3);
    assert_eq!(v["token_ids"][0], 7042, "greedy ' Paris'");
    assert!(v["text"].as_str().unwrap().starts_with(" Paris"));
}

#[test]
fn corrupt_or_missing_models_and_long_prompts_are_one_line_errors() {
    let dir = std::env::temp_dir().join(format!("kiln-gen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corrupt = dir.join("bad.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes()); // an absurd tensor count
    std::fs::write(&corrupt, &bytes).unwrap();
    let long = "word ".repeat(300);
    for args in [
        vec!["generate", "--model", corrupt.to_str().unwrap(), "hi"],
        vec!["generate", "--model", "/nonexistent.gguf", "hi"],
        vec!["generate", long.as_str()],
    ] {
        let out = kiln(&args);
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("kiln:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
