//! The Python module `nismooth._native` (feature `python`, built by
//! maturin): the CPU backend over numpy arrays, the GIL released while it
//! runs. `python/nismooth/__init__.py` turns scipy's `gaussian_filter`
//! signature into calls of `filter`: each call smooths a Fortran-ordered
//! buffer as up to three spatial axes (and volumes), the same code and bits
//! as `nismooth run`. `main` is the `nismooth` command itself.

use clap::FromArgMatches;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyNotImplementedError, PyValueError};
use pyo3::prelude::*;

use crate::filter::cpu::CpuBackend;
use crate::filter::{ExpFlavour, FilterSpec, Mode, Semantics};
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
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (input, output, spatial, volumes, sigma, truncate, mode, cval, threads, order))]
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
    let mut voxels = Voxels::zeros(din, n);
    // SAFETY: numpy holds `src_len` contiguous bytes at `src` while the
    // array is borrowed for this call; they are only read, and before any
    // write to the output (which may be the same array, smoothed in place).
    voxels
        .as_bytes_mut()
        .copy_from_slice(unsafe { std::slice::from_raw_parts(src, src_len) });
    let out = Shared(dst);
    let spec = FilterSpec {
        sigma,
        truncate,
        mode,
        cval,
        exp: ExpFlavour::detect(),
        semantics: Semantics::Scipy,
    };
    let shape = Shape {
        spatial,
        spatial_ndim: 3,
        volumes,
    };
    let result = py.detach(move || {
        let mut backend = CpuBackend::new(threads)?;
        let smoothed = backend.smooth_in_order(voxels, shape, &spec, dout, order)?;
        let bytes = smoothed.as_bytes();
        assert_eq!(
            bytes.len(),
            dst_len,
            "the output holds n values of its dtype"
        );
        // SAFETY: the output array (borrowed for this call, writeable: the
        // Python side checks) holds `dst_len` contiguous bytes at `dst`; the
        // input's bytes were copied out before this write.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.ptr(), dst_len) };
        Ok::<(), crate::filter::FilterError>(())
    });
    result.map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The output's address, carried into the GIL-free closure.
struct Shared(*mut u8);

impl Shared {
    /// Through a method, so that the closure captures the whole `Shared`.
    fn ptr(&self) -> *mut u8 {
        self.0
    }
}
// SAFETY: the closure runs while this call still borrows the array, and
// nothing else writes it (the GIL-holding caller waits for the closure).
unsafe impl Send for Shared {}

/// The binary's command line, compiled into the module.
#[path = "app/mod.rs"]
#[allow(dead_code)]
mod app;

/// `nismooth ARGS…` as the binary runs it (the wheel's `nismooth` command):
/// the exit code. The GIL is released for the whole run.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(move || {
        crate::metrics::mark_start();
        let matches = match app::shell::command().try_get_matches_from(argv) {
            Ok(m) => m,
            Err(e) => {
                let _ = e.print();
                return e.exit_code() as u8;
            }
        };
        match app::cli::Cli::from_arg_matches(&matches) {
            Ok(cli) => app::dispatch(cli),
            Err(e) => {
                let _ = e.print();
                e.exit_code() as u8
            }
        }
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(filter, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
