//! One image shared by every rank: a run of fewer images than ranks
//! (`--split auto`), where one image per rank would leave ranks idle, or
//! every run (`--split always`).
//!
//! The output's data bytes are cut into one run per rank, on gzip's 1 MiB
//! chunks (`shares`). A rank reads the voxels its run needs (a series'
//! volumes; a 3-D image's z-slices with a halo of the z kernel's radius on
//! each side, which is all scipy's last pass reads), filters them with the
//! same backend call as a whole image, and encodes its run: raw bytes for
//! `.nii`, deflated chunks for `.nii.gz`, primed with the 32 KiB before the
//! run (which it filters too) exactly as the single process primes them.
//! Root gathers each run's length, hands out the offsets (an exclusive
//! prefix sum), every rank writes its run into root's temp file at its
//! offset, and root writes the gzip trailer (the CRCs combined) and puts
//! the file in place. The bytes are the single process's.
//!
//! A gzip input cannot be entered mid-stream: each rank inflates from the
//! file's start to the end of what it needs (the last rank all of it), so
//! inflating stays serial while filtering and compressing are divided. A
//! `.nii.gz` run is held deflated in memory until the offsets are known.
//!
//! Every image costs every rank the same four collectives in the same
//! order, whatever fails: errors travel in the payloads, and root decides.
//! An image that cannot be cut (a z-kernel with wrap, a z radius of half
//! the slices or more, FSL's or nilearn's 3-D filter, one slice) is done by
//! root alone, still through the same steps.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::comm::Comm;
use super::journal::{Durable, Journal};
use super::pipeline::{self, blank, describe, fail, since_start};
use super::progress::Progress;
use super::stop;
use crate::config::RunConfig;
use crate::filter::slab::SlabPlan;
use crate::filter::{Backend, Compat, FilterError, FilterSpec, Mode, Semantics};
use crate::io::gzip::{self, Compressor, CHUNK};
use crate::io::{self, ImageStream};
use crate::plan::schedule::Split;
use crate::plan::Task;
use crate::report::{ImageRecord, Stage, Status};
use crate::volume::{DType, Shape};

/// The 32 KiB of output before a run that primes its first chunk.
const DICT: u64 = 32 * 1024;

/// Whether this run shares each image among its ranks: the same answer on
/// every rank (it depends only on the plan every rank holds).
/// `auto` leaves runs whose 3-D images could not be cut (`--mode wrap`,
/// FSL's and nilearn's filters) to one image per rank: root would do them
/// one after another.
pub fn applies(cfg: &RunConfig, ranks: usize, tasks: &[Task]) -> bool {
    let cuttable = cfg.compat == Compat::Scipy && cfg.mode != Mode::Wrap;
    match cfg.split {
        Split::Never => false,
        Split::Always => ranks > 1,
        Split::Auto => ranks > 1 && tasks.len() < ranks && cuttable,
    }
}

/// Each rank's run of an output's `data_len` data bytes: as equal as whole
/// gzip chunks allow, in rank order, the last ending at the data's end.
pub fn shares(data_len: u64, ranks: usize) -> Vec<Range<u64>> {
    let chunk = CHUNK as u64;
    let chunks = data_len.div_ceil(chunk);
    let at = |k: usize| (chunks * k as u64 / ranks as u64 * chunk).min(data_len);
    (0..ranks).map(|k| at(k)..at(k + 1)).collect()
}

/// How an image may be cut: in units of `unit` voxels (a volume, or a
/// z-slice), `units` of them, each run reading `halo` more on either side.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layout {
    unit: usize,
    units: usize,
    halo: usize,
}

/// A series by volumes (each is filtered alone); a 3-D image by z-slices
/// when scipy's z pass reads no further than its radius within the image
/// (not wrap, and fewer than half the slices: as `SlabPlan`); else `None`.
fn layout(shape: Shape, spec: &FilterSpec, compat: Compat) -> Option<Layout> {
    if shape.volumes > 1 {
        return Some(Layout {
            unit: shape.volume_len(),
            units: shape.volumes,
            halo: 0,
        });
    }
    let nz = shape.spatial[2];
    if shape.spatial_ndim != 3 || spec.semantics != Semantics::Scipy || compat == Compat::Nilearn {
        return None;
    }
    let radius = spec.kernels(3)[2].as_ref().map_or(0, |k| k.radius());
    if radius > 0 && (spec.mode == Mode::Wrap || 2 * radius >= nz) {
        return None;
    }
    Some(Layout {
        unit: shape.spatial[0] * shape.spatial[1],
        units: nz,
        halo: radius,
    })
}

/// How an image is cut and each rank's run of its `data_len` output bytes;
/// an image that cannot be cut is one unit, all of it rank 0's.
fn cut(
    shape: Shape,
    spec: &FilterSpec,
    compat: Compat,
    data_len: u64,
    ranks: usize,
) -> (Layout, Vec<Range<u64>>) {
    if let Some(lay) = layout(shape, spec, compat) {
        return (lay, shares(data_len, ranks));
    }
    let whole = Layout {
        unit: shape.len().max(1),
        units: 1,
        halo: 0,
    };
    let runs = (0..ranks)
        .map(|k| {
            if k == 0 {
                0..data_len
            } else {
                data_len..data_len
            }
        })
        .collect();
    (whole, runs)
}

/// What a rank reads and filters for its run of output bytes `run`
/// (elements of `elem` bytes), with `before` bytes of output ahead of it.
#[derive(Debug, PartialEq)]
struct Window {
    /// Units read and filtered.
    read: Range<usize>,
    /// The first output byte kept (`run.start - before`, on an element).
    kept_from: u64,
}

fn window(lay: Layout, elem: u64, run: &Range<u64>, before: u64) -> Window {
    let kept_from = run.start.saturating_sub(before) / elem * elem;
    let first = (kept_from / elem) as usize / lay.unit;
    let last = ((run.end / elem) as usize).div_ceil(lay.unit);
    Window {
        read: first.saturating_sub(lay.halo)..(last + lay.halo).min(lay.units),
        kept_from,
    }
}

/// Root's word before an image: go (into this temp file), or not.
#[derive(Serialize, Deserialize)]
enum Start {
    Go {
        temp: PathBuf,
    },
    /// Root's record says why (skipped, failed, not started).
    Pass,
    /// The run stops: no image after this one starts.
    Stop,
}

/// A rank's run, told to root.
#[derive(Serialize, Deserialize, Default)]
struct RunDone {
    error: Option<String>,
    cancelled: bool,
    /// Bytes this rank writes (raw or deflated).
    bytes: u64,
    crc: u32,
    data: u64,
}

/// Root's word after the runs: where each is written, or abandon.
#[derive(Serialize, Deserialize)]
enum Place {
    At(Vec<u64>),
    Abandon,
}

/// What a rank holds of one image between the collectives.
#[derive(Default)]
struct Encoded {
    bytes: Vec<u8>,
    /// Root's: what precedes every run (the NIfTI header, or the gzip
    /// header and the deflated NIfTI header), and the NIfTI header itself.
    head: Vec<u8>,
    header: Vec<u8>,
}

/// Every image, each shared by every rank, one after the other. Returns
/// this rank's records: root's describe the images, another rank's its run.
pub fn process(
    tasks: &[Task],
    cfg: &RunConfig,
    comm: &dyn Comm,
    durable: &Durable,
    backend: &mut dyn Backend,
    progress: &Progress,
) -> Vec<ImageRecord> {
    log::info!(
        "{}: {} image(s) for {} ranks: each image is shared by every rank (--split {}), {} thread(s) per rank, backend {}",
        comm.describe(),
        tasks.len(),
        comm.size(),
        cfg.split,
        cfg.threads,
        backend.name()
    );
    let gzip = Compressor::new(cfg.threads, cfg.compression_level);
    let mut journal = comm
        .is_root()
        .then(|| Journal::open(&cfg.outdir, durable, 0));
    let mut records = Vec::new();
    let mut stopped = false;
    let mut pace = Pace::default();
    for task in tasks {
        // Root's: the image's voxels, for the deadline's pace.
        let voxels = match (comm.is_root(), cfg.stop.deadline_unix) {
            (true, Some(_)) => io::read_header_info(&task.input).map_or(0, |h| h.voxels()),
            _ => 0,
        };
        let mut ctx = Image {
            task,
            cfg,
            comm,
            gzip: gzip.as_ref().ok(),
            rec: blank(task, comm.rank()),
            runs: Vec::new(),
            input: None,
            too_late: cfg
                .stop
                .deadline_unix
                .is_some_and(|d| pace.would_end(voxels) >= d),
        };
        if stopped {
            if comm.is_root() {
                records.push(pipeline::not_started(task, 0));
            }
            continue;
        }
        let t = Instant::now();
        let (rec, stop) = ctx.run(durable, backend);
        if rec.as_ref().is_some_and(|r| r.status == Status::Ok) {
            pace.add(voxels, t.elapsed().as_secs_f64());
        }
        stopped = stop;
        if let Some(mut rec) = rec {
            rec.finished_s = since_start();
            if let Some(j) = journal.as_mut() {
                j.record(&rec, &task.output, ctx.input);
                if !rec.status.left_undone() {
                    progress.tick();
                }
            }
            records.push(rec);
        }
    }
    records
}

/// Root's pace over the images shared so far: the world's seconds per
/// voxel, so that under `--deadline` no image starts that would end after
/// it (as the pipeline's `Pacer` rules; the first starts whenever the
/// deadline has not passed).
#[derive(Default)]
struct Pace {
    voxels: u64,
    seconds: f64,
}

impl Pace {
    fn add(&mut self, voxels: u64, seconds: f64) {
        self.voxels += voxels;
        self.seconds += seconds;
    }

    /// When an image of `voxels` started now would end (Unix seconds).
    fn would_end(&self, voxels: u64) -> f64 {
        let now = stop::unix_now();
        if self.voxels == 0 {
            return now;
        }
        super::pace::finish_at(now, voxels, 0, self.voxels, self.seconds)
    }
}

/// One image as this rank sees it.
struct Image<'a> {
    task: &'a Task,
    cfg: &'a RunConfig,
    comm: &'a dyn Comm,
    gzip: Option<&'a Compressor>,
    rec: ImageRecord,
    /// Root's: every rank's run, once gathered.
    runs: Vec<RunDone>,
    input: Option<io::InputId>,
    /// Root's: the deadline has passed, or the pace says this image would
    /// end after it.
    too_late: bool,
}

impl Image<'_> {
    /// The four collectives: root's start, the runs' lengths, the offsets,
    /// the writes' outcome. Returns this rank's record (none for a rank
    /// that had no run) and whether the run stops here.
    fn run(&mut self, durable: &Durable, backend: &mut dyn Backend) -> (Option<ImageRecord>, bool) {
        let root = self.comm.is_root();
        let draining = self.comm.sum_u64(stop::draining() as u64) > 0;
        let mut output = None;
        let start = if root {
            self.start(draining, durable, &mut output)
        } else {
            Start::Pass
        };
        let start: Start = decode(self.comm.broadcast(encode(&start))).unwrap_or(Start::Stop);
        let temp = match start {
            Start::Go { temp } => temp,
            Start::Pass => return (root.then(|| self.rec.clone()), false),
            Start::Stop => {
                let rec = root.then(|| pipeline::not_started(self.task, 0));
                return (rec, true);
            }
        };
        let sink = match output.as_ref() {
            Some(out) => Ok(Sink::Root(out)),
            None => io::ShareWriter::open(&temp, &self.task.output)
                .map(Sink::Rank)
                .map_err(|e| e.to_string()),
        };
        let (mine, encoded) = self.encode(backend, &sink);
        let place = self.place(&mine, &encoded, output.as_ref());
        let t = Instant::now();
        let written = match (&place, &sink) {
            (Place::At(offsets), Ok(sink)) => self.write(offsets, &encoded, sink),
            _ => Ok(()),
        };
        self.rec.write_s += t.elapsed().as_secs_f64();
        self.rec.span(Stage::Write, t);
        super::inject_panic("split", self.comm.rank());
        let all_written = self.agree(written);
        if root {
            self.commit(output, all_written, &place, &encoded);
            return (Some(self.rec.clone()), false);
        }
        let worked = mine.data > 0;
        (worked.then(|| self.rec.clone()), false)
    }

    /// Root: skip, refuse or create the temp file.
    fn start(
        &mut self,
        draining: bool,
        durable: &Durable,
        output: &mut Option<io::SharedOutput>,
    ) -> Start {
        if draining || self.too_late {
            return Start::Stop;
        }
        if let Some(why) = pipeline::skip_reason(self.task, self.cfg, durable) {
            self.rec.status = Status::Skipped;
            self.rec.note = Some(why.into());
            return Start::Pass;
        }
        match io::SharedOutput::create(&self.task.output) {
            Ok(out) => {
                let temp = out.temp().to_path_buf();
                *output = Some(out);
                Start::Go { temp }
            }
            Err(e) => {
                fail(&mut self.rec, &self.task.input, e.to_string());
                Start::Pass
            }
        }
    }
}

/// Why a rank's run was not done.
enum Failure {
    Error(String),
    Cancelled,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Error(e.to_string())
    }
}

impl Image<'_> {
    /// This rank's run, read, filtered and encoded; its record gets the times.
    fn encode(
        &mut self,
        backend: &mut dyn Backend,
        sink: &Result<Sink, String>,
    ) -> (RunDone, Encoded) {
        let mut enc = Encoded::default();
        let result = match sink {
            Ok(sink) => self.work(backend, &mut enc, Some(sink)),
            Err(e) => Err(Failure::Error(e.clone())),
        };
        let done = match result {
            Ok(done) => done,
            Err(Failure::Cancelled) => RunDone {
                cancelled: true,
                ..RunDone::default()
            },
            Err(Failure::Error(msg)) => RunDone {
                error: Some(msg),
                ..RunDone::default()
            },
        };
        (done, enc)
    }

    fn work(
        &mut self,
        backend: &mut dyn Backend,
        enc: &mut Encoded,
        sink: Option<&Sink>,
    ) -> Result<RunDone, Failure> {
        let t = Instant::now();
        let stream = ImageStream::open(&self.task.input)?;
        let (mut stream, spec, out) = describe(&mut self.rec, stream, self.cfg)?;
        let head = stream.head();
        let (shape, big_endian) = (head.shape, head.big_endian);
        let elem = out.size() as u64;
        let data_len = shape.len() as u64 * elem;
        let (rank, ranks) = (self.comm.rank(), self.comm.size());
        let (lay, runs) = cut(shape, &spec, self.cfg.compat, data_len, ranks);
        let gz = crate::plan::is_gz_name(&self.task.output);
        enc.header = io::output_header(head, out);
        if rank == 0 {
            enc.head = match gz {
                true => compressor(self.gzip)?.head(&enc.header, data_len)?,
                false => enc.header.clone(),
            };
            self.input = Some(head.id);
            log_shares(&self.task.input, shape, lay, elem, &runs, gz);
        }
        let run = runs[rank].clone();
        self.rec.voxels = (run.end - run.start) / elem;
        if run.is_empty() {
            return Ok(RunDone::default());
        }
        let w = window(lay, elem, &run, if gz { DICT } else { 0 });
        stream.skip(w.read.start * lay.unit)?;
        self.rec.read_s = t.elapsed().as_secs_f64();
        self.rec.span(Stage::Read, t);
        let swap = io::element_swap(big_endian, out);
        let mut encoder = match (gz, sink) {
            (true, _) => Encoder::Gz {
                gzip: compressor(self.gzip)?,
                stream: None,
                before: Vec::new(),
                deflated: Vec::new(),
            },
            (false, Some(sink)) => Encoder::Raw { sink, swap },
            (false, None) => return Err(Failure::Error("no output file to write into".into())),
        };
        let at = w.read.start as u64 * lay.unit as u64 * elem;
        let target = Target {
            run: run.clone(),
            data_len,
            swap,
            header: &enc.header,
        };
        self.stream_units(
            &mut stream,
            backend,
            (&spec, out),
            lay,
            w.read.len(),
            |bytes, pos| encoder.feed(&target, at + pos, bytes),
        )?;
        let (crc, data, deflated) = encoder.finish(&target)?;
        enc.bytes = deflated;
        Ok(RunDone {
            error: None,
            cancelled: false,
            bytes: if gz { enc.bytes.len() as u64 } else { data },
            crc,
            data,
        })
    }

    /// Reads, filters and hands on `count` units a part at a time (whole
    /// volumes, or z-slabs through the z pass's ring where `SlabPlan`
    /// allows, else all at once): memory follows the part, not the run.
    /// `emit` gets each output's bytes and their offset from the first.
    fn stream_units(
        &mut self,
        stream: &mut ImageStream,
        backend: &mut dyn Backend,
        (spec, out): (&FilterSpec, DType),
        lay: Layout,
        count: usize,
        mut emit: impl FnMut(&[u8], u64) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let whole = stream.head().shape;
        let sub = part_shape(whole, lay, count);
        let bytes = (count * lay.unit) as u64 * stream.dtype().size().max(out.size()) as u64;
        let plan = (whole.volumes == 1 && lay.units > 1 && backend.streams_slabs())
            .then(|| SlabPlan::new(sub, spec, stream.dtype(), out))
            .flatten();
        let mut ring = plan.as_ref().map(SlabPlan::start);
        let per = if whole.volumes > 1 || ring.is_some() {
            crate::resources::volumes_within(bytes, count, crate::resources::part_bytes())
        } else {
            count
        };
        stream.reserve(per * lay.unit)?;
        let (mut left, mut pos) = (count, 0u64);
        while left > 0 {
            let n = per.min(left);
            let t = Instant::now();
            let voxels = stream.read_next(n * lay.unit, None)?;
            self.rec.read_s += t.elapsed().as_secs_f64();
            self.rec.span(Stage::Read, t);
            let t = Instant::now();
            let voxels = pipeline::prepare(voxels, spec, out, self.cfg);
            let part = part_shape(whole, lay, n);
            let smoothed = match ring.as_mut() {
                Some(ring) => backend
                    .smooth(voxels, part, &SlabPlan::xy_spec(spec), out)
                    .map(|xy| ring.push(xy, self.cfg.threads)),
                None => backend.smooth(voxels, part, spec, out),
            };
            let smoothed = match smoothed {
                Ok(v) => v,
                Err(FilterError::Cancelled) => return Err(Failure::Cancelled),
                Err(e) => return Err(Failure::Error(format!("filter failed: {e}"))),
            };
            self.rec.filter_s += t.elapsed().as_secs_f64();
            self.rec.span(Stage::Filter, t);
            let t = Instant::now();
            emit(smoothed.as_bytes(), pos)?;
            pos += smoothed.as_bytes().len() as u64;
            self.rec.write_s += t.elapsed().as_secs_f64();
            self.rec.span(Stage::Write, t);
            left -= n;
        }
        Ok(())
    }

    /// Root gathers the runs and hands out their offsets (after its head),
    /// or says to abandon the image; every rank gets root's word.
    fn place(&mut self, mine: &RunDone, enc: &Encoded, output: Option<&io::SharedOutput>) -> Place {
        let gathered = self.comm.gather(encode(mine));
        let place = match (gathered, output) {
            (Some(all), Some(output)) => self.offsets(all, enc, output),
            _ => Place::Abandon,
        };
        decode(self.comm.broadcast(encode(&place))).unwrap_or(Place::Abandon)
    }

    fn offsets(&mut self, all: Vec<Vec<u8>>, enc: &Encoded, output: &io::SharedOutput) -> Place {
        // A run whose word cannot be read is lost, never taken for an empty one.
        let lost = || RunDone {
            error: Some("its run's report could not be read".into()),
            ..RunDone::default()
        };
        self.runs = all
            .into_iter()
            .map(|b| decode(b).unwrap_or_else(lost))
            .collect();
        if let Some((k, e)) = self
            .runs
            .iter()
            .enumerate()
            .find_map(|(k, r)| r.error.as_ref().map(|e| (k, e)))
        {
            let msg = if self.runs.len() > 1 {
                format!("rank {k}: {e}")
            } else {
                e.clone()
            };
            fail(&mut self.rec, &self.task.input, msg);
            return Place::Abandon;
        }
        if self.runs.iter().any(|r| r.cancelled) {
            pipeline::interrupted(&mut self.rec);
            return Place::Abandon;
        }
        if let Err(e) = output.write_at(0, &enc.head) {
            fail(&mut self.rec, &self.task.input, e.to_string());
            return Place::Abandon;
        }
        let mut at = enc.head.len() as u64;
        let offsets = self.runs.iter().map(|r| {
            let here = at;
            at += r.bytes;
            here
        });
        Place::At(offsets.collect())
    }

    /// This rank's deflated run into root's temp file at its offset (a
    /// `.nii`'s went in as it came), and, when syncing, on disk.
    fn write(&self, offsets: &[u64], enc: &Encoded, sink: &Sink) -> Result<(), String> {
        let rank = self.comm.rank();
        if !enc.bytes.is_empty() {
            let offset = offsets
                .get(rank)
                .copied()
                .ok_or("no offset for this rank")?;
            sink.write_at(offset, &enc.bytes)
                .map_err(|e| e.to_string())?;
        }
        match sink {
            Sink::Rank(w) if self.cfg.sync => w.sync().map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }

    /// Every rank's write outcome, at root: true when all wrote.
    fn agree(&mut self, written: Result<(), String>) -> bool {
        let Some(all) = self.comm.gather(encode(&written.err())) else {
            return true;
        };
        let errors: Vec<(usize, String)> = all
            .into_iter()
            .enumerate()
            .filter_map(|(k, b)| {
                decode::<Option<String>>(b)
                    .unwrap_or(Some("lost".into()))
                    .map(|e| (k, e))
            })
            .collect();
        if let Some((k, e)) = errors.first() {
            if self.rec.status == Status::Ok {
                fail(&mut self.rec, &self.task.input, format!("rank {k}: {e}"));
            }
            return false;
        }
        true
    }

    /// Root: the gzip trailer, then the file in place (synced first, as
    /// any output); or, when anything failed, the temp file removed.
    fn commit(
        &mut self,
        output: Option<io::SharedOutput>,
        all_written: bool,
        place: &Place,
        enc: &Encoded,
    ) {
        let Some(output) = output else { return };
        let Place::At(offsets) = place else { return };
        if !all_written || self.rec.status != Status::Ok {
            return;
        }
        let end = offsets.last().copied().unwrap_or(0) + self.runs.last().map_or(0, |r| r.bytes);
        let gz = crate::plan::is_gz_name(&self.task.output);
        let trailer = gz.then(|| {
            gzip::trailer(
                &enc.header,
                &self
                    .runs
                    .iter()
                    .map(|r| (r.crc, r.data))
                    .collect::<Vec<_>>(),
            )
        });
        let staged = match trailer {
            Some(t) => output.write_at(end, &t).and_then(|()| output.stage()),
            None => output.stage(),
        };
        let staged = match staged {
            Ok(s) => s,
            Err(e) => return fail(&mut self.rec, &self.task.input, e.to_string()),
        };
        let (rec, input) = (&mut self.rec, &self.task.input);
        io::commit_batch(vec![staged], self.cfg.sync, |_, result| match result {
            Ok(bytes) => rec.bytes_out = bytes,
            Err(e) => fail(rec, input, e.to_string()),
        });
    }
}

/// Where a rank's run goes: root's own temp file, or root's opened by another rank.
enum Sink<'o> {
    Root(&'o io::SharedOutput),
    Rank(io::ShareWriter),
}

impl Sink<'_> {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), io::WriteError> {
        match self {
            Sink::Root(out) => out.write_at(offset, bytes),
            Sink::Rank(w) => w.write_at(offset, bytes),
        }
    }
}

/// What a run's output is encoded for.
struct Target<'h> {
    /// The run's data bytes.
    run: Range<u64>,
    data_len: u64,
    /// Byte-swap elements of this size on the way (a foreign byte order).
    swap: usize,
    header: &'h [u8],
}

/// A run's output as it comes, slab by slab or volume by volume: deflated
/// into memory (its offset is known only when every run's length is), or
/// written straight into the `.nii` at its place.
enum Encoder<'a> {
    Gz {
        gzip: &'a Compressor,
        stream: Option<gzip::GzStream>,
        /// The output before the run, for its first chunk's dictionary.
        before: Vec<u8>,
        deflated: Vec<u8>,
    },
    Raw {
        sink: &'a Sink<'a>,
        swap: usize,
    },
}

impl Encoder<'_> {
    /// Output bytes `bytes` at data offset `pos`: what falls before the run
    /// primes it, what falls inside is encoded, the rest is the halo's.
    fn feed(&mut self, t: &Target, pos: u64, bytes: &[u8]) -> Result<(), Failure> {
        let end = pos + bytes.len() as u64;
        let (lo, hi) = (pos.max(t.run.start), end.min(t.run.end));
        let inside = (lo < hi).then(|| &bytes[(lo - pos) as usize..(hi - pos) as usize]);
        match self {
            Encoder::Raw { sink, swap } => {
                if let Some(data) = inside {
                    sink.write_at(t.header.len() as u64 + lo, &gzip::swapped(data, *swap))?;
                }
            }
            Encoder::Gz {
                gzip,
                stream,
                before,
                deflated,
            } => {
                let dict_from = t.run.start.saturating_sub(DICT).max(pos);
                if stream.is_none() && dict_from < end.min(t.run.start) {
                    before.extend_from_slice(
                        &bytes[(dict_from - pos) as usize..(end.min(t.run.start) - pos) as usize],
                    );
                }
                if let Some(data) = inside {
                    if stream.is_none() {
                        let primer = if t.run.start == 0 {
                            t.header
                        } else {
                            &before[..]
                        };
                        *stream = Some(gzip.resume(primer, t.run.start, t.data_len, t.swap)?);
                    }
                    if let Some(s) = stream.as_mut() {
                        gzip.append(s, deflated, data)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The run's CRC-32 (gzip), its data length, and its deflated bytes.
    fn finish(self, t: &Target) -> Result<(u32, u64, Vec<u8>), Failure> {
        match self {
            Encoder::Raw { .. } => Ok((0, t.run.end - t.run.start, Vec::new())),
            Encoder::Gz {
                stream, deflated, ..
            } => {
                let s =
                    stream.ok_or_else(|| Failure::Error("the run's voxels never came".into()))?;
                let (crc, len) = s.end_run(t.run.end)?;
                Ok((crc, len, deflated))
            }
        }
    }
}

fn compressor(gzip: Option<&Compressor>) -> Result<&Compressor, Failure> {
    gzip.ok_or_else(|| Failure::Error("cannot start compression threads".into()))
}

/// The part of `whole` that `units` units of `lay` make.
fn part_shape(whole: Shape, lay: Layout, units: usize) -> Shape {
    if lay.units == 1 {
        return whole;
    }
    if whole.volumes > 1 {
        return Shape {
            volumes: units,
            ..whole
        };
    }
    let mut spatial = whole.spatial;
    spatial[2] = units;
    Shape { spatial, ..whole }
}

/// Root's log line: how the image is cut.
fn log_shares(
    input: &std::path::Path,
    shape: Shape,
    lay: Layout,
    elem: u64,
    runs: &[Range<u64>],
    gz: bool,
) {
    if lay.units == 1 {
        log::info!(
            "{}: not cut (its filter needs the whole image): rank 0 does all of it",
            input.display()
        );
        return;
    }
    let what = if shape.volumes > 1 {
        "volumes"
    } else {
        "z-slices"
    };
    let before = if gz { DICT } else { 0 };
    let parts: Vec<String> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(k, r)| {
            let w = window(lay, elem, r, before);
            format!("rank {k} {}..{}", w.read.start, w.read.end)
        })
        .collect();
    log::info!(
        "{}: shared by {} rank(s) by {what} (halo {}): {what} read {}",
        input.display(),
        parts.len(),
        lay.halo,
        parts.join(", ")
    );
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: Vec<u8>) -> Option<T> {
    serde_json::from_slice(&bytes).ok()
}

/// One record per image: the runs of a shared image (root's first, as
/// gathered) become root's record with every rank's times and voxels added.
pub fn merge(images: Vec<ImageRecord>) -> Vec<ImageRecord> {
    let mut merged: Vec<ImageRecord> = Vec::with_capacity(images.len());
    let mut shared = 1;
    for rec in images {
        match merged.last_mut() {
            Some(acc) if acc.index == rec.index => {
                acc.read_s += rec.read_s;
                acc.filter_s += rec.filter_s;
                acc.write_s += rec.write_s;
                acc.voxels += rec.voxels;
                acc.started_s = acc.started_s.min(rec.started_s);
                acc.finished_s = acc.finished_s.max(rec.finished_s);
                acc.spans.extend(rec.spans);
                shared += 1;
                if acc.note.is_none() {
                    acc.note = Some(format!("shared by {shared} ranks"));
                } else if let Some(n) = acc.note.as_mut().filter(|n| n.starts_with("shared by ")) {
                    *n = format!("shared by {shared} ranks");
                }
            }
            _ => {
                shared = 1;
                merged.push(rec);
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests;
