//! Single-thread matrix-product rates of the backends on the G2P model's step shapes:
//! `[rows, 256] @ [256, gates]` with the weight row-major (as the layers store it), as a
//! column-major view, and the transposed product `W^T @ h^T` (on row-major copies, on views,
//! and with the copies of `h^T` and of the result counted).
//!
//! `cargo run --release -p s2s-benches --features s2s-benches/flex,s2s-benches/tch --example
//! gemm_shapes` (libtorch needs `LD_LIBRARY_PATH` set to the virtualenv's `torch/lib`).

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;

/// Microseconds per call of `f`, over `reps` calls after one warm-up call.
fn time<B: Backend>(reps: usize, f: impl Fn() -> Tensor<B, 2>) -> f64 {
    let _ = f().into_data();
    let start = Instant::now();
    for _ in 0..reps {
        let _ = f();
    }
    let _ = f().into_data();
    start.elapsed().as_secs_f64() / (reps + 1) as f64 * 1e6
}

fn run<B: Backend>(name: &str, device: &B::Device) {
    for (m, k, n) in [
        (32, 256, 768),
        (32, 256, 1024),
        (64, 256, 1024),
        (320, 256, 1024),
    ] {
        let h = Tensor::<B, 2>::random([m, k], Distribution::Normal(0.0, 1.0), device);
        let w = Tensor::<B, 2>::random([k, n], Distribution::Normal(0.0, 1.0), device);
        // The same values laid out as [n, k] row-major, and [k, n] viewed over them.
        let wt = Tensor::<B, 2>::from_data(w.clone().transpose().into_data(), device);
        let w_col = wt.clone().transpose();
        let ht = Tensor::<B, 2>::from_data(h.clone().transpose().into_data(), device);
        let gflops = |us: f64| 2.0 * (m * k * n) as f64 / us / 1e3;
        let reps = 1000;
        let a = time(reps, || h.clone().matmul(w.clone()));
        let b = time(reps, || h.clone().matmul(w_col.clone()));
        let c = time(reps, || wt.clone().matmul(ht.clone()));
        let d = time(reps, || w.clone().transpose().matmul(h.clone().transpose()));
        // What using it in `h @ W`'s place costs in all: `h^T` laid out row-major, the product,
        // and the result laid out `[rows, gates]` again (`W^T` made once, outside the loop).
        let e = time(reps, || {
            let ht = Tensor::<B, 2>::from_data(h.clone().transpose().into_data(), device);
            let out = wt.clone().matmul(ht).transpose();
            Tensor::<B, 2>::from_data(out.into_data(), device)
        });
        println!(
            "{name} {m}x{k}x{n}: h @ W {a:.0} us ({:.1} GFLOP/s), h @ W (column-major) {b:.0} us ({:.1}), W^T @ h^T {c:.0} us ({:.1}), the same on views {d:.0} us ({:.1}), with the copies in and out {e:.0} us ({:.1})",
            gflops(a),
            gflops(b),
            gflops(c),
            gflops(d),
            gflops(e)
        );
    }
}

fn main() {
    #[cfg(feature = "flex")]
    {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build_global()
            .expect("the first rayon pool of the process");
        run::<s2s_tensor::backend::Flex>("flex", &Default::default());
    }
    #[cfg(feature = "tch")]
    {
        s2s_tensor::backend::set_tch_threads(1);
        run::<s2s_tensor::backend::Tch>("tch", &Default::default());
    }
}
