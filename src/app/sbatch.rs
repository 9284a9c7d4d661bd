//! `nismooth sbatch`: a job script for one parallel model, with a memory
//! request from the largest input and the run's own readers.

use anyhow::Context;
use clap::Parser;

use nismooth::slurm::parse_mib;
use nismooth::slurm::script::{self, JobSpec, Memory, Model};

use super::cli::{Cli, Command, SbatchArgs};
use super::EXIT_OK;

/// `nismooth sbatch`: a job script for one parallel model.
pub fn sbatch(args: &SbatchArgs) -> anyhow::Result<u8> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating this nismooth binary")?,
    };
    let mut notes = Vec::new();
    let memory = match (&args.mem, &args.mem_per_cpu) {
        (Some(m), _) => Memory::PerNode {
            mib: parse_mib(m).map_err(anyhow::Error::msg)?,
        },
        (None, Some(m)) => Memory::PerCpu {
            mib: parse_mib(m).map_err(anyhow::Error::msg)?,
        },
        (None, None) => {
            let per_rank = default_rank_memory_mib(&args.run_args, args.cpus_per_task, &mut notes);
            match args.model {
                Model::Mpi | Model::Hybrid | Model::Gpu => Memory::PerCpu {
                    mib: round_up(
                        per_rank.div_ceil(args.cpus_per_task.max(1) as u64).max(256),
                        256,
                    ),
                },
                _ => Memory::PerNode {
                    mib: round_up(per_rank, 256),
                },
            }
        }
    };
    notes.push(format!(
        "Time limit {}: a guess until measured; `nismooth estimate` predicts it from a study.",
        args.time
    ));
    let spec = JobSpec {
        model: args.model,
        job_name: args.job_name.clone(),
        partition: args.partition.clone(),
        time: args.time.clone(),
        nodes: args.nodes,
        ntasks_per_node: args.ntasks_per_node,
        cpus_per_task: args.cpus_per_task,
        memory,
        gpus_per_node: args.gpus_per_node,
        array_tasks: args.array_tasks,
        array_limit: args.array_limit,
        array_chunk: args.array_chunk,
        binary: binary.display().to_string(),
        run_args: args.run_args.clone(),
        notes,
    }
    .shape();
    let text = script::render(&spec);
    match &args.write {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(EXIT_OK)
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Memory per rank from the largest input image. A rank's pipeline holds
/// one image per reader plus those being filtered and written; measured
/// flat at (readers + 1) × the decompressed image + about 48 MiB
/// (docs/performance.md). The request asks (readers + 2) × + 64 MiB, then a
/// 1.5× margin.
fn default_rank_memory_mib(run_args: &[String], threads: usize, notes: &mut Vec<String>) -> u64 {
    let argv = ["nismooth", "run"]
        .into_iter()
        .map(String::from)
        .chain(run_args.iter().cloned());
    let run = Cli::try_parse_from(argv)
        .ok()
        .and_then(|cli| match cli.command {
            Command::Run(a) => Some(a),
            _ => None,
        });
    // The run's own --threads, if it sets one, decides the default readers.
    let readers = match &run {
        Some(a) => super::run::readers(a, a.threads.unwrap_or(threads)),
        None => nismooth::resources::default_readers(threads),
    };
    let largest = run
        .and_then(|a| nismooth::plan::discover(&a.inputs, a.list.as_deref()).ok())
        .and_then(|inputs| {
            inputs
                .iter()
                .filter_map(|p| nismooth::io::read_header_info(p).ok())
                .map(|h| h.memory_bytes())
                .max()
        });
    match largest {
        Some(bytes) => {
            let images = readers as u64 + 2;
            let mib = (images * bytes).div_ceil(1 << 20) + 64;
            notes.push(format!(
                "Memory: largest input image {:.1} MiB decompressed; per rank with {readers} reader(s) {images}× that + 64 MiB = {mib} MiB, requested with a 1.5× margin.",
                bytes as f64 / (1 << 20) as f64
            ));
            mib * 3 / 2
        }
        None => {
            notes.push(
                "Memory: a default (the inputs could not be read here); measure with a study."
                    .into(),
            );
            2048
        }
    }
}
