//! The CUDA backend proper, through `cudarc` (driver API + NVRTC, loaded at
//! run time).
//!
//! One context per process, on the device `device_for(local rank, count)`.
//! Two slots, each with its own stream, pinned staging buffers and device
//! buffers, let the pipeline keep two images submitted: while one slot's
//! kernels run, the other slot downloads its finished image and uploads the
//! next, and the host threads go on reading and compressing. Kernels are
//! compiled by NVRTC once per (input, output) type pair with `--fmad=false`,
//! so the GPU rounds every product and sum as the CPU backend does.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::{CompileError, CompileOptions};
use rayon::prelude::*;

use super::{
    defines, device_for, kernel_name, plan, volumes_per_batch, Buf, Plan, BLOCK, KERNEL_SOURCE,
};
use crate::filter::{Backend, FilterError, FilterSpec, Pending, Shape};
use crate::volume::{DType, Voxels};

/// Images in flight on the GPU at once (one per slot).
const SLOTS: usize = 2;

fn device_error(what: &str) -> impl Fn(DriverError) -> FilterError + '_ {
    move |e| FilterError::Device(format!("{what}: {e}"))
}

/// How many GPUs this process can use, checking the driver library, NVRTC
/// and the device count in turn. Checked before any other CUDA call, because cudarc
/// panics when a library it needs cannot be loaded.
pub fn probe() -> Result<usize, FilterError> {
    // SAFETY: both only try to dlopen the library under its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(FilterError::Unavailable(
            "built with CUDA, but no CUDA driver was found (libcuda.so.1 is not loadable)".into(),
        ));
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(FilterError::Unavailable(
            "built with CUDA, but NVRTC was not found (libnvrtc.so.13 or .12): add the CUDA \
             toolkit's lib64 directory to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let count = CudaContext::device_count().map_err(|e| {
        FilterError::Unavailable(format!(
            "built with CUDA, but the driver found no usable device ({e})"
        ))
    })?;
    if count < 1 {
        return Err(FilterError::Unavailable(
            "built with CUDA, but the driver reports no device".into(),
        ));
    }
    Ok(count as usize)
}

/// Compiles the kernel for one type pair to PTX; `arch` is e.g.
/// `compute_90` (NVRTC's default when `None`). Needs NVRTC, not a device.
pub fn compile_ptx(src: DType, dst: DType, arch: Option<&str>) -> Result<String, FilterError> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(FilterError::Unavailable("NVRTC was not found".into()));
    }
    let mut options = defines(src, dst);
    if let Some(arch) = arch {
        options.push(format!("--gpu-architecture={arch}"));
    }
    let opts = CompileOptions {
        fmad: Some(false),
        options,
        name: Some("nismooth_kernels.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts)
        .map(|ptx| ptx.to_src())
        .map_err(|e| match e {
            CompileError::CompileError { log, .. } => FilterError::Device(format!(
                "NVRTC could not compile the kernel for {src} → {dst}: {}",
                log.to_string_lossy()
            )),
            other => FilterError::Device(format!("NVRTC: {other}")),
        })
}

/// One image in flight: what `finish` needs to hand its voxels back.
struct Job {
    ticket: u64,
    out: DType,
    len: usize,
    /// The input's buffer, reused for the output when the dtype matches.
    recycled: Voxels,
}

/// The buffers of one image in flight. They grow to the largest image seen
/// and are then reused, so a run allocates on the device only a few times.
struct Slot {
    stream: Arc<CudaStream>,
    /// Recorded around the passes, for the kernels' own time.
    started: CudaEvent,
    filtered: CudaEvent,
    done: CudaEvent,
    input: Option<CudaSlice<u8>>,
    a: Option<CudaSlice<u8>>,
    b: Option<CudaSlice<u8>>,
    upload: Option<PinnedHostSlice<u8>>,
    download: Option<PinnedHostSlice<u8>>,
    job: Option<Job>,
}

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    /// Uploads the (small, shared) weight tables, synchronously.
    aux: Arc<CudaStream>,
    slots: Vec<Slot>,
    kernels: HashMap<(DType, DType), CudaFunction>,
    weights: HashMap<Vec<u64>, CudaSlice<f64>>,
    arch: Option<String>,
    /// Host threads for the copies into and out of pinned memory.
    pool: rayon::ThreadPool,
    next_ticket: u64,
    description: String,
    last_kernel_s: Option<f64>,
    /// Device bytes one slot may take; larger 4-D images go in batches of volumes.
    slot_budget: usize,
}

impl CudaBackend {
    /// A context on this rank's device (`local_rank` modulo the devices).
    /// `node_ranks` processes on this node share its devices, and their memory.
    pub fn new(
        threads: usize,
        local_rank: usize,
        node_ranks: usize,
    ) -> Result<CudaBackend, FilterError> {
        let count = probe()?;
        let ordinal = device_for(local_rank, count);
        let ctx = CudaContext::new(ordinal).map_err(device_error("creating a context"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx
            .compute_capability()
            .map_err(device_error("reading the compute capability"))?;
        let mut slots = Vec::with_capacity(SLOTS);
        for _ in 0..SLOTS {
            slots.push(Slot {
                stream: ctx
                    .new_stream()
                    .map_err(device_error("creating a stream"))?,
                started: timing_event(&ctx)?,
                filtered: timing_event(&ctx)?,
                // Blocking: the filter thread sleeps while it waits, rather
                // than spinning on a core that the gzip threads need.
                done: ctx
                    .new_event(Some(CUevent_flags::CU_EVENT_BLOCKING_SYNC))
                    .map_err(device_error("creating an event"))?,
                input: None,
                a: None,
                b: None,
                upload: None,
                download: None,
                job: None,
            });
        }
        let aux = ctx
            .new_stream()
            .map_err(device_error("creating a stream"))?;
        let sharing = node_ranks.max(1).div_ceil(count);
        let slot_budget = slot_budget(&ctx, sharing)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.clamp(1, 8))
            .thread_name(|i| format!("nismooth-cuda-copy-{i}"))
            .build()
            .map_err(|e| FilterError::Unavailable(format!("cannot start copy threads: {e}")))?;
        Ok(CudaBackend {
            description: format!(
                "{name} (device {ordinal} of {count}, compute capability {major}.{minor})"
            ),
            arch: Some(format!("compute_{major}{minor}")),
            ctx,
            aux,
            slots,
            kernels: HashMap::new(),
            weights: HashMap::new(),
            pool,
            next_ticket: 0,
            last_kernel_s: None,
            slot_budget,
        })
    }

    /// The device, for log lines.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// The kernel for a type pair, compiled and loaded on first use. A
    /// toolkit older than the GPU may not know its architecture: then NVRTC's
    /// default target is used and the driver compiles the PTX up.
    fn kernel(&mut self, src: DType, dst: DType) -> Result<CudaFunction, FilterError> {
        if let Some(f) = self.kernels.get(&(src, dst)) {
            return Ok(f.clone());
        }
        let ptx = compile_ptx(src, dst, self.arch.as_deref()).or_else(|e| {
            log::debug!("NVRTC for {:?}: {e}; trying its default target", self.arch);
            self.arch = None;
            compile_ptx(src, dst, None)
        })?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(device_error("loading the kernel"))?;
        let f = module
            .load_function(&kernel_name(src, dst))
            .map_err(device_error("finding the kernel"))?;
        self.kernels.insert((src, dst), f.clone());
        Ok(f)
    }

    /// Uploads a weight table once; later images with the same sigma reuse it.
    fn upload_weights(&mut self, w: &[f64]) -> Result<(), FilterError> {
        let key: Vec<u64> = w.iter().map(|x| x.to_bits()).collect();
        if !self.weights.contains_key(&key) {
            let dev = self
                .aux
                .clone_htod(w)
                .map_err(device_error("uploading the weights"))?;
            self.aux
                .synchronize()
                .map_err(device_error("uploading the weights"))?;
            self.weights.insert(key, dev);
        }
        Ok(())
    }

    /// Queues one image on a free slot: upload, passes, download.
    fn enqueue(&mut self, input: Voxels, plan: &Plan, out: DType) -> Result<u64, FilterError> {
        let kernels = plan
            .passes
            .iter()
            .map(|p| self.kernel(p.src, p.dst))
            .collect::<Result<Vec<_>, _>>()?;
        for p in &plan.passes {
            self.upload_weights(&p.weights)?;
        }
        let ticket = self.next_ticket;
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.job.is_none())
            .ok_or_else(|| FilterError::Device("more images submitted than slots".into()))?;
        let out_bytes = plan.len * out.size();
        slot.upload(&input, plan, out_bytes, &self.pool)?;
        slot.launch(plan, &kernels, &self.weights)?;
        slot.download(plan, out_bytes)?;
        slot.job = Some(Job {
            ticket,
            out,
            len: plan.len,
            recycled: input,
        });
        self.next_ticket += 1;
        Ok(ticket)
    }
}

impl Slot {
    /// Fits the device buffers the plan uses and queues the image's upload
    /// (through pinned memory, copied in by the host threads).
    fn upload(
        &mut self,
        input: &Voxels,
        plan: &Plan,
        out_bytes: usize,
        pool: &rayon::ThreadPool,
    ) -> Result<(), FilterError> {
        let in_bytes = input.as_bytes().len();
        let uses = |b: Buf| plan.passes.iter().any(|p| p.to == b);
        fit_device(&self.stream, &mut self.input, in_bytes)?;
        if uses(Buf::A) {
            fit_device(&self.stream, &mut self.a, out_bytes)?;
        }
        if uses(Buf::B) {
            fit_device(&self.stream, &mut self.b, out_bytes)?;
        }
        let upload = fit_pinned(&self.stream, &mut self.upload, in_bytes)?;
        let staged = &mut upload
            .as_mut_slice()
            .map_err(device_error("staging the upload"))?[..in_bytes];
        pool.install(|| parallel_copy(input.as_bytes(), staged));
        let dev_in = self
            .input
            .as_mut()
            .ok_or_else(|| FilterError::Device("no input buffer".into()))?;
        self.stream
            .memcpy_htod(&*staged, &mut dev_in.slice_mut(0..in_bytes))
            .map_err(device_error("uploading the image"))
    }

    /// Queues the plan's passes, between the two events that time them.
    fn launch(
        &mut self,
        plan: &Plan,
        kernels: &[CudaFunction],
        weights: &HashMap<Vec<u64>, CudaSlice<f64>>,
    ) -> Result<(), FilterError> {
        let stream = self.stream.clone();
        self.started
            .record(&stream)
            .map_err(device_error("recording an event"))?;
        let [n0, n1, n2, slabs] = plan.dims;
        for (p, f) in plan.passes.iter().zip(kernels) {
            let key: Vec<u64> = p.weights.iter().map(|x| x.to_bits()).collect();
            let w = &weights[&key];
            let (axis, r) = (p.axis as i32, (p.weights.len() - 1) as i32);
            let (from, to) = buffers(&mut self.input, &mut self.a, &mut self.b, p.from, p.to)?;
            let mut launch = stream.launch_builder(f);
            launch
                .arg(from)
                .arg(to)
                .arg(&n0)
                .arg(&n1)
                .arg(&n2)
                .arg(&slabs)
                .arg(&axis)
                .arg(w)
                .arg(&r)
                .arg(&plan.mode)
                .arg(&plan.cval);
            let cfg = LaunchConfig {
                grid_dim: plan.grid,
                block_dim: BLOCK,
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature one for one
            // (pointers, four long long, int, pointer, int, int, double); every
            // buffer holds at least `plan.len` voxels of its pass's type.
            unsafe { launch.launch(cfg) }.map_err(device_error("launching a pass"))?;
        }
        self.filtered
            .record(&stream)
            .map_err(device_error("recording an event"))
    }

    /// Queues the result's download into pinned memory, and the event that
    /// says it has landed.
    fn download(&mut self, plan: &Plan, out_bytes: usize) -> Result<(), FilterError> {
        let result = match plan.result() {
            Some(Buf::A) => self.a.as_ref(),
            Some(Buf::B) => self.b.as_ref(),
            _ => None,
        }
        .ok_or_else(|| FilterError::Device("the plan has no result buffer".into()))?;
        let download = fit_pinned(&self.stream, &mut self.download, out_bytes)?;
        let landing = &mut download
            .as_mut_slice()
            .map_err(device_error("staging the download"))?[..out_bytes];
        self.stream
            .memcpy_dtoh(&result.slice(0..out_bytes), landing)
            .map_err(device_error("downloading the image"))?;
        self.done
            .record(&self.stream)
            .map_err(device_error("recording an event"))
    }
}

fn timing_event(ctx: &Arc<CudaContext>) -> Result<CudaEvent, FilterError> {
    ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(device_error("creating an event"))
}

/// Device memory one slot may use: 40% of this process's share of the GPU
/// (two slots: 80%), bounded by what is free now. NISMOOTH_CUDA_SLOT_BYTES
/// overrides it (the GPU tests force small batches with it).
fn slot_budget(ctx: &Arc<CudaContext>, sharing: usize) -> Result<usize, FilterError> {
    if let Some(bytes) = std::env::var("NISMOOTH_CUDA_SLOT_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Ok(bytes);
    }
    let (free, total) = ctx
        .mem_get_info()
        .map_err(device_error("reading the device's memory"))?;
    Ok((total / sharing.max(1)).min(free) / 5 * 2)
}

impl CudaBackend {
    /// A 4-D image too large for one slot, `per` volumes at a time through a
    /// free slot; each batch waits for the one before (a long run is many
    /// batches, which keeps the GPU busy without the overlap).
    fn smooth_in_batches(
        &mut self,
        input: Voxels,
        shape: Shape,
        spec: &FilterSpec,
        out: DType,
        per: usize,
    ) -> Result<Voxels, FilterError> {
        let volume = shape.volume_len();
        let mut result = Voxels::zeros(out, shape.len());
        let mut kernel_s = 0.0;
        for first in (0..shape.volumes).step_by(per) {
            let n = per.min(shape.volumes - first);
            let batch = Shape {
                volumes: n,
                ..shape
            };
            let plan = plan(batch, spec, input.dtype(), out)?;
            let part = input.copy_range(first * volume..(first + n) * volume);
            let ticket = self.enqueue(part, &plan, out)?;
            let done = self.finish(ticket)?;
            kernel_s += self.last_kernel_s.unwrap_or(0.0);
            let at = first * volume * out.size();
            result.as_bytes_mut()[at..at + done.as_bytes().len()].copy_from_slice(done.as_bytes());
        }
        self.last_kernel_s = Some(kernel_s);
        Ok(result)
    }
}

/// Grows a device buffer to at least `bytes` (freeing the old one first, so
/// that the peak is not old + new).
fn fit_device(
    stream: &Arc<CudaStream>,
    buf: &mut Option<CudaSlice<u8>>,
    bytes: usize,
) -> Result<(), FilterError> {
    if buf.as_ref().is_none_or(|b| b.len() < bytes) {
        *buf = None;
        // SAFETY: uninitialised device memory; every byte read is written first
        // (the upload, or the pass before).
        let fresh = unsafe { stream.alloc::<u8>(bytes.max(1)) }
            .map_err(device_error("allocating device memory"))?;
        *buf = Some(fresh);
    }
    Ok(())
}

/// Grows a pinned host buffer to at least `bytes`. Plain page-locked memory,
/// not write-combined: the download is read back by the host.
fn fit_pinned<'s>(
    stream: &Arc<CudaStream>,
    buf: &'s mut Option<PinnedHostSlice<u8>>,
    bytes: usize,
) -> Result<&'s mut PinnedHostSlice<u8>, FilterError> {
    if buf.as_ref().is_none_or(|b| b.len() < bytes) {
        *buf = None;
        // SAFETY: the contents are written before they are read.
        let fresh = unsafe {
            stream
                .context()
                .alloc_pinned_with_flags::<u8>(bytes.max(1), 0)
        }
        .map_err(device_error("allocating pinned host memory"))?;
        *buf = Some(fresh);
    }
    Ok(buf.as_mut().expect("just fitted"))
}

/// The source and destination of one pass among a slot's three buffers.
fn buffers<'s>(
    input: &'s mut Option<CudaSlice<u8>>,
    a: &'s mut Option<CudaSlice<u8>>,
    b: &'s mut Option<CudaSlice<u8>>,
    from: Buf,
    to: Buf,
) -> Result<(&'s CudaSlice<u8>, &'s mut CudaSlice<u8>), FilterError> {
    let pair = match (from, to) {
        (Buf::Input, Buf::A) => input.as_ref().zip(a.as_mut()),
        (Buf::Input, Buf::B) => input.as_ref().zip(b.as_mut()),
        (Buf::A, Buf::B) => a.as_ref().zip(b.as_mut()),
        (Buf::B, Buf::A) => b.as_ref().zip(a.as_mut()),
        _ => None,
    };
    pair.ok_or_else(|| FilterError::Device(format!("no buffers for a pass {from:?} → {to:?}")))
}

/// A large memcpy on the pool's threads (one core copies ~10 GB/s, short of
/// what PCIe and the pinned buffers take).
fn parallel_copy(src: &[u8], dst: &mut [u8]) {
    const CHUNK: usize = 4 << 20;
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn smooth(
        &mut self,
        input: Voxels,
        shape: Shape,
        spec: &FilterSpec,
        out: DType,
    ) -> Result<Voxels, FilterError> {
        match self.submit(input, shape, spec, out) {
            Pending::Done(result) => result,
            Pending::Queued(ticket) => self.finish(ticket),
        }
    }

    fn depth(&self) -> usize {
        SLOTS
    }

    fn device_time_s(&self) -> Option<f64> {
        self.last_kernel_s
    }

    fn submit(&mut self, input: Voxels, shape: Shape, spec: &FilterSpec, out: DType) -> Pending {
        if input.len() != shape.len() {
            return Pending::Done(Err(FilterError::ShapeMismatch {
                got: input.len(),
                want: shape.len(),
            }));
        }
        let plan = match plan(shape, spec, input.dtype(), out) {
            Ok(p) => p,
            Err(e) => return Pending::Done(Err(e)),
        };
        if plan.passes.is_empty() {
            // scipy copies the input into the output array when no axis is filtered.
            return Pending::Done(Ok(input.cast(out)));
        }
        let per = volumes_per_batch(shape, input.dtype(), out, self.slot_budget);
        if per < shape.volumes {
            return Pending::Done(self.smooth_in_batches(input, shape, spec, out, per));
        }
        match self.enqueue(input, &plan, out) {
            Ok(ticket) => Pending::Queued(ticket),
            Err(e) => Pending::Done(Err(e)),
        }
    }

    fn finish(&mut self, ticket: u64) -> Result<Voxels, FilterError> {
        let Self {
            slots,
            pool,
            last_kernel_s,
            ..
        } = self;
        let slot = slots
            .iter_mut()
            .find(|s| s.job.as_ref().is_some_and(|j| j.ticket == ticket))
            .ok_or_else(|| {
                FilterError::Device(format!("no image in flight with ticket {ticket}"))
            })?;
        let job = slot.job.take().expect("found above");
        slot.done
            .synchronize()
            .map_err(device_error("filtering the image"))?;
        self.ctx
            .check_err()
            .map_err(device_error("filtering the image"))?;
        *last_kernel_s = slot
            .started
            .elapsed_ms(&slot.filtered)
            .ok()
            .map(|ms| f64::from(ms) / 1e3);
        let bytes = job.len * job.out.size();
        let download = slot
            .download
            .as_ref()
            .ok_or_else(|| FilterError::Device("no download buffer".into()))?;
        let landed = &download
            .as_slice()
            .map_err(device_error("reading the download"))?[..bytes];
        let mut out = if job.recycled.dtype() == job.out && job.recycled.len() == job.len {
            job.recycled
        } else {
            Voxels::zeros(job.out, job.len)
        };
        pool.install(|| parallel_copy(landed, out.as_bytes_mut()));
        Ok(out)
    }
}
