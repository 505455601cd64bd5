//! Dropout whose masks can come from a generator of the caller's, so that training with
//! several worker threads is reproducible.
//!
//! Burn's [`Dropout`] draws its masks from the backend's one process-wide generator. When the
//! workers of a training step run side by side, they draw from it in whatever order the
//! threads happen to run, so the same seed gives different masks from run to run. Inside
//! [`with_seed`], [`apply`] draws the mask on the calling thread from a generator seeded by
//! the caller instead (the trainer seeds it from the run's seed, the step and the share), and
//! a run that is resumed at a step draws the same masks as the run that was never stopped.
//! Outside it, [`apply`] is Burn's dropout. The generator is ChaCha12 by name
//! (`rand_chacha`), not `rand`'s `StdRng`, whose algorithm may change between `rand`
//! versions: the same seed keeps giving the same masks.

use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use std::cell::RefCell;

thread_local! {
    static MASKS: RefCell<Option<ChaCha12Rng>> = const { RefCell::new(None) };
}

/// Restores the thread's previous generator when dropped (also on panic).
struct Restore(Option<ChaCha12Rng>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        MASKS.with(|m| *m.borrow_mut() = previous);
    }
}

/// Runs `f` with the dropout masks of [`apply`] on this thread drawn from a generator
/// seeded with `seed`.
pub fn with_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let previous = MASKS.with(|m| m.borrow_mut().replace(ChaCha12Rng::seed_from_u64(seed)));
    let _restore = Restore(previous);
    f()
}

/// `dropout.forward(x)`, with the mask drawn from the generator of [`with_seed`] when one is
/// set on this thread. The identity when `dropout.prob` is 0 or the backend does not record
/// gradients (inference).
///
/// Shapes: `x` any, the output the same.
pub fn apply<B: Backend, const D: usize>(dropout: &Dropout, x: Tensor<B, D>) -> Tensor<B, D> {
    let device = x.device();
    if dropout.prob == 0.0 || !B::ad_enabled(&device) {
        return x;
    }
    let keep = 1.0 - dropout.prob;
    let scale = (1.0 / keep) as f32;
    let shape = x.shape();
    let mask = MASKS.with(|m| {
        m.borrow_mut().as_mut().map(|rng| {
            (0..shape.num_elements())
                .map(|_| {
                    if rng.random::<f64>() < keep {
                        scale
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<f32>>()
        })
    });
    match mask {
        Some(mask) => x * Tensor::<B, D>::from_data(TensorData::new(mask, shape), &device),
        None => dropout.forward(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;
    use s2s_tensor::backend::DefaultAutodiffBackend as AB;

    fn masked(seed: Option<u64>) -> Vec<f32> {
        let device = Default::default();
        let dropout = DropoutConfig::new(0.5).init();
        let x = Tensor::<AB, 2>::ones([8, 16], &device);
        let run = || apply(&dropout, x.clone());
        let y = match seed {
            Some(s) => with_seed(s, run),
            None => run(),
        };
        s2s_tensor::ops::to_vec_f32(y.inner().flatten::<1>(0, 1))
    }

    #[test]
    fn seeded_masks_repeat_and_scale() {
        let a = masked(Some(7));
        assert_eq!(a, masked(Some(7)));
        assert_ne!(a, masked(Some(8)));
        // Kept entries are scaled by 1 / keep, dropped ones are zero, and both occur.
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        let kept = a.iter().filter(|&&v| v == 2.0).count();
        assert!((32..=96).contains(&kept), "{kept} of 128 kept at p = 0.5");
    }

    #[test]
    fn the_generator_is_restored() {
        with_seed(1, || {
            with_seed(2, || {});
            // The inner call's generator is gone; this draw is the outer one's first.
            let inner = masked(None);
            assert_eq!(inner, with_seed(1, || masked(None)));
        });
        assert!(MASKS.with(|m| m.borrow().is_none()));
    }
}
