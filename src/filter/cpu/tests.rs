//! The CPU backend's tiled passes against the line-by-line definition,
//! and its boundary modes and casts.

use super::*;
use crate::filter::test_noise as noise;
use crate::filter::ExpFlavour;
use crate::volume::VoxelVec;
use crate::with_dtype;

/// Smooths a single-volume f64 array.
fn smooth_f64(data: Vec<f64>, shape: Shape, spec: &FilterSpec) -> Vec<f64> {
    let mut backend = CpuBackend::new(1).expect("pool");
    match backend
        .smooth(Voxels::F64(data), shape, spec, DType::F64)
        .expect("smooth")
    {
        Voxels::F64(v) => v,
        _ => unreachable!(),
    }
}

/// Reference implementation: one line at a time, straight from the definition.
/// Used by the tests to check the tiled code on shapes and modes at random.
fn reference<S: Sample, D: Sample + VoxelVec>(
    src: &[S],
    n: [usize; 3],
    kernels: &[Option<Kernel1d>; 3],
    mode: Mode,
    cval: f64,
) -> Vec<D> {
    let stride = [1, n[0], n[0] * n[1]];
    let mut cur: Option<Vec<D>> = None;
    for a in 0..3 {
        let Some(k) = &kernels[a] else { continue };
        let input: Vec<f64> = match &cur {
            None => src.iter().map(|x| x.to_f64()).collect(),
            Some(v) => v.iter().map(|x| x.to_f64()).collect(),
        };
        let mut output = vec![D::from_f64(0.0); input.len()];
        let r = k.radius() as isize;
        for start in 0..input.len() {
            let coord = (start / stride[a]) % n[a];
            if coord != 0 {
                continue;
            }
            let at = |i: isize| match mode.source(i, n[a]) {
                Some(j) => input[start + j * stride[a]],
                None => cval,
            };
            for i in 0..n[a] as isize {
                let mut acc = at(i) * k.half[0];
                for kk in (1..=r).rev() {
                    acc += (at(i - kk) + at(i + kk)) * k.half[kk as usize];
                }
                output[start + i as usize * stride[a]] = D::from_f64(acc);
            }
        }
        cur = Some(output);
    }
    cur.unwrap_or_else(|| src.iter().map(|x| D::from_f64(x.to_f64())).collect())
}

/// Runs `reference` for a dtype chosen at run time.
fn reference_voxels(input: &Voxels, shape: Shape, spec: &FilterSpec, out: DType) -> Voxels {
    let kernels = spec.kernels(shape.spatial_ndim);
    with_voxels!(input, src => with_dtype!(out, T => {
        let n = shape.volume_len();
        let mut all: Vec<T> = Vec::with_capacity(src.len());
        for v in 0..shape.volumes {
            all.extend(reference::<_, T>(&src[v * n..(v + 1) * n], shape.spatial, &kernels, spec.mode, spec.cval));
        }
        T::wrap(all)
    }))
}

fn spec(sigma: [f64; 3], mode: Mode) -> FilterSpec {
    FilterSpec {
        sigma,
        truncate: 4.0,
        mode,
        cval: 7.5,
        exp: ExpFlavour::Libm,
        semantics: crate::filter::Semantics::Scipy,
    }
}

#[test]
fn tiled_passes_equal_the_line_by_line_definition() {
    // The last two fill whole tiles along y and z (rows of 16 and 32
    // lanes), where the kernel stores the output dtype itself.
    let shapes = [
        [5, 6, 7],
        [1, 9, 4],
        [17, 3, 2],
        [33, 20, 1],
        [2, 2, 2],
        [16, 5, 9],
        [32, 17, 6],
    ];
    for (si, &n) in shapes.iter().enumerate() {
        for mode in Mode::EVERY {
            for sigma in [[2.0, 2.0, 2.0], [1.0, 2.0, 3.0], [0.0, 1.5, 0.7]] {
                let shape = Shape {
                    spatial: n,
                    spatial_ndim: 3,
                    volumes: 2,
                };
                let data = noise(shape.len(), si as u64);
                let s = spec(sigma, mode);
                let outs: &[DType] = if n[0] % 16 == 0 {
                    &DType::ALL
                } else {
                    &[DType::F64, DType::F32, DType::I16]
                };
                for &out in outs {
                    let input = Voxels::F32(data.iter().map(|&x| x as f32).collect());
                    let want = reference_voxels(&input, shape, &s, out);
                    let got = CpuBackend::new(2)
                        .unwrap()
                        .smooth(input, shape, &s, out)
                        .unwrap();
                    assert_eq!(
                        got, want,
                        "shape {n:?} mode {mode} sigma {sigma:?} out {out}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_constant_image_stays_constant_in_nearest_mode() {
    let shape = Shape {
        spatial: [8, 8, 8],
        spatial_ndim: 3,
        volumes: 1,
    };
    let out = smooth_f64(vec![3.0; 512], shape, &spec([2.0; 3], Mode::Nearest));
    assert!(out.iter().all(|&v| (v - 3.0).abs() < 1e-12));
}

#[test]
fn constant_mode_pulls_edges_toward_cval() {
    let shape = Shape {
        spatial: [9, 1, 1],
        spatial_ndim: 1,
        volumes: 1,
    };
    let out = smooth_f64(vec![0.0; 9], shape, &spec([1.0, 0.0, 0.0], Mode::Constant));
    // radius 4: the centre never reaches the pad, the ends see cval = 7.5.
    assert_eq!(out[4], 0.0);
    assert!(out[0] > out[1] && out[1] > 0.0, "{out:?}");
}

#[test]
fn no_filtered_axis_copies_with_cast() {
    let shape = Shape {
        spatial: [3, 1, 1],
        spatial_ndim: 3,
        volumes: 1,
    };
    let got = CpuBackend::new(1)
        .unwrap()
        .smooth(
            Voxels::F32(vec![1.7, -2.2, 3.9]),
            shape,
            &spec([0.0; 3], Mode::Reflect),
            DType::I16,
        )
        .unwrap();
    assert_eq!(got, Voxels::I16(vec![1, -2, 3]));
}

#[test]
fn images_big_enough_to_share_give_the_same_bits_on_one_thread_and_two() {
    // Above `SHARED_FROM` the passes split across the pool; a series of
    // small volumes is shared by its total size. Both must equal the
    // definition, as the small images (filtered on the calling thread) do.
    let shapes = [([48, 40, 36], 1), ([16, 16, 16], 20)];
    for (n, volumes) in shapes {
        let shape = Shape {
            spatial: n,
            spatial_ndim: 3,
            volumes,
        };
        assert!(shape.len() >= SHARED_FROM);
        let s = spec([2.0, 1.5, 2.5], Mode::Reflect);
        let input = Voxels::F32(noise(shape.len(), 9).iter().map(|&x| x as f32).collect());
        for out in [DType::F32, DType::I16] {
            let want = reference_voxels(&input, shape, &s, out);
            for threads in [1, 2] {
                let got = CpuBackend::new(threads)
                    .unwrap()
                    .smooth(input.clone(), shape, &s, out)
                    .unwrap();
                assert_eq!(
                    got, want,
                    "shape {n:?}×{volumes} out {out} threads {threads}"
                );
            }
        }
    }
}
