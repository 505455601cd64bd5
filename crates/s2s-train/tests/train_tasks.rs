//! End-to-end training tests on synthetic tasks, and checkpoint round trips.

mod common;

use common::small_model;
use s2s_data::corpus::{group_references, SyntheticTask};
use s2s_data::{TextCodec, Tokenizer};
use s2s_nn::{CellKind, Seq2SeqConfig};
use s2s_train::{evaluate, train, Checkpoint, TrainConfig};

s2s_tensor::for_each_backend! {
    type AB = TestAutodiffBackend;
    type B = TestBackend;

    /// The reverse task trains to >= 99% exact match on held-out strings; the saved checkpoint
    /// reloads and decodes identically. A test on flex and tch (below): 1,350 training steps
    /// take too long on wgpu's software Vulkan device in CI; wgpu training is checked by
    /// `parity.rs` (losses equal to flex's over Adam steps) and by the test after this one.
    #[allow(dead_code)]
    pub(super) fn check_reverse_task_reaches_99_percent() {
        let pairs = SyntheticTask::Reverse.generate(4200, 1, 7, 8, 3);
        let (train_pairs, rest) = pairs.split_at(3600);
        let (valid_pairs, test_pairs) = rest.split_at(300);
        let codec = TextCodec::build(train_pairs, Tokenizer::Chars, Tokenizer::Chars, 1);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("reverse");
        let config = TrainConfig::new()
            .with_epochs(12)
            .with_batch_size(32)
            .with_lr(3e-3)
            .with_max_decode_len(12);
        let device = device();
        let report = train::<AB>(
            "reverse",
            small_model(),
            codec,
            train_pairs,
            valid_pairs,
            &config,
            &out,
            &device,
        )
        .unwrap();
        let last = report.history.last().unwrap();
        assert!(last.train_loss < report.history[0].train_loss);
        let ckpt = Checkpoint::<B>::load(&out, &device).unwrap();
        let refs = group_references(test_pairs);
        let (scores, predictions) = evaluate(&ckpt.model, &ckpt.codec, &refs, 64, 12, &device);
        assert!(
            scores.exact_match >= 0.99,
            "test exact match {:.4} ({:?})",
            scores.exact_match,
            report.history
        );
        // Batch size does not change the outputs.
        let (_, one_by_one) = evaluate(&ckpt.model, &ckpt.codec, &refs[..40], 1, 12, &device);
        assert_eq!(one_by_one, predictions[..40]);
    }

    /// A short LSTM run with scheduled sampling and label smoothing learns the doubling task a
    /// little and writes a loadable checkpoint; a second save replaces it without leftovers,
    /// and a save over a folder that is not a model folder is refused.
    /// Sixteen steps (128 pairs, two epochs), the teacher-forcing ratio falling from 1 to 0.5
    /// over the first twelve: on wgpu (llvmpipe in CI) 500 pairs took three minutes.
    #[test]
    fn scheduled_sampling_and_checkpoint_replacement() {
        let pairs = SyntheticTask::Double.generate(160, 1, 4, 5, 9);
        let (train_pairs, valid_pairs) = pairs.split_at(128);
        let codec = TextCodec::build(train_pairs, Tokenizer::Chars, Tokenizer::Chars, 1);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("double");
        let config = TrainConfig::new()
            .with_epochs(2)
            .with_batch_size(16)
            .with_label_smoothing(0.1)
            .with_teacher_forcing("linear:1:0.5:12".parse().unwrap());
        let device = device();
        let model = small_model()
            .with_cell(CellKind::Lstm)
            .with_encoder_layers(2)
            .with_dropout(0.1);
        let report = train::<AB>(
            "double",
            model,
            codec,
            train_pairs,
            valid_pairs,
            &config,
            &out,
            &device,
        )
        .unwrap();
        assert_eq!(report.history.len(), 2);
        // It learns: the validation loss falls every epoch, from below the loss of a uniform
        // guess (ln of the target vocabulary's size; on flex 2.08 then 1.93, against 2.64).
        let uniform = (ckpt_vocab(&out) as f64).ln();
        let losses: Vec<f64> = report.history.iter().map(|e| e.valid_loss).collect();
        assert!(
            losses[0] < uniform && losses[1] < losses[0],
            "validation losses {losses:?}, uniform {uniform}"
        );
        // The run folder's best model, saved again over itself.
        let ckpt = Checkpoint::<B>::load(&out, &device).unwrap();
        ckpt.save(&out.join("best")).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["best", "config.json", "last", "metrics.jsonl"]);
        let again = Checkpoint::<B>::load(&out, &device).unwrap();
        assert_eq!(again.meta.task, "double");
        // A model is never saved over a folder that is not a model folder (the run folder).
        let err = ckpt.save(&out).unwrap_err().to_string();
        assert!(err.contains("not an s2s model folder"), "{err}");
        assert!(out.join("last/training_state.json").is_file());
    }

    /// The size of the target vocabulary of the model in `dir`.
    fn ckpt_vocab(dir: &std::path::Path) -> usize {
        Checkpoint::<B>::load(dir, &device()).unwrap().codec.target_vocab.len()
    }

    /// Beam n-best lists: each hypothesis's ids and score.
    type NBest = Vec<Vec<(Vec<u32>, f32)>>;

    /// Greedy outputs (text) and beam n-best lists of `words`.
    fn decoded(ckpt: &Checkpoint<B>, words: &[&str]) -> (Vec<String>, NBest) {
        use s2s_decode::{decode_all, BeamSearch, Greedy};
        let sources: Vec<Vec<u32>> = words.iter().map(|w| ckpt.codec.encode_source(w).0).collect();
        let batch = s2s_data::BatchSize::Sentences(4);
        let greedy = decode_all(&ckpt.model, &Greedy::new(12), &sources, batch, &device())
            .into_iter()
            .map(|h| ckpt.codec.decode_target(&h[0].tokens))
            .collect();
        let strategy = BeamSearch {
            n_best: 2,
            ..BeamSearch::new(4, 12)
        };
        let beam = decode_all(&ckpt.model, &strategy, &sources, batch, &device())
            .into_iter()
            .map(|hs| hs.into_iter().map(|h| (h.tokens, h.score)).collect())
            .collect();
        (greedy, beam)
    }

    /// On every backend: a model folder of layout 1 (`model.mpk`, written by s2s before
    /// model.safetensors) loads and decodes what that build decoded; saved again it is a
    /// layout-2 folder with the same weights; its weights through a `.pt` file and back
    /// (`s2s export`, `s2s import`) make a model with the same weights and the same greedy
    /// outputs and beam n-best lists with scores.
    #[test]
    fn weights_survive_every_file_format() {
        use s2s_nn::{torch_file, weights};
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1");
        let device = device();
        let old = Checkpoint::<B>::load(&fixture, &device).unwrap();
        assert_eq!(old.meta.format, s2s_train::checkpoint::MPK_FORMAT);
        let input = std::fs::read_to_string(fixture.join("input.txt")).unwrap();
        let words: Vec<&str> = input.lines().collect();
        let expected = std::fs::read_to_string(fixture.join("expected-greedy.txt")).unwrap();
        let (greedy, beam) = decoded(&old, &words);
        assert_eq!(greedy, expected.lines().collect::<Vec<_>>());

        let dir = tempfile::tempdir().unwrap();
        old.save(&dir.path().join("saved")).unwrap();
        let saved = Checkpoint::<B>::load(&dir.path().join("saved"), &device).unwrap();
        assert_eq!(saved.meta.format, s2s_train::checkpoint::FORMAT);
        let tensors = weights::named_tensors(&old.model);
        assert_eq!(weights::named_tensors(&saved.model), tensors);

        let pt = torch_file::write_state_dict(&tensors).unwrap();
        let back = torch_file::read_state_dict(&pt).unwrap();
        assert_eq!(back, tensors);
        let imported = Checkpoint::<B> {
            meta: saved.meta.clone(),
            codec: saved.codec.clone(),
            model: weights::from_named_tensors::<B>(&saved.meta.model, back, &device).unwrap(),
        };
        assert_eq!(weights::named_tensors(&imported.model), tensors);
        assert_eq!(decoded(&imported, &words), (greedy, beam));
    }

    #[test]
    fn loading_a_broken_folder_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let device = device();
        let err = Checkpoint::<B>::load(&dir.path().join("missing"), &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing") && err.contains("not a model folder"),
            "{err}"
        );
        std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
        let err = Checkpoint::<B>::load(dir.path(), &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.json"), "{err}");
        // A model folder, then broken three ways: each error names the file and the problem.
        let pairs = SyntheticTask::Copy.generate(20, 1, 4, 5, 1);
        let codec = TextCodec::build(&pairs, Tokenizer::Chars, Tokenizer::Chars, 1);
        let config = Seq2SeqConfig::new(codec.source_vocab.len(), codec.target_vocab.len())
            .with_d_embed(3)
            .with_d_hidden(4)
            .with_d_decoder(5)
            .with_d_attention(2);
        let good = dir.path().join("good");
        Checkpoint::<B> {
            meta: s2s_train::CheckpointMeta {
                format: s2s_train::checkpoint::FORMAT,
                task: "copy".into(),
                model: config.clone(),
                source_tokenizer: Tokenizer::Chars,
                target_tokenizer: Tokenizer::Chars,
                max_decode_len: 5,
                summary: serde_json::Value::Null,
                s2s_version: String::new(),
            },
            codec,
            model: s2s_tensor::backend::seeded_module::<B, _>(&device, 1, || config.init(&device)),
        }
        .save(&good)
        .unwrap();
        Checkpoint::<B>::load(&good, &device).unwrap();
        let broken = |name: &str, file: &str, change: &dyn Fn(Vec<u8>) -> Vec<u8>| {
            let copy = dir.path().join(name);
            std::fs::create_dir(&copy).unwrap();
            for f in ["config.json", "source_vocab.json", "target_vocab.json", "model.safetensors"] {
                let bytes = std::fs::read(good.join(f)).unwrap();
                let bytes = if f == file { change(bytes) } else { bytes };
                std::fs::write(copy.join(f), bytes).unwrap();
            }
            Checkpoint::<B>::load(&copy, &device).unwrap_err().to_string()
        };
        let err = broken("format", "config.json", &|b| {
            String::from_utf8(b).unwrap().replace("\"format\": 2", "\"format\": 99").into_bytes()
        });
        assert!(err.contains("config.json") && err.contains("format 99 is not supported"), "{err}");
        let err = broken("vocab", "target_vocab.json", &|_| br#"{"tokens":["<pad>","<sos>","<eos>","<unk>","a"]}"#.to_vec());
        assert!(err.contains("target_vocab.json") && err.contains("tokens, but the model expects"), "{err}");
        let err = broken("truncated", "model.safetensors", &|b| b[..b.len() / 2].to_vec());
        assert!(err.contains("model.safetensors") && err.contains("cannot read weights"), "{err}");
    }
}

s2s_tensor::__s2s_if_flex! {
    #[test]
    fn flex_reverse_task_reaches_99_percent() {
        flex::check_reverse_task_reaches_99_percent();
    }
}

s2s_tensor::__s2s_if_tch! {
    #[test]
    fn tch_reverse_task_reaches_99_percent() {
        tch::check_reverse_task_reaches_99_percent();
    }
}
