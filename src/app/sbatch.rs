//! `nismooth sbatch`: a job script for one parallel model, with a memory
//! request from the largest input and the run's own readers.

use anyhow::Context;

use nismooth::io::read_header_info;
use nismooth::plan::discover;
use nismooth::resources::rank_request_bytes;
use nismooth::slurm::parse_mib;
use nismooth::slurm::script::{self, JobSpec, Memory};

use super::cli::{parse_run_args, RunArgs, SbatchArgs};
use super::EXIT_OK;

use nismooth::metrics::MIB;

/// `nismooth sbatch`: a job script for one parallel model.
pub fn sbatch(args: &SbatchArgs) -> anyhow::Result<u8> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating this nismooth binary")?,
    };
    // The run arguments are read as `run` will read them, so a script that
    // `run` would refuse is refused here, before it waits in a queue.
    let run = parse_run_args(&args.run_args).context("the run arguments after `--`")?;
    if let Some(missing) = run.inputs.iter().chain(&run.list).find(|p| !p.exists()) {
        anyhow::bail!("the run's input {} does not exist", missing.display());
    }
    let mut notes = Vec::new();
    let memory = match (&args.mem, &args.mem_per_cpu) {
        (Some(m), _) => Memory::PerNode {
            mib: parse_mib(m).context("--mem")?,
        },
        (None, Some(m)) => Memory::PerCpu {
            mib: parse_mib(m).context("--mem-per-cpu")?,
        },
        (None, None) => {
            let rank_mib = rank_memory_mib(&run, args.cpus_per_task, &mut notes)?;
            Memory::for_ranks(args.model, rank_mib, args.cpus_per_task)
        }
    };
    notes.push(format!(
        "Time limit {}: a guess until measured; `nismooth estimate` predicts it from a study.",
        args.time
    ));
    let spec = JobSpec {
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
        notes,
        ..JobSpec::new(
            args.model,
            binary.display().to_string(),
            args.run_args.clone(),
        )
    }
    .shape();
    let text = script::render(&spec);
    match &args.write {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(EXIT_OK)
}

/// Memory per rank (MiB) from the largest input image and the run's
/// readers: the run's own `--threads`, when it sets one, decides them.
fn rank_memory_mib(run: &RunArgs, cpus: usize, notes: &mut Vec<String>) -> anyhow::Result<f64> {
    let readers = super::run::readers(run, run.threads.unwrap_or(cpus));
    let inputs = discover(&run.inputs, run.list.as_deref()).context("the run's inputs")?;
    let largest = inputs
        .iter()
        .filter_map(|p| read_header_info(p).ok())
        .map(|h| h.memory_bytes())
        .max();
    let Some(bytes) = largest else {
        notes.push(
            "Memory: a default (no input header could be read here); measure with a study.".into(),
        );
        return Ok(2048.0);
    };
    let need = rank_request_bytes(bytes, readers) as f64 / MIB;
    notes.push(format!(
        "Memory: largest input image {:.1} MiB in memory; a rank with {readers} reader(s) holds up to {}× that + {} MiB = {need:.0} MiB.",
        bytes as f64 / MIB,
        nismooth::resources::pipeline_images(readers),
        nismooth::resources::RANK_BASE_BYTES >> 20,
    ));
    Ok(need)
}
