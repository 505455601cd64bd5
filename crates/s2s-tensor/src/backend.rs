//! The concrete backends compiled into this build, the names the rest of s2s uses for them,
//! and the parsing of `--backend` / `--device` choices.
//!
//! Library code never names a backend; runners (the CLI, xtask, examples, benches and tests)
//! pick one of the aliases below. Tests that must hold on every backend are written once inside
//! [`for_each_backend!`](crate::for_each_backend), which instantiates them per compiled backend.

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

/// A backend or device that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The name is not a backend s2s knows.
    #[error("unknown backend {0:?} (known: flex, tch, wgpu)")]
    UnknownBackend(String),
    /// The backend exists but this binary was built without it.
    #[error(
        "backend {backend} is not compiled into this binary (compiled in: {compiled}); rebuild \
         with `--features {backend}` (for tch, see the README: libtorch comes from torch==2.9.0 \
         in the project's virtualenv, which `cargo xtask venv` creates)"
    )]
    NotCompiled {
        /// The backend asked for.
        backend: &'static str,
        /// The backends that are compiled in.
        compiled: String,
    },
    /// The device string cannot be parsed for this backend.
    #[error("invalid device {device:?} for backend {backend}: expected {expected}")]
    Invalid {
        /// The backend.
        backend: &'static str,
        /// The device string given.
        device: String,
        /// What the backend accepts.
        expected: &'static str,
    },
    /// The device was parsed but does not exist on this machine.
    #[error("device {device:?} of backend {backend} is not available: {why}")]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// The device string given.
        device: String,
        /// What was found instead.
        why: String,
    },
}

/// Parses a device of the flex backend: only `cpu` exists.
#[cfg(feature = "flex")]
pub fn flex_device(spec: &str) -> Result<burn::tensor::ops::Device<Flex>, DeviceError> {
    match spec {
        "" | "cpu" | "default" => Ok(Default::default()),
        _ => Err(DeviceError::Invalid {
            backend: "flex",
            device: spec.to_string(),
            expected: "`cpu`",
        }),
    }
}

/// Parses and checks a libtorch device: `cpu`, `cuda` (= `cuda:0`), `cuda:N` or `mps`.
///
/// A CUDA device that this machine (or this libtorch) does not have is an error here, not a
/// panic later.
#[cfg(feature = "tch")]
pub fn tch_device(spec: &str) -> Result<burn::backend::libtorch::LibTorchDevice, DeviceError> {
    use burn::backend::libtorch::LibTorchDevice;
    let invalid = || DeviceError::Invalid {
        backend: "tch",
        device: spec.to_string(),
        expected: "`cpu`, `cuda`, `cuda:N` or `mps`",
    };
    let device = match spec {
        "" | "cpu" | "default" => LibTorchDevice::Cpu,
        "mps" => LibTorchDevice::Mps,
        "cuda" => LibTorchDevice::Cuda(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => LibTorchDevice::Cuda(n),
            _ => return Err(invalid()),
        },
    };
    if let LibTorchDevice::Cuda(n) = device {
        let count = tch::Cuda::device_count().max(0) as usize;
        if n >= count {
            return Err(DeviceError::Unavailable {
                backend: "tch",
                device: spec.to_string(),
                why: format!(
                    "libtorch sees {count} CUDA device(s){}",
                    if tch::Cuda::is_available() {
                        ""
                    } else {
                        " (no CUDA driver or GPU on this machine, or a CPU-only libtorch)"
                    }
                ),
            });
        }
    }
    if device == LibTorchDevice::Mps && !tch::utils::has_mps() {
        return Err(DeviceError::Unavailable {
            backend: "tch",
            device: spec.to_string(),
            why: "this libtorch has no MPS (Apple GPU) support".into(),
        });
    }
    Ok(device)
}

/// Parses and checks a WGPU device: `default`, `cpu`, `discrete[:N]`, `integrated[:N]` or
/// `virtual[:N]`.
///
/// The device is opened here (a tiny tensor is created on it), so that a machine without a
/// matching adapter gets an error naming the problem instead of a panic in the middle of a run.
#[cfg(feature = "wgpu")]
pub fn wgpu_device(spec: &str) -> Result<burn::backend::wgpu::WgpuDevice, DeviceError> {
    use burn::backend::wgpu::WgpuDevice;
    let (kind, index) = match spec.split_once(':') {
        Some((k, n)) => (k, n.parse::<usize>().ok()),
        None => (spec, Some(0)),
    };
    let device = match (kind, index) {
        ("" | "default", Some(0)) => WgpuDevice::DefaultDevice,
        ("cpu", Some(0)) => WgpuDevice::Cpu,
        ("discrete", Some(n)) => WgpuDevice::DiscreteGpu(n),
        ("integrated", Some(n)) => WgpuDevice::IntegratedGpu(n),
        ("virtual", Some(n)) => WgpuDevice::VirtualGpu(n),
        _ => {
            return Err(DeviceError::Invalid {
                backend: "wgpu",
                device: spec.to_string(),
                expected: "`default`, `cpu`, `discrete[:N]`, `integrated[:N]` or `virtual[:N]`",
            })
        }
    };
    probe_wgpu(&device).map_err(|why| DeviceError::Unavailable {
        backend: "wgpu",
        device: spec.to_string(),
        why,
    })?;
    Ok(device)
}

/// Opens `device` by running one small operation on it; returns the panic message if the
/// runtime could not find an adapter.
#[cfg(feature = "wgpu")]
fn probe_wgpu(device: &burn::backend::wgpu::WgpuDevice) -> Result<(), String> {
    use burn::tensor::Tensor;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        let t = Tensor::<Wgpu, 1>::from_floats([1.0, 2.0], device);
        let _ = t.sum().into_scalar();
    });
    std::panic::set_hook(hook);
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown error".into());
        format!(
            "no usable WGPU adapter ({msg}); install a Vulkan driver (on Debian without a GPU: \
             `apt-get install mesa-vulkan-drivers libvulkan1`, which gives llvmpipe)"
        )
    })
}

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
                <TestBackend as $crate::backend::TestDevice>::test_device()
            }
            /// Property-test cases for this backend (see [`proptest_cases`]).
            #[allow(dead_code)]
            fn cases(n: u32) -> u32 {
                $crate::backend::proptest_cases(stringify!($name), n)
            }
            $($body)*
        }
    };
}

/// Runs `init` right after seeding the backend's random generator, holding a process-wide
/// lock so that no other `seeded` call draws from the generator in between.
///
/// Burn's generators are global per backend: two threads (tests run in parallel) that seed
/// and then initialise a model can interleave their draws, so the same seed would give
/// different weights from run to run. Every seeded initialisation in s2s goes through here.
pub fn seeded<B: burn::tensor::backend::Backend, T>(
    device: &B::Device,
    seed: u64,
    init: impl FnOnce() -> T,
) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    init()
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

/// [`seeded`] for a module: initialises `init()`'s parameters before the lock is released.
///
/// Burn creates parameters lazily: their values are drawn at the first read, and every clone
/// of a parameter not yet read draws its own. A model that is cloned before it is read (the
/// training workers' forks, a strategy's copy) would then hold different weights in each
/// clone, drawn in whatever order the threads ran. Every model that s2s trains or compares is
/// made here.
pub fn seeded_module<B: burn::tensor::backend::Backend, M: burn::module::Module<B>>(
    device: &B::Device,
    seed: u64,
    init: impl FnOnce() -> M,
) -> M {
    struct Touch;
    impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            param.val();
        }
    }
    seeded::<B, _>(device, seed, || {
        let module = init();
        module.visit(&mut Touch);
        module
    })
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

/// Sets libtorch's intra-op CPU threads (what `torch.set_num_threads` sets in Python).
#[cfg(feature = "tch")]
pub fn set_tch_threads(n: usize) {
    tch::set_num_threads(n as i32);
}

/// Sets the intra-op CPU threads of `kind` where the backend has its own thread count
/// (libtorch); a no-op for the others (flex runs on rayon's pool) and for a backend that is
/// not compiled in.
pub fn set_intra_op_threads(kind: BackendKind, n: usize) {
    match kind {
        #[cfg(feature = "tch")]
        BackendKind::Tch => set_tch_threads(n),
        _ => {
            let _ = n;
        }
    }
}

/// Lets burn-flex's matrix products use a weight in place instead of copying it into packed
/// panels at every call (a no-op without the `flex` feature). Process-wide; only speed
/// changes.
///
/// burn-flex's outputs are row-major, so the `gemm` crate swaps a product's operands and the
/// right one (in decoding, a weight) becomes the operand that it packs once the rows exceed
/// `threshold * 6` (threshold 8 on one thread, 16 on several). Each decoding step's products
/// have up to 64 rows (beam search more), few enough that the copy costs more than it saves:
/// with the threshold at 256, flex's greedy decoding in the benchmark ran 1.04x (LSTM,
/// median of 21 paired runs, 15 in its favour) and 1.06x (GRU, 10 pairs, 8), beam search
/// within the noise. Every decoding batch calls it (the threshold is set once); training
/// products keep `gemm`'s choice unless a decode ran in the same process (0.98x, within the
/// noise, in seven paired runs).
pub fn prefer_unpacked_gemm_weights() {
    #[cfg(feature = "flex")]
    {
        static SET: std::sync::Once = std::sync::Once::new();
        SET.call_once(|| {
            gemm::set_lhs_packing_threshold_single_thread(256);
            gemm::set_lhs_packing_threshold_multi_thread(256);
        });
    }
}
