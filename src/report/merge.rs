//! Several reports become one: the reports of a job array's tasks, or of runs
//! that each covered part of a list. Images are keyed by their input and
//! output paths, not by their index (two `--list` runs over disjoint lists
//! both number from 0); the same image written in two reports is refused
//! (the runs overlapped), and otherwise the most final record wins: a
//! requeued job's attempts each report every image, the ones they did not
//! reach as `not_started` and the ones an earlier attempt wrote as `skipped`.
//! Reports made with different kernels are refused: the merged report states
//! one set of settings, and it must be the one that made every byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{ImageRecord, ParallelInfo, ProcessTotals, Report, Status, Stopped, Summary, SCHEMA};
use crate::slurm::SlurmContext;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A file could not be read or is not JSON.
    #[error("cannot read report {path}: {cause}")]
    Unreadable { path: PathBuf, cause: String },
    /// The JSON is not a nismooth report.
    #[error("{path} is not a nismooth report (schema {schema:?})")]
    NotAReport { path: PathBuf, schema: String },
    /// Two reports processed the same image: the runs overlapped.
    #[error("image {index} ({input}) was processed in both {first} and {second}")]
    Overlap {
        index: usize,
        input: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// Nothing to merge.
    #[error("no reports given")]
    Empty,
    /// One journal holds runs made with different settings (a folded one).
    #[error("{path} holds runs made with different settings ({field}: {a} against {b}); merge each run's own journal or report")]
    MixedJournal {
        path: PathBuf,
        field: String,
        a: String,
        b: String,
    },
    /// Two reports were made with different output settings.
    #[error("{first} and {second} were made with different settings ({field}: {a} against {b}); merge reports of one kernel only")]
    Settings {
        first: PathBuf,
        second: PathBuf,
        field: String,
        a: String,
        b: String,
    },
    /// One report lists the same input twice.
    #[error("{path} lists image {input} twice")]
    Duplicate { path: PathBuf, input: String },
}

/// Reads one report file, or one journal (`.jsonl`: the records a process
/// left, killed or not), as a report of that one process.
pub fn load(path: &Path) -> Result<Report, MergeError> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        return from_journal(path);
    }
    let text = crate::io::read_regular(path).map_err(|e| MergeError::Unreadable {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })?;
    let report: Report = serde_json::from_slice(&text).map_err(|e| MergeError::Unreadable {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })?;
    if report.schema != SCHEMA {
        return Err(MergeError::NotAReport {
            path: path.to_path_buf(),
            schema: report.schema,
        });
    }
    Ok(report)
}

/// A journal as a report: its images, and one process whose totals are
/// summed from them (CPU time and memory are not journaled: zero).
fn from_journal(path: &Path) -> Result<Report, MergeError> {
    use super::journal::{read_file, Line};
    let unreadable = |cause: String| MergeError::Unreadable {
        path: path.to_path_buf(),
        cause,
    };
    let lines = read_file(path).map_err(|e| unreadable(e.to_string()))?;
    let mut process = ProcessTotals::default();
    let mut images = Vec::new();
    let mut created_unix = 0;
    // Each run's settings, and the runs whose images this journal holds (a
    // folded journal holds several runs).
    let (mut settings, mut runs) = (BTreeMap::new(), std::collections::BTreeSet::new());
    for line in lines {
        match line {
            Line::Start {
                run,
                rank,
                host,
                unix,
                settings: s,
                ..
            } => {
                (process.rank, process.host, created_unix) = (rank, host, unix);
                settings.extend(s.map(|s| (run, s)));
            }
            Line::Image { run, record, .. } => {
                runs.insert(run);
                images.push(*record);
            }
            Line::End { .. } => {}
        }
    }
    let held: Vec<&serde_json::Value> = runs.iter().filter_map(|r| settings.get(r)).collect();
    if let Some(first) = held.first() {
        for other in &held[1..] {
            if let Some((field, a, b)) = first_difference(first, other) {
                let path = path.to_path_buf();
                return Err(MergeError::MixedJournal { path, field, a, b });
            }
        }
    }
    if created_unix == 0 {
        return Err(unreadable("not a nismooth journal (no start line)".into()));
    }
    let done: Vec<&ImageRecord> = images.iter().filter(|r| r.status.did_work()).collect();
    process.images = done.len();
    process.failed = done.iter().filter(|r| r.status == Status::Failed).count();
    process.voxels = done.iter().map(|r| r.voxels).sum();
    process.read_s = done.iter().map(|r| r.read_s).sum();
    process.filter_s = done.iter().map(|r| r.filter_s).sum();
    process.write_s = done.iter().map(|r| r.write_s).sum();
    let first = images
        .iter()
        .map(|r| r.started_s)
        .fold(f64::INFINITY, f64::min);
    process.wall_s = images.iter().map(|r| r.finished_s).fold(0.0, f64::max);
    process.busy_s = (process.wall_s - first).max(0.0);
    process.idle_s = process.wall_s - process.busy_s;
    process.threads = 1;
    images.sort_by_key(|r| r.index);
    let processes = vec![process];
    let mut report = Report::new(
        created_unix,
        vec![format!("journal {}", path.display())],
        "unknown",
        serde_json::Value::Null,
        processes,
        images,
    );
    report.settings = held.first().map(|s| (*s).clone());
    Ok(report)
}

/// The first setting whose values differ, with both values, in the order
/// the kernel is said (sigma first); of the settings that make the voxels' values (`RunConfig::VALUE_SETTINGS`:
/// a compression level changes the file's bytes, not the image).
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Option<(String, String, String)> {
    crate::config::RunConfig::VALUE_SETTINGS
        .iter()
        .find(|k| a[**k] != b[**k])
        .map(|k| (k.to_string(), a[*k].to_string(), b[*k].to_string()))
}

/// How final a record is, when two reports hold the same image: written
/// beats failed (a retry that worked), failed beats skipped (the run that
/// skipped it found it done elsewhere), and anything beats what an attempt
/// stopped early left undone.
fn finality(s: Status) -> u8 {
    match s {
        Status::NotStarted => 0,
        Status::Interrupted => 1,
        Status::Skipped => 2,
        Status::Failed => 3,
        Status::Ok => 4,
    }
}

/// Merges reports read from `paths`, in the order given.
pub fn merge(paths: &[PathBuf]) -> Result<Report, MergeError> {
    let reports: Vec<Report> = paths.iter().map(|p| load(p)).collect::<Result<_, _>>()?;
    let first = reports.first().ok_or(MergeError::Empty)?.clone();
    check_settings(&reports, paths)?;
    let mut images: BTreeMap<(&str, &str), (ImageRecord, &Path)> = BTreeMap::new();
    let mut processes = Vec::new();
    for (report, path) in reports.iter().zip(paths) {
        processes.extend(report.processes.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        for img in &report.images {
            let key = (img.input.as_str(), img.output.as_str());
            if !seen.insert(key) {
                return Err(MergeError::Duplicate {
                    path: path.clone(),
                    input: img.input.clone(),
                });
            }
            match images.get(&key) {
                Some((old, old_path)) if old.status == Status::Ok && img.status == Status::Ok => {
                    return Err(MergeError::Overlap {
                        index: img.index,
                        input: img.input.clone(),
                        first: old_path.to_path_buf(),
                        second: path.clone(),
                    });
                }
                // The more final record wins; between equals, the later run.
                Some((old, _)) if finality(old.status) > finality(img.status) => {}
                _ => {
                    images.insert(key, (img.clone(), path));
                }
            }
        }
    }
    let mut images: Vec<ImageRecord> = images.into_values().map(|(r, _)| r).collect();
    images.sort_by(|a, b| (a.index, &a.input).cmp(&(b.index, &b.input)));
    Ok(Report {
        created_unix: reports.iter().map(|r| r.created_unix).max().unwrap_or(0),
        command: vec!["nismooth".into(), "report".into(), "merge".into()]
            .into_iter()
            .chain(paths.iter().map(|p| p.display().to_string()))
            .collect(),
        parallel: Some(ParallelInfo {
            comm: format!("merged from {} report(s)", reports.len()),
            schedule: first
                .parallel
                .as_ref()
                .map(|p| p.schedule)
                .unwrap_or(crate::plan::schedule::Schedule::Balanced),
            ranks: processes.len(),
            threads_per_rank: processes.first().map(|p| p.threads).unwrap_or(0),
        }),
        array: None,
        origins: reports.iter().flat_map(Report::origins).collect(),
        slurm: merged_slurm(&reports),
        stopped: images
            .iter()
            .any(|i| i.status.left_undone())
            .then(|| Stopped {
                reason: Some("a run stopped early and no later one finished its images".into()),
                ..Stopped::default()
            }),
        summary: merged_summary(&reports, &processes, &images),
        processes,
        images,
        ..first
    })
}

/// The summary of the merged records, over the real span: runs that did
/// not overlap (an array under its `%N` throttle, a job's attempts) took
/// from the first one's start to the last one's end, not the longest
/// run's wall, and the parallel efficiency is over that span.
fn merged_summary(
    reports: &[Report],
    processes: &[ProcessTotals],
    images: &[ImageRecord],
) -> Summary {
    let mut summary = Summary::from_parts(processes, images);
    if let Some(span) = span_s(reports).filter(|&s| s > summary.wall_s) {
        summary.wall_s = span;
        let busy: f64 = processes.iter().map(|p| p.busy_s).sum();
        summary.parallel_efficiency = busy / (processes.len().max(1) as f64 * span);
    }
    summary
}

/// From the first report's start (its end less its wall) to the last one's
/// end, in seconds (reports keep their end to the second); `None` when a
/// report has no end time (one rebuilt from journals).
fn span_s(reports: &[Report]) -> Option<f64> {
    if reports.is_empty() || reports.iter().any(|r| r.created_unix == 0) {
        return None;
    }
    let end = reports
        .iter()
        .map(|r| r.created_unix as f64)
        .fold(f64::MIN, f64::max);
    let start = reports
        .iter()
        .map(|r| r.created_unix as f64 - r.summary.wall_s)
        .fold(f64::MAX, f64::min);
    Some(end - start)
}

/// Refuses reports whose outputs were made with different settings, naming
/// the first setting that differs: their recorded settings (a run's report
/// and a journal both have them now), then, for older reports, their
/// `config`.
fn check_settings(reports: &[Report], paths: &[PathBuf]) -> Result<(), MergeError> {
    // What made the bytes, as reports and journals both record it now.
    let recorded: Vec<(&serde_json::Value, &PathBuf)> = (reports.iter().zip(paths))
        .filter_map(|(r, p)| r.settings.as_ref().map(|s| (s, p)))
        .collect();
    if let Some(&(base, base_path)) = recorded.first() {
        for &(other, path) in &recorded[1..] {
            if let Some((field, a, b)) = first_difference(base, other) {
                return Err(MergeError::Settings {
                    first: base_path.clone(),
                    second: path.clone(),
                    field,
                    a,
                    b,
                });
            }
        }
    }
    let with_config: Vec<(&Report, &PathBuf)> = reports
        .iter()
        .zip(paths)
        .filter(|(r, _)| r.config.is_object())
        .collect();
    let Some(&(base, base_path)) = with_config.first() else {
        return Ok(());
    };
    for &(other, path) in &with_config[1..] {
        for field in crate::config::RunConfig::VALUE_SETTINGS {
            let (a, b) = (&base.config[field], &other.config[field]);
            if a != b {
                return Err(MergeError::Settings {
                    first: base_path.clone(),
                    second: path.clone(),
                    field: field.into(),
                    a: a.to_string(),
                    b: b.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The Slurm context of the merged report: an array's reports become the
/// array's (its base job id, no one task's id, node or rank); reports of one
/// job keep it; reports of several jobs have none in common.
fn merged_slurm(reports: &[Report]) -> Option<SlurmContext> {
    let first = reports.first()?.slurm.clone()?;
    let all = |f: &dyn Fn(&SlurmContext) -> Option<u64>| {
        let v = f(&first)?;
        reports
            .iter()
            .all(|r| r.slurm.as_ref().and_then(f) == Some(v))
            .then_some(v)
    };
    if let Some(array) = all(&|s| s.array_job_id) {
        return Some(SlurmContext {
            job_id: Some(array),
            step_id: None,
            procid: None,
            localid: None,
            nodename: None,
            nodelist: None,
            array_task_id: None,
            ..first
        });
    }
    all(&|s| s.job_id).map(|_| first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ProcessTotals;

    fn record(index: usize, status: Status) -> ImageRecord {
        ImageRecord {
            index,
            input: format!("in/{index}.nii.gz"),
            output: format!("out/{index}.nii.gz"),
            rank: 0,
            voxels: 10,
            shape: vec![10],
            dtype_in: None,
            dtype_out: None,
            bytes_in: 1,
            bytes_out: 1,
            read_s: 0.5,
            filter_s: 0.25,
            write_s: 0.25,
            started_s: 0.0,
            finished_s: 1.0,
            status,
            error: None,
            note: None,
            spans: Vec::new(),
        }
    }

    fn report(images: Vec<ImageRecord>, wall: f64) -> Report {
        let processes = vec![ProcessTotals {
            threads: 1,
            busy_s: images.len() as f64,
            wall_s: wall,
            ..Default::default()
        }];
        Report::new(1, vec![], "cpu", serde_json::Value::Null, processes, images)
    }

    fn write(dir: &Path, name: &str, r: &Report) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_vec(r).unwrap()).unwrap();
        p
    }

    #[test]
    fn array_reports_merge_into_one_in_index_order() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "a.json",
            &report(vec![record(0, Status::Ok), record(2, Status::Ok)], 3.0),
        );
        let b = write(
            d.path(),
            "b.json",
            &report(vec![record(1, Status::Ok), record(3, Status::Failed)], 4.0),
        );
        let m = merge(&[a, b]).unwrap();
        assert_eq!(
            m.images.iter().map(|i| i.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!((m.summary.tasks, m.summary.ok, m.summary.failed), (4, 3, 1));
        assert_eq!(m.processes.len(), 2);
        assert_eq!(m.summary.wall_s, 4.0);
        assert!((m.summary.read_s - 2.0).abs() < 1e-12);
        assert!(m.slurm.is_none(), "no Slurm context in, none out");
    }

    #[test]
    fn the_merged_wall_is_the_span_from_the_first_start_to_the_last_end() {
        let d = tempfile::tempdir().unwrap();
        // Two array tasks one after the other (a %1 throttle): 7..10 s and 16..20 s.
        let mut a = report(vec![record(0, Status::Ok)], 3.0);
        a.created_unix = 10;
        let mut b = report(vec![record(1, Status::Ok)], 4.0);
        b.created_unix = 20;
        let m = merge(&[write(d.path(), "a.json", &a), write(d.path(), "b.json", &b)]).unwrap();
        assert_eq!(m.summary.wall_s, 13.0);
        // Busy 1 s each, over 2 ranks × 13 s.
        assert!((m.summary.parallel_efficiency - 2.0 / 26.0).abs() < 1e-12);
    }

    #[test]
    fn an_arrays_reports_merge_under_the_arrays_id() {
        let d = tempfile::tempdir().unwrap();
        let task = |id: u64, task: u64, index: usize| {
            let mut r = report(vec![record(index, Status::Ok)], 1.0);
            r.slurm = Some(SlurmContext {
                job_id: Some(id),
                array_job_id: Some(70),
                array_task_id: Some(task),
                nodename: Some(format!("node{task}")),
                ..Default::default()
            });
            write(d.path(), &format!("t{task}.json"), &r)
        };
        let m = merge(&[task(71, 1, 0), task(72, 2, 1)]).unwrap();
        let s = m.slurm.unwrap();
        assert_eq!(
            (s.job_id, s.array_job_id, s.array_task_id, s.nodename),
            (Some(70), Some(70), None, None)
        );
    }

    #[test]
    fn overlaps_are_refused_but_skips_give_way() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "a.json",
            &report(vec![record(0, Status::Ok)], 1.0),
        );
        let b = write(
            d.path(),
            "b.json",
            &report(vec![record(0, Status::Ok)], 1.0),
        );
        assert!(matches!(
            merge(&[a.clone(), b]),
            Err(MergeError::Overlap { index: 0, .. })
        ));
        let s = write(
            d.path(),
            "s.json",
            &report(vec![record(0, Status::Skipped)], 1.0),
        );
        let m = merge(&[s, a.clone()]).unwrap();
        assert_eq!(m.images[0].status, Status::Ok);
        // A requeued job's attempts: written, then skipped; never started, then written.
        let later = write(
            d.path(),
            "later.json",
            &report(vec![record(0, Status::Skipped), record(1, Status::Ok)], 1.0),
        );
        let early = write(
            d.path(),
            "early.json",
            &report(
                vec![record(0, Status::Ok), record(1, Status::NotStarted)],
                1.0,
            ),
        );
        let m = merge(&[early.clone(), later]).unwrap();
        assert_eq!(
            m.images.iter().map(|i| i.status).collect::<Vec<_>>(),
            [Status::Ok, Status::Ok]
        );
        assert!(m.stopped.is_none());
        assert!(merge(&[early]).unwrap().stopped.is_some());
        let bad = d.path().join("bad.json");
        std::fs::write(&bad, b"{\"schema\": 1}").unwrap();
        assert!(matches!(merge(&[bad]), Err(MergeError::Unreadable { .. })));
    }

    #[test]
    fn disjoint_lists_merge_by_path_not_index() {
        let d = tempfile::tempdir().unwrap();
        let named = |name: &str| ImageRecord {
            input: format!("in/{name}.nii"),
            output: format!("out/{name}.nii"),
            ..record(0, Status::Ok)
        };
        let a = write(d.path(), "a.json", &report(vec![named("a")], 1.0));
        let b = write(d.path(), "b.json", &report(vec![named("b")], 1.0));
        let m = merge(&[a.clone(), b]).unwrap();
        assert_eq!(
            m.summary.tasks, 2,
            "two runs of one image each, both index 0"
        );
        let twice = write(
            d.path(),
            "twice.json",
            &report(vec![named("c"), named("c")], 1.0),
        );
        assert!(matches!(merge(&[twice]), Err(MergeError::Duplicate { .. })));
    }

    #[test]
    fn reports_of_different_kernels_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let with = |sigma: f64, mode: &str, index: usize| {
            let mut r = report(vec![record(index, Status::Ok)], 1.0);
            r.config =
                serde_json::json!({"sigma": vec![sigma; 3], "mode": mode, "threads": index + 1});
            r
        };
        let a = write(d.path(), "a.json", &with(1.0, "reflect", 0));
        let same = write(d.path(), "same.json", &with(1.0, "reflect", 1));
        merge(&[a.clone(), same]).expect("threads differ, the kernel does not");
        let b = write(d.path(), "b.json", &with(7.0, "wrap", 1));
        let e = merge(&[a, b]).unwrap_err();
        assert!(
            matches!(&e, MergeError::Settings { field, .. } if field == "sigma"),
            "{e}"
        );
    }
}
