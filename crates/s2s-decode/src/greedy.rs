//! Batched greedy decoding.

use crate::driver::drive;
use crate::search::{ExtendRows, LogitsProcessors};
use crate::{Hypothesis, StepDecoder, Strategy};
use burn::tensor::backend::Backend;
use s2s_data::InferenceBatch;

/// Picks the most likely token at every step. All rows advance together; rows that produced
/// `<eos>` leave the batch, which stops when every row has finished or after `max_len` tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Greedy {
    /// Maximum number of output tokens (`<eos>` excluded).
    pub max_len: usize,
    /// Minimum number of output tokens before `<eos>` is allowed.
    pub min_len: usize,
    /// Adjustments to the log-probabilities before choosing.
    pub processors: LogitsProcessors,
    /// Also return each step's attention weights.
    pub keep_attention: bool,
}

impl Greedy {
    /// Greedy decoding of at most `max_len` tokens.
    pub fn new(max_len: usize) -> Self {
        Greedy {
            max_len,
            min_len: 0,
            processors: LogitsProcessors::default(),
            keep_attention: false,
        }
    }

    /// Returns attention weights with every hypothesis.
    pub fn with_attention(mut self, keep: bool) -> Self {
        self.keep_attention = keep;
        self
    }
}

impl<B: Backend, M: StepDecoder<B>> Strategy<B, M> for Greedy {
    fn decode(&self, model: &M, batch: &InferenceBatch<B>) -> Vec<Vec<Hypothesis>> {
        let search = ExtendRows::new(
            model.special_tokens(),
            &batch.source_lengths,
            batch.source.dims()[1],
            1,
            self.max_len,
            self.min_len,
            &self.processors,
            self.keep_attention,
            |_, logp: &[f32]| argmax(logp).0,
        );
        drive(model, batch, self.keep_attention, search)
    }
}

/// Index and value of the largest entry (the first one on ties).
pub(crate) fn argmax(values: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_all;
    use proptest::prelude::*;
    use s2s_data::BatchSize;
    use s2s_nn::{CellKind, Seq2SeqConfig};

    s2s_tensor::for_each_backend! {
        type TB = TestBackend;

        fn model(cell: CellKind) -> s2s_nn::Seq2Seq<TB> {
            let device = device();
            let config = Seq2SeqConfig::new(14, 9)
                .with_d_embed(5)
                .with_d_hidden(8)
                .with_d_decoder(10)
                .with_d_attention(6)
                .with_cell(cell);
            s2s_tensor::backend::seeded_module::<TB, _>(&device, 5, || config.init(&device))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases(20)))]
            /// Greedy outputs do not depend on batch size, batch composition or input order.
            #[test]
            fn outputs_independent_of_batching(
                sources in prop::collection::vec(prop::collection::vec(4u32..14, 0..8), 1..12),
                size in 1usize..6,
                rotate in 0usize..12,
                lstm in any::<bool>(),
            ) {
                let device = device();
                let m = model(if lstm { CellKind::Lstm } else { CellKind::Gru });
                let greedy = Greedy::new(12);
                let alone: Vec<Vec<u32>> = sources.iter().map(|s| {
                    decode_all(&m, &greedy, std::slice::from_ref(s), BatchSize::Sentences(1), &device)[0][0].tokens.clone()
                }).collect();
                let r = rotate % sources.len();
                let mut rotated = sources.clone();
                rotated.rotate_left(r);
                let batched = decode_all(&m, &greedy, &rotated, BatchSize::Sentences(size), &device);
                let mut got: Vec<Vec<u32>> = batched.into_iter().map(|h| h[0].tokens.clone()).collect();
                got.rotate_right(r);
                prop_assert_eq!(got, alone);
            }
        }

        #[test]
        fn attention_rows_cover_the_true_source() {
            let device = device();
            let m = model(CellKind::Gru);
            let greedy = Greedy::new(4).with_attention(true);
            let out = decode_all(
                &m,
                &greedy,
                &[vec![4, 5, 6], vec![7]],
                BatchSize::Sentences(2),
                &device,
            );
            for (h, len) in out.iter().map(|h| &h[0]).zip([3usize, 1]) {
                for row in h.attention.as_ref().unwrap() {
                    assert_eq!(row.len(), len);
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                }
            }
        }
    }
}
