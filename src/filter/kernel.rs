//! Gaussian taps, computed exactly as scipy computes them.
//!
//! Bit-exact output needs bit-exact weights, and scipy's weights come from
//! `np.exp(-0.5 / sigma2 * x**2) / sum`. Two details decide the last bit:
//! numpy's `exp` is not libm's on every CPU (on AVX-512 "SKX" machines numpy
//! calls Intel SVML's `__svml_exp8_ha`, which differs from glibc in about 5% of
//! arguments), and `sum` is numpy's pairwise summation. Both are reproduced
//! here in portable scalar code, and the exp flavour is chosen the way numpy
//! chooses it, so a user gets scipy's result on the machine they run on.

use std::sync::OnceLock;

/// Which `exp` numpy uses for float64 arrays on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpFlavour {
    /// The C library's `exp` (numpy's scalar loop; every non-AVX-512 CPU).
    Libm,
    /// Intel SVML's high-accuracy AVX-512 `exp` (numpy on AVX-512 SKX-class CPUs).
    Svml,
}

impl ExpFlavour {
    /// The flavour numpy picks on this CPU, overridable with `NISMOOTH_EXP=libm|svml`
    /// (for a numpy built without SVML, or started with `NPY_DISABLE_CPU_FEATURES`).
    pub fn detect() -> ExpFlavour {
        static DETECTED: OnceLock<ExpFlavour> = OnceLock::new();
        *DETECTED.get_or_init(|| match std::env::var("NISMOOTH_EXP").as_deref() {
            Ok("libm") => ExpFlavour::Libm,
            Ok("svml") => ExpFlavour::Svml,
            _ => cpu_flavour(),
        })
    }

    pub fn exp(self, x: f64) -> f64 {
        match self {
            ExpFlavour::Libm => x.exp(),
            ExpFlavour::Svml => svml_exp(x),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_flavour() -> ExpFlavour {
    // numpy's AVX512_SKX dispatch target: F, CD, BW, DQ and VL, with OS support.
    let skx = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512cd")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl");
    if skx {
        ExpFlavour::Svml
    } else {
        ExpFlavour::Libm
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_flavour() -> ExpFlavour {
    ExpFlavour::Libm
}

/// 2^(j/16), high parts, and their low-order corrections (SVML's tables).
const TH: [u64; 16] = [
    0x3FF0000000000000,
    0x3FF0B5586CF9890F,
    0x3FF172B83C7D517B,
    0x3FF2387A6E756238,
    0x3FF306FE0A31B715,
    0x3FF3DEA64C123422,
    0x3FF4BFDAD5362A27,
    0x3FF5AB07DD485429,
    0x3FF6A09E667F3BCD,
    0x3FF7A11473EB0187,
    0x3FF8ACE5422AA0DB,
    0x3FF9C49182A3F090,
    0x3FFAE89F995AD3AD,
    0x3FFC199BDD85529C,
    0x3FFD5818DCFBA487,
    0x3FFEA4AFA2A490DA,
];
const TLR: [u64; 16] = [
    0x0000000000000000,
    0x3C979AA65D837B6D,
    0xBC801B15EAA59348,
    0x3C968EFDE3A8A894,
    0x3C834D754DB0ABB6,
    0x3C859F48A72A4C6D,
    0x3C7690CEBB7AAFB0,
    0x3C9063E1E21C5409,
    0xBC93B3EFBF5E2228,
    0xBC7B32DCB94DA51D,
    0x3C8DB72FC1F0EAB4,
    0x3C71AFFC2B91CE27,
    0x3C8C1A7792CB3387,
    0x3C736EAE30AF0CB3,
    0x3C74A385A63D07A7,
    0xBC8FF7128FD391F0,
];
const LOG2E: u64 = 0x3FF71547652B82FE;
const LN2_HI: u64 = 0x3FE62E42FEFA39EF;
const LN2_LO: u64 = 0x3C7ABC9E3B39803F;
/// Clears the top exponent bit of r (keeps |r| < 2 on the vector path).
const R_MASK: u64 = 0xBFFFFFFFFFFFFFFF;
const C: [u64; 6] = [
    0x3FEFFFFFFFFFFF70, // c1
    0x3FE000000000D008, // c2
    0x3FC5555553939732, // c3
    0x3FA55557242D68FE, // c4
    0x3F81101CBBC265C0, // c5
    0x3F57411836940C04, // c6
];
/// |x| at or above this goes to SVML's scalar callout (overflow/underflow range).
const CALLOUT: u64 = 0x40861DA04CBAFE44;

fn f(bits: u64) -> f64 {
    f64::from_bits(bits)
}

/// A scalar re-derivation of SVML's `exp8_ha` vector algorithm: N = x·log2(e)
/// rounded toward zero to 1/16 (done exactly via the product's FMA error term),
/// r = x − N·ln2 in two FMA steps, a degree-6 polynomial, and 2^(j/16) from the
/// table. Every step is one IEEE operation, so the result equals the vector
/// code's lane for lane. Arguments in the callout range (|x| ≥ 707.7, results
/// that overflow or are subnormal) fall back to libm.
pub fn svml_exp(x: f64) -> f64 {
    if x.is_nan() || x.abs() >= f(CALLOUT) {
        return x.exp();
    }
    let l = f(LOG2E);
    // floor(16·x·log2e) of the exact product: RZ of (shift + product), shift > 0.
    let p = x * l;
    let e = x.mul_add(l, -p);
    let a = 16.0 * p;
    let mut n16 = a.floor();
    if n16 == a && e < 0.0 {
        n16 -= 1.0;
    }
    let n = n16 / 16.0;
    let n16i = n16 as i64;
    let j = n16i.rem_euclid(16) as usize;
    let m = n16i.div_euclid(16);

    let mut r = (-n).mul_add(f(LN2_HI), x);
    r = (-n).mul_add(f(LN2_LO), r);
    r = f(r.to_bits() & R_MASK);
    let r2 = r * r;
    let p56 = f(C[5]).mul_add(r, f(C[4]));
    let p34 = f(C[3]).mul_add(r, f(C[2]));
    let p12 = f(C[1]).mul_add(r, f(C[0]));
    let p36 = r2.mul_add(p56, p34);
    let p16 = r2.mul_add(p36, p12);
    let q = p16.mul_add(r, f(TLR[j]));
    let th = f(TH[j]);
    let res = th.mul_add(q, th);
    // vscalefpd: multiply by 2^floor(N); exact while the result stays normal.
    res * f(((m + 1023) as u64) << 52)
}

/// numpy's pairwise summation of a contiguous float64 array (`a.sum()`).
pub fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for (k, rk) in r.iter_mut().enumerate() {
                *rk += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
    }
}

/// One axis's kernel: `half[k]` is the weight at distance k, k = 0..=radius,
/// on the right of the centre; the left's is the same (symmetric) or its
/// negative (`odd`: the antisymmetric kernels of scipy's odd derivative
/// orders, which scipy sums as `(left − right)·w[k]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel1d {
    pub half: Vec<f64>,
    pub odd: bool,
}

impl Kernel1d {
    pub fn radius(&self) -> usize {
        self.half.len() - 1
    }

    /// scipy's `_gaussian_kernel1d(sigma, 0, int(truncate * sigma + 0.5))`.
    pub fn gaussian(sigma: f64, truncate: f64, flavour: ExpFlavour) -> Kernel1d {
        let radius = (truncate * sigma + 0.5) as i64;
        let full = gaussian_weights(sigma, radius, flavour);
        Kernel1d {
            half: full[radius as usize..].to_vec(),
            odd: false,
        }
    }
}

/// The full 2r+1 normalised weights, in scipy's order of operations.
pub fn gaussian_weights(sigma: f64, radius: i64, flavour: ExpFlavour) -> Vec<f64> {
    let sigma2 = sigma * sigma;
    let c = -0.5 / sigma2;
    let phi: Vec<f64> = (-radius..=radius)
        .map(|x| flavour.exp(c * (x * x) as f64))
        .collect();
    let sum = numpy_sum(&phi);
    phi.iter().map(|v| v / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radius_follows_scipy_rounding() {
        let k = |s: f64, t: f64| Kernel1d::gaussian(s, t, ExpFlavour::Libm).radius();
        assert_eq!(k(2.0, 4.0), 8);
        assert_eq!(k(1.0, 4.0), 4);
        assert_eq!(k(0.1, 4.0), 0);
        assert_eq!(k(0.125, 4.0), 1); // 0.5 + 0.5 = 1.0
        assert_eq!(k(3.0, 2.5), 8); // 7.5 + 0.5
    }

    #[test]
    fn weights_are_symmetric_and_normalised() {
        for flavour in [ExpFlavour::Libm, ExpFlavour::Svml] {
            let w = gaussian_weights(2.0, 8, flavour);
            assert_eq!(w.len(), 17);
            for k in 0..8 {
                assert_eq!(w[k], w[16 - k]);
            }
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
            assert!(w[8] > w[7] && w[7] > w[6]);
        }
    }

    #[test]
    fn pairwise_sum_differs_from_naive_where_numpy_does() {
        // 1e16 + 1 + ...: the 8-lane blocked sum keeps small terms apart, so order matters.
        let mut a = vec![1.0f64; 16];
        a[0] = 1e16;
        let naive = a.iter().fold(0.0, |s, v| s + v);
        let pw = numpy_sum(&a);
        assert_eq!(naive, 1e16); // each +1 is lost against 1e16
                                 // lane 0 keeps 1e16 (its +1 is lost too), lanes 1..7 hold 2 each and survive.
        assert_eq!(pw, 1e16 + 14.0);
    }

    #[test]
    fn svml_exp_is_within_one_ulp_of_libm() {
        let mut x = -40.0;
        while x < 5.0 {
            let a = svml_exp(x);
            let b = x.exp();
            let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            assert!(ulps <= 1, "x={x}: {a} vs {b}");
            x += 0.0137;
        }
        assert_eq!(svml_exp(0.0), 1.0);
        assert_eq!(svml_exp(-800.0), 0.0);
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    /// numpy's own `np.exp`, recorded on an AVX-512 SKX CPU (scripts/golden/make_exp_golden.py).
    #[test]
    fn svml_exp_matches_numpy_bit_for_bit() {
        let text = include_str!("../../tests/data/svml_exp_golden.txt");
        let mut n = 0;
        for line in text.lines() {
            let mut it = line.split(' ');
            let x = f64::from_bits(u64::from_str_radix(it.next().unwrap(), 16).unwrap());
            let y = f64::from_bits(u64::from_str_radix(it.next().unwrap(), 16).unwrap());
            assert_eq!(svml_exp(x).to_bits(), y.to_bits(), "exp({x:e})");
            n += 1;
        }
        assert!(n > 9000);
    }
}
