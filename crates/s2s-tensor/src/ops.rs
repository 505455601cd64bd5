//! Sequence tensor operations: length masks, masked softmax and row gathering.

use burn::tensor::{backend::Backend, BasicOps, Bool, Int, Tensor, TensorData};

/// A very negative score used instead of `-inf` so that a fully masked row gives a uniform
/// distribution rather than NaN. `exp(-1e9 - max)` is exactly `0.0` in `f32`.
pub const MASK_VALUE: f32 = -1.0e9;

/// Builds a `[batch, max_len]` mask that is `true` at the valid (non-padding) positions.
///
/// # Panics
/// If a length exceeds `max_len`.
pub fn length_mask<B: Backend>(
    lengths: &[usize],
    max_len: usize,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let mut values = Vec::with_capacity(lengths.len() * max_len);
    for &len in lengths {
        assert!(len <= max_len, "length {len} exceeds max_len {max_len}");
        values.extend((0..max_len).map(|t| t < len));
    }
    Tensor::from_data(TensorData::new(values, [lengths.len(), max_len]), device)
}

/// Builds a `[batch, max_len]` float mask: `1.0` at valid positions, `0.0` at padding.
pub fn length_mask_float<B: Backend>(
    lengths: &[usize],
    max_len: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut values = Vec::with_capacity(lengths.len() * max_len);
    for &len in lengths {
        assert!(len <= max_len, "length {len} exceeds max_len {max_len}");
        values.extend((0..max_len).map(|t| if t < len { 1.0f32 } else { 0.0 }));
    }
    Tensor::from_data(TensorData::new(values, [lengths.len(), max_len]), device)
}

/// Replaces the scores at invalid positions (`valid == false`) by [`MASK_VALUE`].
pub fn mask_invalid<B: Backend, const D: usize>(
    scores: Tensor<B, D>,
    valid: Tensor<B, D, Bool>,
) -> Tensor<B, D> {
    scores.mask_fill(valid.bool_not(), MASK_VALUE)
}

/// Softmax over `dim` that gives exactly zero weight to the invalid positions.
///
/// # Shapes
/// - `scores`: any shape `[..]`
/// - `valid`: same shape as `scores`, `true` where a position may receive weight
pub fn masked_softmax<B: Backend, const D: usize>(
    scores: Tensor<B, D>,
    valid: Tensor<B, D, Bool>,
    dim: usize,
) -> Tensor<B, D> {
    burn::tensor::activation::softmax(mask_invalid(scores, valid), dim)
}

/// Splits `tensor` along `dim` into its size-1 slices, like `chunk(size, dim)`, by halving.
///
/// Burn's gradient of a slice is a zero tensor of the sliced tensor's full size with the
/// slice's gradient written in. Slicing the `n` steps of a sequence directly therefore
/// writes `n` full-size tensors in the backward pass (`O(n^2)` elements); halving writes
/// each element once per level, `O(n log n)`. The forward results are the same views.
///
/// # Shapes
/// - `tensor`: any shape with `n = shape[dim]`
/// - returns `n` tensors with `shape[dim] = 1`, in order
pub fn split_steps<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
    dim: usize,
) -> Vec<Tensor<B, D>> {
    let n = tensor.dims()[dim];
    let mut out = Vec::with_capacity(n);
    split_into(tensor, dim, n, &mut out);
    out
}

fn split_into<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
    dim: usize,
    n: usize,
    out: &mut Vec<Tensor<B, D>>,
) {
    if n <= 2 {
        out.extend((0..n).map(|i| tensor.clone().narrow(dim, i, 1)));
        return;
    }
    let half = n / 2;
    split_into(tensor.clone().narrow(dim, 0, half), dim, half, out);
    split_into(tensor.narrow(dim, half, n - half), dim, n - half, out);
}

/// Gathers rows (the first dimension) of `tensor` by index: `out[i] = tensor[indices[i]]`.
///
/// Used to reorder decoder states when beams are reordered or pruned. For masks, rebuild
/// them from the gathered lengths instead: on burn-flex 0.21 a gathered bool tensor comes
/// back as `u8` and some bool ops then reject it.
pub fn gather_rows<B: Backend, const D: usize, K: BasicOps<B>>(
    tensor: Tensor<B, D, K>,
    indices: &[usize],
) -> Tensor<B, D, K> {
    let device = tensor.device();
    let idx = index_tensor::<B>(indices, &device);
    tensor.select(0, idx)
}

/// Which source each decoder row reads: `per_source` consecutive rows for each of `sources`
/// sources, so that row `r` reads source `r / per_source` (the beams of a sentence read its
/// encoder outputs, keys and values without copies of them). Carried by the decoder's memory
/// (`s2s_nn::Memory::layout`) and set where rows are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLayout {
    sources: usize,
    per_source: usize,
}

impl RowLayout {
    /// One row per source, in order.
    pub fn one_per_source(sources: usize) -> Self {
        RowLayout {
            sources,
            per_source: 1,
        }
    }

    /// `per_source` consecutive rows for each source.
    ///
    /// # Panics
    /// When `per_source` is 0.
    pub fn shared(sources: usize, per_source: usize) -> Self {
        assert!(per_source > 0, "a source needs at least one row");
        RowLayout {
            sources,
            per_source,
        }
    }

    /// The layout of `rows` rows over operands of `sources` sources, for kernels that receive
    /// both flattened: as many rows as sources is one row per source (an empty batch
    /// included), otherwise each source has `rows / sources` rows.
    ///
    /// # Panics
    /// When `rows` is not a multiple of a non-zero `sources`.
    pub fn of_shapes(rows: usize, sources: usize) -> Self {
        assert!(
            rows == sources || (sources > 0 && rows.is_multiple_of(sources)),
            "{rows} rows for {sources} sources: each source needs the same number of rows"
        );
        match rows == sources {
            true => Self::one_per_source(sources),
            false => Self::shared(sources, rows / sources),
        }
    }

    /// Number of sources.
    pub fn sources(&self) -> usize {
        self.sources
    }

    /// Rows per source.
    pub fn per_source(&self) -> usize {
        self.per_source
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.sources * self.per_source
    }

    /// The source that row `row` reads.
    pub fn source_of(&self, row: usize) -> usize {
        row / self.per_source
    }
}

/// A 1-D integer tensor from indices or token ids.
pub fn index_tensor<B: Backend>(values: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, [values.len()]), device)
}

/// A `[rows, width]` integer tensor from equally long rows of ids.
///
/// # Panics
/// If the rows do not all have length `width`.
pub fn id_matrix<B: Backend>(
    rows: &[Vec<u32>],
    width: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let mut data = Vec::with_capacity(rows.len() * width);
    for row in rows {
        assert_eq!(row.len(), width, "id rows must all have the same width");
        data.extend(row.iter().map(|&v| v as i64));
    }
    Tensor::from_data(TensorData::new(data, [rows.len(), width]), device)
}

/// Reads a float tensor back as a flat `Vec<f32>`.
pub fn to_vec_f32<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("float tensor converts to f32")
}

/// Reads an integer tensor back as a flat `Vec<i64>`.
pub fn to_vec_i64<B: Backend, const D: usize>(tensor: Tensor<B, D, Int>) -> Vec<i64> {
    tensor
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("int tensor converts to i64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_layouts() {
        let beams = RowLayout::shared(3, 4);
        assert_eq!(
            (beams.rows(), beams.sources(), beams.per_source()),
            (12, 3, 4)
        );
        assert_eq!(
            (0..12).map(|r| beams.source_of(r)).collect::<Vec<_>>(),
            [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
        );
        assert_eq!(RowLayout::of_shapes(12, 3), beams);
        assert_eq!(RowLayout::of_shapes(3, 3), RowLayout::one_per_source(3));
        assert_eq!(RowLayout::of_shapes(0, 0), RowLayout::one_per_source(0));
        assert!(std::panic::catch_unwind(|| RowLayout::of_shapes(7, 3)).is_err());
        assert!(std::panic::catch_unwind(|| RowLayout::of_shapes(4, 0)).is_err());
        assert!(std::panic::catch_unwind(|| RowLayout::shared(2, 0)).is_err());
    }

    crate::for_each_backend! {
        type B = TestBackend;

        #[test]
        fn mask_marks_valid_positions() {
            let device = device();
            let mask = length_mask::<B>(&[2, 0, 3], 3, &device);
            // Read through ints: backends store booleans differently (wgpu as u32).
            let values: Vec<i64> = mask.int().into_data().convert::<i64>().to_vec().unwrap();
            assert_eq!(values, vec![1, 1, 0, 0, 0, 0, 1, 1, 1]);
        }

        #[test]
        fn masked_softmax_gives_zero_weight_to_padding() {
            let device = device();
            let scores = Tensor::<B, 2>::from_floats([[1.0, 2.0, 50.0], [0.5, 0.5, 0.5]], &device);
            let mask = length_mask::<B>(&[2, 3], 3, &device);
            let probs = to_vec_f32(masked_softmax(scores, mask, 1));
            // Row 0: softmax over [1, 2] only: e^1/(e^1+e^2) = 0.26894.
            assert!((probs[0] - 0.268_941_4).abs() < 1e-6);
            assert!((probs[1] - 0.731_058_6).abs() < 1e-6);
            assert_eq!(probs[2], 0.0);
            for p in &probs[3..] {
                assert!((p - 1.0 / 3.0).abs() < 1e-6);
            }
        }

        #[test]
        fn split_steps_equals_slicing_forward_and_backward() {
            use burn::tensor::backend::AutodiffBackend;
            type AB = TestAutodiffBackend;
            let device = device();
            for n in 1..10usize {
                let values: Vec<f32> = (0..2 * n * 3).map(|i| i as f32).collect();
                let t = Tensor::<AB, 3>::from_data(TensorData::new(values, [2, n, 3]), &device)
                    .require_grad();
                let parts = split_steps(t.clone(), 1);
                assert_eq!(parts.len(), n);
                // loss = sum over k of (k + 1) * sum(part k)
                let mut loss = Tensor::<AB, 1>::zeros([1], &device);
                for (k, p) in parts.into_iter().enumerate() {
                    assert_eq!(p.dims(), [2, 1, 3]);
                    assert_eq!(
                        to_vec_f32(p.clone()),
                        to_vec_f32(t.clone().narrow(1, k, 1))
                    );
                    loss = loss + p.sum().mul_scalar((k + 1) as f32);
                }
                let grads = loss.backward();
                let grad = t.grad(&grads).expect("t takes part in the loss");
                let want: Vec<f32> = (0..2)
                    .flat_map(|_| (0..n).flat_map(|k| std::iter::repeat_n((k + 1) as f32, 3)))
                    .collect();
                assert_eq!(to_vec_f32::<<AB as AutodiffBackend>::InnerBackend, 3>(grad), want);
            }
        }

        #[test]
        fn gather_rows_reorders_and_repeats() {
            let device = device();
            let t = Tensor::<B, 2>::from_floats([[0.0, 0.5], [1.0, 1.5], [2.0, 2.5]], &device);
            let out = to_vec_f32(gather_rows(t, &[2, 0, 0]));
            assert_eq!(out, vec![2.0, 2.5, 0.0, 0.5, 0.0, 0.5]);
        }
    }
}
