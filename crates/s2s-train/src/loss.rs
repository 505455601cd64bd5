//! Masked cross-entropy over the non-padding target positions.

use burn::tensor::activation::log_softmax;
use burn::tensor::{backend::Backend, Int, Tensor};
use s2s_data::Vocab;

/// Cross-entropy averaged over the target positions that are not `<pad>`, with optional
/// label smoothing (`(1 - a) * nll + a * mean over classes of -log p`, as PyTorch's
/// `label_smoothing`).
///
/// The mean is over real tokens only, so appending padding never changes the loss. (Burn
/// 0.21's `CrossEntropyLoss` with `pad_tokens` zeroes padded positions but still divides by
/// every position, so its value changes with the amount of padding.)
///
/// # Shapes
/// - `logits`: `[batch, tgt_len, vocab]`
/// - `targets`: `[batch, tgt_len]`
/// - returns `[1]`
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    smoothing: f32,
) -> Tensor<B, 1> {
    let (sum, count) = masked_nll_sum(logits, targets, smoothing);
    sum.div_scalar(count.max(1) as f32)
}

/// Sum of the (smoothed) negative log-likelihood over non-pad positions and their count.
pub fn masked_nll_sum<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    smoothing: f32,
) -> (Tensor<B, 1>, usize) {
    let [batch, steps, vocab] = logits.dims();
    let logp = log_softmax(logits.reshape([batch * steps, vocab]), 1);
    let targets = targets.reshape([batch * steps, 1]);
    let keep = targets
        .clone()
        .not_equal_elem(Vocab::PAD as i64)
        .float()
        .reshape([batch * steps]);
    let count = s2s_tensor::ops::to_vec_f32(keep.clone().sum())[0] as usize;
    let nll = logp
        .clone()
        .gather(1, targets)
        .reshape([batch * steps])
        .neg();
    let per_token = if smoothing > 0.0 {
        let uniform = logp.mean_dim(1).reshape([batch * steps]).neg();
        nll.mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing)
    } else {
        nll
    };
    ((per_token * keep).sum(), count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use s2s_tensor::ops;

    s2s_tensor::for_each_backend! {
        type B = TestBackend;

        #[test]
        fn value_matches_hand_computation() {
            let device = device();
            // Two classes beyond the specials would be the usual case; 5 classes, uniform logits:
            // every real position costs ln 5, whatever the smoothing.
            let logits = Tensor::<B, 3>::zeros([1, 3, 5], &device);
            let targets = ops::id_matrix::<B>(&[vec![4, 2, 0]], 3, &device);
            for s in [0.0, 0.1] {
                let loss = ops::to_vec_f32(masked_cross_entropy(logits.clone(), targets.clone(), s))[0];
                assert!((loss - 5f32.ln()).abs() < 1e-6, "{loss}");
            }
        }

        /// Non-uniform logits, a padded position, label smoothing: the value worked out in
        /// f64 here (log-softmax, the target's negative log-probability, the mean over
        /// classes, the mean over real positions only).
        #[test]
        fn value_matches_an_f64_computation() {
            let device = device();
            let rows: [[f64; 5]; 4] = [
                [0.3, -1.2, 2.0, 0.7, -0.4],
                [1.5, 0.2, -0.8, 0.0, 3.1],
                [-2.0, 0.9, 0.4, 1.1, -0.3],
                [0.6, 0.6, -1.5, 2.2, 0.1],
            ];
            // Two sentences of two steps; the second sentence's last step is padding.
            let targets = [[4usize, 2], [3, 0]];
            let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
            let logits = Tensor::<B, 1>::from_floats(flat.as_slice(), &device).reshape([2, 2, 5]);
            let ids = ops::id_matrix::<B>(&[vec![4, 2], vec![3, 0]], 2, &device);
            for a in [0.0f64, 0.1, 0.3] {
                let mut sum = 0.0;
                let mut count = 0;
                for (r, row) in rows.iter().enumerate() {
                    let target = targets[r / 2][r % 2];
                    if target == 0 {
                        continue;
                    }
                    let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
                    let logp: Vec<f64> = row.iter().map(|x| x - lse).collect();
                    let nll = -logp[target];
                    let uniform = -logp.iter().sum::<f64>() / 5.0;
                    sum += (1.0 - a) * nll + a * uniform;
                    count += 1;
                }
                let want = sum / count as f64;
                let got = ops::to_vec_f32(masked_cross_entropy(logits.clone(), ids.clone(), a as f32))[0];
                assert!((got as f64 - want).abs() < 1e-5, "smoothing {a}: {got} vs {want}");
            }
        }

        #[test]
        fn padding_does_not_change_the_loss() {
            let device = device();
            let normal = |shape: [usize; 3]| {
                Tensor::<B, 3>::random(shape, burn::tensor::Distribution::Normal(0., 2.), &device)
            };
            let (logits, extra) = s2s_tensor::backend::seeded::<B, _>(&device, 1, || {
                (normal([2, 3, 6]), normal([2, 4, 6]))
            });
            let targets = ops::id_matrix::<B>(&[vec![4, 5, 2], vec![5, 2, 0]], 3, &device);
            let padded_logits = Tensor::cat(vec![logits.clone(), extra], 1);
            let padded_targets = ops::id_matrix::<B>(
                &[vec![4, 5, 2, 0, 0, 0, 0], vec![5, 2, 0, 0, 0, 0, 0]],
                7,
                &device,
            );
            for s in [0.0, 0.2] {
                let a = ops::to_vec_f32(masked_cross_entropy(logits.clone(), targets.clone(), s))[0];
                let b = ops::to_vec_f32(masked_cross_entropy(
                    padded_logits.clone(),
                    padded_targets.clone(),
                    s,
                ))[0];
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
    }
}
