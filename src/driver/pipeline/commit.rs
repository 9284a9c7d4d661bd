//! The committer: written outputs put in place a batch at a time (one
//! sync covers many small files), each journaled the moment it is in place.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{fail, since_start, Pacer};
use crate::driver::handoff::Receiver;
use crate::driver::journal::Journal;
use crate::driver::progress::Progress;
use crate::io;
use crate::plan::Task;
use crate::report::ImageRecord;

/// Outputs written but not yet in place, at most: each holds an open file
/// (no voxels), so the writer runs ahead of the disk by this much.
pub(super) const COMMIT_QUEUE: usize = 64;

/// A written output on its way to its name, with its record.
pub(super) struct Committing<'t> {
    pub(super) task: &'t Task,
    pub(super) rec: ImageRecord,
    pub(super) staged: Option<io::Staged>,
    pub(super) input: Option<io::InputId>,
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

/// The committer: puts staged outputs in place a batch at a time, journals
/// each, and keeps its record where `process` finds it.
pub(super) fn commit_stage(
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
