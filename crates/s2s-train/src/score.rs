//! Forced decoding: the log-probability that a model gives a given target for a source,
//! token by token, from the teacher-forced pass (what `marian-scorer` and fairseq's
//! `--score-reference` compute). It rescores n-best lists, finds training pairs the model
//! finds unlikely, and is the oracle of the decoding tests: a hypothesis that beam search
//! returns must score what this scores its tokens.

use burn::tensor::activation::log_softmax;
use s2s_data::batch::plan_inference_batches;
use s2s_data::{BatchSize, Example, TrainingBatch};
use s2s_nn::Seq2Seq;
use s2s_tensor::S2sBackend;

/// The log-probability of every target token of every example, `<eos>` last
/// (`target.len() + 1` values per example), in input order. Examples are run in batches of
/// `batch_size` sorted by source length; the values do not depend on the batching beyond
/// float rounding.
pub fn token_log_probs<B: S2sBackend>(
    model: &Seq2Seq<B>,
    examples: &[Example],
    batch_size: usize,
    device: &B::Device,
) -> Vec<Vec<f32>> {
    let lengths: Vec<usize> = examples.iter().map(|e| e.source.len()).collect();
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); examples.len()];
    for plan in plan_inference_batches(&lengths, BatchSize::Sentences(batch_size.max(1))) {
        let rows: Vec<&Example> = plan.iter().map(|&i| &examples[i]).collect();
        let batch = TrainingBatch::<B>::new(&rows, device);
        // [rows, steps, vocab] -> the log-probability of each step's target, [rows, steps].
        let logits = model.forward(batch.source, &batch.source_lengths, batch.target_input);
        let [n, steps, _] = logits.dims();
        let picked = log_softmax(logits, 2).gather(2, batch.target_output.unsqueeze_dim(2));
        let values = s2s_tensor::ops::to_vec_f32(picked.reshape([n * steps]));
        for (r, &i) in plan.iter().enumerate() {
            let len = batch.target_lengths[r];
            out[i] = values[r * steps..r * steps + len].to_vec();
        }
    }
    out
}

/// The total log-probability of each example's target (`<eos>` included), summed in f64.
pub fn total_log_probs<B: S2sBackend>(
    model: &Seq2Seq<B>,
    examples: &[Example],
    batch_size: usize,
    device: &B::Device,
) -> Vec<f64> {
    token_log_probs(model, examples, batch_size, device)
        .iter()
        .map(|t| t.iter().map(|&v| v as f64).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;
    use s2s_nn::Seq2SeqConfig;

    s2s_tensor::for_each_backend! {
        type B = TestBackend;

        /// Each token's value is the log-softmax of the model's own step logits at that
        /// token, computed here one step at a time with the step API; batching changes
        /// nothing beyond rounding.
        #[test]
        fn token_values_are_the_step_log_probs() {
            let device = device();
            let config = Seq2SeqConfig::new(11, 9)
                .with_d_embed(4)
                .with_d_hidden(6)
                .with_d_decoder(5)
                .with_d_attention(3);
            let model: Seq2Seq<B> =
                s2s_tensor::backend::seeded_module::<B, _>(&device, 2, || config.init(&device));
            let examples: Vec<Example> = (0..5u32)
                .map(|i| Example {
                    source: (0..1 + i % 3).map(|j| 4 + (i + j) % 7).collect(),
                    target: (0..i % 4).map(|j| 3 + (i * 2 + j) % 6).collect(),
                })
                .collect();
            let scores = token_log_probs(&model, &examples, 2, &device);
            // Another batching: the same values up to rounding (libtorch's kernels differ
            // with the padded shape in the last bit).
            for (a, b) in scores.iter().zip(token_log_probs(&model, &examples, 64, &device)) {
                assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() < 1e-5, "{x} vs {y}");
                }
            }
            for (e, got) in examples.iter().zip(&scores) {
                assert_eq!(got.len(), e.target.len() + 1);
                let src = s2s_tensor::ops::id_matrix::<B>(std::slice::from_ref(&e.source), e.source.len(), &device);
                let (memory, mut state) = model.start(src, &[e.source.len()]);
                let mut input = s2s_data::Vocab::SOS;
                for (t, &want) in e.target.iter().chain([&s2s_data::Vocab::EOS]).enumerate() {
                    let out = model.step(&memory, s2s_tensor::ops::index_tensor::<B>(&[input as usize], &device), state);
                    let logp: Tensor<B, 2> = log_softmax(out.logits, 1);
                    let row = s2s_tensor::ops::to_vec_f32(logp);
                    assert!((got[t] - row[want as usize]).abs() < 1e-5, "step {t}: {} vs {}", got[t], row[want as usize]);
                    state = out.state;
                    input = want;
                }
            }
        }
    }
}
