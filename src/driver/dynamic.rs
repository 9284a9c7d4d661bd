//! The dynamic schedule: root hands out the next image to whichever rank asks.
//!
//! Root works too. Its main thread is the dispatcher (the only thread that
//! calls MPI), answering requests from other ranks and from root's own
//! pipeline, which runs on a second thread and asks through a channel. The
//! dispatcher polls both without blocking: an image takes a fraction of a
//! second, so a millisecond's nap between empty polls costs nothing.

use std::sync::mpsc::{channel, TryRecvError};
use std::time::Duration;

use super::comm::Comm;
use super::journal::Durable;
use super::pipeline;
use super::progress::Progress;
use super::stop::Watch;
use crate::config::RunConfig;
use crate::filter::Backend;
use crate::plan::Task;
use crate::report::ImageRecord;

/// Root: dispatches `order` (indices into `tasks`) and processes its own share.
pub fn root(
    comm: &dyn Comm,
    tasks: &[Task],
    order: Vec<usize>,
    cfg: &RunConfig,
    durable: &Durable,
    backend: &mut dyn Backend,
    progress: &Progress,
) -> Vec<ImageRecord> {
    let (ask_tx, ask_rx) = channel::<()>();
    let (give_tx, give_rx) = channel::<Option<usize>>();
    std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let source = std::iter::from_fn(move || {
                ask_tx.send(()).ok()?;
                give_rx.recv().ok().flatten()
            });
            pipeline::process(
                source.map(|i| &tasks[i]),
                cfg,
                durable,
                backend,
                0,
                progress,
            )
        });

        let watch = Watch::new(comm);
        let mut queue = order.into_iter();
        // Draining: every request is answered "none left"; what was never
        // handed out is recorded below as not started.
        let mut next = |who: usize| {
            let t = if watch.check() { None } else { queue.next() };
            if let Some(i) = t {
                log::debug!("{} to rank {who}", tasks[i].input.display());
            }
            t
        };
        let mut remote_open = comm.size() - 1;
        let mut local_open = true;
        while remote_open > 0 || local_open {
            let mut answered = false;
            if local_open {
                match ask_rx.try_recv() {
                    Ok(()) => {
                        let t = next(0);
                        let delivered = give_tx.send(t).is_ok();
                        local_open = t.is_some() && delivered;
                        answered = true;
                    }
                    Err(TryRecvError::Disconnected) => local_open = false,
                    Err(TryRecvError::Empty) => {}
                }
            }
            if remote_open > 0 {
                if let Some(rank) = comm.poll_request() {
                    let t = next(rank);
                    if t.is_none() {
                        remote_open -= 1;
                    }
                    comm.assign(rank, t);
                    answered = true;
                }
            }
            if !answered {
                watch.check();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Panics inside an image are caught and recorded by the pipeline; one
        // outside it would lose only root's records, never hang the others.
        let mut records = worker.join().unwrap_or_else(|_| {
            log::error!("root's worker thread panicked outside an image");
            Vec::new()
        });
        records.extend(queue.map(|i| pipeline::not_started(&tasks[i], 0)));
        records
    })
}

/// Any other rank: asks root for images until none is left.
pub fn worker(
    comm: &dyn Comm,
    tasks: &[Task],
    cfg: &RunConfig,
    durable: &Durable,
    backend: &mut dyn Backend,
) -> Vec<ImageRecord> {
    // A drain here is passed on (root then answers "none left"); the
    // requests go on until root says so, or root would wait for them.
    let watch = Watch::new(comm);
    let source = std::iter::from_fn(|| {
        watch.check();
        comm.request_task()
    })
    .map(|i| &tasks[i]);
    pipeline::process(
        source,
        cfg,
        durable,
        backend,
        comm.rank(),
        &Progress::quiet(),
    )
}
