//! Backend selection and the small set of tensor operations that s2s models need.
//!
//! Everything in s2s is generic over a Burn backend that implements [`S2sBackend`]: Burn's
//! [`Backend`](burn::tensor::backend::Backend) with the operations that have faster versions
//! on some backends, each with a default. This crate implements it for the concrete backends
//! that were compiled in (the pure-Rust `flex` CPU backend by default; further backends come
//! behind cargo features) and for `Autodiff` over any of them, and provides the
//! sequence helpers shared by the model and the decoders: masks built from lengths, masked
//! softmax, gathering rows by index (used to reorder beams), and `sigmoid`/`tanh` with
//! vectorised kernels on flex; and, for training, single autodiff nodes with hand-written
//! gradients for the recurrent cells and the attention ([`fused`]) and a per-step product
//! whose weight gradient is made once per sequence ([`step_product`]); and the threads that
//! training and decoding workers run on ([`workers`]).
//!
//! ```
//! use s2s_tensor::{backend::DefaultBackend, ops};
//!
//! let device = Default::default();
//! // Two sequences of lengths 3 and 1, padded to 3 positions.
//! let mask = ops::length_mask::<DefaultBackend>(&[3, 1], 3, &device);
//! let scores = burn::tensor::Tensor::<DefaultBackend, 2>::zeros([2, 3], &device);
//! let probs = ops::masked_softmax(scores, mask, 1);
//! let row1: Vec<f32> = probs.into_data().to_vec().unwrap();
//! assert_eq!(&row1[3..], &[1.0, 0.0, 0.0]);
//! ```

pub use burn;

pub mod activation;
pub mod adam;
pub mod autodiff;
pub mod backend;
mod backends;
pub mod device;
pub mod fused;
pub mod ops;
pub mod reference;
pub mod s2s_backend;
pub mod seeding;
pub mod step_product;
pub mod testing;
pub mod tuning;
pub mod workers;

pub use s2s_backend::{S2sAutodiffBackend, S2sBackend};
