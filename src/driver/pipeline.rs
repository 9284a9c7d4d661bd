//! One process's loop: read → filter → write for each of its images.
//!
//! Every image ends as a record, whatever happens to it: a bad file, a failed
//! write, even a panic inside the filter become that image's error, and the
//! loop goes on to the next one. Only the count of failures decides the exit
//! code, later, at the top.

use std::io::IsTerminal;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{ProgressChoice, Units};
use crate::config::RunConfig;
use crate::filter::Backend;
use crate::io::{self, OutputFormat, WriteOptions};
use crate::plan::{is_gz_name, Task};
use crate::report::{ImageRecord, Status};

/// Shows progress: a bar on a terminal, a log line every few seconds otherwise
/// (a Slurm output file is not a terminal and must not fill with redraws).
pub enum Progress {
    Bar(ProgressBar),
    Log {
        total: usize,
        verb: &'static str,
        last: Instant,
    },
    Quiet,
}

impl Progress {
    /// Counts `total` images; `verb` says what happened to them in log lines
    /// ("done", or "handed out" for the dynamic dispatcher).
    pub fn new(choice: ProgressChoice, total: usize, verb: &'static str) -> Progress {
        let tty = std::io::stderr().is_terminal();
        match choice {
            ProgressChoice::None => Progress::Quiet,
            ProgressChoice::Bar => Progress::bar(total),
            ProgressChoice::Auto if tty => Progress::bar(total),
            _ => Progress::Log {
                total,
                verb,
                last: Instant::now(),
            },
        }
    }

    fn bar(total: usize) -> Progress {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} images, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Progress::Bar(bar)
    }

    pub fn tick(&mut self, done: usize, latest: &str) {
        match self {
            Progress::Bar(b) => b.set_position(done as u64),
            Progress::Log { total, verb, last } => {
                if last.elapsed() >= Duration::from_secs(10) || done == *total {
                    log::info!("{done}/{total} images {verb} (latest: {latest})");
                    *last = Instant::now();
                }
            }
            Progress::Quiet => {}
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

/// Runs every task the source yields through the pipeline; one record per
/// task, in the order they came. The source may be a list (static schedules)
/// or ask root for the next image each time (dynamic).
pub fn process<'t>(
    tasks: impl Iterator<Item = &'t Task>,
    cfg: &RunConfig,
    backend: &mut dyn Backend,
    rank: usize,
    progress: &mut Progress,
) -> Vec<ImageRecord> {
    let mut records = Vec::new();
    for (done, task) in tasks.enumerate() {
        let rec = match catch_unwind(AssertUnwindSafe(|| process_one(task, cfg, backend, rank))) {
            Ok(rec) => rec,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown panic");
                let mut rec = blank(task, rank);
                fail(&mut rec, &task.input, format!("internal error: {msg}"));
                rec
            }
        };
        progress.tick(done + 1, &rec.input);
        records.push(rec);
    }
    progress.finish();
    records
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
        status: Status::Ok,
        error: None,
    }
}

fn fail(rec: &mut ImageRecord, input: &Path, msg: String) {
    log::error!("{}: {msg}", input.display());
    rec.status = Status::Failed;
    rec.error = Some(msg);
}

fn process_one(
    task: &Task,
    cfg: &RunConfig,
    backend: &mut dyn Backend,
    rank: usize,
) -> ImageRecord {
    let mut rec = blank(task, rank);
    if cfg.skip_existing && io::exists_nonempty(&task.output) {
        rec.status = Status::Skipped;
        return rec;
    }

    let t = Instant::now();
    let img = io::read_image(&task.input);
    rec.read_s = t.elapsed().as_secs_f64();
    let mut img = match img {
        Ok(img) => img,
        Err(e) => {
            fail(&mut rec, &task.input, e.to_string());
            return rec;
        }
    };
    rec.bytes_in = img.bytes_in;
    rec.voxels = img.shape.len() as u64;
    rec.shape = img.shape.spatial[..img.shape.spatial_ndim].to_vec();
    if img.shape.volumes > 1 {
        rec.shape.push(img.shape.volumes);
    }
    let dtype_in = img.voxels.dtype();
    rec.dtype_in = Some(dtype_in.to_string());
    let dtype_out = cfg.dtype.unwrap_or(dtype_in);
    rec.dtype_out = Some(dtype_out.to_string());

    if cfg.units == Units::Mm {
        let bad = (0..img.shape.spatial_ndim)
            .find(|&a| cfg.sigma[a] > 0.0 && !(img.pixdim[a].is_finite() && img.pixdim[a] != 0.0));
        if let Some(a) = bad {
            let msg = format!(
                "pixdim[{}] is {}: cannot convert sigma from mm to voxels",
                a + 1,
                img.pixdim[a]
            );
            fail(&mut rec, &task.input, msg);
            return rec;
        }
    }
    let spec = cfg.filter_spec(img.pixdim);

    let t = Instant::now();
    let voxels = std::mem::replace(&mut img.voxels, crate::volume::Voxels::U8(Vec::new()));
    let smoothed = backend.smooth(voxels, img.shape, &spec, dtype_out);
    rec.filter_s = t.elapsed().as_secs_f64();
    let smoothed = match smoothed {
        Ok(v) => v,
        Err(e) => {
            fail(&mut rec, &task.input, format!("filter failed: {e}"));
            return rec;
        }
    };

    let t = Instant::now();
    let header = io::output_header(&img, dtype_out);
    let format = if is_gz_name(&task.output) {
        OutputFormat::NiiGz
    } else {
        OutputFormat::Nii
    };
    let written = io::write_image(
        &task.output,
        &header,
        img.big_endian,
        &smoothed,
        WriteOptions {
            format,
            level: cfg.compression_level,
        },
    );
    rec.write_s = t.elapsed().as_secs_f64();
    match written {
        Ok(bytes) => rec.bytes_out = bytes,
        Err(e) => fail(&mut rec, &task.input, e.to_string()),
    }
    rec
}
