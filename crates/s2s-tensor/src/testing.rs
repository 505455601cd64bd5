//! The test harness shared by every crate's tests: each backend's test device,
//! [`for_each_backend!`](crate::for_each_backend), which instantiates a block of tests once
//! per compiled backend, and the property-test case counts per backend.

use crate::backend::Autodiff;
#[cfg(feature = "flex")]
use crate::backend::Flex;
#[cfg(feature = "tch")]
use crate::backend::Tch;
#[cfg(feature = "wgpu")]
use crate::backend::Wgpu;
#[cfg(feature = "tch")]
use crate::device::tch_device;
#[cfg(feature = "wgpu")]
use crate::device::wgpu_device;

/// The device that tests run on for each backend: `cpu` for flex, `$S2S_TEST_TCH_DEVICE`
/// (default `cpu`) for tch and `$S2S_TEST_WGPU_DEVICE` (default `default`) for wgpu.
///
/// Panics with the reason when the device cannot be used: a test suite must not pass quietly on
/// a machine where its backend has no device.
pub fn test_device<B: TestDevice>() -> B::Device {
    B::test_device()
}

/// How a backend picks its test device (see [`test_device`]).
pub trait TestDevice: burn::tensor::backend::Backend {
    /// The device, or a panic saying why there is none.
    fn test_device() -> Self::Device;
}

#[cfg(feature = "flex")]
impl TestDevice for Flex {
    fn test_device() -> Self::Device {
        Default::default()
    }
}

#[cfg(feature = "tch")]
impl TestDevice for Tch {
    fn test_device() -> Self::Device {
        let spec = std::env::var("S2S_TEST_TCH_DEVICE").unwrap_or_else(|_| "cpu".into());
        tch_device(&spec).unwrap_or_else(|e| panic!("tch tests cannot run: {e}"))
    }
}

#[cfg(feature = "wgpu")]
impl TestDevice for Wgpu {
    fn test_device() -> Self::Device {
        let spec = std::env::var("S2S_TEST_WGPU_DEVICE").unwrap_or_else(|_| "default".into());
        wgpu_device(&spec).unwrap_or_else(|e| panic!("wgpu tests cannot run: {e}"))
    }
}

impl<B: TestDevice> TestDevice for Autodiff<B> {
    fn test_device() -> Self::Device {
        B::test_device()
    }
}

/// How many cases a property test runs on `backend` (`"flex"`, `"tch"`, `"wgpu"`) when it
/// runs `n` on the CPU backends: a quarter (at least 2) on wgpu.
///
/// The properties (batching, ordering, strategies) are the library's logic, the same on every
/// backend; what differs per backend is the arithmetic, which the parity tests compare. On
/// llvmpipe, the software Vulkan device of CI, every new tensor shape compiles new kernels,
/// so each random case costs seconds: the full counts took about ten minutes of each CI run.
pub fn proptest_cases(backend: &str, n: u32) -> u32 {
    if backend == "wgpu" {
        (n / 4).max(2)
    } else {
        n
    }
}

/// Instantiates a block of items (usually `#[test]` functions) once per compiled backend, in
/// modules `flex`, `tch` and `wgpu`. Inside the block, `TestBackend` is the backend,
/// `TestAutodiffBackend` its autodiff wrapper, `device()` its test device (see
/// [`test_device`]) and `cases(n)` its number of property-test cases ([`proptest_cases`]);
/// the block sees the items of the enclosing module through `use super::*`.
///
/// ```text
/// s2s_tensor::for_each_backend! {
///     #[test]
///     fn adds() {
///         let t = burn::tensor::Tensor::<TestBackend, 1>::from_floats([1.0, 2.0], &device());
///         assert_eq!(t.sum().into_scalar(), 3.0);
///     }
/// }
/// ```
#[macro_export]
macro_rules! for_each_backend {
    ($($body:tt)*) => {
        $crate::__s2s_if_flex! { $crate::__s2s_backend_mod!(flex, Flex, $($body)*); }
        $crate::__s2s_if_tch! { $crate::__s2s_backend_mod!(tch, Tch, $($body)*); }
        $crate::__s2s_if_wgpu! { $crate::__s2s_backend_mod!(wgpu, Wgpu, $($body)*); }
    };
}

/// One backend's module of [`for_each_backend!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __s2s_backend_mod {
    ($name:ident, $backend:ident, $($body:tt)*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(dead_code)]
            type TestBackend = $crate::backend::$backend;
            #[allow(dead_code)]
            type TestAutodiffBackend = $crate::backend::Autodiff<TestBackend>;
            #[allow(dead_code)]
            fn device() -> $crate::burn::tensor::ops::Device<TestBackend> {
                <TestBackend as $crate::testing::TestDevice>::test_device()
            }
            /// Property-test cases for this backend (see [`proptest_cases`]).
            #[allow(dead_code)]
            fn cases(n: u32) -> u32 {
                $crate::testing::proptest_cases(stringify!($name), n)
            }
            $($body)*
        }
    };
}

/// [`for_each_backend!`] for every compiled backend but flex: for tests that compare a
/// backend with flex, which on flex would compare flex with itself (and pass whatever flex
/// computes). In a build with flex alone it expands to nothing.
#[macro_export]
macro_rules! for_each_backend_but_flex {
    ($($body:tt)*) => {
        $crate::__s2s_if_tch! { $crate::__s2s_backend_mod!(tch, Tch, $($body)*); }
        $crate::__s2s_if_wgpu! { $crate::__s2s_backend_mod!(wgpu, Wgpu, $($body)*); }
    };
}

#[cfg(feature = "flex")]
#[doc(hidden)]
#[macro_export]
macro_rules! __s2s_if_flex { ($($t:tt)*) => { $($t)* }; }
#[cfg(not(feature = "flex"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __s2s_if_flex {
    ($($t:tt)*) => {};
}
#[cfg(feature = "tch")]
#[doc(hidden)]
#[macro_export]
macro_rules! __s2s_if_tch { ($($t:tt)*) => { $($t)* }; }
#[cfg(not(feature = "tch"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __s2s_if_tch {
    ($($t:tt)*) => {};
}
#[cfg(feature = "wgpu")]
#[doc(hidden)]
#[macro_export]
macro_rules! __s2s_if_wgpu { ($($t:tt)*) => { $($t)* }; }
#[cfg(not(feature = "wgpu"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __s2s_if_wgpu {
    ($($t:tt)*) => {};
}
