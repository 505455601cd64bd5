//! Ensembles decode as one model: their step is the mean of the models' log-probabilities,
//! an ensemble of one model decodes as that model, and the strategies' properties (batch
//! invariance, beam 1 = greedy) hold for ensembles too.

use proptest::prelude::*;
use s2s_data::{BatchSize, Vocab};
use s2s_decode::{decode_all, BeamSearch, Ensemble, Greedy, Hypothesis, Sampling, StepDecoder};
use s2s_nn::{CellKind, Seq2Seq, Seq2SeqConfig};
use s2s_tensor::ops;

s2s_tensor::for_each_backend! {
    type B = TestBackend;

    fn model(seed: u64, cell: CellKind, d_hidden: usize) -> Seq2Seq<B> {
        let device = device();
        let config = Seq2SeqConfig::new(14, 9)
            .with_d_embed(6)
            .with_d_hidden(d_hidden)
            .with_d_decoder(10)
            .with_d_attention(6)
            .with_cell(cell);
        s2s_tensor::backend::seeded_module::<B, _>(&device, seed, || config.init(&device))
    }

    /// Three models of different cells and sizes (an ensemble needs only the same
    /// vocabularies).
    fn three() -> Ensemble<Seq2Seq<B>> {
        Ensemble::new(vec![
            model(1, CellKind::Gru, 8),
            model(2, CellKind::Lstm, 8),
            model(3, CellKind::Gru, 12),
        ])
        .unwrap()
    }

    /// Decodes a list of sources.
    type Decoder<'a> = &'a dyn Fn(&[Vec<u32>]) -> Vec<Vec<Hypothesis>>;

    fn sources() -> impl Strategy<Value = Vec<Vec<u32>>> {
        prop::collection::vec(prop::collection::vec(4u32..14, 1..7), 1..7)
    }

    fn same(a: &[Vec<Hypothesis>], b: &[Vec<Hypothesis>]) -> Result<(), TestCaseError> {
        prop_assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            prop_assert_eq!(x.len(), y.len());
            for (h, g) in x.iter().zip(y) {
                prop_assert_eq!(&h.tokens, &g.tokens);
                prop_assert!((h.score - g.score).abs() <= 1e-5 * (1.0 + g.score.abs()), "{} vs {}", h.score, g.score);
            }
        }
        Ok(())
    }

    #[test]
    fn an_empty_ensemble_is_refused() {
        assert!(Ensemble::<Seq2Seq<B>>::new(Vec::new()).is_none());
    }

    /// One step of the ensemble gives the mean of the models' log-softmaxed logits, worked
    /// out here in f64 from each model's own step, and the mean of their attention.
    #[test]
    fn a_step_is_the_mean_of_the_log_probabilities() {
        let device = device();
        let ensemble = three();
        let source = ops::id_matrix::<B>(&[vec![4, 5, 6], vec![7, 8, 0]], 3, &device);
        let lengths = [3, 2];
        let tokens = ops::index_tensor::<B>(&[Vocab::SOS as usize; 2], &device);
        let (memory, state) = ensemble.start(source.clone(), &lengths);
        let (got, _, attention) = ensemble.step(&memory, tokens.clone(), state);
        let got = ops::to_vec_f32(got);
        let attention = ops::to_vec_f32(attention);
        let mut want = vec![0.0f64; got.len()];
        let mut want_attention = vec![0.0f64; attention.len()];
        for m in ensemble.models() {
            let (memory, state) = StepDecoder::<B>::start(m, source.clone(), &lengths);
            let (logits, _, a) = StepDecoder::<B>::step(m, &memory, tokens.clone(), state);
            let logits = ops::to_vec_f32(logits);
            for (row, w) in logits.chunks(9).zip(want.chunks_mut(9)) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
                let log_sum = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
                for (x, w) in row.iter().zip(w) {
                    *w += (*x as f64 - log_sum) / 3.0;
                }
            }
            for (x, w) in ops::to_vec_f32(a).iter().zip(&mut want_attention) {
                *w += *x as f64 / 3.0;
            }
        }
        for (g, w) in got.iter().zip(&want).chain(attention.iter().zip(&want_attention)) {
            assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }

    /// An ensemble of one model decodes as the model: greedy and a 3-best beam search.
    #[test]
    fn an_ensemble_of_one_is_the_model() {
        let device = device();
        let m = model(4, CellKind::Lstm, 8);
        let one = Ensemble::new(vec![m.clone()]).unwrap();
        let src: Vec<Vec<u32>> = vec![vec![4, 5, 6, 7], vec![8], vec![9, 10, 11, 12, 13]];
        let mut beam = BeamSearch::new(4, 8);
        beam.n_best = 3;
        for batch in [1, 3] {
            let size = BatchSize::Sentences(batch);
            same(&decode_all(&one, &Greedy::new(8), &src, size, &device), &decode_all(&m, &Greedy::new(8), &src, size, &device)).unwrap();
            same(&decode_all(&one, &beam, &src, size, &device), &decode_all(&m, &beam, &src, size, &device)).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(8)))]

        /// Beam size 1 equals greedy for an ensemble, token for token and in score.
        #[test]
        fn ensemble_beam_one_is_greedy(src in sources()) {
            let e = three();
            let size = BatchSize::Sentences(3);
            let greedy = decode_all(&e, &Greedy::new(10), &src, size, &device());
            let beam = decode_all(&e, &BeamSearch::new(1, 10), &src, size, &device());
            same(&beam, &greedy)?;
        }

        /// An ensemble's outputs do not depend on the batch: greedy, beam search with 3-best
        /// lists and seeded sampling, decoded one source at a time and in batches of 4.
        #[test]
        fn ensemble_outputs_do_not_depend_on_the_batch(src in sources()) {
            let e = three();
            let mut beam = BeamSearch::new(3, 10);
            beam.n_best = 3;
            let sampling = Sampling::new(7, 10);
            let one = |s: Decoder| -> Vec<Vec<Hypothesis>> {
                src.iter().map(|x| s(std::slice::from_ref(x)).remove(0)).collect()
            };
            let greedy = |x: &[Vec<u32>]| decode_all(&e, &Greedy::new(10), x, BatchSize::Sentences(4), &device());
            let beamed = |x: &[Vec<u32>]| decode_all(&e, &beam, x, BatchSize::Sentences(4), &device());
            same(&greedy(&src), &one(&greedy))?;
            same(&beamed(&src), &one(&beamed))?;
            let sampled = decode_all(&e, &sampling, &src, BatchSize::Sentences(4), &device());
            let alone = decode_all(&e, &sampling, &src, BatchSize::Sentences(1), &device());
            same(&sampled, &alone)?;
        }
    }
}
