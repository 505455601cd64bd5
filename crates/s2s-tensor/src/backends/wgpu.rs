//! [`S2sBackend`] for [`Wgpu`]: Burn's operations throughout (the defaults), with autodiff
//! graphs recorded on one thread: Burn 0.21's CubeCL backends lost gradient contributions
//! when three threads recorded graphs on one device (a wrong embedding gradient in
//! `s2s_train::parallel`'s test; one and two workers happened to pass).

use crate::backend::Wgpu;
use crate::s2s_backend::S2sBackend;

impl S2sBackend for Wgpu {
    const AUTODIFF_ACROSS_THREADS: bool = false;
}
