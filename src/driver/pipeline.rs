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

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::handoff::{self, Receiver, Sender};
use super::journal::{self, Durable, Journal};
use super::pace::{Pacer, Refusal};
use super::progress::Progress;
use super::stop;
use crate::config::RunConfig;
use crate::filter::{Backend, Compat, FilterSpec, Pending};
use crate::io::gzip::Compressor;
use crate::io::{self, Image, OutputFormat, WriteOptions};
use crate::plan::{is_gz_name, Task};
use crate::report::{ImageRecord, Status};
use crate::volume::{DType, Voxels};

/// Outputs written but not yet in place, at most: each holds an open file
/// (no voxels), so the writer runs ahead of the disk by this much.
const COMMIT_QUEUE: usize = 64;

/// A written output on its way to its name, with its record.
struct Committing<'t> {
    task: &'t Task,
    rec: ImageRecord,
    staged: Option<io::Staged>,
    input: Option<io::InputId>,
}

/// How long the committer waits for more outputs before it syncs a batch
/// (when syncing): small images then share one journal commit instead of
/// paying one each. Outputs appear this much later; the run's end does not
/// wait for it (the channel closes).
const COMMIT_WINDOW: Duration = Duration::from_millis(25);

/// The next outputs to put in place: waits for one, then for whatever else
/// comes within the window (none without `sync`). While the disk is slower
/// than the pipeline the batches grow by themselves, and one sync covers
/// more files.
fn next_batch<'t>(rx: &Receiver<Committing<'t>>, sync: bool) -> Option<Vec<Committing<'t>>> {
    let mut batch = vec![rx.recv()?];
    let deadline = Instant::now() + if sync { COMMIT_WINDOW } else { Duration::ZERO };
    while batch.len() < COMMIT_QUEUE {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Some(next) => batch.push(next),
            None => break,
        }
    }
    Some(batch)
}

/// Syncs and renames a batch (`io::commit_batch`), handing each image to
/// `done` as soon as its output is in place (its record with the output's
/// size, or the error that stopped it); images with no output go first.
fn commit<'t>(batch: Vec<Committing<'t>>, sync: bool, mut done: impl FnMut(Committing<'t>)) {
    let mut staged = Vec::new();
    let mut written = Vec::new();
    for mut c in batch {
        match c.staged.take() {
            Some(st) => {
                staged.push(st);
                written.push(Some(c));
            }
            None => done(c),
        }
    }
    io::commit_batch(staged, sync, |i, result| {
        let Some(mut c) = written[i].take() else {
            return;
        };
        match result {
            Ok(bytes) => c.rec.bytes_out = bytes,
            Err(e) => fail(&mut c.rec, &c.task.input, e.to_string()),
        }
        done(c);
    });
}

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
    let mut journal = Journal::open(&cfg.outdir, &durable.run, rank, &durable.settings);
    let pacer = cfg.stop.deadline_unix.map(Pacer::new);
    let pacer = pacer.as_ref();
    // The readers share the task queue and the spare buffers. Only they
    // hold the queue's receiver: when the last one ends (or dies), feeding
    // fails at once instead of waiting for a reader that will never come.
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
                    read_stage(task_rx, spare_rx, read_tx, cfg, durable, rank)
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
fn skip_reason(task: &Task, cfg: &RunConfig, durable: &Durable) -> Option<&'static str> {
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

fn interrupted(rec: &mut ImageRecord) {
    rec.status = Status::Interrupted;
    rec.note =
        Some("interrupted: abandoned in flight (a second signal, or --grace ran out)".into());
}

/// A reader: takes tasks from the shared queue until it closes, reads each
/// (into a spare buffer when one has come back) and passes it on.
fn read_stage<'t>(
    tasks: Receiver<&'t Task>,
    spares: Receiver<Voxels>,
    out: Sender<InFlight<'t>>,
    cfg: &RunConfig,
    durable: &Durable,
    rank: usize,
) {
    for task in tasks {
        let spare = spares.try_recv();
        let job = guarded(task, rank, || read(task, cfg, durable, rank, spare));
        if out.send(job).is_err() {
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
    for job in input {
        queued.push_back(guarded(job.task, rank, || submit(job, cfg, backend)));
        if queued.len() >= depth && !finish_oldest(&mut queued, backend, &out, rank) {
            return;
        }
    }
    while !queued.is_empty() && finish_oldest(&mut queued, backend, &out, rank) {}
}

/// The writer: stages each output (a temporary file, not yet in place) and
/// sends its buffer back to the readers.
fn write_stage<'t>(
    input: Receiver<InFlight<'t>>,
    out: Sender<Committing<'t>>,
    spares: Sender<Voxels>,
    gzip: &Compressor,
    sync: bool,
    rank: usize,
) {
    for job in input {
        let task = job.task;
        let mut spare = None;
        let input = job.img.as_ref().map(|img| img.id);
        let job = guarded(task, rank, || write(job, gzip, sync, &mut spare));
        if let Some(v) = spare {
            let _ = spares.send(v);
        }
        let next = Committing {
            task,
            rec: job.rec,
            staged: job.staged,
            input,
        };
        if out.send(next).is_err() {
            break;
        }
    }
}

/// The committer: puts staged outputs in place a batch at a time, journals
/// each, and keeps its record where `process` finds it.
fn commit_stage(
    input: Receiver<Committing<'_>>,
    journal: &mut Journal,
    progress: &Progress,
    finished: &Mutex<Vec<ImageRecord>>,
    pacer: Option<&Pacer>,
    sync: bool,
) {
    while let Some(batch) = next_batch(&input, sync) {
        commit(batch, sync, |mut c| {
            c.rec.finished_s = since_start();
            if let Some(p) = pacer {
                p.done(c.task.index, c.rec.status.did_work());
            }
            journal.record(&c.rec, &c.task.output, c.input);
            if !c.rec.status.left_undone() {
                progress.tick();
            }
            if let Ok(mut f) = finished.lock() {
                f.push(c.rec);
            }
        });
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

/// An image on its way through the stages. `img` is `None` once it failed
/// (the record says why) or was skipped; later stages pass it on untouched.
struct InFlight<'t> {
    task: &'t Task,
    rec: ImageRecord,
    img: Option<Image>,
    /// The image's filter, decided once when it was read (`image_spec`).
    spec: Option<FilterSpec>,
    out: DType,
    /// Between the filter's submit and finish: the backend's handle.
    pending: Option<Pending>,
    /// Written to its temp file, waiting for the committer.
    staged: Option<io::Staged>,
}

/// Runs one stage for one image; a panic becomes that image's error.
fn guarded<'t>(task: &'t Task, rank: usize, stage: impl FnOnce() -> InFlight<'t>) -> InFlight<'t> {
    catch_unwind(AssertUnwindSafe(stage)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let mut rec = blank(task, rank);
        fail(&mut rec, &task.input, format!("internal error: {msg}"));
        InFlight {
            task,
            rec,
            img: None,
            spec: None,
            out: DType::U8,
            pending: None,
            staged: None,
        }
    })
}

fn since_start() -> f64 {
    crate::metrics::process_start().elapsed().as_secs_f64()
}

fn blank(task: &Task, rank: usize) -> ImageRecord {
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
    }
}

fn fail(rec: &mut ImageRecord, input: &Path, msg: String) {
    log::error!("{}: {msg}", input.display());
    rec.status = Status::Failed;
    rec.error = Some(msg);
}

fn read<'t>(
    task: &'t Task,
    cfg: &RunConfig,
    durable: &Durable,
    rank: usize,
    spare: Option<Voxels>,
) -> InFlight<'t> {
    let mut rec = blank(task, rank);
    let job = |rec, img| InFlight {
        task,
        rec,
        img,
        spec: None,
        out: DType::U8,
        pending: None,
        staged: None,
    };
    if stop::aborting() {
        stopped_before_filter(&mut rec);
        return job(rec, None);
    }
    if let Some(why) = skip_reason(task, cfg, durable) {
        rec.status = Status::Skipped;
        rec.note = Some(why.into());
        return job(rec, None);
    }
    let t = Instant::now();
    let img = io::read_image_into(&task.input, spare);
    rec.read_s = t.elapsed().as_secs_f64();
    let img = match img {
        Ok(img) => img,
        Err(e) => {
            fail(&mut rec, &task.input, e.to_string());
            return job(rec, None);
        }
    };
    if img.dropped_extensions {
        log::warn!(
            "{}: its header extensions have invalid sizes; the output is written without them",
            task.input.display()
        );
        rec.note = Some("invalid header extensions dropped".into());
    }
    rec.bytes_in = img.bytes_in;
    rec.voxels = img.shape.len() as u64;
    rec.shape = img.shape.spatial[..img.shape.spatial_ndim].to_vec();
    if img.shape.volumes > 1 {
        rec.shape.push(img.shape.volumes);
    }
    let dtype_in = img.voxels.dtype();
    rec.dtype_in = Some(dtype_in.to_string());
    let out = cfg.output_dtype(dtype_in);
    rec.dtype_out = Some(out.to_string());

    let spec = match cfg.image_spec(&img) {
        Ok(spec) => spec,
        Err(why) => {
            fail(&mut rec, &task.input, why);
            return job(rec, None);
        }
    };
    InFlight {
        task,
        rec,
        img: Some(img),
        spec: Some(spec),
        out,
        pending: None,
        staged: None,
    }
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
    let job = guarded(job.task, rank, || finish(job, backend));
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
    let mut voxels = std::mem::replace(&mut img.voxels, Voxels::U8(Vec::new()));
    if cfg.compat == Compat::Nilearn {
        voxels = crate::filter::nilearn::prepare(voxels, job.out);
        if crate::filter::nilearn::kernel_is_nan(spec.sigma) {
            crate::filter::nilearn::all_nan(&mut voxels);
        }
    }
    job.pending = Some(backend.submit(voxels, img.shape, spec, job.out));
    job.rec.filter_s = t.elapsed().as_secs_f64();
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

/// Writes the smoothed image to its temp file (the committer puts it in
/// place); its buffer goes to `spare` for the next read.
fn write<'t>(
    mut job: InFlight<'t>,
    gzip: &Compressor,
    durable: bool,
    spare: &mut Option<Voxels>,
) -> InFlight<'t> {
    if abandon_if_aborting(&mut job, true) {
        return job;
    }
    let Some(img) = job.img.take() else {
        return job;
    };
    let t = Instant::now();
    let header = io::output_header(&img, job.out);
    let format = if is_gz_name(&job.task.output) {
        OutputFormat::NiiGz
    } else {
        OutputFormat::Nii
    };
    let staged = io::stage_image(
        &job.task.output,
        &header,
        img.big_endian,
        &img.voxels,
        WriteOptions {
            format,
            gzip,
            durable,
        },
    );
    job.rec.write_s = t.elapsed().as_secs_f64();
    match staged {
        Ok(st) => job.staged = Some(st),
        Err(e) => fail(&mut job.rec, &job.task.input, e.to_string()),
    }
    *spare = Some(img.voxels);
    job
}
