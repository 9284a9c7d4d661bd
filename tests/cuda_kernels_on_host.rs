//! The CUDA kernels, run on the host: `kernels.cu` compiled as C++ (with
//! `-ffp-contract=off`, as NVRTC's `--fmad=false`), launched over the grid
//! that `filter::cuda::plan` chooses, pass by pass through the plan's
//! buffers. Every voxel must equal the CPU backend's, bit for bit (NaN as
//! NaN, whatever its sign), for every boundary mode, every dtype and each
//! output dtype, short axes, 4-D images, out-of-range integer stores and NaN/Inf. This checks the kernels' logic and
//! arithmetic and the plan in CI, where there is no GPU; on a GPU, the same
//! comparison runs in tests/python/test_cuda.py.

use std::path::Path;
use std::process::Command;

use nismooth::filter::cpu::CpuBackend;
use nismooth::filter::cuda::{self, Buf, Plan, BLOCK, KERNEL_SOURCE};
use nismooth::filter::{Backend, ExpFlavour, FilterSpec, Mode, Semantics, Shape};
use nismooth::volume::{DType, Sample, Voxels};
use nismooth::with_dtype;

const ALL: [DType; 10] = DType::ALL;

type HostPass = unsafe extern "C" fn(
    *const u8,
    *mut u8,
    i64,
    i64,
    i64,
    i64,
    i32,
    *const f64,
    i32,
    i32,
    f64,
    u32,
    u32,
    u32,
    u32,
    u32,
);

/// The type pairs a run can ask for: output = input, float32 or float64.
fn pairs() -> Vec<(DType, DType)> {
    let mut set = Vec::new();
    for d in ALL {
        for out in [d, DType::F32, DType::F64] {
            if !set.contains(&(d, out)) {
                set.push((d, out));
            }
        }
    }
    set
}

/// A C++ file that instantiates the kernel for every pair and, beside each,
/// a launcher that plays the grid: every block, every thread, in turn.
fn host_source() -> String {
    let mut s = String::from(
        "struct nismooth_dim3 { unsigned x, y, z; };\n\
         static nismooth_dim3 blockIdx, blockDim, threadIdx, gridDim;\n\
         #define __global__\n#define __device__\n#define __forceinline__ inline\n",
    );
    for (src, dst) in pairs() {
        let name = cuda::kernel_name(src, dst);
        s += &format!(
            "#define SRC_T {}\n#define DST_T {}\n#define NISMOOTH_KERNEL {name}\n#include \"kernels.cu\"\n\
             #undef SRC_T\n#undef DST_T\n#undef NISMOOTH_KERNEL\n",
            cuda::c_type(src),
            cuda::c_type(dst)
        );
        s += &format!(
            "extern \"C\" void host_{name}(const void* s, void* d, long long n0, long long n1,\n\
             long long n2, long long slabs, int axis, const double* w, int r, int mode, double cval,\n\
             unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by) {{\n\
               gridDim = {{gx, gy, gz}}; blockDim = {{bx, by, 1}};\n\
               for (unsigned z = 0; z < gz; ++z) for (unsigned y = 0; y < gy; ++y)\n\
               for (unsigned x = 0; x < gx; ++x) for (unsigned ty = 0; ty < by; ++ty)\n\
               for (unsigned tx = 0; tx < bx; ++tx) {{\n\
                 blockIdx = {{x, y, z}}; threadIdx = {{tx, ty, 0}};\n\
                 {name}(({src_t}*)s, ({dst_t}*)d, n0, n1, n2, slabs, axis, w, r, mode, cval);\n\
               }}\n}}\n",
            src_t = cuda::c_type(src),
            dst_t = cuda::c_type(dst),
        );
    }
    s
}

struct Kernels {
    lib: libloading::Library,
    _dir: tempfile::TempDir,
}

fn build(dir: &Path) -> libloading::Library {
    std::fs::write(dir.join("kernels.cu"), KERNEL_SOURCE).unwrap();
    std::fs::write(dir.join("host.cpp"), host_source()).unwrap();
    let so = dir.join("libkernels.so");
    let out = Command::new(std::env::var("CXX").unwrap_or_else(|_| "c++".into()))
        .args([
            "-O2",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-shared",
            "-fPIC",
            "-x",
            "c++",
        ])
        .arg(dir.join("host.cpp"))
        .arg("-o")
        .arg(&so)
        .output()
        .expect("a C++ compiler (c++) to build the kernels for the host");
    assert!(
        out.status.success(),
        "kernels.cu does not compile as C++:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: our own library, built just now.
    unsafe { libloading::Library::new(&so) }.expect("load the host kernels")
}

impl Kernels {
    fn new() -> Kernels {
        let dir = tempfile::tempdir().unwrap();
        Kernels {
            lib: build(dir.path()),
            _dir: dir,
        }
    }

    /// Runs a plan as the CUDA backend does, with host buffers for the
    /// device's; returns the result buffer's bytes.
    fn run(&self, plan: &Plan, input: &Voxels, out: DType) -> Vec<u8> {
        let out_bytes = plan.len * out.size();
        let mut bufs = [
            input.as_bytes().to_vec(),
            vec![0u8; out_bytes],
            vec![0u8; out_bytes],
        ];
        let ix = |b: Buf| match b {
            Buf::Input => 0,
            Buf::A => 1,
            Buf::B => 2,
        };
        let [n0, n1, n2, slabs] = plan.dims;
        for p in &plan.passes {
            let name = format!("host_{}", cuda::kernel_name(p.src, p.dst));
            // SAFETY: the signature is the launcher's above.
            let f: libloading::Symbol<HostPass> = unsafe { self.lib.get(name.as_bytes()) }.unwrap();
            let src = bufs[ix(p.from)].clone();
            let dst = &mut bufs[ix(p.to)];
            // SAFETY: the buffers hold plan.len voxels of the pass's types.
            unsafe {
                f(
                    src.as_ptr(),
                    dst.as_mut_ptr(),
                    n0,
                    n1,
                    n2,
                    slabs,
                    p.axis as i32,
                    p.weights.as_ptr(),
                    (p.weights.len() - 1) as i32,
                    plan.mode,
                    plan.cval,
                    plan.grid.0,
                    plan.grid.1,
                    plan.grid.2,
                    BLOCK.0,
                    BLOCK.1,
                )
            };
        }
        std::mem::take(&mut bufs[ix(plan.result().expect("a filtered axis"))])
    }
}

/// Voxels spread over the dtype's range (and beyond ±2^53 for 64-bit ones).
fn data(dtype: DType, n: usize, seed: u64) -> Voxels {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let (lo, hi) = match dtype {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U16 => (0.0, 65535.0),
        DType::I32 => (-2.1e9, 2.1e9),
        DType::U32 => (0.0, 4.2e9),
        DType::I64 => (-9.0e18, 9.0e18),
        DType::U64 => (0.0, 1.8e19),
        DType::F32 | DType::F64 => (-1e3, 1e3),
    };
    with_dtype!(dtype, T => {
        let v: Vec<T> = (0..n).map(|_| T::from_f64((lo + (hi - lo) * next()).trunc())).collect();
        <T as nismooth::volume::VoxelVec>::wrap(v)
    })
}

fn spec(sigma: [f64; 3], mode: Mode, cval: f64) -> FilterSpec {
    FilterSpec {
        sigma,
        truncate: 4.0,
        mode,
        cval,
        exp: ExpFlavour::detect(),
        semantics: Semantics::Scipy,
    }
}

fn shape(spatial: [usize; 3], volumes: usize) -> Shape {
    Shape {
        spatial,
        spatial_ndim: 3,
        volumes,
    }
}

fn check(k: &Kernels, input: Voxels, shape: Shape, spec: &FilterSpec, out: DType, what: &str) {
    let plan = cuda::plan(shape, spec, input.dtype(), out).expect("plan");
    let gpu = k.run(&plan, &input, out);
    let cpu = CpuBackend::new(1)
        .unwrap()
        .smooth(input, shape, spec, out)
        .expect("cpu");
    assert_eq!(gpu.len(), cpu.as_bytes().len(), "{what}");
    let sz = out.size();
    let same = |g: &[u8], c: &[u8]| g == c || (is_nan(g, out) && is_nan(c, out));
    let bad = gpu
        .chunks(sz)
        .zip(cpu.as_bytes().chunks(sz))
        .position(|(g, c)| !same(g, c));
    if let Some(v) = bad {
        panic!(
            "{what}: voxel {v} differs: {:02x?} here, {:02x?} on the CPU",
            &gpu[v * sz..v * sz + sz],
            &cpu.as_bytes()[v * sz..v * sz + sz]
        );
    }
}

/// NaN is compared as NaN: its sign and payload are not part of scipy's
/// contract (numpy's `array_equal(equal_nan=True)`), and GPUs return one canonical NaN.
fn is_nan(bytes: &[u8], dtype: DType) -> bool {
    match dtype {
        DType::F32 => f32::from_ne_bytes(bytes.try_into().unwrap()).is_nan(),
        DType::F64 => f64::from_ne_bytes(bytes.try_into().unwrap()).is_nan(),
        _ => false,
    }
}

#[test]
fn every_mode_and_dtype_pair_equals_the_cpu_bit_for_bit() {
    let k = Kernels::new();
    let sh = shape([21, 13, 7], 2);
    for (i, (src, out)) in pairs().into_iter().enumerate() {
        for mode in Mode::EVERY {
            let sp = spec([1.3, 0.8, 1.7], mode, 7.5);
            let input = data(src, sh.len(), 17 + i as u64);
            check(&k, input, sh, &sp, out, &format!("{src} → {out}, {mode}"));
        }
    }
}

#[test]
fn axes_shorter_than_the_kernel_and_skipped_axes() {
    let k = Kernels::new();
    for (spatial, sigma) in [
        ([1, 5, 3], [2.0, 2.0, 2.0]),
        ([2, 1, 9], [3.0, 0.0, 1.0]),
        ([3, 4, 2], [0.0, 2.5, 4.0]),
        ([40, 2, 1], [1.0, 5.0, 0.0]),
    ] {
        for mode in Mode::EVERY {
            for dtype in [DType::U8, DType::F32] {
                let sh = shape(spatial, 1);
                let sp = spec(sigma, mode, -3.25);
                let what = format!("{spatial:?} σ {sigma:?} {mode} {dtype}");
                check(&k, data(dtype, sh.len(), 5), sh, &sp, dtype, &what);
            }
        }
    }
}

#[test]
fn more_slices_than_the_grid_holds_are_walked_by_stride() {
    let k = Kernels::new();
    let sh = shape([3, 2, 50], 1400); // 70 000 slabs > 65 535
    let sp = spec([1.0, 1.0, 1.5], Mode::Wrap, 0.0);
    let plan = cuda::plan(sh, &sp, DType::I16, DType::I16).unwrap();
    assert!((plan.grid.2 as i64) < plan.dims[3]);
    check(
        &k,
        data(DType::I16, sh.len(), 9),
        sh,
        &sp,
        DType::I16,
        "70 000 slabs",
    );
}

#[test]
fn out_of_range_stores_and_non_finite_values_follow_x86() {
    let k = Kernels::new();
    let sh = shape([9, 8, 7], 1);
    // A cval far beyond every integer type: the edges store "integer indefinite"
    // values, truncated to each type, exactly as scipy's C casts on x86-64.
    for dtype in ALL.into_iter().filter(|d| !d.is_float()) {
        let sp = spec([1.0, 1.0, 1.0], Mode::Constant, 1e30);
        check(
            &k,
            data(dtype, sh.len(), 3),
            sh,
            &sp,
            dtype,
            &format!("{dtype} cval 1e30"),
        );
        let sp = spec([1.0, 1.0, 1.0], Mode::Constant, f64::NAN);
        check(
            &k,
            data(dtype, sh.len(), 4),
            sh,
            &sp,
            dtype,
            &format!("{dtype} cval NaN"),
        );
    }
    for dtype in [DType::F32, DType::F64] {
        let mut v = data(dtype, sh.len(), 8);
        match &mut v {
            Voxels::F32(x) => {
                x[10] = f32::NAN;
                x[200] = f32::INFINITY;
                x[201] = f32::NEG_INFINITY;
                x[300] = 3.0e38;
            }
            Voxels::F64(x) => {
                x[10] = f64::NAN;
                x[200] = f64::INFINITY;
                x[250] = f64::NEG_INFINITY;
            }
            _ => unreachable!(),
        }
        for mode in Mode::EVERY {
            let sp = spec([1.0, 2.0, 1.0], mode, 0.0);
            check(
                &k,
                v.clone(),
                sh,
                &sp,
                dtype,
                &format!("{dtype} NaN/Inf {mode}"),
            );
        }
    }
}
