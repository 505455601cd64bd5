//! Validation: loss over the validation pairs, and decoding scored against references.

use crate::loss::masked_nll_sum;
use crate::metrics::{score, Scores};
use s2s_data::batch::plan_inference_batches;
use s2s_data::{BatchSize, Example, Reference, TextCodec, TrainingBatch};
use s2s_decode::{decode_all_parallel, Greedy, StepDecoder, Strategy};
use s2s_nn::Seq2Seq;
use s2s_tensor::S2sBackend;

/// Mean validation loss per target token (no smoothing), over length-sorted batches.
pub fn validation_loss<B: S2sBackend>(
    model: &Seq2Seq<B>,
    examples: &[Example],
    batch_size: usize,
    device: &B::Device,
) -> f64 {
    let lengths: Vec<usize> = examples.iter().map(|e| e.source.len()).collect();
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for plan in plan_inference_batches(&lengths, BatchSize::Sentences(batch_size)) {
        let refs: Vec<&Example> = plan.iter().map(|&i| &examples[i]).collect();
        let batch = TrainingBatch::<B>::new(&refs, device);
        let logits = model.forward(batch.source, &batch.source_lengths, batch.target_input);
        let (s, n) = masked_nll_sum(logits, batch.target_output, 0.0);
        sum += s2s_tensor::ops::to_vec_f32(s)[0] as f64;
        count += n;
    }
    sum / count.max(1) as f64
}

/// Greedy-decodes the sources of `references` and scores them; also returns the predictions
/// (as text) in input order.
pub fn evaluate<B: S2sBackend>(
    model: &Seq2Seq<B>,
    codec: &TextCodec,
    references: &[Reference],
    batch_size: usize,
    max_len: usize,
    device: &B::Device,
) -> (Scores, Vec<String>) {
    let greedy = Greedy::new(max_len);
    evaluate_with(model, codec, references, &greedy, batch_size, 1, device)
}

/// Decodes the sources of `references` with `strategy`, in batches of `batch_size` shared out
/// among `workers` threads ([`decode_all_parallel`]), and scores the best hypothesis of each;
/// also returns the predictions (as text) in input order.
pub fn evaluate_with<B, M, S>(
    model: &M,
    codec: &TextCodec,
    references: &[Reference],
    strategy: &S,
    batch_size: usize,
    workers: usize,
    device: &B::Device,
) -> (Scores, Vec<String>)
where
    B: S2sBackend,
    M: StepDecoder<B> + Sync,
    S: Strategy<B, M> + Sync,
{
    let sources: Vec<Vec<u32>> = references
        .iter()
        .map(|r| codec.encode_source(&r.source).0)
        .collect();
    let hyps = decode_all_parallel(
        model,
        strategy,
        &sources,
        BatchSize::Sentences(batch_size),
        device,
        workers,
    );
    let predicted: Vec<Vec<String>> = hyps
        .iter()
        .map(|h| codec.decode_target_tokens(&h[0].tokens))
        .collect();
    let refs: Vec<Vec<Vec<String>>> = references
        .iter()
        .map(|r| r.targets.iter().map(|t| codec.target_tokens(t)).collect())
        .collect();
    let scores = score(&predicted, &refs);
    let text = predicted
        .iter()
        .map(|p| codec.target_tokenizer.detokenize(p))
        .collect();
    (scores, text)
}
