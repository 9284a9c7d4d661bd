//! The Python module `nismooth._native` (feature `python`, built by
//! maturin): the CPU backend over numpy arrays, the GIL released while it
//! runs. `python/nismooth/__init__.py` turns scipy's `gaussian_filter`
//! signature into calls of `filter`: each call smooths a Fortran-ordered
//! buffer as up to three spatial axes (and volumes), the same code and bits
//! as `nismooth run`. `main` is the `nismooth` command itself.

use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyMemoryError, PyNotImplementedError, PyValueError};
use pyo3::prelude::*;

use crate::filter::cpu::CpuBackend;
use crate::filter::{ExpFlavour, FilterSpec, Kernel1d, Mode, Semantics};
use crate::volume::{DType, Shape, Voxels};

/// The voxel type of a numpy dtype name (`"float32"`), if nismooth has it.
fn dtype(name: &str) -> PyResult<DType> {
    name.parse::<DType>().map_err(|_| {
        PyNotImplementedError::new_err(format!(
            "dtype {name} (nismooth smooths integers of 8 to 64 bits, float32 and float64)"
        ))
    })
}

/// Where a Fortran-contiguous array's bytes are, and how many.
fn buffer(a: &Bound<'_, PyUntypedArray>, what: &str) -> PyResult<(*mut u8, usize)> {
    if !a.is_fortran_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be Fortran-contiguous"
        )));
    }
    // SAFETY: `as_array_ptr` is the live PyArrayObject behind `a`; reading
    // its data pointer does not touch the data.
    let data = unsafe { (*a.as_array_ptr()).data.cast::<u8>() };
    Ok((data, a.len() * a.dtype().itemsize()))
}

/// Smooths `input` into `output` (both Fortran-contiguous, native order,
/// `spatial[0]·spatial[1]·spatial[2]·volumes` values): scipy's passes over
/// the spatial axes whose σ is above 1e-15, in the order `order` (a
/// permutation of 0, 1, 2), each stored in the output's dtype before the next.
/// The engine reads and writes the arrays' own memory; only an input that
/// overlaps the output in another layout, or is not aligned, is copied first.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (input, output, spatial, volumes, sigma, truncate, mode, cval, threads, order, weights=None, odd=[false; 3]))]
fn filter(
    py: Python<'_>,
    input: &Bound<'_, PyUntypedArray>,
    output: &Bound<'_, PyUntypedArray>,
    spatial: [usize; 3],
    volumes: usize,
    sigma: [f64; 3],
    truncate: f64,
    mode: &str,
    cval: f64,
    threads: usize,
    order: [usize; 3],
    weights: Option<[Option<Vec<f64>>; 3]>,
    odd: [bool; 3],
) -> PyResult<()> {
    let din = dtype(&input.dtype().to_string())?;
    let dout = dtype(&output.dtype().to_string())?;
    let n: usize = spatial.iter().product::<usize>() * volumes;
    if input.len() != n || output.len() != n {
        return Err(PyValueError::new_err("shape and array sizes differ"));
    }
    let mode: Mode = mode
        .parse()
        .map_err(|_| PyValueError::new_err(format!("mode {mode:?}")))?;
    let (src, src_len) = buffer(input, "input")?;
    let (dst, dst_len) = buffer(output, "output")?;
    if !aligned(dst, dout) {
        return Err(PyValueError::new_err("output must be aligned"));
    }
    let in_place = src == dst && din == dout;
    let overlap =
        (src as usize) < dst as usize + dst_len && (dst as usize) < src as usize + src_len;
    // The engine's contract (`smooth_raw`): one buffer of one dtype, or two
    // disjoint ones, each aligned. Anything else reads from a copy.
    let copy = ((overlap && !in_place) || !aligned(src, din)).then(|| {
        let mut v = Voxels::zeros(din, n);
        // SAFETY: numpy holds `src_len` contiguous bytes at `src` while the
        // array is borrowed for this call; they are read before any write.
        v.as_bytes_mut()
            .copy_from_slice(unsafe { std::slice::from_raw_parts(src, src_len) });
        v
    });
    // The Python side caps `threads` with a warning; this keeps any caller
    // of the private function from starting 100 000 threads.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.clamp(1, cpus);
    let kernels = kernels(sigma, truncate, weights, odd, threads, spatial)?;
    let shape = Shape {
        spatial,
        spatial_ndim: 3,
        volumes,
    };
    let (src, dst) = (Shared(src), Shared(dst));
    let result = py.detach(move || {
        let mut backend = CpuBackend::new(threads)?;
        let from = copy
            .as_ref()
            .map_or(src.ptr(), |v| v.as_bytes().as_ptr().cast_mut());
        // SAFETY: `from` holds n values of `din` (the input array, or its
        // aligned copy), `dst` n values of `dout` (the output array, aligned,
        // writeable: the Python side checks); both stay borrowed for this
        // call and nothing else touches them (the caller waits, GIL held by
        // none of ours); they are one buffer of one dtype or disjoint (above).
        unsafe {
            backend.smooth_raw(
                from,
                din,
                dst.ptr(),
                dout,
                shape,
                &kernels,
                (mode, cval),
                order,
            )
        }
    });
    result.map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Each spatial axis's kernel: the half-kernels the caller gives (numpy's
/// own, for a σ that is not float64 or a derivative order, `odd` where
/// antisymmetric), or scipy's float64 ones from σ and truncate. Refused before anything is allocated: a radius that is not a
/// number (ValueError), or one whose weights and padded lines this machine
/// cannot hold (MemoryError, as numpy says it; an allocation that fails
/// inside Rust would abort the interpreter instead).
fn kernels(
    sigma: [f64; 3],
    truncate: f64,
    weights: Option<[Option<Vec<f64>>; 3]>,
    odd: [bool; 3],
    threads: usize,
    spatial: [usize; 3],
) -> PyResult<[Option<Kernel1d>; 3]> {
    let radii: [f64; 3] = match &weights {
        Some(w) => std::array::from_fn(|a| w[a].as_ref().map_or(0.0, |h| h.len() as f64 - 1.0)),
        None => std::array::from_fn(|a| {
            if sigma[a] > crate::filter::SIGMA_EPS {
                crate::filter::radius_f64(sigma[a], truncate)
            } else {
                0.0
            }
        }),
    };
    for (a, &r) in radii.iter().enumerate() {
        if r.is_nan() || r < 0.0 {
            return Err(PyValueError::new_err(format!(
                "kernel radius {r} along axis {a}: sigma and truncate must give a nonnegative integer"
            )));
        }
        // The weights, and every thread's line padded by the radius on each side.
        let values = (2.0 * r + 1.0) + (threads as f64 + 1.0) * (spatial[a] as f64 + 2.0 * r);
        let bytes = values * 8.0;
        if !bytes.is_finite() || bytes > memory_available() {
            return Err(PyMemoryError::new_err(format!(
                "Unable to allocate {bytes:.3e} bytes for a Gaussian kernel of radius {r} along axis {a}"
            )));
        }
    }
    Ok(match weights {
        Some(w) => {
            let mut w = w.into_iter();
            std::array::from_fn(|a| {
                let half = w.next().flatten().filter(|h| !h.is_empty())?;
                Some(Kernel1d { half, odd: odd[a] })
            })
        }
        None => FilterSpec {
            sigma,
            truncate,
            mode: Mode::Reflect,
            cval: 0.0,
            exp: ExpFlavour::detect(),
            semantics: Semantics::Scipy,
        }
        .kernels(3),
    })
}

/// Bytes this machine can still give (MemAvailable), or no bound where
/// /proc/meminfo cannot be read.
fn memory_available() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024.0)
        })
        .unwrap_or(f64::INFINITY)
}

/// Whether `p` is aligned for values of `t` (numpy arrays usually are; a
/// view made from a byte buffer at an odd offset need not be).
fn aligned(p: *mut u8, t: DType) -> bool {
    crate::with_dtype!(t, T => (p as usize).is_multiple_of(std::mem::align_of::<T>()))
}

/// An array's address, carried into the GIL-free closure.
struct Shared(*mut u8);

impl Shared {
    /// Through a method, so that the closure captures the whole `Shared`.
    fn ptr(&self) -> *mut u8 {
        self.0
    }
}
// SAFETY: the closure runs while this call still borrows the arrays, and
// nothing else writes them (the GIL-holding caller waits for the closure).
unsafe impl Send for Shared {}

/// `nismooth ARGS…` as the binary runs it (the wheel's `nismooth` command):
/// the exit code. The GIL is released for the whole run. Arguments are
/// taken as the file system's bytes (a name that is not UTF-8 arrives as
/// Python's surrogate escapes), as the binary takes them.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> u8 {
    py.detach(move || crate::app::main(argv))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(filter, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
