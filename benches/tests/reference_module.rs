//! The reference PyTorch module (`python/s2s_reference`) computes what s2s computes, across
//! the configurations: GRU and LSTM, Bahdanau and Luong (general, dot) attention, one and two
//! layers, bidirectional and unidirectional encoders, with and without the bridge. For each, a
//! small model is trained for 300 steps (so that greedy outputs end and their argmaxes are not
//! near ties); its weights go to PyTorch's names in a safetensors file (`s2s_nn::weights`),
//! s2s's teacher-forced logits of a batch and greedy outputs of 1,000 test words to
//! `expected.json`; `python/tests/check_reference.py` loads the weights with
//! `load_state_dict(strict=True)` and compares: logits within 1e-4 relative, every greedy
//! output equal.
//!
//! It needs the project's virtualenv with torch, as `pytorch_parity` does.

use s2s_data::{TextCodec, Tokenizer, TrainingBatch};
use s2s_decode::{decode_all, Greedy};
use s2s_nn::{weights, AttentionKind, CellKind, Seq2SeqConfig};
use s2s_tensor::backend::{Autodiff, DefaultBackend as B};
use s2s_tensor::ops;
use s2s_train::{train, Checkpoint, TrainConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Trains `model` for 300 steps on CMUdict and writes the comparison folder.
fn prepare(model: Seq2SeqConfig, dir: &Path) -> PathBuf {
    let splits = s2s_benches::cmudict();
    let codec = TextCodec::build(&splits.train, Tokenizer::Chars, Tokenizer::Whitespace, 1);
    let config = TrainConfig::new()
        .with_epochs(1)
        .with_max_steps(Some(300))
        .with_batch_size(64)
        .with_lr(3e-3)
        .with_max_decode_len(40);
    let run = dir.join("run");
    train::<Autodiff<B>>(
        "g2p",
        model,
        codec,
        &splits.train,
        &splits.dev[..200],
        &config,
        &run,
        &Default::default(),
    )
    .expect("training");
    let device = Default::default();
    let best = run.join("best");
    let checkpoint = Checkpoint::<B>::load(&best, &device).expect("the trained model loads");
    let out = dir.join("compare");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(best.join("config.json"), out.join("config.json")).unwrap();
    let tensors = weights::named_tensors(&checkpoint.model);
    std::fs::write(
        out.join("model.safetensors"),
        weights::to_safetensors(&tensors, None).unwrap(),
    )
    .unwrap();
    let sources: Vec<Vec<u32>> = splits.test[..1000]
        .iter()
        .map(|p| checkpoint.codec.encode_source(&p.source).0)
        .collect();
    let greedy: Vec<Vec<u32>> = decode_all(
        &checkpoint.model,
        &Greedy::new(40),
        &sources,
        s2s_data::BatchSize::Sentences(64),
        &device,
    )
    .into_iter()
    .map(|h| h[0].tokens.clone())
    .collect();
    // A teacher-forced batch: 16 test words with their pronunciations.
    let examples = checkpoint.codec.encode_pairs(&splits.test[..16]);
    let batch = TrainingBatch::<B>::new(&examples.iter().collect::<Vec<_>>(), &device);
    let logits = ops::to_vec_f32(checkpoint.model.forward(
        batch.source.clone(),
        &batch.source_lengths,
        batch.target_input.clone(),
    ));
    let rows = |t: burn::tensor::Tensor<B, 2, burn::tensor::Int>| {
        let [n, w] = t.dims();
        let v = ops::to_vec_i64(t);
        (0..n)
            .map(|i| v[i * w..(i + 1) * w].to_vec())
            .collect::<Vec<_>>()
    };
    let expected = serde_json::json!({
        "forced": {
            "source": rows(batch.source),
            "lengths": batch.source_lengths,
            "target_input": rows(batch.target_input),
        },
        "logits": logits,
        "sources": sources,
        "greedy": greedy,
        "max_len": 40,
    });
    std::fs::write(out.join("expected.json"), expected.to_string()).unwrap();
    out
}

#[test]
fn reference_module_computes_what_s2s_computes() {
    let Some(py) = s2s_benches::torch_python("reference_module") else {
        return;
    };
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../python/tests/check_reference.py");
    let settings = [
        (CellKind::Gru, AttentionKind::Bahdanau, 1, true, true),
        (CellKind::Lstm, AttentionKind::General, 2, true, true),
        (CellKind::Gru, AttentionKind::Dot, 2, false, false),
        (CellKind::Lstm, AttentionKind::Bahdanau, 2, false, true),
    ];
    for (cell, attention, layers, bidirectional, bridge) in settings {
        let what = format!("{cell:?} {attention:?} {layers} layers, bidirectional {bidirectional}, bridge {bridge}");
        let d_memory = if bidirectional { 64 } else { 32 };
        let model = Seq2SeqConfig::new(0, 0)
            .with_d_embed(24)
            .with_d_hidden(32)
            .with_d_decoder(if attention == AttentionKind::Dot {
                d_memory
            } else {
                48
            })
            .with_d_attention(32)
            .with_cell(cell)
            .with_attention(attention)
            .with_encoder_layers(layers)
            .with_decoder_layers(layers)
            .with_bidirectional(bidirectional)
            .with_bridge(bridge);
        let dir = tempfile::tempdir().unwrap();
        let folder = prepare(model, dir.path());
        let out = Command::new(&py)
            .arg(&script)
            .arg(&folder)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{what}: {stdout}");
        assert!(
            out.status.success(),
            "{what}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
