//! One process's pipeline: read → filter → write for each of its images,
//! overlapped.
//!
//! The stages' threads pass images along rendezvous channels: while image i
//! is filtered, image i+1 is read and inflated and image i−1 is compressed
//! and written. Inflating one image cannot be split among threads, so a rank
//! with spare cores runs more than one reader (`RunConfig::readers`), each on
//! its own image. A channel of capacity 0 hands an image over only when the
//! next stage takes it, so a rank holds a fixed number of images however many
//! the run has (`resources::pipeline_images`); the writer hands each finished buffer back
//! to the readers for the next image. Tasks are pulled on the calling thread,
//! because for the dynamic schedule pulling one is an MPI call.
//!
//! Every image ends as a record, whatever happens to it: a bad file, a failed
//! write, even a panic inside a stage become that image's error, and the
//! pipeline goes on with the next one. Only the count of failures decides the
//! exit code, later, at the top.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

mod commit;
mod cut;
mod describe;

use super::handoff::{self, Receiver, Sender};
use super::journal::{self, Durable, Journal};
use super::pace::{Pacer, Refusal};
use super::progress::Progress;
use super::stop;
use crate::config::RunConfig;
use crate::filter::slab::{SlabPlan, SlabRing};
use crate::filter::{Backend, Compat, FilterSpec, Pending};
use crate::io::gzip::Compressor;
use crate::io::{self, Image, OutputFormat, WriteOptions};
use crate::plan::{is_gz_name, Task};
use crate::report::{ImageRecord, Stage, Status};
use crate::volume::{DType, Voxels};
use commit::{commit_stage, Committing, COMMIT_QUEUE};
use cut::{Cut, Part};
pub(super) use describe::describe;

/// Runs every task the source yields through the pipeline; one record per
/// task, in the order they came. The source may be a list (static schedules)
/// or ask root for the next image each time (dynamic).
pub fn process<'t>(
    tasks: impl Iterator<Item = &'t Task>,
    cfg: &RunConfig,
    durable: &Durable,
    backend: &mut dyn Backend,
    rank: usize,
    progress: &Progress,
) -> Vec<ImageRecord> {
    let gzip = match Compressor::new(cfg.threads, cfg.compression_level) {
        Ok(gz) => gz,
        Err(e) => {
            let msg = format!("cannot start compression threads: {e}");
            return all_failed(tasks, rank, &msg);
        }
    };
    // Records land here as the writer finishes them, so that they survive
    // even if a stage thread dies outside the per-image guards; the journal
    // keeps them on disk in case the whole process dies.
    let finished = Mutex::new(Vec::new());
    let mut journal = Journal::open(&cfg.outdir, durable, rank);
    let pacer = cfg.stop.deadline_unix.map(Pacer::new);
    let pacer = pacer.as_ref();
    // The readers share the task queue and the spare buffers. Only they
    // hold the queue's receiver: when the last one ends (or dies), feeding
    // fails at once instead of waiting for a reader that will never come.
    // Whether the backend can filter a 3-D image in z-slabs (the CPU's).
    let slabs = backend.streams_slabs();
    let (task_tx, task_rx) = handoff::channel::<&Task>(0);
    let (spare_tx, spare_rx) = handoff::channel::<Voxels>(usize::MAX);
    let outcome = std::thread::scope(|s| {
        let (read_tx, read_rx) = handoff::channel::<InFlight>(0);
        let (filtered_tx, filtered_rx) = handoff::channel::<InFlight>(0);
        let stage = |name: &str| std::thread::Builder::new().name(format!("nismooth-{name}"));

        let readers: Vec<_> = (0..cfg.readers.max(1))
            .map(|i| {
                let (read_tx, task_rx, spare_rx) =
                    (read_tx.clone(), task_rx.clone(), spare_rx.clone());
                stage(&format!("read-{i}")).spawn_scoped(s, move || {
                    read_stage(task_rx, spare_rx, read_tx, cfg, durable, (rank, slabs))
                })
            })
            .collect();
        drop((read_tx, task_rx, spare_rx));
        let filterer = stage("filter").spawn_scoped(s, move || {
            filter_stage(read_rx, filtered_tx, backend, cfg, rank)
        });
        let (commit_tx, commit_rx) = handoff::channel::<Committing>(COMMIT_QUEUE);
        let gzip = &gzip;
        let writer = stage("write").spawn_scoped(s, move || {
            write_stage(filtered_rx, commit_tx, spare_tx, gzip, cfg.sync, rank)
        });
        let finished = &finished;
        let committer = stage("commit").spawn_scoped(s, move || {
            commit_stage(commit_rx, &mut journal, progress, finished, pacer, cfg.sync)
        });
        let readers: Result<Vec<_>, _> = readers.into_iter().collect();
        let (Ok(readers), Ok(filterer), Ok(writer), Ok(committer)) =
            (readers, filterer, writer, committer)
        else {
            // Readers that did start see the queue closed and end.
            drop(task_tx);
            return Err(tasks);
        };
        let fed = feed(tasks, &task_tx, finished, cfg, durable, pacer, rank);
        drop(task_tx);
        for reader in readers {
            let _ = reader.join();
        }
        let _ = (filterer.join(), writer.join(), committer.join());
        Ok(fed)
    });
    match outcome {
        Ok(fed) => in_feeding_order(fed, finished, rank),
        Err(tasks) => all_failed(tasks, rank, "cannot start the pipeline's threads"),
    }
}

/// Hands every task the source yields to the readers, or records why it is
/// held back; returns them in feeding order. The source is always drained,
/// even if the readers have died or the run is stopping: under the dynamic
/// schedule root waits for every rank's last request, and every image must
/// end as a record.
fn feed<'t>(
    tasks: impl Iterator<Item = &'t Task>,
    task_tx: &Sender<&'t Task>,
    finished: &Mutex<Vec<ImageRecord>>,
    cfg: &RunConfig,
    durable: &Durable,
    pacer: Option<&Pacer>,
    rank: usize,
) -> Vec<&'t Task> {
    let mut fed = Vec::new();
    for task in tasks {
        fed.push(task);
        match held_back(task, cfg, durable, pacer, rank) {
            Some(rec) => finished.lock().unwrap_or_else(|e| e.into_inner()).push(rec),
            None => {
                // No reader left to take it: its record is made later, as
                // lost with a dead stage; the pace must not wait for it.
                if task_tx.send(task).is_err() {
                    if let Some(p) = pacer {
                        p.done(task.index, false);
                    }
                }
            }
        }
    }
    fed
}

/// Every task as failed with the same message: the pipeline could not start.
fn all_failed<'t>(
    tasks: impl Iterator<Item = &'t Task>,
    rank: usize,
    msg: &str,
) -> Vec<ImageRecord> {
    tasks
        .map(|t| {
            let mut rec = blank(t, rank);
            fail(&mut rec, &t.input, msg.to_string());
            rec
        })
        .collect()
}

/// A task that must not start, as its record: the run is draining, or its
/// pace so far says the image would end after the deadline. An image that
/// will be skipped (its output done) always goes on: it costs nothing.
fn held_back(
    task: &Task,
    cfg: &RunConfig,
    durable: &Durable,
    pacer: Option<&Pacer>,
    rank: usize,
) -> Option<ImageRecord> {
    let draining = || {
        let reason = stop::reason().unwrap_or_else(|| "a signal".into());
        format!("not started: the run was draining ({reason})")
    };
    let why = if stop::draining() {
        draining()
    } else {
        let pacer = pacer?;
        if skip_reason(task, cfg, durable).is_some() {
            return None;
        }
        let voxels = io::read_header_info(&task.input).map_or(0, |h| h.voxels());
        match pacer.admit(task.index, voxels).err()? {
            Refusal::Draining => draining(),
            Refusal::Late(late) => format!(
                "not started: at this rank's pace it would end {late:.1} s after the deadline"
            ),
        }
    };
    let mut rec = not_started(task, rank);
    rec.note = Some(why);
    Some(rec)
}

/// Why the task's output needs no work (`--skip-existing`, `--resume`):
/// the reader's test, and the pacer's (a skipped image costs no time).
pub(super) fn skip_reason(task: &Task, cfg: &RunConfig, durable: &Durable) -> Option<&'static str> {
    if cfg.skip_existing && io::exists_nonempty(&task.output) {
        return Some("output exists (--skip-existing)");
    }
    let vouched = durable.resume.as_ref();
    vouched
        .is_some_and(|index| journal::complete(task, index, &durable.settings))
        .then_some("output complete (journal: same settings, same input)")
}

/// The record of an image that was never started (a drain came first).
pub fn not_started(task: &Task, rank: usize) -> ImageRecord {
    let mut rec = blank(task, rank);
    rec.status = Status::NotStarted;
    rec.started_s = 0.0;
    rec.note = Some("not started: the run was draining".into());
    rec
}

/// Abandons an image in flight once the drain's grace is over (or a second
/// signal came): no output, and its record says so. True if it did. An
/// image only read so far was not started: its filter never began.
fn abandon_if_aborting(job: &mut InFlight<'_>, filtered: bool) -> bool {
    if job.img.is_none() || !stop::aborting() {
        return false;
    }
    job.img = None;
    if filtered {
        interrupted(&mut job.rec);
    } else {
        stopped_before_filter(&mut job.rec);
    }
    true
}

fn stopped_before_filter(rec: &mut ImageRecord) {
    rec.status = Status::NotStarted;
    rec.note = Some("not started: the run stopped before its filter began".into());
}

pub(super) fn interrupted(rec: &mut ImageRecord) {
    rec.status = Status::Interrupted;
    rec.note =
        Some("interrupted: abandoned in flight (a second signal, or --grace ran out)".into());
}

/// A reader: takes tasks from the shared queue until it closes, reads each
/// in parts (into spare buffers when some have come back) and passes them
/// on. A panic becomes the image's error, as its last part.
fn read_stage<'t>(
    tasks: Receiver<&'t Task>,
    spares: Receiver<Voxels>,
    out: Sender<InFlight<'t>>,
    cfg: &RunConfig,
    durable: &Durable,
    (rank, slabs): (usize, bool),
) {
    for task in tasks {
        let mut next = Part::first();
        let mut send = |job: InFlight<'t>| {
            next = Part {
                index: job.part.index + 1,
                ..job.part
            };
            out.send(job).is_ok()
        };
        let read = catch_unwind(AssertUnwindSafe(|| {
            read_parts(task, cfg, durable, rank, &spares, slabs, &mut send)
        }));
        let sent = match read {
            Ok(sent) => sent,
            Err(panic) if !next.last => {
                let mut job = failed(task, rank, next, panic);
                job.part.last = true;
                out.send(job).is_ok()
            }
            Err(_) => true,
        };
        if !sent {
            break;
        }
    }
}

/// The filter: a GPU backend keeps `depth` images submitted; the oldest is
/// finished (waited for) only when the next one has been queued.
fn filter_stage<'t>(
    input: Receiver<InFlight<'t>>,
    out: Sender<InFlight<'t>>,
    backend: &mut dyn Backend,
    cfg: &RunConfig,
    rank: usize,
) {
    let depth = backend.depth().max(1);
    let mut queued = VecDeque::with_capacity(depth);
    // The z pass's ring of each 3-D image streamed in slabs.
    let mut rings: HashMap<usize, SlabRing> = HashMap::new();
    for job in input {
        let (task, part) = (job.task, job.part);
        let ring = part.slab.then(|| rings.remove(&task.index)).flatten();
        let (job, ring) = match ring {
            Some(ring) => (job, Some(ring)),
            None if part.slab && part.index == 0 => {
                let ring = job
                    .spec
                    .as_ref()
                    .zip(job.img.as_ref())
                    .and_then(|(spec, img)| {
                        SlabPlan::new(part.whole, spec, img.voxels.dtype(), job.out)
                            .map(|p| p.start())
                    });
                (job, ring)
            }
            None => (job, None),
        };
        let mut ring = ring;
        let submitted = guarded(task, part, rank, || match ring.as_mut() {
            Some(ring) => submit_slab(job, backend, ring, cfg.threads),
            None => submit(job, cfg, backend),
        });
        if let (Some(ring), false) = (ring, part.last) {
            rings.insert(task.index, ring);
        }
        queued.push_back(submitted);
        if queued.len() >= depth && !finish_oldest(&mut queued, backend, &out, rank) {
            return;
        }
    }
    while !queued.is_empty() && finish_oldest(&mut queued, backend, &out, rank) {}
}

/// The writer: writes each output part by part into its temp file (not
/// yet in place), sends each part's buffer back to the readers, and hands
/// the staged output to the committer once its last part is written.
fn write_stage<'t>(
    input: Receiver<InFlight<'t>>,
    out: Sender<Committing<'t>>,
    spares: Sender<Voxels>,
    gzip: &Compressor,
    sync: bool,
    rank: usize,
) {
    // Outputs begun and not yet ended, by task index (several readers may
    // interleave their series' parts).
    let mut open: HashMap<usize, Open<'_>> = HashMap::new();
    for job in input {
        let (task, part) = (job.task, job.part);
        let mut spare = None;
        let mut output = open.remove(&task.index).unwrap_or_default();
        let wrote = catch_unwind(AssertUnwindSafe(|| {
            write_part(job, &mut output, gzip, sync, &mut spare)
        }));
        if let Err(panic) = wrote {
            output.stream = None;
            output.add(failed(task, rank, part, panic).rec, part);
        }
        if let Some(v) = spare {
            let _ = spares.send(v);
        }
        if !part.last {
            open.insert(task.index, output);
            continue;
        }
        let next = Committing {
            task,
            rec: output.rec.unwrap_or_else(|| blank(task, rank)),
            staged: output.staged,
            input: output.input,
        };
        if out.send(next).is_err() {
            break;
        }
    }
}

/// One record per task fed, in feeding order; a task whose record was lost
/// with a dead stage thread is reported as failed, never dropped.
fn in_feeding_order(
    fed: Vec<&Task>,
    finished: Mutex<Vec<ImageRecord>>,
    rank: usize,
) -> Vec<ImageRecord> {
    let mut by_index: std::collections::HashMap<usize, ImageRecord> = finished
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| (r.index, r))
        .collect();
    fed.into_iter()
        .map(|t| {
            by_index.remove(&t.index).unwrap_or_else(|| {
                let mut rec = blank(t, rank);
                fail(
                    &mut rec,
                    &t.input,
                    "internal error: a pipeline thread died".into(),
                );
                rec
            })
        })
        .collect()
}

/// A part of an image on its way through the stages. `img` is `None` once
/// it failed (the record says why) or was skipped; later stages pass it on
/// untouched. The record of a first part describes the image; later parts'
/// records add their times (and any failure) to it.
struct InFlight<'t> {
    task: &'t Task,
    part: Part,
    rec: ImageRecord,
    img: Option<Image>,
    /// The image's filter, decided once when it was read (`image_spec`).
    spec: Option<FilterSpec>,
    out: DType,
    /// Between the filter's submit and finish: the backend's handle.
    pending: Option<Pending>,
}

impl<'t> InFlight<'t> {
    /// A part with no voxels: its record says why.
    fn empty(task: &'t Task, part: Part, rec: ImageRecord) -> InFlight<'t> {
        InFlight {
            task,
            part,
            rec,
            img: None,
            spec: None,
            out: DType::U8,
            pending: None,
        }
    }
}

/// An output being written part by part, and its image's record so far.
#[derive(Default)]
struct Open<'g> {
    stream: Option<io::OutputStream<'g>>,
    rec: Option<ImageRecord>,
    input: Option<io::InputId>,
    staged: Option<io::Staged>,
}

impl Open<'_> {
    /// Adds a part's record: the first describes the image; a later one
    /// adds its times, and its failure if the image has none yet. A later
    /// part that never reached its filter leaves the image interrupted.
    fn add(&mut self, rec: ImageRecord, part: Part) {
        let Some(acc) = &mut self.rec else {
            self.rec = Some(rec);
            return;
        };
        acc.read_s += rec.read_s;
        acc.filter_s += rec.filter_s;
        acc.write_s += rec.write_s;
        if acc.status == Status::Ok && rec.status != Status::Ok {
            acc.status = rec.status;
            acc.error = rec.error;
            acc.note = rec.note;
            if part.index > 0 && acc.status == Status::NotStarted {
                interrupted(acc);
            }
        }
    }

    fn failed(&self) -> bool {
        self.rec.as_ref().is_some_and(|r| r.status != Status::Ok)
    }
}

/// Runs one stage for one part of an image; a panic becomes that image's error.
fn guarded<'t>(
    task: &'t Task,
    part: Part,
    rank: usize,
    stage: impl FnOnce() -> InFlight<'t>,
) -> InFlight<'t> {
    catch_unwind(AssertUnwindSafe(stage)).unwrap_or_else(|panic| failed(task, rank, part, panic))
}

/// The part a panic stopped, as the image's error.
fn failed<'t>(
    task: &'t Task,
    rank: usize,
    part: Part,
    panic: Box<dyn std::any::Any + Send>,
) -> InFlight<'t> {
    let msg = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    let mut rec = blank(task, rank);
    fail(&mut rec, &task.input, format!("internal error: {msg}"));
    InFlight::empty(task, part, rec)
}

pub(super) fn since_start() -> f64 {
    crate::metrics::process_start().elapsed().as_secs_f64()
}

pub(super) fn blank(task: &Task, rank: usize) -> ImageRecord {
    ImageRecord {
        index: task.index,
        input: task.input.display().to_string(),
        output: task.output.display().to_string(),
        rank,
        voxels: 0,
        shape: vec![],
        dtype_in: None,
        dtype_out: None,
        bytes_in: 0,
        bytes_out: 0,
        read_s: 0.0,
        filter_s: 0.0,
        write_s: 0.0,
        started_s: since_start(),
        finished_s: 0.0,
        status: Status::Ok,
        error: None,
        note: None,
        spans: Vec::new(),
    }
}

pub(super) fn fail(rec: &mut ImageRecord, input: &Path, msg: String) {
    log::error!("{}: {msg}", input.display());
    rec.status = Status::Failed;
    rec.error = Some(msg);
}

/// Reads one task's image part by part and hands each to `send` (false
/// once the filter is gone); true if every part went. A skipped, held or
/// unreadable image is one part with no voxels.
fn read_parts<'t>(
    task: &'t Task,
    cfg: &RunConfig,
    durable: &Durable,
    rank: usize,
    spares: &Receiver<Voxels>,
    slabs: bool,
    send: &mut dyn FnMut(InFlight<'t>) -> bool,
) -> bool {
    let mut rec = blank(task, rank);
    if stop::aborting() {
        stopped_before_filter(&mut rec);
        return send(InFlight::empty(task, Part::only(), rec));
    }
    if let Some(why) = skip_reason(task, cfg, durable) {
        rec.status = Status::Skipped;
        rec.note = Some(why.into());
        return send(InFlight::empty(task, Part::only(), rec));
    }
    let t = Instant::now();
    let opened = io::ImageStream::open(&task.input);
    rec.read_s = t.elapsed().as_secs_f64();
    rec.span(Stage::Read, t);
    let opened = opened
        .map_err(|e| e.to_string())
        .and_then(|s| describe(&mut rec, s, cfg))
        .and_then(|(stream, spec, out)| {
            let cut = Cut::of(&stream, &spec, out, cfg, slabs);
            stream
                .reserve(cut.in_flight(&spec, stream.head().shape, cfg.readers))
                .map_err(|e| e.to_string())?;
            Ok((stream, spec, out, cut))
        });
    let (mut stream, spec, out, cut) = match opened {
        Ok(opened) => opened,
        Err(why) => {
            fail(&mut rec, &task.input, why);
            return send(InFlight::empty(task, Part::only(), rec));
        }
    };
    let whole = stream.head().shape;
    let count = whole.len().div_ceil(cut.voxels.max(1)).max(1);
    for index in 0..count {
        let part = Part {
            index,
            last: index + 1 == count,
            whole,
            slab: cut.slab,
        };
        let mut part_rec = if index == 0 {
            rec.clone()
        } else {
            blank(task, rank)
        };
        // Abandoned part-way (a second signal, the grace over): the rest
        // of a long series is not read, only its end is sent.
        if index > 0 && stop::aborting() {
            interrupted(&mut part_rec);
            let part = Part { last: true, ..part };
            return send(InFlight::empty(task, part, part_rec));
        }
        let t = Instant::now();
        let voxels = stream.read_next(cut.voxels, spares.try_recv());
        part_rec.read_s += t.elapsed().as_secs_f64();
        part_rec.span(Stage::Read, t);
        let voxels = match voxels {
            Ok(v) => v,
            Err(e) => {
                fail(&mut part_rec, &task.input, e.to_string());
                let part = Part { last: true, ..part };
                return send(InFlight::empty(task, part, part_rec));
            }
        };
        let head = stream.head();
        let img = io::Image {
            raw_header: if index == 0 {
                head.raw_header.clone()
            } else {
                Vec::new()
            },
            shape: cut.shape_of(whole, voxels.len()),
            voxels,
            ..*head
        };
        let job = InFlight {
            img: Some(img),
            spec: Some(spec.clone()),
            out,
            ..InFlight::empty(task, part, part_rec)
        };
        if !send(job) {
            return false;
        }
    }
    true
}

/// Finishes the oldest queued image and passes it on to the writer; false
/// once the writer is gone.
fn finish_oldest<'t>(
    queued: &mut VecDeque<InFlight<'t>>,
    backend: &mut dyn Backend,
    to_writer: &Sender<InFlight<'t>>,
    rank: usize,
) -> bool {
    let Some(job) = queued.pop_front() else {
        return true;
    };
    let (task, part) = (job.task, job.part);
    let job = guarded(task, part, rank, || finish(job, backend));
    to_writer.send(job).is_ok()
}

/// Hands the image's voxels to the backend; a synchronous backend is done
/// at once, a GPU only queues the work (`finish` collects it).
fn submit<'t>(mut job: InFlight<'t>, cfg: &RunConfig, backend: &mut dyn Backend) -> InFlight<'t> {
    if abandon_if_aborting(&mut job, false) {
        return job;
    }
    let (Some(img), Some(spec)) = (job.img.as_mut(), job.spec.as_ref()) else {
        return job;
    };
    let t = Instant::now();
    let voxels = std::mem::replace(&mut img.voxels, Voxels::U8(Vec::new()));
    let voxels = prepare(voxels, spec, job.out, cfg);
    job.pending = Some(backend.submit(voxels, img.shape, spec, job.out));
    job.rec.filter_s = t.elapsed().as_secs_f64();
    job.rec.span(Stage::Filter, t);
    job
}

/// The voxels as the filter takes them: nilearn's float copy (all NaN
/// when its kernel is), anything else as read.
pub(super) fn prepare(voxels: Voxels, spec: &FilterSpec, out: DType, cfg: &RunConfig) -> Voxels {
    if cfg.compat != Compat::Nilearn {
        return voxels;
    }
    let mut voxels = crate::filter::nilearn::prepare(voxels, out);
    if crate::filter::nilearn::kernel_is_nan(spec.sigma) {
        crate::filter::nilearn::all_nan(&mut voxels);
    }
    voxels
}

/// Filters a z-slab of a 3-D image: its x and y passes on the backend,
/// then the z pass over the image's ring, which gives the output slices
/// this slab completes (`filter::slab`).
fn submit_slab<'t>(
    mut job: InFlight<'t>,
    backend: &mut dyn Backend,
    ring: &mut SlabRing,
    threads: usize,
) -> InFlight<'t> {
    if abandon_if_aborting(&mut job, false) {
        return job;
    }
    let (Some(img), Some(spec)) = (job.img.as_mut(), job.spec.as_ref()) else {
        return job;
    };
    let t = Instant::now();
    let voxels = std::mem::replace(&mut img.voxels, Voxels::U8(Vec::new()));
    let xy = backend.smooth(voxels, img.shape, &SlabPlan::xy_spec(spec), job.out);
    job.pending = Some(Pending::Done(xy.map(|xy| ring.push(xy, threads))));
    job.rec.filter_s = t.elapsed().as_secs_f64();
    job.rec.span(Stage::Filter, t);
    job
}

/// Waits for the image's smoothing. Its filter time is the time this thread
/// spent on it, submitting and waiting.
fn finish<'t>(mut job: InFlight<'t>, backend: &mut dyn Backend) -> InFlight<'t> {
    let Some(pending) = job.pending.take() else {
        return job;
    };
    let t = Instant::now();
    let smoothed = match pending {
        Pending::Done(result) => result,
        Pending::Queued(ticket) => backend.finish(ticket),
    };
    job.rec.filter_s += t.elapsed().as_secs_f64();
    job.rec.span(Stage::Filter, t);
    match (smoothed, job.img.as_mut()) {
        (Ok(v), Some(img)) => img.voxels = v,
        (Ok(_), None) => {}
        (Err(crate::filter::FilterError::Cancelled), _) => {
            interrupted(&mut job.rec);
            job.img = None;
        }
        (Err(e), _) => {
            fail(&mut job.rec, &job.task.input, format!("filter failed: {e}"));
            job.img = None;
        }
    }
    job
}

/// Writes one part of an image into its output's temp file (the first
/// part begins the file, the last stages it for the committer); the part's
/// buffer goes to `spare` for the next read. A failed or abandoned part
/// ends the output: its temp file goes, and later parts are passed over.
fn write_part<'g>(
    mut job: InFlight<'_>,
    output: &mut Open<'g>,
    gzip: &'g Compressor,
    durable: bool,
    spare: &mut Option<Voxels>,
) {
    abandon_if_aborting(&mut job, true);
    let (part, task, out) = (job.part, job.task, job.out);
    if output.input.is_none() {
        output.input = job.img.as_ref().map(|img| img.id);
    }
    let img = job.img.take();
    output.add(job.rec, part);
    let Some(img) = img.filter(|_| !output.failed()) else {
        output.stream = None;
        return;
    };
    let t = Instant::now();
    let written = write_voxels(output, &img, part, task, out, gzip, durable);
    if let Some(rec) = &mut output.rec {
        rec.write_s += t.elapsed().as_secs_f64();
        rec.span(Stage::Write, t);
        if let Err(e) = written {
            fail(rec, &task.input, e.to_string());
            output.stream = None;
        }
    }
    *spare = Some(img.voxels);
}

/// Begins the output at the first part, appends the voxels, and stages
/// the file at the last part.
fn write_voxels<'g>(
    output: &mut Open<'g>,
    img: &Image,
    part: Part,
    task: &Task,
    out: DType,
    gzip: &'g Compressor,
    durable: bool,
) -> Result<(), io::WriteError> {
    if part.index == 0 {
        let format = if is_gz_name(&task.output) {
            OutputFormat::NiiGz
        } else {
            OutputFormat::Nii
        };
        let opts = WriteOptions {
            format,
            gzip,
            durable,
        };
        let header = io::output_header(img, out);
        let data_len = (part.whole.len() * out.size()) as u64;
        output.stream = Some(io::OutputStream::begin(
            &task.output,
            &header,
            img.big_endian,
            out,
            data_len,
            opts,
        )?);
    }
    let Some(stream) = output.stream.as_mut() else {
        return Ok(());
    };
    stream.append(&img.voxels)?;
    if part.last {
        if let Some(stream) = output.stream.take() {
            output.staged = Some(stream.finish()?);
        }
    }
    Ok(())
}
