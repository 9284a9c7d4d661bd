//! The definition: scipy's sequence one output at a time, in scalar f64.
//! The fallback where no vector unit is found, and the reference the
//! vector kernels are tested against.

/// The definition, one output at a time (also the fallback on other CPUs).
pub fn convolve_scalar(tile: &[f64], out: &mut [f64], width: usize, w: &[f64], odd: bool) {
    for (i, o) in out.chunks_exact_mut(width).enumerate() {
        for (l, o) in o.iter_mut().enumerate() {
            *o = scipy_sum(|row| tile[(i + row) * width + l], w, odd);
        }
    }
}

/// scipy's sequence for one output, in scalar f64 (Rust never contracts
/// it): `x(j)` is row `j` of the output's window, `0..=2r`, centre `r`.
/// An `odd` (antisymmetric) kernel's pairs are `left − right`.
#[inline(always)]
pub(super) fn scipy_sum(x: impl Fn(usize) -> f64, w: &[f64], odd: bool) -> f64 {
    let r = w.len() - 1;
    let mut acc = x(r) * w[0];
    for k in (1..=r).rev() {
        let pair = if odd {
            x(r - k) - x(r + k)
        } else {
            x(r - k) + x(r + k)
        };
        acc += pair * w[k];
    }
    acc
}
