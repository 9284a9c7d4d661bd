//! A 3-D image filtered in z-slabs, with scipy's bytes.
//!
//! scipy filters axis 0, then 1, then 2, storing each pass in the output
//! dtype. The first two passes never leave a z-slice, so each slab that
//! comes in is filtered along x and y on its own (by the backend, with
//! σz = 0). The z pass needs, for output slice k, the x-y results of slices
//! k − r ..= k + r (reflected, clamped or cval past the ends): a ring of
//! those slices is kept, and each slice is given out as soon as the slices
//! it needs have come. What a process holds is then the slab and the ring
//! (2r + slab slices), not the image.
//!
//! The z sum is the filter's own vector kernel (`simd::convolve`, scipy's
//! sequence `acc = x·w0`, then `acc += (lo + hi)·w[k]` for k = r..1, each
//! step rounded) over a tile of the ring's slices, so the bytes are the
//! whole image's. Where a slice's neighbours are not all near it (`wrap` takes
//! them from the other end; a radius of half the slices or more reflects
//! more than once), the image is not streamed (`SlabPlan::new` says no).

use super::{simd, FilterSpec, Kernel1d, Mode, Semantics};
use crate::volume::{DType, Sample, Shape, VoxelVec, Voxels};
use crate::with_dtype;

/// Voxels per block of the z sum (a multiple of `simd::LANES`): the tile of
/// a slab's slices and their halo stays in cache.
const BLOCK: usize = 256;

/// How an image is streamed in slabs, when it can be.
#[derive(Clone, Debug)]
pub struct SlabPlan {
    /// The z kernel (`None`: σz is 0 and every slab is complete on its own).
    z: Option<Kernel1d>,
    mode: Mode,
    cval: f64,
    slice: usize,
    nz: usize,
    out: DType,
}

impl SlabPlan {
    /// The plan for a 3-D image of `shape` and voxels of `input` dtype,
    /// smoothed by `spec` into `out`; `None` where the slab path would not
    /// give scipy's bytes or would cost more than it saves: a series, FSL's
    /// filter, `wrap` along z, a z radius of half the slices or more, or
    /// x and y both skipped with the dtype changing (scipy's z pass would
    /// then read the input, not a slice stored in the output dtype).
    pub fn new(shape: Shape, spec: &FilterSpec, input: DType, out: DType) -> Option<SlabPlan> {
        let nz = shape.spatial[2];
        if shape.volumes != 1 || shape.spatial_ndim != 3 || spec.semantics != Semantics::Scipy {
            return None;
        }
        let [kx, ky, z] = spec.kernels(3);
        if let Some(k) = &z {
            if spec.mode == Mode::Wrap || 2 * k.radius() >= nz {
                return None;
            }
            if kx.is_none() && ky.is_none() && input != out {
                return None;
            }
        }
        Some(SlabPlan {
            z,
            mode: spec.mode,
            cval: spec.cval,
            slice: shape.spatial[0] * shape.spatial[1],
            nz,
            out,
        })
    }

    /// The spec of each slab's own passes: x and y, no z.
    pub fn xy_spec(spec: &FilterSpec) -> FilterSpec {
        let mut xy = spec.clone();
        xy.sigma[2] = 0.0;
        xy
    }

    /// The z pass's state for one image.
    pub fn start(&self) -> SlabRing {
        SlabRing {
            plan: self.clone(),
            slabs: std::collections::VecDeque::new(),
            spare: None,
            next: 0,
            have: 0,
        }
    }
}

/// The x-y filtered slices the z pass still needs, and how far it got.
pub struct SlabRing {
    plan: SlabPlan,
    /// The x-y filtered slabs still needed, each with its first slice, in
    /// the output dtype (kept as they came: no copy, no shifting).
    slabs: std::collections::VecDeque<(usize, Voxels)>,
    /// A dropped slab's buffer, for the next output slices.
    spare: Option<Voxels>,
    /// The next output slice.
    next: usize,
    /// Slices come so far.
    have: usize,
}

impl SlabRing {
    /// Takes the next slab's x-y filtered slices (in the output dtype) and
    /// gives the output slices they complete, in order (none, at first).
    /// The z pass runs on `threads` threads.
    pub fn push(&mut self, slab: Voxels, threads: usize) -> Voxels {
        let plan = &self.plan;
        let Some(k) = &plan.z else {
            self.have += slab.len() / plan.slice.max(1);
            return slab;
        };
        let r = k.radius();
        self.have += slab.len() / plan.slice.max(1);
        self.slabs
            .push_back((self.have - slab.len() / plan.slice.max(1), slab));
        // Slice j needs j + r (or the last slice).
        let ready = if self.have == plan.nz {
            plan.nz
        } else {
            self.have.saturating_sub(r)
        };
        let out = with_dtype!(plan.out, T => z_slices::<T>(&self.slabs, self.next..ready, plan, k, threads, self.spare.take()));
        self.next = ready.max(self.next);
        // Keep what the next slices need: from next − r on.
        let keep_from = self.next.saturating_sub(r);
        while let Some((first, slab)) = self.slabs.front() {
            if first + slab.len() / plan.slice.max(1) > keep_from {
                break;
            }
            // Its buffer holds the next output slices: no fresh pages to
            // fault in for every slab.
            self.spare = self.slabs.pop_front().map(|(_, v)| v);
        }
        out
    }
}

/// Output slices `range` of the z pass over the ring's slabs.
fn z_slices<T: Sample + VoxelVec>(
    slabs: &std::collections::VecDeque<(usize, Voxels)>,
    range: std::ops::Range<usize>,
    plan: &SlabPlan,
    k: &Kernel1d,
    threads: usize,
    spare: Option<Voxels>,
) -> Voxels {
    let n = range.len() * plan.slice;
    let mut out: Vec<T> = match spare.and_then(T::unwrap) {
        // Every value is written below: the old ones need no clearing.
        Some(mut v) => {
            v.truncate(n);
            v.resize(n, T::zeroed());
            v
        }
        None => crate::volume::zeroed_vec(n),
    };
    if !range.is_empty() {
        let slice = plan.slice;
        // Each tile row's slice (None: cval), rows z = first − r ..= last + r.
        let r = k.radius();
        let rows: Vec<Option<&[T]>> = (0..range.len() + 2 * r)
            .map(|i| {
                let z = (range.start + i) as isize - r as isize;
                let s = plan.mode.source(z, plan.nz)?;
                let (first, slab) = slabs
                    .iter()
                    .find(|(first, v)| (*first..first + v.len() / slice).contains(&s))
                    .expect("the ring holds every slice the z pass needs");
                let voxels: &[T] = bytemuck::cast_slice(slab.as_bytes());
                Some(&voxels[(s - first) * slice..(s - first + 1) * slice])
            })
            .collect();
        // `threads` share the slice's voxels, each a contiguous range of
        // every output row (whole blocks, so the bytes do not depend on it).
        let per = slice.div_ceil(threads.max(1)).next_multiple_of(BLOCK);
        let mut shares: Vec<Vec<&mut [T]>> = (0..slice.div_ceil(per)).map(|_| Vec::new()).collect();
        for row in out.chunks_exact_mut(slice) {
            for (share, piece) in shares.iter_mut().zip(row.chunks_mut(per)) {
                share.push(piece);
            }
        }
        let rows = &rows;
        let pass = move |i: usize, outs: Vec<&mut [T]>| {
            simd::dispatch(ZPass {
                rows,
                from: i * per,
                plan,
                w: &k.half,
                outs,
            })
        };
        // Each share waits in a slot its thread takes it from; a share
        // whose thread cannot start (a thread limit, no address space) is
        // taken and done here: the same blocks, so the same bytes.
        let slots: Vec<std::sync::Mutex<Option<Vec<&mut [T]>>>> = shares
            .into_iter()
            .map(|s| std::sync::Mutex::new(Some(s)))
            .collect();
        let take = |i: usize| slots[i].lock().ok().and_then(|mut s| s.take());
        std::thread::scope(|scope| {
            for i in 1..slots.len() {
                let _ = std::thread::Builder::new().spawn_scoped(scope, move || {
                    if let Some(outs) = take(i) {
                        pass(i, outs)
                    }
                });
            }
            for i in 0..slots.len() {
                if let Some(outs) = take(i) {
                    pass(i, outs);
                }
            }
        });
    }
    T::wrap(out)
}

/// The z pass over the ring, a block of `BLOCK` voxels of every slice at a
/// time: a tile whose rows are the slices `first − r ..= last + r` (padded
/// per mode), summed by the filter's vector kernel (`simd::convolve`, which
/// keeps scipy's sequence), one row per output slice.
struct ZPass<'a, 'o, T> {
    /// The tile's rows: the output slices' and their halo's slices.
    rows: &'a [Option<&'a [T]>],
    /// The first voxel of each slice this share computes.
    from: usize,
    plan: &'a SlabPlan,
    w: &'a [f64],
    /// Each output slice's share: voxels `from..from + len`.
    outs: Vec<&'o mut [T]>,
}

impl<T: Sample> simd::Job for ZPass<'_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn run<I: simd::Isa>(self, isa: I) {
        let ZPass {
            rows,
            from,
            plan,
            w,
            mut outs,
        } = self;
        let share = outs.first().map_or(0, |o| o.len());
        let mut tile = vec![0f64; rows.len() * BLOCK];
        let mut sums = vec![0f64; outs.len() * BLOCK];
        for b in (0..share).step_by(BLOCK) {
            let n = BLOCK.min(share - b);
            for (row, src) in tile.chunks_exact_mut(BLOCK).zip(rows) {
                match src {
                    Some(s) => {
                        for (t, x) in row.iter_mut().zip(&s[from + b..from + b + n]) {
                            *t = x.to_f64();
                        }
                    }
                    None => row[..n].fill(plan.cval),
                }
            }
            simd::convolve(isa, &tile, &mut sums, BLOCK, w, false);
            for (out, sum) in outs.iter_mut().zip(sums.chunks_exact(BLOCK)) {
                T::from_f64_slice(&mut out[b..b + n], &sum[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::cpu::CpuBackend;
    use crate::filter::{Backend, ExpFlavour};

    fn spec(sigma: [f64; 3], mode: Mode, truncate: f64) -> FilterSpec {
        FilterSpec {
            sigma,
            truncate,
            mode,
            cval: 7.5,
            exp: ExpFlavour::detect(),
            semantics: Semantics::Scipy,
        }
    }

    /// Slabs of every thickness against the whole image, for every mode the
    /// slab path takes, odd radii, and dtype changes.
    #[test]
    fn slabs_give_the_whole_images_bytes() {
        let shape = Shape {
            spatial: [13, 11, 29],
            spatial_ndim: 3,
            volumes: 1,
        };
        let noise = crate::filter::test_noise(shape.len(), 5);
        let input = Voxels::F32(noise.iter().map(|&x| x as f32).collect());
        let mut cpu = CpuBackend::new(1).unwrap();
        let modes = [Mode::Reflect, Mode::Mirror, Mode::Nearest, Mode::Constant];
        for (sigma, truncate) in [
            ([1.0, 2.0, 1.5], 4.0),
            ([0.0, 1.0, 3.3], 4.0),
            ([2.0, 0.0, 6.9], 2.0),
        ] {
            for mode in modes {
                for out in [DType::F32, DType::I16, DType::F64] {
                    let sp = spec(sigma, mode, truncate);
                    let whole = cpu.smooth(input.clone(), shape, &sp, out).unwrap();
                    let plan = SlabPlan::new(shape, &sp, DType::F32, out).expect("streamable");
                    for thick in [1, 2, 5, 29] {
                        let mut ring = plan.start();
                        let mut got = Vec::new();
                        let slice = 13 * 11;
                        for z0 in (0..29).step_by(thick) {
                            let z1 = (z0 + thick).min(29);
                            let part = input.copy_range(z0 * slice..z1 * slice);
                            let part_shape = Shape {
                                spatial: [13, 11, z1 - z0],
                                ..shape
                            };
                            let xy = cpu
                                .smooth(part, part_shape, &SlabPlan::xy_spec(&sp), out)
                                .unwrap();
                            got.extend_from_slice(ring.push(xy, thick % 3 + 1).as_bytes());
                        }
                        assert!(
                            got == whole.as_bytes(),
                            "σ {sigma:?} {mode:?} → {out} in slabs of {thick}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn no_slabs_where_they_would_not_be_scipys() {
        let shape = Shape {
            spatial: [8, 8, 10],
            spatial_ndim: 3,
            volumes: 1,
        };
        let f = DType::F32;
        assert!(SlabPlan::new(shape, &spec([1.0; 3], Mode::Wrap, 4.0), f, f).is_none());
        // r = 5: 2r ≥ 10 slices.
        assert!(SlabPlan::new(shape, &spec([1.0, 1.0, 1.25], Mode::Reflect, 4.0), f, f).is_none());
        assert!(SlabPlan::new(
            shape,
            &spec([0.0, 0.0, 1.0], Mode::Reflect, 4.0),
            f,
            DType::I16
        )
        .is_none());
        assert!(SlabPlan::new(shape, &spec([1.0; 3], Mode::Reflect, 4.0), f, f).is_some());
    }
}
