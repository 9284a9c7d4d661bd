//! The CPU backend: separable passes, vectorised across neighbouring lines.
//!
//! Each pass gathers `LANES` neighbouring lines into a tile of f64 rows
//! (`tile[i][lane]`), pads it per boundary mode, and runs scipy's symmetric
//! accumulation `acc = x[i]*w0; acc += (x[i-k] + x[i+k]) * w[k]` for k = r..1
//! on whole rows, in that order: every product and sum rounded as scipy
//! rounds it. The vector kernels (`simd/`) keep that sequence; the only FMA
//! they issue is `fma(a, 1, b)`, which rounds exactly as `a + b` and moves
//! adds onto the multiply-add units (`simd/mod.rs` says why).
//! Groups of lines are disjoint, so passes run in place and, for images big
//! enough to share (`CpuBackend::run`), in parallel over rayon's pool; the result of each pass is stored in the output dtype before
//! the next pass reads it, exactly as scipy does.
//!
//! int16 and uint8 images, whose outputs are truncated to integers, take
//! f32 tiles in every pass (the x pass only with AVX-512): twice the lanes
//! per vector, with each truncation proved from an error bound or recomputed
//! in f64 (`simd::convolve_store_f32`).

use std::sync::Arc;

use rayon::prelude::*;

use super::simd::{self, Isa, LANES};
use super::{Backend, FilterError, FilterSpec, Kernel1d, Mode, Shape};
use crate::volume::{DType, Sample, Voxels};
use crate::{with_dtype, with_voxels};

pub struct CpuBackend {
    pool: Arc<rayon::ThreadPool>,
}

impl CpuBackend {
    pub fn new(threads: usize) -> Result<CpuBackend, FilterError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("nismooth-filter-{i}"))
            .build()
            .map_err(|e| FilterError::Unavailable(format!("cannot start filter threads: {e}")))?;
        Ok(CpuBackend {
            pool: Arc::new(pool),
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` across the pool, or right here on the calling thread when
    /// the pool has one thread or the image is too small to share: handing
    /// a job to the pool and waking its threads costs tens of microseconds
    /// on a quiet node, and a time slice per wake-up where every core is busy
    /// with other work, while an 8³ image filters in a few microseconds.
    /// `voxels` is the whole image's count, all volumes: a long series of
    /// small volumes is still shared. The loops inside split only when they
    /// find themselves in the pool (`for_each_index`).
    fn run<R: Send>(&self, voxels: usize, work: impl FnOnce() -> R + Send) -> R {
        if self.threads() == 1 || voxels < SHARED_FROM {
            work()
        } else {
            self.pool.install(work)
        }
    }
}

/// The filter's result, unless the run stopped it part-way.
fn finished(voxels: Voxels) -> Result<Voxels, FilterError> {
    if super::cancelled() {
        Err(FilterError::Cancelled)
    } else {
        Ok(voxels)
    }
}

/// Images of fewer voxels than this (a 40³ volume) are filtered on the
/// calling thread: splitting them would cost more than it saves.
const SHARED_FROM: usize = 1 << 16;

/// `work(state, i)` for every i in 0..n: split across the pool's threads
/// (each with its own `init()` state) when called inside the pool, in order
/// on this thread otherwise. Outside the pool rayon would start its global
/// pool of one thread per CPU, which a rank given one core must not do.
/// Only `CpuBackend::run` calls into here, on the filter's own thread or
/// inside its pool (never from another pool's worker, which this test would
/// take for ours).
fn for_each_index<T>(
    n: usize,
    init: impl Fn() -> T + Sync + Send,
    work: impl Fn(&mut T, usize) + Sync + Send,
) {
    if rayon::current_thread_index().is_some() {
        (0..n).into_par_iter().for_each_init(init, work);
    } else {
        let mut state = init();
        (0..n).for_each(|i| work(&mut state, i));
    }
}

impl Backend for CpuBackend {
    fn streams_slabs(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn smooth(
        &mut self,
        input: Voxels,
        shape: Shape,
        spec: &FilterSpec,
        out: DType,
    ) -> Result<Voxels, FilterError> {
        if input.len() != shape.len() {
            return Err(FilterError::ShapeMismatch {
                got: input.len(),
                want: shape.len(),
            });
        }
        if let super::Semantics::Fsl { pixdim } = spec.semantics {
            return finished(
                self.pool.install(|| {
                    super::fsl::smooth(&input, shape, spec.sigma, pixdim, spec.exp, out)
                }),
            );
        }
        self.smooth_in_order(input, shape, spec, out, [0, 1, 2])
    }
}

impl CpuBackend {
    /// scipy's passes in another order of axes (`order` a permutation of
    /// 0, 1, 2): a C-ordered numpy array is a Fortran-ordered one with its
    /// axes reversed, and scipy filters its axis 0, our z, first. Each pass
    /// is stored in the output dtype before the next, as in scipy.
    pub fn smooth_in_order(
        &mut self,
        input: Voxels,
        shape: Shape,
        spec: &FilterSpec,
        out: DType,
        order: [usize; 3],
    ) -> Result<Voxels, FilterError> {
        if input.len() != shape.len() {
            return Err(FilterError::ShapeMismatch {
                got: input.len(),
                want: shape.len(),
            });
        }
        check_order(order)?;
        let kernels = spec.kernels(shape.spatial_ndim);
        let passes = Passes {
            kernels: &kernels,
            order,
        };
        finished(self.run(shape.len(), || smooth_all(input, shape, passes, spec, out)))
    }

    /// `smooth_in_order` from `src` into `dst`, buffers the caller owns (the
    /// Python module's numpy arrays), without copying either: the first
    /// pass reads `src`, every pass writes `dst`. `src` may be `dst` itself
    /// (in place) when the dtypes are equal. The caller gives the kernels:
    /// scipy builds them in σ's own dtype (a float32 σ gives other weights
    /// than the same value as float64), and only the caller knows that dtype.
    ///
    /// # Safety
    /// `src` must hold `shape.len()` values of `din` and `dst` as many of
    /// `dout`, each aligned for its type; the two are the same buffer with
    /// `din == dout`, or do not overlap; nothing else reads or writes them
    /// during the call.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn smooth_raw(
        &mut self,
        src: *const u8,
        din: DType,
        dst: *mut u8,
        dout: DType,
        shape: Shape,
        kernels: &[Option<Kernel1d>; 3],
        edge: (Mode, f64),
        order: [usize; 3],
    ) -> Result<(), FilterError> {
        check_order(order)?;
        if kernels.iter().all(Option::is_none) {
            return Err(FilterError::Unavailable(
                "no axis to filter (every sigma is 0)".into(),
            ));
        }
        let passes = Passes { kernels, order };
        let edge = Edge {
            mode: edge.0,
            cval: edge.1,
        };
        let (src, dst) = (Shared(src as *mut u8), Shared(dst));
        self.run(shape.len(), move || {
            let (src, dst) = (src, dst);
            with_dtype!(din, S => with_dtype!(dout, D => {
                let (sp, dp) = (src.0 as *const S, dst.0 as *mut D);
                // SAFETY: the caller's contract: `off` is the start of one
                // volume (for_each_volume stays within shape.len()), and the
                // buffers are one (in place, one dtype) or disjoint.
                for_each_volume(shape, |off| unsafe {
                    smooth_volume(sp.add(off), dp.add(off), shape.spatial, passes, edge)
                });
            }))
        });
        Ok(())
    }
}

/// `order` must be a permutation of the three axes.
fn check_order(order: [usize; 3]) -> Result<(), FilterError> {
    let mut sorted = order;
    sorted.sort_unstable();
    if sorted != [0, 1, 2] {
        return Err(FilterError::Unavailable(format!(
            "pass order {order:?} is not a permutation of the axes 0, 1, 2"
        )));
    }
    Ok(())
}

/// The kernels of the three axes, and the order their passes run in.
#[derive(Clone, Copy)]
struct Passes<'k> {
    kernels: &'k [Option<Kernel1d>; 3],
    order: [usize; 3],
}

/// Runs the passes of every volume; in place when the dtype does not change.
fn smooth_all(
    input: Voxels,
    shape: Shape,
    passes: Passes,
    spec: &FilterSpec,
    out: DType,
) -> Voxels {
    if passes.kernels.iter().all(Option::is_none) {
        // scipy copies the input into the output array when no axis is filtered.
        return input.cast(out);
    }
    let edge = Edge {
        mode: spec.mode,
        cval: spec.cval,
    };
    if input.dtype() == out {
        let mut buf = input;
        with_voxels!(&mut buf, v => {
            let ptr = v.as_mut_ptr();
            // SAFETY: `off` is the start of one volume inside `buf` (for_each_volume
            // stays within shape.len()); in place, src and dst are the same volume.
            for_each_volume(shape, |off| unsafe {
                smooth_volume(ptr.add(off), ptr.add(off), shape.spatial, passes, edge)
            });
        });
        buf
    } else {
        let mut result = Voxels::zeros(out, shape.len());
        with_voxels!(&input, src => with_voxels!(&mut result, dst => {
            let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
            // SAFETY: `off` is the start of one volume in both buffers, which hold
            // shape.len() voxels each and do not alias.
            for_each_volume(shape, |off| unsafe {
                smooth_volume(sp.add(off), dp.add(off), shape.spatial, passes, edge)
            });
        }));
        result
    }
}

/// All passes of one volume: the first reads `src`, the others work in place
/// on `dst` (which may be `src`). When x and y are both filtered they run
/// slice by slice, so that the y pass finds the slice the x pass just wrote
/// still in cache: the volume crosses main memory twice instead of three times.
///
/// # Safety
/// As for `pass`, for the whole volume.
unsafe fn smooth_volume<S: Sample, D: Sample>(
    src: *const S,
    dst: *mut D,
    n: [usize; 3],
    passes: Passes,
    edge: Edge,
) {
    let kernels = passes.kernels;
    // SAFETY: `pass`'s contract for the whole volume, which the caller keeps: `src` and
    // `dst` hold n[0]·n[1]·n[2] samples; each slice offset below stays inside them.
    unsafe {
        let x_then_y = passes.order[..2] == [0, 1];
        if let ([Some(kx), Some(ky), kz], true) = (kernels, x_then_y) {
            let slice = n[0] * n[1];
            let (s, d) = (Shared(src as *mut S), Shared(dst));
            for_each_index(n[2], Scratch::default, move |sc, z| {
                let (s, d) = (s, d);
                let (sz, dz) = (s.0.add(z * slice), d.0.add(z * slice));
                pass(sz, dz, [n[0], n[1], 1], 0, kx, edge, Some((sc, None)));
                // While y filters this slice, bring the next slice's source
                // into L2, where the next x pass will find it.
                let next = (z + 1 < n[2]).then(|| Ahead {
                    from: s.0.add((z + 1) * slice) as *const u8,
                    bytes: slice * std::mem::size_of::<S>(),
                });
                pass(dz, dz, [n[0], n[1], 1], 1, ky, edge, Some((sc, next)));
            });
            if let Some(kz) = kz {
                pass(dst, dst, n, 2, kz, edge, None);
            }
            return;
        }
        let mut first = true;
        for a in passes.order {
            let Some(k) = &kernels[a] else { continue };
            if first {
                pass(src, dst, n, a, k, edge, None);
                first = false;
            } else {
                pass(dst, dst, n, a, k, edge, None);
            }
        }
    }
}

fn for_each_volume(shape: Shape, mut f: impl FnMut(usize)) {
    let n = shape.volume_len();
    for v in 0..shape.volumes {
        f(v * n);
    }
}

#[derive(Clone, Copy)]
struct Edge {
    mode: Mode,
    cval: f64,
}

/// A raw pointer that may cross threads: each task touches a disjoint set of lines.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: the pointer is only dereferenced by `pass`'s tasks, and each task
// reads and writes a set of lines no other task touches.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as for Send: shared references to it only hand out disjoint lines.
unsafe impl<T> Sync for Shared<T> {}

/// One pass along `axis` of a volume of `n` voxels (Fortran order) from `src`
/// into `dst`, which may be the same buffer.
///
/// Over 80 lines on purpose: the per-group closure's SAFETY argument rests
/// on the geometry worked out just above it, and both drivers below (the
/// thread pool, or the caller's scratch with its look-ahead) run that one
/// closure; pulled apart, the argument would cite values from elsewhere.
///
/// # Safety
/// `src` and `dst` must each point to `n[0]*n[1]*n[2]` valid elements, and
/// nothing else may access them during the call.
unsafe fn pass<S: Sample, D: Sample>(
    src: *const S,
    dst: *mut D,
    n: [usize; 3],
    axis: usize,
    k: &Kernel1d,
    edge: Edge,
    reuse: Option<(&mut Scratch, Option<Ahead>)>,
) {
    let stride = [1, n[0], n[0] * n[1]];
    // The two other axes: `b` (the faster one) is spread across lanes.
    let (b, c) = match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let len = n[axis];
    let width = tile_width(axis, n[b]);
    let blocks = n[b].div_ceil(width);
    let groups = n[c] * blocks;
    let r = k.radius();
    let (src, dst) = (Shared(src as *mut S), Shared(dst));
    let geo = Geometry {
        len,
        width,
        step: stride[axis],
        lane_step: stride[b],
    };

    let scratch = || {
        let mut sc = Scratch::default();
        sc.fit(len, r, width, axis);
        sc
    };
    let work = |sc: &mut Scratch, g: usize| {
        // A run that is stopping leaves the rest of the pass undone; the
        // caller throws the volume away (`finished`).
        if super::cancelled() {
            return;
        }
        let (ci, bi) = (g / blocks, g % blocks);
        let b0 = bi * width;
        let lanes = width.min(n[b] - b0);
        let base = ci * stride[c] + b0 * stride[b];
        // Copy the raw pointers out of their wrappers inside the closure.
        let (s, d) = (src, dst);
        // SAFETY: `base` and `next` are the first voxels of groups inside the
        // volume (ci < its count along c, b0 + lanes ≤ n[b]), so every row the
        // group touches lies inside `src`/`dst`; groups are disjoint per task.
        unsafe {
            // The z pass jumps a whole slice between rows, which the hardware
            // prefetchers do not follow. The next group of this thread's range
            // is most likely g + 1: ask for its rows now, so that they arrive
            // while this one computes.
            if axis == 2 && g + 1 < groups {
                let (cn, bn) = ((g + 1) / blocks, (g + 1) % blocks);
                let next = cn * stride[c] + bn * width * stride[b];
                geo.prefetch(s.0.add(next), width.min(n[b] - bn * width));
            }
            let job = Group {
                geo: &geo,
                src: s.0.add(base) as *const S,
                dst: d.0.add(base),
                lanes,
                k,
                edge,
            };
            group(job, sc)
        }
    };
    match reuse {
        None => for_each_index(groups, scratch, work),
        Some((sc, ahead)) => {
            sc.fit(len, r, width, axis);
            for g in 0..groups {
                if let Some(a) = &ahead {
                    a.part(g, groups);
                }
                work(sc, g);
            }
        }
    }
}

/// Memory to bring into L2 a part at a time, while a sequential pass runs.
struct Ahead {
    from: *const u8,
    bytes: usize,
}

impl Ahead {
    /// Prefetches part `i` of `n`.
    #[inline(always)]
    fn part(&self, i: usize, n: usize) {
        let per = self.bytes.div_ceil(n).next_multiple_of(64);
        let start = (i * per).min(self.bytes);
        prefetch_l2(self.from.wrapping_add(start), per.min(self.bytes - start));
    }
}

/// Asks for `bytes` from `from` to be brought into L2. A prefetch never
/// faults, so the range needs no checking; a no-op off x86-64.
#[inline(always)]
fn prefetch_l2(from: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..bytes).step_by(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: prefetching is a hint; it reads nothing and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(from.wrapping_add(off) as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (from, bytes);
}

/// One group of lines to filter: where they are and how.
struct Group<'a, S, D> {
    geo: &'a Geometry,
    src: *const S,
    dst: *mut D,
    lanes: usize,
    k: &'a Kernel1d,
    edge: Edge,
}

/// One group of lines: load, pad, convolve, store. The loads and stores
/// convert between the image's dtype and f64; the whole group is compiled
/// once per instruction set (`simd::dispatch`, the filter's one question to
/// the CPU) so that those conversions use the widest vectors the CPU has.
///
/// # Safety
/// As for `pass`, for the group's lines.
unsafe fn group<S: Sample, D: Sample>(g: Group<'_, S, D>, sc: &mut Scratch) {
    simd::dispatch(GroupJob { g, sc })
}

/// A group and its scratch space, made only by `group`, whose caller
/// answers for the group's pointers.
struct GroupJob<'a, 'b, S, D> {
    g: Group<'a, S, D>,
    sc: &'b mut Scratch,
}

impl<S: Sample, D: Sample> simd::Job for GroupJob<'_, '_, S, D> {
    type Output = ();
    #[inline(always)]
    fn run<I: Isa>(self, isa: I) {
        // SAFETY: a GroupJob is made only by `group`, whose caller keeps
        // `pass`'s contract for these lines.
        unsafe { group_body(isa, self.g, self.sc) }
    }
}

/// `group` at one instruction set.
///
/// # Safety
/// As for `group`.
#[inline(always)]
unsafe fn group_body<I: Isa, S: Sample, D: Sample>(isa: I, g: Group<'_, S, D>, sc: &mut Scratch) {
    // SAFETY: `group`'s contract, which the caller keeps: the group's lines are valid
    // for `len` samples at `src` (readable) and `dst` (writable).
    unsafe {
        let Group {
            geo,
            src,
            dst,
            lanes,
            k,
            edge,
        } = g;
        let (r, len, width) = (k.radius(), geo.len, geo.width);
        // Integer images: f32 tiles, unless a tile holds a negative value (the
        // error bound needs every term ≥ 0); the source is untouched, so the
        // f64 way below reloads it. The x pass needs the f32 line transposes;
        // the other passes store whole rows of lanes into the image.
        #[cfg(target_arch = "x86_64")]
        let f32_tile = if geo.lane_step == 1 {
            lanes == width
        } else {
            I::F32_LINE_TRANSPOSES
        };
        #[cfg(target_arch = "x86_64")]
        if f32_tile && single_precision_fits::<I, S, D>(k, edge) {
            sc.fit32(len, r, width);
            let body = &mut sc.tile32[r * width..(r + len) * width];
            let non_negative = if geo.lane_step == 1 {
                geo.load_integers_f32(src, body)
            } else {
                simd::gather_lines_f32(isa, src, geo.lane_step, lanes, len, body)
            };
            if non_negative {
                extend(&mut sc.tile32, width, r, len, edge.mode, edge.cval as f32);
                let (t, f) = (&sc.tile32, &mut sc.flags);
                if geo.lane_step == 1 {
                    return simd::convolve_store_f32(isa, t, len, width, &k.half, dst, geo.step, f);
                }
                // Axis 0: truncated int32 rows, then transposed into the lines.
                let out = sc.out32.as_mut_ptr();
                simd::convolve_store_f32(isa, t, len, width, &k.half, out, width, f);
                return simd::scatter_lines_i32(isa, &sc.out32, len, dst, geo.lane_step, lanes);
            }
        }
        let body = &mut sc.tile[r * width..(r + len) * width];
        geo.load(isa, src, lanes, body, &mut sc.lines);
        extend(&mut sc.tile, width, r, len, edge.mode, edge.cval);
        // Lanes contiguous and the tile full: the kernel stores the output dtype
        // itself (the tile holds a copy of the lines, so in place is safe).
        #[cfg(target_arch = "x86_64")]
        if geo.lane_step == 1 && lanes == width && I::LINE_TRANSPOSES {
            let w = (k.half.as_slice(), k.odd);
            return simd::convolve_store(isa, &sc.tile, len, width, w, dst, geo.step);
        }
        let out = &mut sc.out[..len * width];
        simd::convolve(isa, &sc.tile, out, width, &k.half, k.odd);
        geo.store(isa, out, lanes, dst, &mut sc.lines);
    }
}

/// Whether a group may take `simd::convolve_store_f32`: int16 or uint8 in
/// and out, weights it accepts, and any constant padding an integer in
/// `0..2¹⁶` (so that every tile value is one); the CPU has AVX2 or AVX-512.
fn single_precision_fits<I: Isa, S: Sample, D: Sample>(k: &Kernel1d, edge: Edge) -> bool {
    let small_int = |d: DType| matches!(d, DType::I16 | DType::U8);
    small_int(S::DTYPE)
        && small_int(D::DTYPE)
        && (0.0..65536.0).contains(&edge.cval)
        && edge.cval.fract() == 0.0
        && !k.odd
        && simd::f32_kernel_fits(&k.half)
        && I::F32_KERNEL
}

/// Lines per tile. Axis 0's lines are contiguous and go through 16-line
/// transposes. For the other axes the lanes are contiguous in memory, and a
/// wider tile reads longer contiguous runs per row: the z pass otherwise
/// jumps a whole slice between 64-byte reads and waits on memory.
fn tile_width(axis: usize, lanes: usize) -> usize {
    if axis == 0 {
        return LANES;
    }
    // 64 measured best on Zen 4 (docs/performance.md); NISMOOTH_TILE_WIDTH tunes it.
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let max = *MAX.get_or_init(|| {
        std::env::var("NISMOOTH_TILE_WIDTH")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(64)
    });
    lanes
        .next_multiple_of(LANES)
        .min(max.next_multiple_of(LANES).max(LANES))
}

/// Per-thread buffers, reused for every group of lines the thread takes.
/// Every element a pass reads it has written first, so growing never clears.
#[derive(Default)]
struct Scratch {
    /// `(len + 2r) × width` f64: the lines and their padding.
    tile: Vec<f64>,
    /// The same in f32, for integer images (`simd::convolve_store_f32`).
    tile32: Vec<f32>,
    /// One word per vector (16 or 8 outputs) of `tile32`: the lanes left for
    /// f64 to decide.
    flags: Vec<u16>,
    /// Axis 0's truncated outputs, on their way into the lines.
    out32: Vec<i32>,
    out: Vec<f64>,
    /// Axis 0 only: the group's lines in f64, on their way to or from the tile.
    lines: Vec<Vec<f64>>,
}

impl Scratch {
    /// Grows the buffers for a pass, never shrinks them: the fused x and y
    /// passes alternate between tile shapes on every slice, and shrinking
    /// would clear the difference again each time it grows back.
    fn fit(&mut self, len: usize, r: usize, width: usize, axis: usize) {
        grow(&mut self.tile, (len + 2 * r) * width);
        grow(&mut self.out, len * width);
        if axis == 0 {
            self.lines.resize_with(LANES, Vec::new);
            self.lines.iter_mut().for_each(|l| grow(l, len));
        }
    }

    /// The same for the f32 kernel's buffers, for one group.
    fn fit32(&mut self, len: usize, r: usize, width: usize) {
        grow(&mut self.tile32, (len + 2 * r) * width);
        grow(&mut self.flags, len * width / 8);
        grow(&mut self.out32, len * width);
    }
}

/// Lengthens `v` to at least `n` (new elements are overwritten before use).
fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// How lines lie in memory: `step` between samples of a line, `lane_step`
/// between neighbouring lines; `width` lanes per tile row.
struct Geometry {
    len: usize,
    width: usize,
    step: usize,
    lane_step: usize,
}

impl Geometry {
    /// Hints the cache to fetch a group's lines (into L2: they are read once,
    /// converted into the tile, and not touched again until the store).
    ///
    /// # Safety
    /// `p` is the first sample of `lanes` lines laid out as `self` says,
    /// each inside one allocation for `len` samples.
    #[inline(always)]
    unsafe fn prefetch<S>(&self, p: *const S, lanes: usize) {
        // SAFETY: the lines lie inside their allocation (this function's contract), so
        // every offset below is in bounds; prefetch_l2 itself only hints.
        unsafe {
            let size = std::mem::size_of::<S>();
            let (runs, run_step, run_bytes) = if self.lane_step == 1 {
                (self.len, self.step, lanes * size)
            } else {
                (lanes, self.lane_step, self.len * size)
            };
            for i in 0..runs {
                prefetch_l2(p.add(i * run_step) as *const u8, run_bytes);
            }
        }
    }

    /// The group's lines into tile rows (`rows`, `width` lanes each), via
    /// `lines` when axis 0's lines are transposed without the vector code.
    ///
    /// # Safety
    /// `p` is the first sample of `lanes` lines laid out as `self` says,
    /// each readable for `len` samples; `rows` holds `len × width`.
    #[inline(always)]
    unsafe fn load<I: Isa, S: Sample>(
        &self,
        isa: I,
        p: *const S,
        lanes: usize,
        rows: &mut [f64],
        lines: &mut [Vec<f64>],
    ) {
        // SAFETY: every pointer formed below is a sample of one of the `lanes` lines,
        // readable for `len` samples (this function's contract); `rows` bounds the tile.
        unsafe {
            if self.lane_step == 1 {
                for (i, row) in rows.chunks_exact_mut(self.width).enumerate() {
                    let src = std::slice::from_raw_parts(p.add(i * self.step), lanes);
                    for (x, v) in row.iter_mut().zip(src) {
                        *x = v.to_f64();
                    }
                    row[lanes..].fill(0.0);
                }
            } else {
                // Lines are contiguous (axis 0): convert and transpose in registers.
                #[cfg(target_arch = "x86_64")]
                if I::LINE_TRANSPOSES {
                    return simd::gather_lines(isa, p, self.lane_step, lanes, self.len, rows);
                }
                for (l, line) in lines.iter_mut().enumerate() {
                    if l < lanes {
                        let src = std::slice::from_raw_parts(p.add(l * self.lane_step), self.len);
                        for (x, v) in line.iter_mut().zip(src) {
                            *x = v.to_f64();
                        }
                    } else {
                        line.fill(0.0);
                    }
                }
                simd::transpose_in(isa, lines, self.len, rows);
            }
        }
    }

    /// `load` for full tiles of int16 or uint8 lanes (`lane_step` 1), into
    /// f32. Returns whether every value is ≥ 0.
    ///
    /// # Safety
    /// As for `load`, with `width` lanes and `S` int16 or uint8.
    #[inline(always)]
    unsafe fn load_integers_f32<S: Sample>(&self, p: *const S, rows: &mut [f32]) -> bool {
        // SAFETY: as in `load`: each row read is `width` samples of the group's lanes,
        // readable by this function's contract, and `S` is int16 or uint8 as cast.
        unsafe {
            let mut sign = 0i16;
            for (i, row) in rows.chunks_exact_mut(self.width).enumerate() {
                let at = p.add(i * self.step);
                match S::DTYPE {
                    DType::I16 => {
                        let src = std::slice::from_raw_parts(at as *const i16, self.width);
                        for (x, &v) in row.iter_mut().zip(src) {
                            *x = v as f32;
                            sign |= v;
                        }
                    }
                    DType::U8 => {
                        let src = std::slice::from_raw_parts(at as *const u8, self.width);
                        for (x, &v) in row.iter_mut().zip(src) {
                            *x = v as f32;
                        }
                    }
                    _ => unreachable!("f32 tiles hold int16 or uint8"),
                }
            }
            sign >= 0
        }
    }

    /// Tile rows back into the group's lines, converted to `D`.
    ///
    /// # Safety
    /// As for `load`, with the lines writable and not aliased by `rows`.
    #[inline(always)]
    unsafe fn store<I: Isa, D: Sample>(
        &self,
        isa: I,
        rows: &[f64],
        lanes: usize,
        p: *mut D,
        lines: &mut [Vec<f64>],
    ) {
        // SAFETY: every pointer formed below is a sample of one of the `lanes` lines,
        // writable for `len` samples and not aliased by `rows` (this function's contract).
        unsafe {
            if self.lane_step == 1 {
                for (i, row) in rows.chunks_exact(self.width).enumerate() {
                    let dst = std::slice::from_raw_parts_mut(p.add(i * self.step), lanes);
                    D::from_f64_slice(dst, row);
                }
            } else {
                #[cfg(target_arch = "x86_64")]
                if I::LINE_TRANSPOSES {
                    return simd::scatter_lines(isa, rows, self.len, p, self.lane_step, lanes);
                }
                simd::transpose_out(isa, rows, self.len, lines);
                for (l, line) in lines.iter().enumerate().take(lanes) {
                    let dst = std::slice::from_raw_parts_mut(p.add(l * self.lane_step), self.len);
                    D::from_f64_slice(dst, line);
                }
            }
        }
    }
}

/// Fills the `r` rows on each side of the line per boundary mode.
#[inline(always)]
fn extend<T: Copy>(tile: &mut [T], width: usize, r: usize, len: usize, mode: Mode, cval: T) {
    for i in 1..=r as isize {
        for pos in [-i, len as isize - 1 + i] {
            let to = (r as isize + pos) as usize * width;
            match mode.source(pos, len) {
                Some(j) => tile.copy_within((r + j) * width..(r + j + 1) * width, to),
                None => tile[to..to + width].fill(cval),
            }
        }
    }
}

#[cfg(test)]
mod tests;
