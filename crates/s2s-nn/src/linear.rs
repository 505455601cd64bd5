//! Applying a [`Linear`] layer to every position of a sequence as one 2-D matmul.

use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};

/// `layer` applied to every `[batch, seq]` position of `x`, computed on the flattened
/// `[batch * seq, d_input]` matrix.
///
/// Burn's `Linear::forward` on a 3-D input broadcasts the weight to a batched matmul. On
/// libtorch that becomes one small GEMM per batch row instead of one large GEMM, and the
/// weight gradient is a `[batch, d_input, d_output]` tensor summed over the batch; the
/// flattened form is one GEMM forward and one per gradient.
///
/// # Shapes
/// - `x`: `[batch, seq, d_input]`
/// - returns `[batch, seq, d_output]`
pub fn linear_rows<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, seq, d_input] = x.dims();
    let y = layer.forward(x.reshape([batch * seq, d_input]));
    let d_output = y.dims()[1];
    y.reshape([batch, seq, d_output])
}

/// `x @ w` at every `[batch, seq]` position, as one 2-D matmul (see [`linear_rows`]).
///
/// # Shapes
/// - `x`: `[batch, seq, d_input]`; `w`: `[d_input, d_output]`
/// - returns `[batch, seq, d_output]`
pub fn matmul_rows<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 3> {
    let [batch, seq, d_input] = x.dims();
    let d_output = w.dims()[1];
    x.reshape([batch * seq, d_input])
        .matmul(w)
        .reshape([batch, seq, d_output])
}
