//! One weight applied to the input of every step of a recurrence, `x_t @ weight + bias`, with
//! the weight's gradient computed once for the whole sequence.
//!
//! Written with Burn's tensor operations, each step's product is an autodiff node whose
//! gradient multiplies that step's input by its output gradient and adds the result into the
//! weight's gradient: a weight-sized product and a weight-sized addition at every step. On a
//! small batch the addition, which streams three weight-sized tensors through memory, costs
//! more than the step's own product (libtorch, one thread, 32 rows, a bidirectional layer's
//! `[2, 256, 768]` recurrent weight over 12 steps: 10.3 ms per sequence against 3.5 ms for
//! one product of all steps' rows). On `Autodiff<B>` for any [`S2sBackend`] `B`,
//! [`StepProduct`] therefore records one node for the weight and bias and one per step. A
//! step's gradient only computes its input's gradient and keeps its input and output
//! gradient; the weight's node, which Burn runs after every step's (it is their parent),
//! makes the weight's gradient with one product over all steps' rows,
//! `[x_1; ..; x_T]^T [g_1; ..; g_T]`, and the bias's with one sum. The forward pass runs the
//! same operations as on other backends, so the outputs are the same; the gradients differ by
//! the order of summation only.
//!
//! Every other backend, with or without autodiff, runs the plain product at every step.
//!
//! # Shapes
//! - `weight`: `[groups, d_in, d_out]`, one matrix per group (say the two directions of a
//!   bidirectional layer); `bias`: `[groups, d_out]`
//! - a step's input: `[groups * rows, d_in]`, group-major (the rows of group 0 first), and
//!   its output `[groups * rows, d_out]`

use crate::s2s_backend::S2sBackend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// `x @ weight + bias` for the input `x` of every step of a sequence (see the module docs).
#[derive(Clone)]
pub struct StepProduct<B: Backend> {
    /// `[groups, d_in, d_out]`; with per-sequence gradients, the output of the weight's node.
    weight: Tensor<B, 3>,
    /// `[groups, d_out]`
    bias: Tensor<B, 2>,
    /// With per-sequence gradients, what records the steps' nodes.
    steps: Option<Arc<dyn StepNodes<B>>>,
}

/// Records a step's node on an autodiff backend (implemented by [`Shared`]).
trait StepNodes<B: Backend>: Send + Sync {
    /// The step's product of `x` with `weight` (the weight node's output).
    fn apply(self: Arc<Self>, x: Tensor<B, 2>, weight: Tensor<B, 3>) -> Tensor<B, 2>;
}

impl<B: Backend> fmt::Debug for StepProduct<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepProduct")
            .field("weight", &self.weight.dims())
            .field("fused", &self.steps.is_some())
            .finish()
    }
}

impl<B: Backend> StepProduct<B> {
    /// The product with `weight` (`[groups, d_in, d_out]`) and `bias` (`[groups, d_out]`),
    /// as backend `B` makes it ([`S2sBackend::step_product`]).
    pub fn new(weight: Tensor<B, 3>, bias: Tensor<B, 2>) -> Self
    where
        B: S2sBackend,
    {
        B::step_product(weight, bias)
    }

    /// The plain product at every step, with Burn's operations (the default of
    /// [`S2sBackend::step_product`]).
    pub fn plain(weight: Tensor<B, 3>, bias: Tensor<B, 2>) -> Self {
        let [groups, _, d_out] = weight.dims();
        assert_eq!(bias.dims(), [groups, d_out], "bias shape");
        Self {
            weight,
            bias,
            steps: None,
        }
    }

    /// Whether the weight's gradient is made once per sequence (an `Autodiff` backend, with
    /// the weight or the bias tracked).
    pub fn fused(&self) -> bool {
        self.steps.is_some()
    }

    /// One step's product.
    ///
    /// # Shapes
    /// - `x`: `[groups * rows, d_in]`, group-major; returns `[groups * rows, d_out]`
    pub fn apply(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.steps {
            Some(steps) => steps.clone().apply(x, self.weight.clone()),
            None => product(x, self.weight.clone(), self.bias.clone()),
        }
    }
}

/// The product with the weight's gradient made once per sequence, on `Autodiff<X>`; the
/// plain product when neither the weight nor the bias is tracked.
pub(crate) fn per_sequence<X: S2sBackend>(
    weight: Tensor<Autodiff<X>, 3>,
    bias: Tensor<Autodiff<X>, 2>,
) -> StepProduct<Autodiff<X>> {
    let [groups, _, d_out] = weight.dims();
    assert_eq!(bias.dims(), [groups, d_out], "bias shape");
    match collect::<X>(weight.clone(), bias.clone()) {
        Some(Collected { weight, shared }) => StepProduct {
            weight,
            bias,
            steps: Some(shared),
        },
        None => StepProduct::plain(weight, bias),
    }
}

/// `x @ weight + bias` per group, with Burn's operations.
fn product<Y: Backend>(x: Tensor<Y, 2>, weight: Tensor<Y, 3>, bias: Tensor<Y, 2>) -> Tensor<Y, 2> {
    let [groups, d_in, d_out] = weight.dims();
    let n = x.dims()[0];
    if groups == 1 {
        x.matmul(weight.reshape([d_in, d_out])) + bias
    } else {
        // The bias repeated for every row: Burn's flex backend adds a `[groups, 1, d_out]`
        // broadcast with a scalar index walk, which cost a tenth of flex's training step,
        // against a copy of the rows and an in-place add.
        let rows = n / groups;
        (x.reshape([groups, rows, d_in]).matmul(weight)
            + bias.unsqueeze_dim::<3>(1).repeat_dim(1, rows))
        .reshape([n, d_out])
    }
}

/// What the weight's node and the steps' nodes share: the weight and bias on the inner
/// backend, and each step's input and output gradient, left by the steps' gradients for the
/// weight's.
struct Shared<X: Backend> {
    weight: FloatTensor<X>,
    bias: FloatTensor<X>,
    pending: Mutex<Vec<(FloatTensor<X>, FloatTensor<X>)>>,
    /// See [`Shared::weight_t`].
    weight_t: OnceLock<FloatTensor<X>>,
}

impl<X: Backend> fmt::Debug for Shared<X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl<X: Backend> Shared<X> {
    fn weight(&self) -> Tensor<X, 3> {
        Tensor::from_primitive(TensorPrimitive::Float(self.weight.clone()))
    }

    fn bias(&self) -> Tensor<X, 2> {
        Tensor::from_primitive(TensorPrimitive::Float(self.bias.clone()))
    }

    /// The weight transposed, `[groups, d_out, d_in]`, contiguous: made at the first step's
    /// gradient and kept for the others. The gradient's product with the transposed view of
    /// the weight made burn-flex's `gemm` repack the whole weight at every step, which cost
    /// about as much as the product itself on a small batch.
    fn weight_t(&self) -> Tensor<X, 3> {
        let t = self.weight_t.get_or_init(|| {
            let weight = self.weight();
            let [groups, d_in, d_out] = weight.dims();
            let each: Vec<Tensor<X, 2>> = (0..groups)
                .map(|k| {
                    // Reshaping the transposed view to one dimension makes it contiguous,
                    // with a 2-D copy on every backend.
                    weight
                        .clone()
                        .narrow(0, k, 1)
                        .reshape([d_in, d_out])
                        .transpose()
                        .reshape([d_out * d_in])
                        .reshape([d_out, d_in])
                })
                .collect();
            Tensor::stack::<3>(each, 0).into_primitive().tensor()
        });
        Tensor::from_primitive(TensorPrimitive::Float(t.clone()))
    }
}

/// The weight's node: its output is the weight itself, which every step's node takes as a
/// parent.
#[derive(Debug)]
struct Collect;

impl<X: Backend> Backward<X, 2> for Collect {
    type State = Arc<Shared<X>>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        // The placeholder the first step's gradient registered (see `Step`).
        let _ = grads.consume::<X>(&ops.node);
        let pending = std::mem::take(
            &mut *ops
                .state
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let [groups, d_in, d_out] = ops.state.weight().dims();
        let by_group = |t: FloatTensor<X>, d: usize| {
            let t: Tensor<X, 2> = Tensor::from_primitive(TensorPrimitive::Float(t));
            let n = t.dims()[0];
            t.reshape([groups, n / groups, d])
        };
        let (xs, gs): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .map(|(x, g)| (by_group(x, d_in), by_group(g, d_out)))
            .unzip();
        // [groups, all rows, d_out]
        let g = Tensor::cat(gs, 1);
        let [w_node, b_node] = ops.parents;
        if let Some(node) = w_node {
            let x = Tensor::cat(xs, 1);
            let dw = x.swap_dims(1, 2).matmul(g.clone());
            grads.register::<X>(node.id, dw.into_primitive().tensor());
        }
        if let Some(node) = b_node {
            let db = g.sum_dim(1).reshape([groups, d_out]);
            grads.register::<X>(node.id, db.into_primitive().tensor());
        }
    }
}

/// The weight's node and what it shares with the steps' nodes.
struct Collected<X: Backend> {
    weight: Tensor<Autodiff<X>, 3>,
    shared: Arc<Shared<X>>,
}

/// Records the weight's node; `None` when neither the weight nor the bias is tracked.
fn collect<X: Backend>(
    weight: Tensor<Autodiff<X>, 3>,
    bias: Tensor<Autodiff<X>, 2>,
) -> Option<Collected<X>> {
    let weight = weight.into_primitive().tensor();
    let bias = bias.into_primitive().tensor();
    match Collect
        .prepare::<NoCheckpointing>([weight.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let shared = Arc::new(Shared {
                weight: weight.primitive.clone(),
                bias: bias.primitive,
                pending: Mutex::new(Vec::new()),
                weight_t: OnceLock::new(),
            });
            let out = prep.finish(shared.clone(), weight.primitive);
            Some(Collected {
                weight: Tensor::from_primitive(TensorPrimitive::Float(out)),
                shared,
            })
        }
        OpsKind::UnTracked(_) => None,
    }
}

/// A step's node: parents the step's input and the weight's node.
#[derive(Debug)]
struct Step;

impl<X: Backend> Backward<X, 2> for Step {
    /// The step's input and what the weight's node shares.
    type State = (FloatTensor<X>, Arc<Shared<X>>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, shared) = ops.state;
        let g = grads.consume::<X>(&ops.node);
        let [x_node, w_node] = ops.parents;
        if let Some(node) = x_node {
            let weight_t = shared.weight_t();
            let [groups, d_out, d_in] = weight_t.dims();
            let g: Tensor<X, 2> = Tensor::from_primitive(TensorPrimitive::Float(g.clone()));
            let n = g.dims()[0];
            let dx = if groups == 1 {
                g.matmul(weight_t.reshape([d_out, d_in]))
            } else {
                g.reshape([groups, n / groups, d_out])
                    .matmul(weight_t)
                    .reshape([n, d_in])
            };
            grads.register::<X>(node.id, dx.into_primitive().tensor());
        }
        if let Some(node) = w_node {
            let mut pending = shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // The weight's node consumes a gradient before it runs: the first step to get
            // here registers one, which it ignores (registering at every step would add them).
            if pending.is_empty() {
                grads.register::<X>(node.id, g.clone());
            }
            pending.push((x, g));
        }
    }
}

impl<X: Backend> StepNodes<Autodiff<X>> for Shared<X> {
    fn apply(
        self: Arc<Self>,
        x: Tensor<Autodiff<X>, 2>,
        weight: Tensor<Autodiff<X>, 3>,
    ) -> Tensor<Autodiff<X>, 2> {
        step(x, weight, self)
    }
}

/// Records a step's node.
fn step<X: Backend>(
    x: Tensor<Autodiff<X>, 2>,
    weight: Tensor<Autodiff<X>, 3>,
    shared: Arc<Shared<X>>,
) -> Tensor<Autodiff<X>, 2> {
    let x = x.into_primitive().tensor();
    let weight = weight.into_primitive().tensor();
    let value = |x: &FloatTensor<X>| {
        product(
            Tensor::from_primitive(TensorPrimitive::Float(x.clone())),
            shared.weight(),
            shared.bias(),
        )
        .into_primitive()
        .tensor()
    };
    let out = match Step
        .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = value(&x.primitive);
            prep.finish((x.primitive, shared.clone()), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(value(&x.primitive)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::to_vec_f32;
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::TensorData;

    crate::for_each_backend! {
        type AB = TestAutodiffBackend;
        type Inner = <AB as AutodiffBackend>::InnerBackend;

        fn input<const D: usize>(shape: [usize; D], seed: usize) -> Tensor<AB, D> {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|i| (((i * 7 + seed * 13) as f32) * 0.37).sin())
                .collect();
            Tensor::<AB, D>::from_data(TensorData::new(values, shape), &device()).require_grad()
        }

        fn grad_of<const D: usize>(
            t: &Tensor<AB, D>,
            grads: &<AB as AutodiffBackend>::Gradients,
        ) -> Vec<f32> {
            to_vec_f32::<Inner, D>(t.grad(grads).expect("tensor takes part in the loss"))
        }

        /// Four steps of a toy recurrence `x_{t+1} = tanh(x_t @ w + b) + u_t`, through
        /// [`StepProduct`] or through Burn's operations; returns the outputs and the
        /// gradients of the weight, the bias, the initial input and every step's extra
        /// input.
        fn run(groups: usize, fused: bool) -> (Vec<f32>, Vec<Vec<f32>>) {
            let (rows, d) = (3, 5);
            let w = input([groups, d, d], 1);
            let b = input([groups, d], 2);
            let x0 = input([groups * rows, d], 3);
            let us: Vec<_> = (0..4).map(|k| input([groups * rows, d], 4 + k)).collect();
            let p = fused.then(|| StepProduct::new(w.clone(), b.clone()));
            assert!(p.as_ref().is_none_or(StepProduct::fused));
            let mut x = x0.clone();
            let mut outputs = Vec::new();
            for u in &us {
                let y = match &p {
                    Some(p) => p.apply(x),
                    None => product(x, w.clone(), b.clone()),
                };
                x = y.tanh() + u.clone();
                outputs.push(x.clone());
            }
            let mut loss = Tensor::<AB, 1>::zeros([1], &device());
            for (k, o) in outputs.iter().enumerate() {
                let weights = input([groups * rows, d], 20 + k).detach();
                loss = loss + (o.clone() * weights).sum();
            }
            let values = outputs.iter().flat_map(|o| to_vec_f32(o.clone())).collect();
            let grads = loss.backward();
            let mut all = vec![grad_of(&w, &grads), grad_of(&b, &grads), grad_of(&x0, &grads)];
            all.extend(us.iter().map(|u| grad_of(u, &grads)));
            (values, all)
        }

        fn assert_close(a: &[f32], b: &[f32], what: &str) {
            assert_eq!(a.len(), b.len(), "{what}: lengths");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + x.abs().max(y.abs())),
                    "{what}[{i}]: once per sequence {x}, per step {y}"
                );
            }
        }

        #[test]
        fn gradients_made_once_equal_per_step_gradients() {
            for groups in [1, 2] {
                let (out_fused, grads_fused) = run(groups, true);
                let (out_plain, grads_plain) = run(groups, false);
                assert_eq!(out_fused, out_plain, "outputs with {groups} groups");
                for (k, (a, b)) in grads_fused.iter().zip(&grads_plain).enumerate() {
                    assert_close(a, b, &format!("{groups} groups, gradient {k}"));
                }
            }
        }

        #[test]
        fn untracked_weights_and_plain_backends_take_the_plain_product() {
            // Leaves without `require_grad` (Burn's `detach` keeps that flag).
            let w = input([1, 2, 3], 1).set_require_grad(false);
            let b = input([1, 3], 2).set_require_grad(false);
            assert!(!StepProduct::new(w, b).fused());
            let w = Tensor::<TestBackend, 3>::ones([1, 2, 3], &device());
            let b = Tensor::<TestBackend, 2>::ones([1, 3], &device());
            let p = StepProduct::new(w, b);
            assert!(!p.fused());
            let y = p.apply(Tensor::ones([4, 2], &device()));
            assert_eq!(to_vec_f32(y), vec![3.0; 12]);
        }
    }
}
