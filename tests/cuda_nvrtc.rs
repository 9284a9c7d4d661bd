//! The kernel source through the real NVRTC (feature `cuda`): every type pair
//! a run can ask for compiles, for Hopper and for NVRTC's default target,
//! and the PTX holds no fused multiply-add in double precision, which would
//! round differently from the CPU. NVRTC needs no GPU: CI installs it from
//! PyPI (nvidia-cuda-nvrtc) and sets NISMOOTH_REQUIRE_NVRTC=1, so that a
//! missing library fails the test instead of skipping it.
#![cfg(feature = "cuda")]

use nismooth::filter::cuda::{self, compile_ptx};
use nismooth::volume::DType;

const ALL: [DType; 10] = DType::ALL;

/// Whether NVRTC can be loaded; when it cannot, the test says so and skips,
/// unless the environment requires it.
fn nvrtc_or_skip() -> bool {
    // SAFETY: only tries to dlopen the library.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return true;
    }
    assert!(
        std::env::var("NISMOOTH_REQUIRE_NVRTC").as_deref() != Ok("1"),
        "NISMOOTH_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)"
    );
    eprintln!(
        "skipped: NVRTC not found (pip install nvidia-cuda-nvrtc; add its lib to LD_LIBRARY_PATH)"
    );
    false
}

#[test]
fn every_type_pair_compiles_without_fused_multiply_add() {
    if !nvrtc_or_skip() {
        return;
    }
    for src in ALL {
        for dst in [src, DType::F32, DType::F64] {
            for arch in [Some("compute_90"), None] {
                let ptx = compile_ptx(src, dst, arch)
                    .unwrap_or_else(|e| panic!("{src} → {dst} ({arch:?}): {e}"));
                let entry = format!(".entry {}(", cuda::kernel_name(src, dst));
                assert!(ptx.contains(&entry), "{src} → {dst}: no {entry} in the PTX");
                assert!(
                    !ptx.contains("fma."),
                    "{src} → {dst} ({arch:?}): the PTX fuses a multiply-add"
                );
                assert!(
                    ptx.contains("mul.rn.f64") && ptx.contains("add.rn.f64"),
                    "{src} → {dst}: unexpected arithmetic"
                );
            }
        }
    }
}

#[test]
fn without_fmad_false_nvrtc_would_fuse() {
    // The check above can fail: the same source compiled with NVRTC's
    // default (--fmad=true) does contain fused multiply-adds.
    if !nvrtc_or_skip() {
        return;
    }
    let mut opts = cuda::defines(DType::F32, DType::F32);
    opts.push("--gpu-architecture=compute_90".into());
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(
        cuda::KERNEL_SOURCE,
        cudarc::nvrtc::CompileOptions {
            options: opts,
            ..Default::default()
        },
    )
    .expect("compiles");
    assert!(ptx.to_src().contains("fma.rn.f64"));
}

#[test]
fn a_missing_driver_is_a_clear_error_not_a_panic() {
    // SAFETY: only tries to dlopen the library.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        eprintln!("skipped: this machine has a CUDA driver");
        return;
    }
    let err = cuda::probe().unwrap_err().to_string();
    assert!(err.contains("no CUDA driver was found"), "{err}");
    let err = cuda::CudaBackend::new(1, 0, 1)
        .err()
        .expect("no backend without a driver");
    assert!(
        err.to_string().contains("no CUDA driver was found"),
        "{err}"
    );
}
