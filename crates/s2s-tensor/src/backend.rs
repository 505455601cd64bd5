//! The concrete backends compiled into this build, the names the rest of s2s uses for them,
//! and the parsing of `--backend` choices.
//!
//! Library code never names a backend; runners (the CLI, xtask, examples, benches and tests)
//! pick one of the aliases below. The parsing of `--device` ([`crate::device`]), seeded
//! initialisation ([`crate::seeding`]), the test harness ([`crate::testing`]) and the
//! process-wide tuning ([`crate::tuning`]) live in modules of their own and are re-exported
//! here.

use std::fmt;
use std::str::FromStr;

pub use burn::backend::Autodiff;

/// Burn's pure-Rust CPU backend (`burn-flex`), the default.
#[cfg(feature = "flex")]
pub type Flex = burn::backend::Flex<f32, i32>;

/// libtorch through `burn-tch` (CPU or CUDA), f32.
#[cfg(feature = "tch")]
pub type Tch = burn::backend::LibTorch<f32>;

/// WGPU through `burn-wgpu` (Vulkan, Metal or DX12; llvmpipe gives a software Vulkan device).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;

/// The backend used when the caller does not choose one.
#[cfg(feature = "flex")]
pub type DefaultBackend = Flex;

/// [`DefaultBackend`] with automatic differentiation, for training.
#[cfg(feature = "flex")]
pub type DefaultAutodiffBackend = Autodiff<DefaultBackend>;

/// One of the backends s2s knows, compiled in or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Burn's pure-Rust CPU backend (cargo feature `flex`, on by default).
    Flex,
    /// libtorch, CPU or CUDA (cargo feature `tch`).
    Tch,
    /// WGPU (cargo feature `wgpu`).
    Wgpu,
}

impl BackendKind {
    /// Every backend, in order of preference.
    pub const ALL: [BackendKind; 3] = [BackendKind::Flex, BackendKind::Tch, BackendKind::Wgpu];

    /// The name used on command lines and as the cargo feature.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Tch => "tch",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// Whether this build contains the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Tch => cfg!(feature = "tch"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The error to give when the backend is asked for but not compiled in.
    pub fn ensure_compiled(self) -> Result<(), DeviceError> {
        if self.is_compiled() {
            Ok(())
        } else {
            Err(DeviceError::NotCompiled {
                backend: self.name(),
                compiled: compiled_backends().join(", "),
            })
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| DeviceError::UnknownBackend(s.to_string()))
    }
}

/// Names of the backends compiled into this build, in order of preference.
pub fn compiled_backends() -> Vec<&'static str> {
    BackendKind::ALL
        .into_iter()
        .filter(|k| k.is_compiled())
        .map(BackendKind::name)
        .collect()
}

pub use crate::device::*;
pub use crate::seeding::{seeded, seeded_module};
pub use crate::testing::{proptest_cases, test_device, TestDevice};
#[cfg(feature = "tch")]
pub use crate::tuning::set_tch_threads;
pub use crate::tuning::{prefer_unpacked_gemm_weights, set_intra_op_threads};
