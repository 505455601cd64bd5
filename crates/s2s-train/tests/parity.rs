//! Backend parity: one set of weights, saved as a checkpoint on the reference backend (flex)
//! and loaded on each backend, gives the same logits (f32, 1e-4 relative) and the same greedy
//! outputs for 1,000 CMUdict words; a few training steps from the same weights and batches give
//! losses that agree to 1e-3; a checkpoint trained on a backend loads on flex with the same
//! outputs (checkpoints are portable).
//!
//! Every parameter's gradient of one batch agrees with flex's to 1e-4 of its largest value.
//!
//! The model is trained briefly on flex first (a few seconds), so that greedy decisions are
//! made with real margins, as in use.
//!
//! The tests are instantiated for every backend but flex (`for_each_backend_but_flex!`): on
//! flex they would compare flex with itself. A build with flex alone has no parity tests, and
//! the helpers below are then unused.
#![allow(dead_code, unused_imports)]

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use s2s_data::batch::plan_training_batches;
use s2s_data::corpus::{read_cmudict, CmudictOptions};
use s2s_data::{BatchSize, Example, Splits, TextCodec, Tokenizer, TrainingBatch};
use s2s_decode::{decode_all, Greedy};
use s2s_nn::{Seq2Seq, Seq2SeqConfig};
use s2s_tensor::backend::{Autodiff, Flex};
use s2s_tensor::ops;
use s2s_tensor::{S2sAutodiffBackend, S2sBackend};
use s2s_train::trainer::clip_global_norm;
use s2s_train::{batch_gradients, train, AdamConfig, Checkpoint, TrainConfig};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const WORDS: usize = 1000;
const MAX_LEN: usize = 30;

fn cmudict() -> &'static Splits {
    static SPLITS: OnceLock<Splits> = OnceLock::new();
    SPLITS.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cmudict/cmudict.dict");
        read_cmudict(&path, CmudictOptions::default()).expect("the repository's CMUdict reads")
    })
}

/// A checkpoint of a small G2P model trained for 300 steps on flex, shared by the tests.
fn reference_checkpoint() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let splits = cmudict();
        let codec = TextCodec::build(&splits.train, Tokenizer::Chars, Tokenizer::Whitespace, 1);
        let model = Seq2SeqConfig::new(0, 0)
            .with_d_embed(32)
            .with_d_hidden(64)
            .with_d_decoder(64)
            .with_d_attention(64);
        let config = TrainConfig::new()
            .with_epochs(1)
            .with_max_steps(Some(300))
            .with_batch_size(64)
            .with_lr(3e-3)
            .with_max_decode_len(MAX_LEN);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("g2p");
        train::<Autodiff<Flex>>(
            "g2p",
            model,
            codec,
            &splits.train,
            &splits.dev[..200],
            &config,
            &out,
            &Default::default(),
        )
        .expect("reference training on flex");
        (dir, out)
    })
    .1
}

fn test_words(codec: &TextCodec) -> Vec<Vec<u32>> {
    cmudict()
        .test
        .iter()
        .take(WORDS)
        .map(|p| codec.encode_source(&p.source).0)
        .collect()
}

/// The first `n` training batches of 64 words, in a fixed order.
fn batches(codec: &TextCodec, n: usize) -> Vec<Vec<Example>> {
    let train = codec.encode_pairs(&cmudict().train);
    let lengths: Vec<(usize, usize)> = train
        .iter()
        .map(|e| (e.source.len(), e.target.len()))
        .collect();
    plan_training_batches(&lengths, BatchSize::Sentences(64), 9)
        .into_iter()
        .take(n)
        .map(|b| b.into_iter().map(|i| train[i].clone()).collect())
        .collect()
}

fn logits<B: S2sBackend>(model: &Seq2Seq<B>, batch: &[Example], device: &B::Device) -> Vec<f32> {
    let refs: Vec<&Example> = batch.iter().collect();
    let b = TrainingBatch::<B>::new(&refs, device);
    ops::to_vec_f32(model.forward(b.source, &b.source_lengths, b.target_input))
}

fn assert_close(got: &[f32], want: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: sizes differ");
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let err = (a - b).abs() / (1.0 + b.abs());
        if err > worst {
            (worst, at) = (err, i);
        }
    }
    assert!(
        worst <= rel,
        "{what}: relative error {worst:e} at {at} ({} vs {}) exceeds {rel:e}",
        got[at],
        want[at]
    );
}

/// Runs `steps` training steps (Adam 1e-3, global-norm clipping 1.0) and returns the losses
/// and the trained model.
fn train_steps<AB: S2sAutodiffBackend>(
    mut model: Seq2Seq<AB>,
    batches: &[Vec<Example>],
    device: &AB::Device,
) -> (Vec<f32>, Seq2Seq<AB>) {
    let mut optim = AdamConfig::new().init::<AB>(2);
    let mut losses = Vec::new();
    for batch in batches {
        let refs: Vec<&Example> = batch.iter().collect();
        // The trainer's path: on wgpu one worker, on flex and tch two.
        let out = batch_gradients(&model, &refs, 0.0, 2, device, |m, b, _| {
            m.forward(b.source.clone(), &b.source_lengths, b.target_input.clone())
        });
        losses.push(out.loss as f32);
        let mut grads = out.grads;
        clip_global_norm(&model, &mut grads, 1.0);
        model = optim.step(1e-3, model, grads);
    }
    (losses, model)
}

/// Every parameter's gradient of one batch's mean loss (label smoothing 0.1, one worker),
/// flattened, with the parameter's path, in visiting order.
fn gradients<AB: S2sAutodiffBackend>(
    model: &Seq2Seq<AB>,
    batch: &[Example],
    device: &AB::Device,
) -> Vec<(String, Vec<f32>)> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    let refs: Vec<&Example> = batch.iter().collect();
    let out = batch_gradients(model, &refs, 0.1, 1, device, |m, b, _| {
        m.forward(b.source.clone(), &b.source_lengths, b.target_input.clone())
    });
    struct Collect<'a, AB: AutodiffBackend> {
        grads: &'a burn::optim::GradientsParams,
        path: Vec<String>,
        out: Vec<(String, Vec<f32>)>,
        _backend: std::marker::PhantomData<AB>,
    }
    impl<AB: AutodiffBackend> ModuleVisitor<AB> for Collect<'_, AB> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let g = self
                .grads
                .get::<AB::InnerBackend, D>(param.id)
                .expect("every parameter has a gradient");
            self.out.push((
                self.path.join("."),
                ops::to_vec_f32(g.flatten::<1>(0, D - 1)),
            ));
        }
    }
    let mut collect = Collect::<AB> {
        grads: &out.grads,
        path: Vec::new(),
        out: Vec::new(),
        _backend: std::marker::PhantomData,
    };
    model.visit(&mut collect);
    collect.out
}

s2s_tensor::for_each_backend_but_flex! {
    fn load() -> (Checkpoint<Flex>, Checkpoint<TestBackend>) {
        let dir = reference_checkpoint();
        let reference = Checkpoint::<Flex>::load(dir, &Default::default()).unwrap();
        let here = Checkpoint::<TestBackend>::load(dir, &device()).unwrap();
        (reference, here)
    }

    /// The same weights give the same teacher-forced logits.
    #[test]
    fn logits_match_flex() {
        let (reference, here) = load();
        for batch in batches(&reference.codec, 3) {
            let want = logits(&reference.model, &batch, &Default::default());
            let got = logits(&here.model, &batch, &device());
            assert_close(&got, &want, 1e-4, "logits");
        }
    }

    /// The same weights give the same greedy outputs for 1,000 CMUdict test words.
    /// One batch's gradient of every parameter (the backward pass of every fused kernel,
    /// label smoothing on) equals flex's within 1e-4 of that parameter's largest gradient
    /// value.
    #[test]
    fn gradients_match_flex() {
        let dir = reference_checkpoint();
        let flex_device = Default::default();
        let reference = Checkpoint::<Autodiff<Flex>>::load(dir, &flex_device).unwrap();
        let here = Checkpoint::<TestAutodiffBackend>::load(dir, &device()).unwrap();
        let batch = &batches(&reference.codec, 1)[0];
        let want = gradients(&reference.model, batch, &flex_device);
        let got = gradients(&here.model, batch, &device());
        assert_eq!(got.len(), want.len());
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            // Relative to the parameter's largest gradient value, so that small entries are
            // held to the same standard as large ones.
            let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(scale > 0.0, "{name}: flex's gradient is zero");
            let worst = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-4 * scale, "gradient of {name}: max difference {worst:e}, largest value {scale:e}");
        }
    }

    #[test]
    fn greedy_outputs_match_flex_on_1000_words() {
        let (reference, here) = load();
        let words = test_words(&reference.codec);
        let greedy = Greedy::new(MAX_LEN);
        let want = decode_all(&reference.model, &greedy, &words, BatchSize::Sentences(64), &Default::default());
        let got = decode_all(&here.model, &greedy, &words, BatchSize::Sentences(64), &device());
        let differ: Vec<usize> = (0..words.len()).filter(|&i| got[i][0].tokens != want[i][0].tokens).collect();
        assert!(differ.is_empty(), "{} of {} outputs differ, first at word {:?}", differ.len(), words.len(), differ.first());
        // The model is trained: most outputs end before the length limit.
        let ended = want.iter().filter(|h| h[0].tokens.len() < MAX_LEN).count();
        assert!(ended > WORDS * 9 / 10, "only {ended} outputs ended");
    }

    /// Training from the same weights on the same batches gives the same losses (1e-3), and
    /// the trained model, saved on this backend, loads on flex with the same logits.
    #[test]
    fn training_matches_flex_and_checkpoints_are_portable() {
        let (reference, here) = load();
        let data = batches(&reference.codec, 6);
        let flex_device = Default::default();
        let dir = reference_checkpoint();
        let start_flex = Checkpoint::<Autodiff<Flex>>::load(dir, &flex_device).unwrap().model;
        let start_here = Checkpoint::<TestAutodiffBackend>::load(dir, &device()).unwrap().model;
        let (want, _) = train_steps(start_flex, &data[..5], &flex_device);
        let (got, trained) = train_steps(start_here, &data[..5], &device());
        for (step, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "step {step}: loss {a} vs flex {b} ({got:?} vs {want:?})");
        }
        let trained = trained.valid();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trained");
        Checkpoint { meta: here.meta.clone(), codec: here.codec.clone(), model: trained.clone() }.save(&path).unwrap();
        let on_flex = Checkpoint::<Flex>::load(&path, &flex_device).unwrap();
        assert_close(
            &logits(&on_flex.model, &data[5], &flex_device),
            &logits(&trained, &data[5], &device()),
            1e-4,
            "logits of a checkpoint trained here, loaded on flex",
        );
    }
}
