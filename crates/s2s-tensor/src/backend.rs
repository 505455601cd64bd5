//! The concrete backends compiled into this build and the names the rest of s2s uses for them.
//!
//! Library code never names a backend; runners (the CLI, xtask, examples, benches and tests)
//! pick one of the aliases below.

pub use burn::backend::Autodiff;

/// Burn's pure-Rust CPU backend (`burn-flex`), the default.
#[cfg(feature = "flex")]
pub type Flex = burn::backend::Flex<f32, i32>;

/// The backend used when the caller does not choose one.
#[cfg(feature = "flex")]
pub type DefaultBackend = Flex;

/// [`DefaultBackend`] with automatic differentiation, for training.
#[cfg(feature = "flex")]
pub type DefaultAutodiffBackend = Autodiff<DefaultBackend>;

/// Names of the backends compiled into this build, in order of preference.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    names
}
