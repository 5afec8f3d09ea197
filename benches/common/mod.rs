//! Helpers shared by the benchmarks.
// Each bench uses only part of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

/// `LANGADAPT_BENCH_THREADS`, or all cores.
pub fn bench_threads() -> usize {
    env_number("LANGADAPT_BENCH_THREADS").unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A numeric environment variable, if set.
pub fn env_number(key: &str) -> Option<usize> {
    std::env::var(key).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{key}={v} is not a number")))
}

/// The Python with torch and transformers for the peers: `LANGADAPT_BENCH_PYTHON`, or `python3`.
pub fn bench_python() -> String {
    std::env::var("LANGADAPT_BENCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Replaces bench `name`'s section of RESULTS.md (between its markers), keeping anything else in the file.
pub fn update_results(path: &Path, name: &str, section: &str) {
    let begin = format!("<!-- {name}: begin (written by `cargo bench --bench {name}`) -->");
    let end = format!("<!-- {name}: end -->");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{begin}\n{section}{end}\n");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &old[..b], &old[e + end.len()..].trim_start_matches('\n'))
        }
        _ if old.is_empty() => {
            format!("# Benchmark results\n\nHow to run and what is compared: benches/README.md.\n\n{block}")
        }
        _ => format!("{}\n{block}", old.trim_end()),
    };
    std::fs::write(path, new).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A deterministic random checkpoint (N(0, 0.02) weights, unit norms) in the Hugging Face layout.
/// Peak resident memory of this process so far (`VmHWM` in /proc/self/status), bytes; 0 where unreadable.
pub fn peak_rss_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

pub fn write_random_llama(dir: &Path, vocab: usize) {
    if dir.join("model.safetensors").is_file() {
        return;
    }
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": 512,
        "intermediate_size": 1376, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
        "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let dev = Device::Cpu;
    let mut rng = XorShift(0x5EED_0060);
    let mut w = BTreeMap::new();
    let (h, i) = (512, 1376);
    // Uniform with standard deviation 0.02, from a fixed seed.
    let bound = 0.02 * 3f32.sqrt();
    let mut randn = |r: usize, c: usize| {
        let v: Vec<f32> = (0..r * c).map(|_| (rng.unit() * 2.0 - 1.0) * bound).collect();
        Tensor::from_vec(v, (r, c), &dev).unwrap()
    };
    w.insert("model.embed_tokens.weight".to_string(), randn(vocab, h));
    w.insert("lm_head.weight".to_string(), randn(vocab, h));
    w.insert("model.norm.weight".to_string(), Tensor::ones(h, DType::F32, &dev).unwrap());
    for l in 0..8 {
        let p = format!("model.layers.{l}");
        for name in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            w.insert(format!("{p}.self_attn.{name}.weight"), randn(h, h));
        }
        w.insert(format!("{p}.mlp.gate_proj.weight"), randn(i, h));
        w.insert(format!("{p}.mlp.up_proj.weight"), randn(i, h));
        w.insert(format!("{p}.mlp.down_proj.weight"), randn(h, i));
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            w.insert(format!("{p}.{norm}.weight"), Tensor::ones(h, DType::F32, &dev).unwrap());
        }
    }
    langadapt::model::write_sharded(&w, dir, u64::MAX).unwrap();
}

/// xorshift64: deterministic numbers without a dependency.
pub struct XorShift(pub u64);

impl XorShift {
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}
