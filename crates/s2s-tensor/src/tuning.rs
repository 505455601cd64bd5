//! Process-wide settings of the backends (thread counts, burn-flex's matrix-product packing),
//! for binaries to set once at start-up; no library function sets them.

use crate::backend::BackendKind;

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
/// within the noise. Binaries call it once at start-up: `s2s` for every command (its training
/// validates by decoding; training's products ran 0.98x with it, within the noise, in seven
/// paired runs), `s2s-bench` before it measures decoding, and the translation example. No
/// library function calls it.
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
