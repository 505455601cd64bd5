//! Properties of the decoding strategies on small random models and random inputs.

use proptest::prelude::*;
use s2s_data::{BatchSize, Vocab};
use s2s_decode::Strategy as DecodeStrategy;
use s2s_decode::{
    decode_all, decode_all_parallel, BeamSearch, Greedy, Hypothesis, LengthPenalty, Sampling,
    StepDecoder,
};
use s2s_nn::{CellKind, Seq2Seq, Seq2SeqConfig};
use s2s_tensor::ops;

s2s_tensor::for_each_backend! {
    type B = TestBackend;

    const MAX_LEN: usize = 10;

    fn model(seed: u64, lstm: bool) -> Seq2Seq<B> {
        let device = device();
        let config = Seq2SeqConfig::new(14, 9)
            .with_d_embed(6)
            .with_d_hidden(8)
            .with_d_decoder(10)
            .with_d_attention(6)
            .with_cell(if lstm { CellKind::Lstm } else { CellKind::Gru });
        s2s_tensor::backend::seeded_module::<B, _>(&device, seed, || config.init(&device))
    }

    fn sources() -> impl Strategy<Value = Vec<Vec<u32>>> {
        prop::collection::vec(prop::collection::vec(4u32..14, 1..7), 1..7)
    }

    fn decode<S: DecodeStrategy<B, Seq2Seq<B>>>(
        m: &Seq2Seq<B>,
        s: &S,
        src: &[Vec<u32>],
        batch: usize,
    ) -> Vec<Vec<Hypothesis>> {
        decode_all(m, s, src, BatchSize::Sentences(batch), &device())
    }

    fn one_at_a_time<S: DecodeStrategy<B, Seq2Seq<B>>>(
        m: &Seq2Seq<B>,
        s: &S,
        src: &[Vec<u32>],
    ) -> Vec<Vec<Hypothesis>> {
        src.iter()
            .map(|x| decode(m, s, std::slice::from_ref(x), 1).remove(0))
            .collect()
    }

    fn same(a: &[Vec<Hypothesis>], b: &[Vec<Hypothesis>]) -> Result<(), TestCaseError> {
        prop_assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            prop_assert_eq!(x.len(), y.len());
            for (h, g) in x.iter().zip(y) {
                prop_assert_eq!(&h.tokens, &g.tokens);
                prop_assert!(
                    (h.score - g.score).abs() <= 1e-5 * (1.0 + g.score.abs()),
                    "{} vs {}",
                    h.score,
                    g.score
                );
            }
        }
        Ok(())
    }

    fn penalty() -> impl Strategy<Value = LengthPenalty> {
        prop_oneof![
            Just(LengthPenalty::None),
            (0.0f32..1.5).prop_map(LengthPenalty::Average),
            (0.0f32..1.5).prop_map(LengthPenalty::Gnmt),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(16)))]

        /// Beam size 1 equals greedy, token for token (and in score).
        #[test]
        fn beam_one_is_greedy(src in sources(), seed in 0u64..1000, lstm in any::<bool>()) {
            let m = model(seed, lstm);
            let greedy = decode(&m, &Greedy::new(MAX_LEN), &src, 4);
            let beam = decode(&m, &BeamSearch::new(1, MAX_LEN), &src, 4);
            same(&greedy, &beam)?;
        }

        /// Batched beam search equals the same search run one sentence at a time, and n-best
        /// lists are sorted by score and hold distinct hypotheses.
        #[test]
        fn batched_beam_equals_sentence_by_sentence(
            src in sources(), seed in 0u64..1000, beam in 2usize..6, n_best in 1usize..4,
            lp in penalty(), min_len in 0usize..3, ratio in prop::option::of(1.0f32..3.0),
            batch in 1usize..8,
        ) {
            let m = model(seed, seed % 2 == 0);
            let mut s = BeamSearch::new(beam, MAX_LEN);
            s.n_best = n_best;
            s.length_penalty = lp;
            s.min_len = min_len;
            s.max_len_ratio = ratio;
            // Batches of four or more also run with the rows of finished sentences left in
            // place (up to a quarter of the rows), the larger ones after dropping them.
            let batched = decode(&m, &s, &src, batch);
            same(&batched, &one_at_a_time(&m, &s, &src))?;
            for (x, hyps) in src.iter().zip(&batched) {
                prop_assert!(!hyps.is_empty() && hyps.len() <= n_best.min(beam));
                prop_assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score));
                for (i, h) in hyps.iter().enumerate() {
                    prop_assert!(hyps[..i].iter().all(|g| g.tokens != h.tokens), "duplicate hypothesis");
                    let cap = ratio.map_or(MAX_LEN, |r| MAX_LEN.min((r * x.len() as f32).ceil() as usize)).max(min_len);
                    prop_assert!(h.tokens.len() <= cap);
                }
            }
        }

        /// Every strategy's output for a sentence is independent of the batch and of its
        /// position in it.
        #[test]
        fn every_strategy_is_independent_of_batching(src in sources(), seed in 0u64..1000, rotate in 0usize..7, size in 1usize..5) {
            let m = model(seed, false);
            let r = rotate % src.len();
            let mut rotated = src.clone();
            rotated.rotate_left(r);
            let mut diverse = BeamSearch::new(4, MAX_LEN);
            diverse.groups = 2;
            diverse.diversity = 0.5;
            diverse.n_best = 3;
            let mut sample = Sampling::new(seed, MAX_LEN);
            sample.n = 2;
            sample.top_k = 4;
            sample.temperature = 1.3;
            let check = |a: Vec<Vec<Hypothesis>>, b: Vec<Vec<Hypothesis>>| {
                let mut b = b;
                b.rotate_right(r);
                same(&a, &b)
            };
            check(one_at_a_time(&m, &Greedy::new(MAX_LEN), &src), decode(&m, &Greedy::new(MAX_LEN), &rotated, size))?;
            check(one_at_a_time(&m, &BeamSearch::new(3, MAX_LEN), &src), decode(&m, &BeamSearch::new(3, MAX_LEN), &rotated, size))?;
            check(one_at_a_time(&m, &diverse, &src), decode(&m, &diverse, &rotated, size))?;
            check(one_at_a_time(&m, &sample, &src), decode(&m, &sample, &rotated, size))?;
        }

        /// Sharing the batches out among worker threads gives what one thread gives, for
        /// every strategy.
        #[test]
        fn workers_decode_as_one_thread_does(src in sources(), seed in 0u64..1000, workers in 2usize..5, size in 1usize..4, lstm in any::<bool>()) {
            let m = model(seed, lstm);
            let mut diverse = BeamSearch::new(4, MAX_LEN);
            diverse.groups = 2;
            diverse.diversity = 0.5;
            let mut sample = Sampling::new(seed, MAX_LEN);
            sample.n = 2;
            sample.top_p = 0.9;
            let batch = BatchSize::Sentences(size);
            let d = device();
            same(&decode_all_parallel(&m, &Greedy::new(MAX_LEN), &src, batch, &d, workers), &decode(&m, &Greedy::new(MAX_LEN), &src, size))?;
            same(&decode_all_parallel(&m, &BeamSearch::new(3, MAX_LEN), &src, batch, &d, workers), &decode(&m, &BeamSearch::new(3, MAX_LEN), &src, size))?;
            same(&decode_all_parallel(&m, &diverse, &src, batch, &d, workers), &decode(&m, &diverse, &src, size))?;
            same(&decode_all_parallel(&m, &sample, &src, batch, &d, workers), &decode(&m, &sample, &src, size))?;
        }

        /// Sampling with the same seed repeats itself; top-k never emits a token outside the k
        /// most likely at its step.
        #[test]
        fn sampling_is_seeded_and_top_k_holds(src in sources(), seed in 0u64..1000, k in 1usize..4) {
            let m = model(seed, true);
            let mut s = Sampling::new(seed, MAX_LEN);
            s.top_k = k;
            s.n = 3;
            let a = decode(&m, &s, &src, 4);
            same(&a, &decode(&m, &s, &src, 2))?;
            let device = device();
            for (x, hyps) in src.iter().zip(&a) {
                for h in hyps {
                    let (memory, mut state) = StepDecoder::start(&m, ops::id_matrix::<B>(std::slice::from_ref(x), x.len(), &device), &[x.len()]);
                    // The sampler decoded 3 rows per source, with the decoding cache.
                    let memory = m.with_decoding_cache(&memory, true);
                    let mut prev = Vocab::SOS as usize;
                    let ended = h.tokens.len() < MAX_LEN;
                    let steps: Vec<usize> = h.tokens.iter().map(|&t| t as usize).chain(ended.then_some(Vocab::EOS as usize)).collect();
                    for tok in steps {
                        let (logits, next, _) = StepDecoder::step(&m, &memory, ops::index_tensor::<B>(&[prev], &device), state);
                        state = next;
                        let l = ops::to_vec_f32(logits);
                        let better = l.iter().filter(|&&v| v > l[tok]).count();
                        prop_assert!(better < k, "token {} has {} better tokens with top-k {}", tok, better, k);
                        prev = tok;
                    }
                }
            }
        }
    }

    #[test]
    fn top_k_one_is_greedy() {
        let m = model(3, false);
        let src = vec![vec![4, 5, 6, 7], vec![8, 9]];
        let mut s = Sampling::new(9, MAX_LEN);
        s.top_k = 1;
        let greedy = decode(&m, &Greedy::new(MAX_LEN), &src, 2);
        let sampled = decode(&m, &s, &src, 2);
        for (g, x) in greedy.iter().zip(&sampled) {
            assert_eq!(g[0].tokens, x[0].tokens);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(8)))]

        /// With a diversity penalty far above any log-probability gap, the four groups take
        /// four different first tokens, `<eos>` included (an empty hypothesis is one group's
        /// choice). With one step allowed, the four best hypotheses are those first tokens.
        #[test]
        fn diverse_groups_take_different_first_tokens(seed in 0u64..1000, src in sources()) {
            let m = model(seed, seed % 2 == 0);
            let mut d = BeamSearch::new(4, 1);
            d.groups = 4;
            d.diversity = 1000.0;
            d.n_best = 4;
            for hyps in decode(&m, &d, &src, 3) {
                let firsts: std::collections::HashSet<Option<&u32>> =
                    hyps.iter().map(|h| h.tokens.first()).collect();
                prop_assert_eq!(firsts.len(), 4, "{:?}", hyps);
            }
        }
    }
}
