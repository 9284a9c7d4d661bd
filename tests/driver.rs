//! The driver's single-process path through the `Comm` trait, in plain
//! `cargo test`: every schedule processes every image exactly once with
//! identical outputs, a refusal comes back as an error, and a panic inside
//! the filter becomes that image's recorded error (static and dynamic paths).
//! The multi-rank paths run under mpirun in tests/python/test_mpi.py.

use std::path::Path;

use nismooth::config::RunConfig;
use nismooth::driver::{self, comm::Single};
use nismooth::filter::{cpu::CpuBackend, Backend, FilterError, FilterSpec, Pending, Shape};
use nismooth::report::Status;
use nismooth::volume::{DType, Voxels};

mod common;
use common::{config, phantoms};

#[test]
fn every_schedule_processes_each_image_once_with_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = phantoms(&dir.path().join("in"), 5);
    let mut first: Option<Vec<Vec<u8>>> = None;
    for schedule in ["block", "cyclic", "balanced", "dynamic"] {
        let out = dir.path().join(schedule);
        let cfg = RunConfig {
            threads: 1,
            schedule: schedule.parse().unwrap(),
            ..config(&dir.path().join("in"), &out)
        };
        let mut backend = CpuBackend::new(1).unwrap();
        let outcome = driver::run(&cfg, &Single, &mut backend, vec![]).expect("not refused");
        assert_eq!(outcome.failed, 0);
        let report = outcome.report.expect("root has the report");
        let indices: Vec<usize> = report.images.iter().map(|r| r.index).collect();
        assert_eq!(indices, (0..inputs.len()).collect::<Vec<_>>(), "{schedule}");
        assert!(report
            .images
            .iter()
            .all(|r| r.status == Status::Ok && r.rank == 0));
        assert_eq!(report.processes.len(), 1);
        assert_eq!(report.processes[0].images, inputs.len());
        assert_eq!(
            report.processes[0].voxels,
            report.images.iter().map(|r| r.voxels).sum::<u64>()
        );
        let bytes: Vec<Vec<u8>> = report
            .images
            .iter()
            .map(|r| std::fs::read(&r.output).unwrap())
            .collect();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert!(f == &bytes, "{schedule} wrote different bytes"),
        }
    }
}

#[test]
fn refusal_comes_back_as_an_error_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    phantoms(&dir.path().join("in"), 1);
    let into_inputs = dir.path().join("in");
    let cfg = config(&into_inputs, &into_inputs);
    let mut backend = CpuBackend::new(1).unwrap();
    let err = driver::run(&cfg, &Single, &mut backend, vec![])
        .err()
        .expect("refused");
    assert!(err.to_string().contains("holds input"), "{err}");
    assert_eq!(std::fs::read_dir(&into_inputs).unwrap().count(), 1);
}

/// Panics on the second image it sees, smooths the others with the CPU backend.
struct PanicOnSecond {
    seen: usize,
    cpu: CpuBackend,
}

impl Backend for PanicOnSecond {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn smooth(
        &mut self,
        input: Voxels,
        shape: Shape,
        spec: &FilterSpec,
        out: DType,
    ) -> Result<Voxels, FilterError> {
        self.seen += 1;
        if self.seen == 2 {
            panic!("injected fault");
        }
        self.cpu.smooth(input, shape, spec, out)
    }
}

#[test]
fn a_panic_in_the_filter_is_recorded_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = phantoms(&dir.path().join("in"), 4);
    // Dynamic runs root's pipeline on a second thread: the panic must not cross it.
    for schedule in ["cyclic", "dynamic"] {
        let out = dir.path().join(schedule);
        let cfg = RunConfig {
            schedule: schedule.parse().unwrap(),
            ..config(&dir.path().join("in"), &out)
        };
        let mut backend = PanicOnSecond {
            seen: 0,
            cpu: CpuBackend::new(1).unwrap(),
        };
        let outcome = driver::run(&cfg, &Single, &mut backend, vec![]).unwrap();
        assert_eq!(outcome.failed, 1, "{schedule}");
        let report = outcome.report.unwrap();
        assert_eq!(report.images.len(), inputs.len());
        let failed: Vec<_> = report
            .images
            .iter()
            .filter(|r| r.status == Status::Failed)
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("injected fault"));
        assert!(!Path::new(&failed[0].output).exists());
        let written = std::fs::read_dir(&out)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != ".nismooth")
            .count();
        assert_eq!(
            written,
            inputs.len() - 1,
            "no temp file left, the rest written"
        );
    }
}

/// A backend that queues like a GPU: `depth` images submitted before the
/// oldest is finished. Submit number 3 fails at once, finish number 5 panics;
/// it remembers the order of finishes and the most images it held at once.
struct Queued {
    cpu: CpuBackend,
    depth: usize,
    held: std::collections::VecDeque<(u64, Result<Voxels, FilterError>)>,
    submitted: u64,
    finished: usize,
    order: Vec<u64>,
    most_held: usize,
}

impl Backend for Queued {
    fn name(&self) -> &'static str {
        "queued"
    }
    fn smooth(
        &mut self,
        v: Voxels,
        sh: Shape,
        sp: &FilterSpec,
        o: DType,
    ) -> Result<Voxels, FilterError> {
        self.cpu.smooth(v, sh, sp, o)
    }
    fn depth(&self) -> usize {
        self.depth
    }
    fn submit(&mut self, v: Voxels, sh: Shape, sp: &FilterSpec, o: DType) -> Pending {
        self.submitted += 1;
        if self.submitted == 3 {
            return Pending::Done(Err(FilterError::Device("injected device error".into())));
        }
        let ticket = self.submitted;
        let result = self.cpu.smooth(v, sh, sp, o);
        self.held.push_back((ticket, result));
        self.most_held = self.most_held.max(self.held.len());
        Pending::Queued(ticket)
    }
    fn finish(&mut self, ticket: u64) -> Result<Voxels, FilterError> {
        self.finished += 1;
        self.order.push(ticket);
        let (oldest, result) = self.held.pop_front().expect("something queued");
        assert_eq!(oldest, ticket, "finished out of submission order");
        if self.finished == 5 {
            panic!("injected panic while finishing");
        }
        result
    }
}

#[test]
fn a_queueing_backend_keeps_depth_images_in_flight_and_order_and_errors_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = phantoms(&dir.path().join("in"), 8);
    let reference = dir.path().join("cpu");
    let cfg = config(&dir.path().join("in"), &reference);
    driver::run(&cfg, &Single, &mut CpuBackend::new(1).unwrap(), vec![]).unwrap();

    let out = dir.path().join("queued");
    // One reader, so that the third image submitted is the third listed.
    let cfg = RunConfig {
        schedule: "block".parse().unwrap(),
        readers: 1,
        ..config(&dir.path().join("in"), &out)
    };
    let mut backend = Queued {
        cpu: CpuBackend::new(1).unwrap(),
        depth: 3,
        held: Default::default(),
        submitted: 0,
        finished: 0,
        order: vec![],
        most_held: 0,
    };
    let outcome = driver::run(&cfg, &Single, &mut backend, vec![]).unwrap();
    assert_eq!(
        backend.most_held, 3,
        "the pipeline keeps `depth` images submitted"
    );
    assert_eq!(
        backend.order,
        vec![1, 2, 4, 5, 6, 7, 8],
        "every queued image finished once, in order"
    );
    assert_eq!(outcome.failed, 2);
    let report = outcome.report.unwrap();
    assert_eq!(report.images.len(), inputs.len());
    for (i, rec) in report.images.iter().enumerate() {
        let name = Path::new(&rec.output).file_name().unwrap();
        match i {
            2 => assert!(rec
                .error
                .as_deref()
                .unwrap()
                .contains("CUDA: injected device error")),
            5 => assert!(rec
                .error
                .as_deref()
                .unwrap()
                .contains("injected panic while finishing")),
            _ => {
                assert_eq!(rec.status, Status::Ok, "{i}");
                let ours = std::fs::read(&rec.output).unwrap();
                assert!(
                    ours == std::fs::read(reference.join(name)).unwrap(),
                    "image {i}"
                );
            }
        }
        if rec.status == Status::Failed {
            assert!(
                !Path::new(&rec.output).exists(),
                "nothing written for a failed image"
            );
        }
    }
}
