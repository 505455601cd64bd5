//! Element-wise CPU kernels over `f32` slices, written without branches or library calls so
//! that the compiler vectorises their loops: `exp`, `sigmoid` and `tanh`.
//!
//! burn-flex 0.21 evaluates `sigmoid` and `tanh` through the C library's scalar `expf` and
//! `tanhf`, one element at a time with a branch each; `s2s_tensor::activation` runs these
//! kernels on flex tensors instead. They live in a crate of their own so that the test
//! profiles, which leave the workspace's crates unoptimised, can still build them at
//! `opt-level = 3` (see the workspace's `Cargo.toml`): unoptimised, they would be slower
//! than the library calls they replace. [`cells`] builds the element-wise part of a GRU or
//! LSTM step, and of its gradient, on them, and [`attention`] the weights of additive
//! attention and theirs: one pass per row instead of a kernel per operation.
//!
//! Every public kernel runs its loops through `pulp`'s run-time dispatch, compiled for AVX2
//! and FMA where the CPU has them (and for AVX-512 when `pulp`'s `x86-v4` feature is on, as
//! `s2s-tensor`'s `flex` feature turns it on) and for the target's baseline otherwise (SSE2
//! on x86-64), with the same results on all.

pub mod attention;
pub mod cells;
pub mod optim;

/// `f()` compiled for the widest vector instructions of the CPU it runs on (AVX2 and FMA on
/// x86-64, where available), chosen at run time by `pulp`; `f` must be `#[inline(always)]`
/// so that its loops are compiled inside the dispatched function. Without it the kernels
/// would be built for the target's baseline: 4-lane SSE2 on x86-64, which halved the
/// throughput of their `exp`-bound loops. No fused multiply-add is introduced (Rust does not
/// contract `a * b + c`), so the results are the same on every path.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    struct Op<F>(F);
    impl<R, F: FnOnce() -> R> pulp::WithSimd for Op<F> {
        type Output = R;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> R {
            (self.0)()
        }
    }
    pulp::Arch::new().dispatch(Op(f))
}

/// `sigmoid` of every value, in place.
pub fn sigmoid_in_place(values: &mut [f32]) {
    vectorized(
        #[inline(always)]
        || sigmoid_slice(values),
    )
}

/// `tanh` of every value, in place.
pub fn tanh_in_place(values: &mut [f32]) {
    vectorized(
        #[inline(always)]
        || tanh_slice(values),
    )
}

/// [`sigmoid_in_place`] for the kernels, which are already inside [`vectorized`].
#[inline(always)]
pub(crate) fn sigmoid_slice(values: &mut [f32]) {
    for v in values {
        *v = sigmoid_f32(*v);
    }
}

/// [`tanh_in_place`] for the kernels, which are already inside [`vectorized`].
#[inline(always)]
pub(crate) fn tanh_slice(values: &mut [f32]) {
    for v in values {
        *v = tanh_f32(*v);
    }
}

/// `exp(x)` without branches or library calls, so that a loop over it vectorises: Cephes'
/// `expf` (a degree-5 polynomial on `[-ln 2 / 2, ln 2 / 2]` scaled by `2^n`), within a few
/// units in the last place. Inputs are clamped to `[-87, 88]`, where the result is a normal
/// `f32`; NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // Comparisons rather than `min`/`max`, which would turn NaN into a bound.
    let x = if x > 88.0 { 88.0 } else { x };
    let x = if x < -87.0 { -87.0 } else { x };
    // Round x / ln 2 to the nearest integer n: adding 1.5 * 2^23 leaves n in the low bits.
    const SHIFT: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n_bits = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let n = t - SHIFT;
    // r = x - n ln 2, with ln 2 split so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    // 2^n, with n in [-126, 127] after the clamp.
    e * f32::from_bits((n_bits.wrapping_add(127) as u32) << 23)
}

/// `1 / (1 + exp(-x))`, from [`exp_f32`].
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh(x)`: Cephes' odd polynomial below `|x| = 0.625`, `1 - 2 / (exp(2|x|) + 1)` above,
/// both on `|x|` with the sign of `x` put back; both are computed and one selected, which
/// keeps a loop over it branch-free.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = a * a;
    let mut p = -5.704_988_7e-3;
    p = p * z + 2.063_909e-2;
    p = p * z - 5.373_971_6e-2;
    p = p * z + 1.333_144_2e-1;
    p = p * z - 3.333_328e-1;
    let small = p * z * a + a;
    let large = 1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0);
    let t = if a < 0.625 { small } else { large };
    t.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs from -100 to 100 with small steps near zero, plus the edges.
    fn inputs() -> Vec<f32> {
        let mut xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 5e-3).collect();
        xs.extend((-1000..=1000).map(|i| i as f32 * 1e-6));
        xs.extend([
            -100.0, -88.5, -87.5, 87.5, 88.5, 100.0, 0.0, -0.0, 1e-30, -1e-30,
        ]);
        xs
    }

    fn assert_near(got: f32, want: f64, what: &str, x: f32) {
        let tolerance = 4.0 * f32::EPSILON as f64 * want.abs().max(f32::MIN_POSITIVE as f64);
        assert!(
            (got as f64 - want).abs() <= tolerance,
            "{what}({x}) = {got}, want {want}"
        );
    }

    #[test]
    fn exp_is_within_a_few_ulp_in_range() {
        for x in inputs().into_iter().filter(|x| (-87.0..=88.0).contains(x)) {
            assert_near(exp_f32(x), (x as f64).exp(), "exp", x);
        }
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn sigmoid_and_tanh_are_within_a_few_ulp() {
        for x in inputs() {
            let sigmoid = 1.0 / (1.0 + (-(x as f64)).exp());
            // Below -87 the clamp gives about 1.6e-38 where the true value is smaller.
            if x >= -87.0 {
                assert_near(sigmoid_f32(x), sigmoid, "sigmoid", x);
            } else {
                assert!(sigmoid_f32(x) < 1e-37);
            }
            assert_near(tanh_f32(x), (x as f64).tanh(), "tanh", x);
        }
        assert!(sigmoid_f32(f32::NAN).is_nan());
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
    }
}
