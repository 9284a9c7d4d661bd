//! `Comm` over MPI (rsmpi on the system's library), built with feature `mpi`.
//!
//! Byte payloads travel as a length then the bytes (broadcast) or as counts
//! then a `gatherv`/`scatterv` through `Partition`; the dynamic schedule uses
//! two tags of point-to-point messages. MPI is initialised with
//! `MPI_THREAD_FUNNELED`: filter threads never call MPI, only the main thread.

use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::{collective::SystemOperation, Count, Threading};

use super::comm::Comm;

const TAG_REQUEST: i32 = 11;
const TAG_ASSIGN: i32 = 12;
/// "I am draining": one byte, to every other rank (`stop::Watch`).
const TAG_STOP: i32 = 13;
/// "No task left" in an assignment message.
const NONE_LEFT: u64 = u64::MAX;

pub struct Mpi {
    world: SimpleCommunicator,
    /// The ranks on this node (`MPI_Comm_split_type` shared memory).
    node: SimpleCommunicator,
    threading: Threading,
    library: String,
    /// Drain notices received so far (`settle_stops` takes the rest).
    stops_received: std::cell::Cell<u64>,
    // Last: dropping the universe finalises MPI, after the communicators are freed.
    _universe: Universe,
}

/// Whether this process was started by an MPI launcher (mpirun, srun --mpi=pmix,
/// hydra). Without one, nismooth runs as a single process and does not touch
/// MPI at all, so a laptop or a plain job step needs no MPI runtime.
pub fn launched() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMIX_RANK",
        "PMI_RANK",
        "PMI_SIZE",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
        || std::env::var("NISMOOTH_MPI").as_deref() == Ok("force")
}

/// The MPI library this binary is linked against, its first line ("Open MPI
/// v4.1.4", "MPICH Version: 4.0.2"). MPI allows the call before
/// `MPI_Init`, so `--version` and the study's launcher use it without
/// starting MPI.
pub fn library() -> String {
    mpi::environment::library_version()
        .unwrap_or_default()
        .trim_end_matches('\0')
        .split([',', '\n'])
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether that library is MPICH or one derived from it (Intel MPI, Cray
/// MPICH, MVAPICH), whose launcher (Hydra) takes other flags than OpenMPI's.
pub fn library_is_mpich() -> bool {
    let lib = library().to_lowercase();
    ["mpich", "intel", "mvapich"]
        .iter()
        .any(|m| lib.contains(m))
}

impl Mpi {
    /// Initialises MPI; `None` when it was already initialised.
    pub fn init() -> Option<Mpi> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Funneled)?;
        let world = universe.world();
        let node = world.split_shared(world.rank());
        let library = library();
        Some(Mpi {
            world,
            node,
            threading,
            library,
            stops_received: std::cell::Cell::new(0),
            _universe: universe,
        })
    }

    /// Makes a panic on this process's main thread (the one that calls MPI:
    /// planning, collectives, gathering) end every rank at once with
    /// `MPI_Abort`, after the usual message. Otherwise the other ranks would
    /// wait in the next collective forever. Panics on the pipeline's threads
    /// are caught per image and become that image's error; they pass through.
    pub fn abort_world_on_panic(&self) {
        if self.size() < 2 {
            return;
        }
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            if std::thread::current().name() == Some("main") {
                eprintln!(
                    "nismooth: a panic on rank {}'s main thread: aborting every rank",
                    SimpleCommunicator::world().rank()
                );
                SimpleCommunicator::world().abort(101);
            }
        }));
    }

    /// Whether the library gave the threading level nismooth asked for.
    pub fn threading_ok(&self) -> bool {
        !matches!(self.threading, Threading::Single)
    }
}

fn count(n: usize) -> Count {
    Count::try_from(n).expect("payload under 2 GiB")
}

fn displacements(counts: &[Count]) -> Vec<Count> {
    counts
        .iter()
        .scan(0, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect()
}

impl Comm for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn node_rank(&self) -> usize {
        self.node.rank() as usize
    }
    fn node_size(&self) -> usize {
        self.node.size() as usize
    }

    fn broadcast(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
        bytes
    }

    fn scatter(&self, parts: Option<Vec<Vec<u64>>>) -> Vec<u64> {
        let root = self.world.process_at_rank(0);
        let mut n: Count = 0;
        if self.is_root() {
            let parts = parts.expect("root passes one part per rank");
            assert_eq!(parts.len(), self.size());
            let counts: Vec<Count> = parts.iter().map(|p| count(p.len())).collect();
            root.scatter_into_root(&counts[..], &mut n);
            let flat: Vec<u64> = parts.concat();
            let displs = displacements(&counts);
            let mut mine = vec![0u64; n as usize];
            root.scatter_varcount_into_root(
                &Partition::new(&flat[..], &counts[..], &displs[..]),
                &mut mine[..],
            );
            mine
        } else {
            root.scatter_into(&mut n);
            let mut mine = vec![0u64; n as usize];
            root.scatter_varcount_into(&mut mine[..]);
            mine
        }
    }

    fn gather(&self, bytes: Vec<u8>) -> Option<Vec<Vec<u8>>> {
        let root = self.world.process_at_rank(0);
        let len = count(bytes.len());
        if self.is_root() {
            let mut counts = vec![0 as Count; self.size()];
            root.gather_into_root(&len, &mut counts[..]);
            let displs = displacements(&counts);
            let total: usize = counts.iter().map(|&c| c as usize).sum();
            let mut all = vec![0u8; total];
            {
                let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
                root.gather_varcount_into_root(&bytes[..], &mut part);
            }
            Some(
                counts
                    .iter()
                    .zip(&displs)
                    .map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec())
                    .collect(),
            )
        } else {
            root.gather_into(&len);
            root.gather_varcount_into(&bytes[..]);
            None
        }
    }

    fn max_f64(&self, v: f64) -> f64 {
        let mut out = 0.0f64;
        self.world
            .all_reduce_into(&v, &mut out, SystemOperation::max());
        out
    }

    fn sum_u64(&self, v: u64) -> u64 {
        let mut out = 0u64;
        self.world
            .all_reduce_into(&v, &mut out, SystemOperation::sum());
        out
    }

    fn request_task(&self) -> Option<usize> {
        let root = self.world.process_at_rank(0);
        root.send_with_tag(&(self.rank() as u64), TAG_REQUEST);
        let (task, _) = root.receive_with_tag::<u64>(TAG_ASSIGN);
        (task != NONE_LEFT).then_some(task as usize)
    }

    fn poll_request(&self) -> Option<usize> {
        let (msg, status) = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(TAG_REQUEST)?;
        let (_asker, _) = msg.matched_receive::<u64>();
        Some(status.source_rank() as usize)
    }

    fn assign(&self, rank: usize, task: Option<usize>) {
        let v = task.map_or(NONE_LEFT, |t| t as u64);
        self.world
            .process_at_rank(rank as i32)
            .send_with_tag(&v, TAG_ASSIGN);
    }

    fn notify_stop(&self) {
        for r in (0..self.size()).filter(|&r| r != self.rank()) {
            // One byte: sent eagerly, so this never waits for the receiver.
            self.world
                .process_at_rank(r as i32)
                .send_with_tag(&1u8, TAG_STOP);
        }
    }

    fn poll_stop(&self) -> bool {
        let mut any = false;
        while let Some((msg, _)) = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(TAG_STOP)
        {
            let _: (u8, _) = msg.matched_receive();
            self.stops_received.set(self.stops_received.get() + 1);
            any = true;
        }
        any
    }

    fn settle_stops(&self, sent: bool) {
        let senders = self.sum_u64(sent as u64);
        let expected = senders - sent as u64;
        while self.stops_received.get() < expected {
            let _ = self.world.any_process().receive_with_tag::<u8>(TAG_STOP);
            self.stops_received.set(self.stops_received.get() + 1);
        }
    }

    fn describe(&self) -> String {
        format!(
            "MPI, {} rank(s), {} on this node ({}, threading {:?})",
            self.size(),
            self.node_size(),
            self.library,
            self.threading
        )
    }
}
