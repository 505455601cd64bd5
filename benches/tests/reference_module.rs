//! Models travel between s2s and PyTorch's reference module (`python/s2s_reference`) in both
//! directions, across the configurations: GRU and LSTM, Bahdanau and Luong (general, dot)
//! attention, one and two layers, bidirectional and unidirectional encoders, with and without
//! the bridge. Each model is trained for 300 steps (so that greedy outputs end and their
//! argmaxes are not near ties).
//!
//! - s2s to PyTorch: trained in s2s, the weights written under PyTorch's names as safetensors
//!   (`s2s_nn::weights`) and as a `.pt` state_dict (`s2s_nn::torch_file`), s2s's
//!   teacher-forced logits of a batch and greedy outputs of 1,000 test words in
//!   `expected.json`; `python/tests/check_reference.py` loads both files with
//!   `load_state_dict(strict=True)` and compares: logits within 1e-4 relative, every greedy
//!   output equal.
//! - PyTorch to s2s: trained in PyTorch (`python/tests/train_reference.py`) and saved with
//!   `torch.save(model.state_dict())`; s2s imports the `.pt` file into a model folder as
//!   `s2s import` does, loads it, and compares with what PyTorch computed: logits within 1e-4
//!   relative, every greedy output equal, as ids and as text.
//!
//! It needs the project's virtualenv with torch, as `pytorch_parity` does.

use burn::tensor::{Int, Tensor};
use s2s_data::{Pair, TextCodec, Tokenizer, TrainingBatch};
use s2s_decode::{decode_all, Greedy};
use s2s_nn::{torch_file, weights, AttentionKind, CellKind, Seq2Seq, Seq2SeqConfig};
use s2s_tensor::backend::{Autodiff, DefaultBackend as B};
use s2s_tensor::ops;
use s2s_train::checkpoint::{CheckpointMeta, FORMAT};
use s2s_train::{train, Checkpoint, TrainConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

const MAX_LEN: usize = 40;

/// The configurations both directions are checked with (small, so that each trains in
/// seconds): cell, attention, layers, bidirectional, bridge.
fn configurations() -> Vec<(String, Seq2SeqConfig)> {
    let settings = [
        (CellKind::Gru, AttentionKind::Bahdanau, 1, true, true),
        (CellKind::Lstm, AttentionKind::General, 2, true, true),
        (CellKind::Gru, AttentionKind::Dot, 2, false, false),
        (CellKind::Lstm, AttentionKind::Bahdanau, 2, false, true),
    ];
    settings
        .into_iter()
        .map(|(cell, attention, layers, bidirectional, bridge)| {
            let what = format!(
                "{cell:?} {attention:?} {layers} layers, bidirectional {bidirectional}, \
                 bridge {bridge}"
            );
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
            (what, model)
        })
        .collect()
}

/// The rows of an id matrix.
fn rows(t: Tensor<B, 2, Int>) -> Vec<Vec<i64>> {
    let [n, w] = t.dims();
    let v = ops::to_vec_i64(t);
    (0..n).map(|i| v[i * w..(i + 1) * w].to_vec()).collect()
}

/// The greedy outputs (ids) of `sources`.
fn greedy_outputs(model: &Seq2Seq<B>, sources: &[Vec<u32>]) -> Vec<Vec<u32>> {
    decode_all(
        model,
        &Greedy::new(MAX_LEN),
        sources,
        s2s_data::BatchSize::Sentences(64),
        &Default::default(),
    )
    .into_iter()
    .map(|h| h[0].tokens.clone())
    .collect()
}

/// Runs a Python script of `python/tests` with `args`; panics with its output on failure.
fn python(py: &Path, script: &str, args: &[&Path], what: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../python/tests")
        .join(script);
    let out = Command::new(py).arg(&script).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{what}: {stdout}");
    assert!(
        out.status.success(),
        "{what}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Trains `model` for 300 steps on CMUdict and writes the comparison folder.
fn prepare(model: Seq2SeqConfig, dir: &Path) -> PathBuf {
    let splits = s2s_benches::cmudict();
    let codec = TextCodec::build(&splits.train, Tokenizer::Chars, Tokenizer::Whitespace, 1);
    let config = TrainConfig::new()
        .with_epochs(1)
        .with_max_steps(Some(300))
        .with_batch_size(64)
        .with_lr(3e-3)
        .with_max_decode_len(MAX_LEN);
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
    std::fs::write(
        out.join("model.pt"),
        torch_file::write_state_dict(&tensors).unwrap(),
    )
    .unwrap();
    let sources: Vec<Vec<u32>> = splits.test[..1000]
        .iter()
        .map(|p| checkpoint.codec.encode_source(&p.source).0)
        .collect();
    let greedy = greedy_outputs(&checkpoint.model, &sources);
    // A teacher-forced batch: 16 test words with their pronunciations.
    let examples = checkpoint.codec.encode_pairs(&splits.test[..16]);
    let batch = TrainingBatch::<B>::new(&examples.iter().collect::<Vec<_>>(), &device);
    let logits = ops::to_vec_f32(checkpoint.model.forward(
        batch.source.clone(),
        &batch.source_lengths,
        batch.target_input.clone(),
    ));
    let expected = serde_json::json!({
        "forced": {
            "source": rows(batch.source),
            "lengths": batch.source_lengths,
            "target_input": rows(batch.target_input),
        },
        "logits": logits,
        "sources": sources,
        "greedy": greedy,
        "max_len": MAX_LEN,
    });
    std::fs::write(out.join("expected.json"), expected.to_string()).unwrap();
    out
}

#[test]
fn reference_module_computes_what_s2s_computes() {
    let Some(py) = s2s_benches::torch_python("reference_module") else {
        return;
    };
    for (what, model) in configurations() {
        let dir = tempfile::tempdir().unwrap();
        let folder = prepare(model, dir.path());
        python(&py, "check_reference.py", &[&folder], &what);
    }
}

/// `word<TAB>phonemes` lines.
fn write_pairs(path: &Path, pairs: &[Pair]) {
    let text: String = pairs
        .iter()
        .map(|p| format!("{}\t{}\n", p.source, p.target))
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn models_trained_in_pytorch_decode_identically_in_s2s() {
    let Some(py) = s2s_benches::torch_python("reference_module") else {
        return;
    };
    let splits = s2s_benches::cmudict();
    let codec = TextCodec::build(&splits.train, Tokenizer::Chars, Tokenizer::Whitespace, 1);
    let test = &splits.test[..1000];
    let device = Default::default();
    for (what, model) in configurations() {
        let dir = tempfile::tempdir().unwrap();
        // The configuration and vocabularies, as an untrained model folder.
        let mut model = model;
        model.src_vocab = codec.source_vocab.len();
        model.tgt_vocab = codec.target_vocab.len();
        let meta = CheckpointMeta {
            format: FORMAT,
            task: "g2p".into(),
            model: model.clone(),
            source_tokenizer: codec.source_tokenizer.clone(),
            target_tokenizer: codec.target_tokenizer.clone(),
            max_decode_len: MAX_LEN,
            summary: serde_json::Value::Null,
            s2s_version: String::new(),
        };
        let setup = Checkpoint::<B> {
            meta: meta.clone(),
            codec: codec.clone(),
            model: model.init(&device),
        };
        setup.save(&dir.path().join("setup")).unwrap();
        write_pairs(&dir.path().join("train.tsv"), &splits.train);
        write_pairs(&dir.path().join("test.tsv"), test);
        python(&py, "train_reference.py", &[dir.path()], &what);

        // What `s2s import --from trained.pt` does, then the folder loaded as `s2s decode`
        // loads it.
        for (file, says) in [
            ("whole_model.pt", "s2s_reference.model.Seq2Seq"),
            ("checkpoint.pt", "\"model\" is a dictionary"),
        ] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap();
            let err = torch_file::read_state_dict(&bytes).unwrap_err().to_string();
            assert!(err.contains(says), "{what}: {file}: {err}");
        }
        let bytes = std::fs::read(dir.path().join("trained.pt")).unwrap();
        let tensors = torch_file::read_state_dict(&bytes).unwrap();
        let imported = weights::from_named_tensors::<B>(&model, tensors, &device).unwrap();
        let folder = dir.path().join("imported");
        Checkpoint {
            meta,
            codec: codec.clone(),
            model: imported,
        }
        .save(&folder)
        .unwrap();
        let checkpoint = Checkpoint::<B>::load(&folder, &device).unwrap();
        // The folder that Python wrote itself holds the same model.
        let python_folder = Checkpoint::<B>::load(&dir.path().join("python_folder"), &device)
            .expect("the model folder written by s2s_reference loads");
        assert_eq!(
            weights::named_tensors(&python_folder.model),
            weights::named_tensors(&checkpoint.model),
            "{what}"
        );
        assert!(
            s2s_train::checkpoint::codec_difference(&python_folder.codec, &checkpoint.codec)
                .is_none()
        );

        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("python.json")).unwrap())
                .unwrap();
        let matrix = |key: &str| -> Tensor<B, 2, Int> {
            let rows: Vec<Vec<u32>> =
                serde_json::from_value(expected["forced"][key].clone()).expect("an id matrix");
            ops::id_matrix::<B>(&rows, rows[0].len(), &device)
        };
        let lengths: Vec<usize> =
            serde_json::from_value(expected["forced"]["lengths"].clone()).unwrap();
        let logits = ops::to_vec_f32(checkpoint.model.forward(
            matrix("source"),
            &lengths,
            matrix("target_input"),
        ));
        let want: Vec<f32> = serde_json::from_value(expected["logits"].clone()).unwrap();
        assert_eq!(logits.len(), want.len(), "{what}");
        let max_rel = logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0.0f32, f32::max);

        let sources: Vec<Vec<u32>> = test
            .iter()
            .map(|p| checkpoint.codec.encode_source(&p.source).0)
            .collect();
        let python_sources: Vec<Vec<u32>> =
            serde_json::from_value(expected["sources"].clone()).unwrap();
        assert_eq!(sources, python_sources, "{what}: the tokenizers differ");
        let outputs = greedy_outputs(&checkpoint.model, &sources);
        let python_greedy: Vec<Vec<u32>> =
            serde_json::from_value(expected["greedy"].clone()).unwrap();
        let texts: Vec<String> = serde_json::from_value(expected["texts"].clone()).unwrap();
        let equal = outputs
            .iter()
            .zip(&python_greedy)
            .filter(|(a, b)| a == b)
            .count();
        let equal_texts = outputs
            .iter()
            .zip(&texts)
            .filter(|(ids, text)| checkpoint.codec.decode_target(ids) == **text)
            .count();
        eprintln!(
            "{what}: PyTorch-trained model in s2s: logits max rel {max_rel:.2e}, greedy \
             {equal}/{} equal ({equal_texts} as text)",
            sources.len()
        );
        assert!(max_rel <= 1e-4, "{what}: logits differ by {max_rel}");
        assert_eq!(equal, sources.len(), "{what}: greedy outputs differ");
        assert_eq!(equal_texts, sources.len(), "{what}: texts differ");
    }
}

/// BPE models travel as Hugging Face `tokenizer.json` inside `config.json`: the `tokenizers`
/// package loads a folder's tokenizers and splits 500 Tatoeba sentence pairs into the tokens
/// and ids s2s gives them, and joins them back as s2s does (`python/tests/check_tokenizers.py`).
#[test]
fn bpe_tokenizers_load_in_hugging_face_tokenizers() {
    let Some(py) = s2s_benches::torch_python("reference_module") else {
        return;
    };
    let tsv = s2s_benches::project_root().join("../shared/data/eng-fra.tsv");
    let text = std::fs::read_to_string(&tsv).unwrap();
    let pairs: Vec<Pair> = text
        .lines()
        .step_by(20)
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(Pair {
                source: f.next()?.to_string(),
                target: f.next()?.to_string(),
            })
        })
        .collect();
    let bpe = |texts: Vec<&str>| {
        Tokenizer::Bpe(s2s_data::Subword::train(texts.into_iter(), 800, 2).unwrap())
    };
    let source = bpe(pairs.iter().map(|p| p.source.as_str()).collect());
    let target = bpe(pairs.iter().map(|p| p.target.as_str()).collect());
    let codec = TextCodec::build(&pairs, source, target, 1);
    let model = Seq2SeqConfig::new(codec.source_vocab.len(), codec.target_vocab.len())
        .with_d_embed(4)
        .with_d_hidden(4)
        .with_d_decoder(4)
        .with_d_attention(4);
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("bpe");
    Checkpoint::<B> {
        meta: CheckpointMeta {
            format: FORMAT,
            task: "tsv".into(),
            model: model.clone(),
            source_tokenizer: codec.source_tokenizer.clone(),
            target_tokenizer: codec.target_tokenizer.clone(),
            max_decode_len: 50,
            summary: serde_json::Value::Null,
            s2s_version: String::new(),
        },
        codec: codec.clone(),
        model: model.init(&device),
    }
    .save(&folder)
    .unwrap();
    // Sentences the tokenizers were not trained on, with accents, digits and punctuation.
    let sample: Vec<&str> = text.lines().skip(7).step_by(331).take(500).collect();
    let sentences: Vec<(String, String)> = sample
        .iter()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect();
    let tokens = |t: &Tokenizer, s: &str| t.tokenize(s);
    let expected = serde_json::json!({
        "sentences": sentences,
        "source": sentences.iter().map(|(s, _)| tokens(&codec.source_tokenizer, s)).collect::<Vec<_>>(),
        "target": sentences.iter().map(|(_, t)| tokens(&codec.target_tokenizer, t)).collect::<Vec<_>>(),
        "source_ids": sentences.iter().map(|(s, _)| codec.encode_source(s).0).collect::<Vec<_>>(),
        "detok": sentences
            .iter()
            .map(|(_, t)| codec.target_tokenizer.detokenize(&tokens(&codec.target_tokenizer, t)))
            .collect::<Vec<_>>(),
    });
    std::fs::write(folder.join("expected.json"), expected.to_string()).unwrap();
    python(&py, "check_tokenizers.py", &[&folder], "BPE tokenizers");
}
