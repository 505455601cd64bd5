//! The parsing of `--device` choices for each backend, and the errors of a backend or device
//! that cannot be used.

#[cfg(feature = "flex")]
use crate::backend::Flex;
#[cfg(feature = "wgpu")]
use crate::backend::Wgpu;

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
