//! [`S2sBackend`](crate::S2sBackend) for each backend compiled into this crate, one file
//! each.

#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
pub(crate) mod flex_tensors;
#[cfg(feature = "tch")]
mod tch;
#[cfg(feature = "wgpu")]
mod wgpu;
