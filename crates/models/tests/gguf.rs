//! The GGUF reader and the tokenizer built from GGUF metadata: the real SmolLM2 file against the
//! Python reference, and malformed files (synthetic buffers, truncations and corruptions of the
//! real header), each of which must give a typed error and never a panic.

use kiln_ir::DType;
use kiln_models::gguf::{Array, Gguf, GgufErrorKind, Value};
use kiln_models::{smollm2, GgufTokenizer};
use std::sync::OnceLock;

// ------------------------------------------------------------------------------------------
// The real file.

fn real() -> &'static Gguf {
    static GGUF: OnceLock<Gguf> = OnceLock::new();
    GGUF.get_or_init(|| {
        let path = smollm2::default_model_path().unwrap_or_else(|e| panic!("{e}"));
        Gguf::open(&path).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn tokenizer() -> &'static GgufTokenizer {
    static TOK: OnceLock<GgufTokenizer> = OnceLock::new();
    TOK.get_or_init(|| GgufTokenizer::from_gguf(real()).unwrap_or_else(|e| panic!("{e}")))
}

/// A file of `shared/reference/`, which sits beside the checkout; `KILN_SHARED` can point
/// elsewhere.
fn reference_file(name: &str) -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("KILN_SHARED") {
        return std::path::PathBuf::from(dir).join("reference").join(name);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    root.ancestors()
        .map(|a| a.join("shared").join("reference").join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("shared/reference/{name} not found beside the checkout; set KILN_SHARED")
        })
}

struct Row {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    greedy_text: String,
}

fn reference_rows() -> Vec<Row> {
    let path = reference_file("smollm2_public.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let rows: Vec<Row> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Row {
            prompt: r["prompt"].as_str().unwrap().to_string(),
            prompt_ids: ids(&r["prompt_ids"]),
            greedy_ids: ids(&r["greedy_ids"]),
            greedy_text: r["greedy_text"].as_str().unwrap().to_string(),
        })
        .collect();
    assert!(!rows.is_empty());
    rows
}

#[test]
fn real_file_header_and_metadata() {
    let g = real();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_start() % 32, 0);
    assert_eq!(g.tensors().len(), 272);
    assert_eq!(g.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 576);
    assert!(g.get_f32("llama.rope.freq_base").unwrap() > 0.0);
    assert!(g.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap() > 0.0);
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(g.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert_eq!(
        g.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );
    assert_eq!(
        g.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        49152
    );
    assert!(!g.get_bool("tokenizer.ggml.add_bos_token").unwrap());

    // Typed getters name the key when it is missing or of the wrong type.
    let e = g.get_u32("llama.no_such_key").unwrap_err();
    assert_eq!(
        e.kind,
        GgufErrorKind::MissingKey {
            key: "llama.no_such_key".into()
        }
    );
    assert!(e.to_string().contains("llama.no_such_key"), "{e}");
    let e = g.get_str("llama.block_count").unwrap_err();
    assert!(
        matches!(&e.kind, GgufErrorKind::WrongType { key, .. } if key == "llama.block_count"),
        "{e}"
    );
    let e = g.get_u32("general.architecture").unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::WrongType { .. }), "{e}");
    let e = g.get_str_array("tokenizer.ggml.token_type").unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::WrongType { .. }), "{e}");
    assert!(g.metadata("tokenizer.chat_template").is_some());
    assert!(g.metadata("nope").is_none());
}

#[test]
fn real_file_tensors() {
    let g = real();
    let count = |d: DType| g.tensors().iter().filter(|t| t.dtype == d).count();
    assert_eq!(count(DType::Q4_1), 210);
    assert_eq!(count(DType::F32), 61);
    assert_eq!(count(DType::Q8_0), 1);

    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.dtype(), DType::Q8_0);
    assert_eq!(emb.info.ne, vec![576, 49152]);
    assert_eq!(emb.shape(), &[49152, 576]);
    assert_eq!(emb.bytes().len(), 49152 * 576 / 32 * 34);

    // Every tensor's bytes lie in the data section, sized by its type.
    let mut total = 0usize;
    for t in g.tensors() {
        let r = g.tensor(&t.name).unwrap();
        assert_eq!(
            Some(r.bytes().len()),
            t.dtype.storage_bytes(t.numel(), *t.shape.last().unwrap())
        );
        assert_eq!(
            t.shape.iter().rev().map(|&d| d as u64).collect::<Vec<_>>(),
            t.ne
        );
        total += r.bytes().len();
    }
    assert!(g.data_start() + total <= g.file_bytes().len());

    let norm = g.tensor("output_norm.weight").unwrap();
    assert_eq!(norm.dtype(), DType::F32);
    assert_eq!(norm.shape(), &[576]);
    // RMSNorm weights are finite and not all zero.
    let w: Vec<f32> = norm
        .bytes()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(w.iter().all(|x| x.is_finite()) && w.iter().any(|&x| x != 0.0));

    let e = g.tensor("no.such.tensor").unwrap_err();
    assert_eq!(
        e.kind,
        GgufErrorKind::MissingTensor {
            name: "no.such.tensor".into()
        }
    );
}

#[test]
fn tokenizer_matches_reference_prompt_ids() {
    let tok = tokenizer();
    for row in reference_rows() {
        assert_eq!(
            tok.encode(&row.prompt).unwrap(),
            row.prompt_ids,
            "prompt {:?}",
            row.prompt
        );
    }
}

#[test]
fn tokenizer_decodes_reference_greedy_text() {
    let tok = tokenizer();
    for row in reference_rows() {
        assert_eq!(tok.decode(&row.greedy_ids).unwrap(), row.greedy_text);
    }
}

#[test]
fn tokenizer_special_tokens_and_ids() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), 1);
    assert_eq!(tok.eos_id(), 2);
    assert!(!tok.add_bos());
    assert!(tok.chat_template().unwrap().contains("<|im_start|>"));

    let start = tok.token_id("<|im_start|>").unwrap();
    let end = tok.token_id("<|im_end|>").unwrap();
    assert_eq!(tok.encode("<|im_start|>").unwrap(), vec![start]);
    let ids = tok
        .encode("<|im_start|>user\nHi there<|im_end|>\n")
        .unwrap();
    assert_eq!(ids[0], start);
    assert_eq!(ids.iter().filter(|&&i| i == start || i == end).count(), 2);
    assert_eq!(
        tok.decode(&ids).unwrap(),
        "<|im_start|>user\nHi there<|im_end|>\n"
    );
    // No BOS is added, even to an empty text.
    assert!(tok.encode("").unwrap().is_empty());
    assert_ne!(tok.encode("Hello").unwrap()[0], tok.bos_id());
    // Ids outside the vocabulary are an error, not silently dropped.
    assert!(tok.decode(&[49152]).is_err());
}

#[test]
fn tokenizer_splits_digits_and_round_trips() {
    let tok = tokenizer();
    // The smollm pre-tokenizer splits every digit apart.
    let digits = tok.encode("12345").unwrap();
    assert_eq!(digits.len(), 5);
    for (id, d) in digits.iter().zip("12345".chars()) {
        assert_eq!(tok.decode(&[*id]).unwrap(), d.to_string());
    }
    for text in [
        "In 2024, 12345 apples cost $3.50 (or 3,50 €).",
        "def f(x):\n    return x ** 2  # 0x1F\n\n\ttabs\r\n",
        "naïve café — 東京 🙂 ünïcödé",
        "  leading and trailing spaces  ",
        "<|im_start|>system\nYou are 42.<|im_end|>",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "ids {ids:?}");
    }
}

// ------------------------------------------------------------------------------------------
// Synthetic files.

/// A GGUF writer for tests: metadata entries and tensor infos, then the data section.
#[derive(Default, Clone)]
struct Builder {
    magic: Vec<u8>,
    version: u32,
    /// Overrides of the counts written in the header.
    kv_count: Option<u64>,
    tensor_count: Option<u64>,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<Vec<u8>>,
    alignment: usize,
    data: Vec<u8>,
}

fn s(out: &mut Vec<u8>, text: &str) {
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text.as_bytes());
}

impl Builder {
    fn new() -> Builder {
        Builder {
            magic: b"GGUF".to_vec(),
            version: 3,
            alignment: 32,
            ..Default::default()
        }
    }

    /// An entry whose value bytes (after the type id) are given raw.
    fn kv_raw(mut self, key: &str, type_id: u32, value: &[u8]) -> Builder {
        let mut e = Vec::new();
        s(&mut e, key);
        e.extend(type_id.to_le_bytes());
        e.extend(value);
        self.kvs.push(e);
        self
    }

    fn kv_u32(self, key: &str, v: u32) -> Builder {
        self.kv_raw(key, 4, &v.to_le_bytes())
    }

    fn kv_str(self, key: &str, v: &str) -> Builder {
        let mut b = Vec::new();
        s(&mut b, v);
        self.kv_raw(key, 8, &b)
    }

    fn tensor(mut self, name: &str, ne: &[u64], ggml_type: u32, offset: u64) -> Builder {
        let mut t = Vec::new();
        s(&mut t, name);
        t.extend((ne.len() as u32).to_le_bytes());
        for d in ne {
            t.extend(d.to_le_bytes());
        }
        t.extend(ggml_type.to_le_bytes());
        t.extend(offset.to_le_bytes());
        self.tensors.push(t);
        self
    }

    fn data(mut self, data: &[u8]) -> Builder {
        self.data = data.to_vec();
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.magic.clone();
        out.extend(self.version.to_le_bytes());
        out.extend(
            self.tensor_count
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        out.extend(self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for e in self.kvs.iter().chain(&self.tensors) {
            out.extend(e);
        }
        while !out.len().is_multiple_of(self.alignment) {
            out.push(0);
        }
        out.extend(&self.data);
        out
    }

    fn parse(&self) -> Result<Gguf, kiln_models::GgufError> {
        Gguf::from_bytes("test.gguf", self.bytes())
    }

    fn kind(&self) -> GgufErrorKind {
        match self.parse() {
            Ok(_) => panic!("a malformed file parsed"),
            Err(e) => {
                // Errors name the file and read as one line.
                let text = e.to_string();
                assert!(text.starts_with("test.gguf: "), "{text}");
                assert!(!text.contains('\n'), "{text}");
                e.kind
            }
        }
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A raw array value: element type, count, elements.
fn array(elem_type: u32, count: u64, elems: &[u8]) -> Vec<u8> {
    let mut b = elem_type.to_le_bytes().to_vec();
    b.extend(count.to_le_bytes());
    b.extend(elems);
    b
}

#[test]
fn synthetic_file_with_every_value_type() {
    let mut strings = Vec::new();
    s(&mut strings, "a");
    s(&mut strings, "bc");
    let inner1 = array(5, 2, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    let inner2 = array(8, 0, &[]);
    let nested = array(9, 2, &[inner1, inner2].concat());
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = Builder::new()
        .kv_raw("u8", 0, &[200])
        .kv_raw("i8", 1, &[0xfe])
        .kv_raw("u16", 2, &60000u16.to_le_bytes())
        .kv_raw("i16", 3, &(-300i16).to_le_bytes())
        .kv_u32("u32", 4_000_000_000)
        .kv_raw("i32", 5, &(-7i32).to_le_bytes())
        .kv_raw("f32", 6, &1.5f32.to_le_bytes())
        .kv_raw("bool", 7, &[1])
        .kv_str("string", "héllo")
        .kv_raw("strings", 9, &array(8, 2, &strings))
        .kv_raw("nested", 9, &nested)
        .kv_raw("u64", 10, &u64::MAX.to_le_bytes())
        .kv_raw("i64", 11, &i64::MIN.to_le_bytes())
        .kv_raw("f64", 12, &2.25f64.to_le_bytes())
        .kv_raw("f32s", 9, &array(6, 2, &f32_bytes(&[0.5, -1.0])))
        .kv_raw("bools", 9, &array(7, 3, &[0, 1, 1]))
        .tensor("x", &[3, 2], 0, 0)
        .tensor("empty", &[0, 4], 0, 0)
        .data(&data);
    let g = b.parse().unwrap();
    assert_eq!(g.metadata("u8"), Some(&Value::U8(200)));
    assert_eq!(g.metadata("i8"), Some(&Value::I8(-2)));
    assert_eq!(g.metadata("u16"), Some(&Value::U16(60000)));
    assert_eq!(g.metadata("i16"), Some(&Value::I16(-300)));
    assert_eq!(g.get_u32("u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get_i32("i32").unwrap(), -7);
    assert_eq!(g.get_f32("f32").unwrap(), 1.5);
    assert!(g.get_bool("bool").unwrap());
    assert_eq!(g.get_str("string").unwrap(), "héllo");
    assert_eq!(g.get_str_array("strings").unwrap(), &["a", "bc"]);
    assert_eq!(
        g.get_array("nested").unwrap(),
        &Array::Array(vec![Array::I32(vec![1, -1]), Array::String(vec![])])
    );
    assert_eq!(g.get_u64("u64").unwrap(), u64::MAX);
    assert_eq!(g.metadata("i64"), Some(&Value::I64(i64::MIN)));
    assert_eq!(g.get_f32("f64").unwrap(), 2.25);
    assert_eq!(g.get_f32_array("f32s").unwrap(), &[0.5, -1.0]);
    assert_eq!(
        g.get_array("bools").unwrap(),
        &Array::Bool(vec![false, true, true])
    );
    // Integer getters convert between integer types when the value fits, else name the key.
    assert_eq!(g.get_u32("u8").unwrap(), 200);
    assert_eq!(g.get_usize("u16").unwrap(), 60000);
    let e = g.get_u32("u64").unwrap_err();
    assert!(matches!(&e.kind, GgufErrorKind::WrongType { key, .. } if key == "u64"));
    let e = g.get_u32("i32").unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::WrongType { .. }));

    let x = g.tensor("x").unwrap();
    assert_eq!(x.dtype(), DType::F32);
    assert_eq!(x.shape(), &[2, 3]);
    assert_eq!(x.bytes(), &data[..]);
    let empty = g.tensor("empty").unwrap();
    assert_eq!(empty.shape(), &[4, 0]);
    assert!(empty.bytes().is_empty());
}

#[test]
fn quantized_tensor_sizes_come_from_block_sizes() {
    for (type_id, dtype, block_bytes) in [
        (2u32, DType::Q4_0, 18usize),
        (3, DType::Q4_1, 20),
        (8, DType::Q8_0, 34),
        (1, DType::F16, 64),
    ] {
        // Two rows of 32 elements: two blocks (or 64 f16 values of 2 bytes).
        let size = if dtype == DType::F16 {
            128
        } else {
            2 * block_bytes
        };
        let g = Builder::new()
            .tensor("w", &[32, 2], type_id, 0)
            .data(&vec![7u8; size])
            .parse()
            .unwrap();
        let w = g.tensor("w").unwrap();
        assert_eq!(w.dtype(), dtype);
        assert_eq!(w.shape(), &[2, 32]);
        assert_eq!(w.bytes().len(), size);
        // One byte short of the data is out of bounds.
        let e = Builder::new()
            .tensor("w", &[32, 2], type_id, 0)
            .data(&vec![7u8; size - 1])
            .kind();
        assert!(
            matches!(&e, GgufErrorKind::OutOfBounds { tensor, .. } if tensor == "w"),
            "{e}"
        );
    }
    // Rows that are not whole blocks.
    let e = Builder::new()
        .tensor("odd", &[33, 2], 3, 0)
        .data(&[0; 200])
        .kind();
    assert!(
        matches!(&e, GgufErrorKind::NotWholeBlocks { tensor, dtype: DType::Q4_1, row: 33 } if tensor == "odd"),
        "{e}"
    );
}

#[test]
fn alignment_is_honoured_and_checked() {
    let g = Builder {
        alignment: 64,
        ..Builder::new()
            .kv_u32("general.alignment", 64)
            .tensor("a", &[4], 0, 0)
            .tensor("b", &[4], 0, 64)
            .data(&[1; 80])
    }
    .parse()
    .unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_start() % 64, 0);
    assert_eq!(g.tensor("b").unwrap().bytes(), &[1; 16]);

    let e = Builder::new().kv_u32("general.alignment", 48).kind();
    assert_eq!(e, GgufErrorKind::BadAlignment(48));
    let e = Builder::new().kv_u32("general.alignment", 0).kind();
    assert_eq!(e, GgufErrorKind::BadAlignment(0));
    let e = Builder::new().kv_str("general.alignment", "32").kind();
    assert!(matches!(e, GgufErrorKind::WrongType { .. }), "{e}");
    let e = Builder::new().tensor("m", &[4], 0, 8).data(&[0; 64]).kind();
    assert_eq!(
        e,
        GgufErrorKind::MisalignedOffset {
            tensor: "m".into(),
            offset: 8,
            alignment: 32
        }
    );
}

#[test]
fn bad_magic_and_versions() {
    let e = Builder {
        magic: b"GGML".to_vec(),
        ..Builder::new()
    }
    .kind();
    assert!(matches!(e, GgufErrorKind::BadMagic { .. }), "{e}");
    for bytes in [&b""[..], b"GG", b"GGUF", b"GGUF\x03\x00"] {
        let e = Gguf::from_bytes("t", bytes.to_vec()).unwrap_err();
        assert!(
            matches!(
                e.kind,
                GgufErrorKind::BadMagic { .. } | GgufErrorKind::Truncated { .. }
            ),
            "{e}"
        );
    }
    for version in [0, 1, 2, 4, u32::MAX] {
        let e = Builder {
            version,
            ..Builder::new()
        }
        .kind();
        assert_eq!(e, GgufErrorKind::UnsupportedVersion { version });
    }
    let e = Builder {
        version: 3u32.swap_bytes(),
        ..Builder::new()
    }
    .kind();
    assert_eq!(e, GgufErrorKind::BigEndian);
}

#[test]
fn huge_lengths_and_counts_are_errors_not_allocations() {
    // A key length of 2^60.
    let mut b = Builder::new();
    let mut e = (1u64 << 60).to_le_bytes().to_vec();
    e.extend(b"key");
    b.kvs.push(e);
    assert!(matches!(b.kind(), GgufErrorKind::Truncated { .. }));
    // A string value of 2^60 bytes.
    let mut v = (1u64 << 60).to_le_bytes().to_vec();
    v.extend(b"abc");
    let e = Builder::new().kv_raw("general.name", 8, &v).kind();
    assert!(
        matches!(&e, GgufErrorKind::Truncated { context, .. } if context.contains("general.name")),
        "{e}"
    );
    // u64::MAX lengths (which would overflow an offset computation).
    let e = Builder::new()
        .kv_raw("s", 8, &u64::MAX.to_le_bytes())
        .kind();
    assert!(matches!(e, GgufErrorKind::Truncated { .. }), "{e}");
    // Array counts of every element type.
    for elem_type in 0..=12u32 {
        for count in [1u64 << 40, u64::MAX, u64::MAX / 4 + 1] {
            let e = Builder::new()
                .kv_raw("arr", 9, &array(elem_type, count, &[0; 16]))
                .kind();
            assert!(
                matches!(&e, GgufErrorKind::CountTooLarge { context, .. } if context.contains("arr")),
                "type {elem_type} count {count}: {e}"
            );
        }
    }
    // Header counts.
    for count in [1u64 << 50, u64::MAX] {
        let e = Builder {
            kv_count: Some(count),
            ..Builder::new()
        }
        .kind();
        assert!(matches!(e, GgufErrorKind::CountTooLarge { .. }), "{e}");
        let e = Builder {
            tensor_count: Some(count),
            ..Builder::new()
        }
        .kind();
        assert!(matches!(e, GgufErrorKind::CountTooLarge { .. }), "{e}");
    }
}

#[test]
fn malformed_values() {
    let e = Builder::new().kv_raw("k", 13, &[0; 8]).kind();
    assert_eq!(
        e,
        GgufErrorKind::UnknownValueType {
            key: "k".into(),
            type_id: 13
        }
    );
    let e = Builder::new().kv_raw("k", 9, &array(99, 1, &[0; 8])).kind();
    assert!(matches!(
        e,
        GgufErrorKind::UnknownValueType { type_id: 99, .. }
    ));
    let e = Builder::new().kv_raw("flag", 7, &[2]).kind();
    assert!(
        matches!(e, GgufErrorKind::InvalidBool { value: 2, .. }),
        "{e}"
    );
    let e = Builder::new()
        .kv_raw("flags", 9, &array(7, 2, &[1, 9]))
        .kind();
    assert!(
        matches!(e, GgufErrorKind::InvalidBool { value: 9, .. }),
        "{e}"
    );
    // Invalid UTF-8 in a key and in a value.
    let mut key = 2u64.to_le_bytes().to_vec();
    key.extend([0xff, 0xfe]);
    key.extend(4u32.to_le_bytes());
    key.extend(1u32.to_le_bytes());
    let mut b = Builder::new();
    b.kvs.push(key);
    assert!(matches!(b.kind(), GgufErrorKind::InvalidUtf8 { .. }));
    let mut v = 1u64.to_le_bytes().to_vec();
    v.push(0x80);
    let e = Builder::new().kv_raw("name", 8, &v).kind();
    assert!(
        matches!(&e, GgufErrorKind::InvalidUtf8 { context, .. } if context.contains("name")),
        "{e}"
    );
    // Duplicate keys.
    let e = Builder::new().kv_u32("a", 1).kv_u32("a", 2).kind();
    assert_eq!(e, GgufErrorKind::DuplicateKey { key: "a".into() });
    // Arrays nested past the limit (a stack overflow would abort the test binary).
    let level = [9u32.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec()].concat();
    let mut value = level.repeat(100_000);
    value.extend(array(5, 0, &[]));
    let e = Builder::new().kv_raw("deep", 9, &value[..]).kind();
    assert_eq!(e, GgufErrorKind::NestingTooDeep { key: "deep".into() });
}

#[test]
fn malformed_tensor_infos() {
    // Unsupported and unknown ggml types name the tensor and the type id.
    for type_id in [14u32, 30, 99, u32::MAX] {
        let e = Builder::new()
            .tensor("output.weight", &[32, 4], type_id, 0)
            .data(&[0; 4096])
            .kind();
        assert!(
            matches!(&e, GgufErrorKind::UnsupportedTensorType { tensor, type_id: t, .. } if tensor == "output.weight" && *t == type_id),
            "{e}"
        );
        assert!(e.to_string().contains(&type_id.to_string()));
    }
    // Offsets past the end, including ones that would overflow.
    for offset in [32u64, 1 << 40, u64::MAX - 31] {
        let e = Builder::new()
            .tensor("t", &[4], 0, offset)
            .data(&[0; 16])
            .kind();
        assert!(
            matches!(&e, GgufErrorKind::OutOfBounds { tensor, .. } if tensor == "t"),
            "{e}"
        );
    }
    // Dimensions whose product overflows, or that exceed ggml's i64.
    for ne in [
        vec![1u64 << 40, 1 << 40],
        vec![u64::MAX],
        vec![1 << 63],
        vec![1 << 20, 1 << 20, 1 << 20, 1 << 20],
    ] {
        let e = Builder::new().tensor("big", &ne, 0, 0).kind();
        assert!(
            matches!(
                &e,
                GgufErrorKind::DimsOverflow { tensor, .. } | GgufErrorKind::OutOfBounds { tensor, .. }
                    if tensor == "big"
            ),
            "{ne:?}: {e}"
        );
    }
    // Elements that fit but bytes that overflow.
    let e = Builder::new().tensor("wide", &[1 << 62], 0, 0).kind();
    assert!(matches!(e, GgufErrorKind::DimsOverflow { .. }), "{e}");
    // Too many dimensions, including a huge n_dims (no allocation from it).
    let e = Builder::new().tensor("d5", &[1, 1, 1, 1, 1], 0, 0).kind();
    assert_eq!(
        e,
        GgufErrorKind::TooManyDims {
            tensor: "d5".into(),
            n_dims: 5
        }
    );
    let mut t = Vec::new();
    s(&mut t, "dn");
    t.extend(u32::MAX.to_le_bytes());
    let mut b = Builder::new();
    b.tensors.push(t);
    assert!(matches!(b.kind(), GgufErrorKind::TooManyDims { .. }));
    // Overlapping and duplicate tensors.
    let e = Builder::new()
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[16], 0, 32)
        .data(&[0; 128])
        .kind();
    assert!(matches!(e, GgufErrorKind::Overlap { .. }), "{e}");
    let e = Builder::new()
        .tensor("a", &[4], 0, 0)
        .tensor("a", &[4], 0, 32)
        .data(&[0; 64])
        .kind();
    assert_eq!(e, GgufErrorKind::DuplicateTensor { tensor: "a".into() });
}

#[test]
fn truncated_real_headers_are_errors() {
    let g = real();
    let header = &g.file_bytes()[..g.data_start()];
    // Every cut in the first bytes, then cut points spread over the whole header (the metadata
    // is most of it: 49152 tokens and 48900 merges).
    let mut cuts: Vec<usize> = (0..200).collect();
    let n = 150;
    cuts.extend((1..n).map(|i| header.len() * i / n));
    cuts.extend([header.len() - 1, header.len() - 8]);
    for cut in cuts {
        match Gguf::from_bytes("cut.gguf", header[..cut].to_vec()) {
            Ok(_) => panic!("a header cut at {cut} parsed"),
            Err(e) => assert!(
                matches!(
                    e.kind,
                    GgufErrorKind::BadMagic { .. }
                        | GgufErrorKind::Truncated { .. }
                        | GgufErrorKind::CountTooLarge { .. }
                        | GgufErrorKind::OutOfBounds { .. }
                ),
                "cut at {cut}: {e}"
            ),
        }
    }
    // The whole header without the data: every tensor is out of bounds.
    let e = Gguf::from_bytes("nodata.gguf", header.to_vec()).unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::OutOfBounds { .. }), "{e}");
    // The file less its last byte: the last tensor is out of bounds.
    let all = g.file_bytes();
    let e = Gguf::from_bytes("short.gguf", all[..all.len() - 1].to_vec()).unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::OutOfBounds { .. }), "{e}");
}

#[test]
fn corrupted_real_headers_never_panic() {
    let g = real();
    // The header up to the end of the tensor infos plus a little data: corruptions that make
    // the parse go further fail as out of bounds, which keeps each parse cheap.
    let header = g.file_bytes()[..g.data_start()].to_vec();
    // Deterministic corruptions: overwrite 8 bytes at pseudo-random places with large or
    // random values (lengths, counts, types, dims and offsets all get hit).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for _ in 0..120 {
        let mut bytes = header.clone();
        let at = (next() % (bytes.len() as u64 - 8)) as usize;
        let value = match next() % 4 {
            0 => u64::MAX,
            1 => 1 << 60,
            2 => next(),
            _ => next() % 64,
        };
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        if Gguf::from_bytes("fuzz.gguf", bytes).is_err() {
            errors += 1;
        }
    }
    // Without the data section nearly every file is an error; none panicked.
    assert!(errors > 0);
}
