//! `estimate --model array`: one task's prediction, the array's span under
//! `%N` and its CPU-hours, and a script that asks for it per task.
//!
//! The array is planned as `nismooth sbatch` plans it (`plan::array`), so
//! the tasks, chunks and images per task estimated are the ones the job gets.

use anyhow::Context;

use crate::metrics::MIB;
use crate::plan::array::DEFAULT_MAX_ARRAY_SIZE;
use crate::slurm::script::{self, JobSpec, Model};
use crate::study::fit::{self, ArrayEstimate, ArrayShape, Target};
use crate::study::StudyPoint;

use super::super::cli::EstimateArgs;
use super::Request;
use super::{confidence, file_system_line, sources, span, wall_line, warnings_and_advice};

pub(super) fn estimate(
    args: &EstimateArgs,
    studies: &[crate::study::Study],
    points: &[StudyPoint],
    task: Target,
) -> anyhow::Result<()> {
    // A chunk among the run arguments is the run's: the array must use it.
    let chunk = match args.run_args.is_empty() {
        true => None,
        false => super::super::sbatch::parsed_run(&args.run_args)?
            .array_chunk
            .map(|k| k as usize),
    };
    let max = crate::slurm::max_array_size().unwrap_or(DEFAULT_MAX_ARRAY_SIZE);
    let plan =
        crate::plan::array::plan(args.tasks, args.array_tasks, chunk, max).context("the array")?;
    let shape = ArrayShape {
        images: args.tasks,
        tasks: plan.tasks,
        limit: args.array_limit,
        chunk: plan.chunk,
    };
    let mut a = fit::estimate_array(points, task, shape, args.fs_bandwidth)?;
    a.warnings.extend(super::unread_inputs(args));
    a.per_task.advice.extend(plan.note.clone());
    let request = Request::from(&a.per_task, Model::Array, args.margin);
    crate::app::say(&render(&a, &request, args))?;
    if let Some(avail) = &args.node_memory {
        let avail = crate::slurm::parse_mib(avail).context("--node-memory")?;
        let need = request.memory.per_task_mib(a.per_task.target.threads);
        if need > avail {
            crate::app::say(&format!(
                "  ! one task asks {need} MiB, more than the node's {avail} MiB: no node can run it.\n"
            ))?;
        }
    }
    let script = match args.sbatch {
        Some(_) => Some(job_script(args, &a, &request)?),
        None => None,
    };
    let json = serde_json::json!({ "array": a, "request": request });
    super::write_files(args, studies, &json, script)
}

fn render(a: &ArrayEstimate, r: &Request, args: &EstimateArgs) -> String {
    let (t, s) = (&a.per_task.target, &a.shape);
    let shares = match s.chunk {
        Some(k) => format!("{k} consecutive images each"),
        None => format!("up to {} images each, cyclic shares", a.images_per_task),
    };
    let mut o = format!(
        "Estimate for {} images as a job array of {} tasks ({shares}), {} at once, × {} thread(s), from {}:\n",
        s.images,
        s.tasks,
        a.at_once,
        t.threads,
        sources(args)
    );
    o += &wall_line("one task", &a.per_task);
    let m = &a.per_task.peak_rss_per_rank_bytes;
    o += &format!(
        "  peak memory    {:.0} MiB per task (interval {:.0} to {:.0})\n",
        m.value / MIB,
        m.low / MIB,
        m.high / MIB
    );
    o += &format!(
        "  the array      {} (interval {} to {}), first start to last end: {} wave(s) of {} task(s); waits in the queue not included\n",
        span(a.span_s.value),
        span(a.span_s.low),
        span(a.span_s.high),
        a.waves,
        a.at_once
    );
    o += &format!(
        "  CPU time       {:.2} CPU-hours (interval {:.2} to {:.2}): {} tasks × {} CPU(s) over their wall\n",
        a.cpu_hours.value, a.cpu_hours.low, a.cpu_hours.high, s.tasks, t.threads
    );
    let limit = s.limit.map(|l| format!("%{l}")).unwrap_or_default();
    o += &format!(
        "Slurm request per task (interval's high end + {:.0}% margin):\n  --array=0-{}{limit} --cpus-per-task={} {} --time={}\n",
        100.0 * (args.margin - 1.0),
        s.tasks - 1,
        t.threads,
        r.memory.option(),
        r.time
    );
    o += &confidence(&a.per_task);
    o += &a.file_system.as_ref().map_or(String::new(), |fs| {
        file_system_line(fs, &format!("the {} task(s) running at once", a.at_once))
    });
    let warnings: Vec<String> = a
        .warnings
        .iter()
        .chain(&a.per_task.warnings)
        .cloned()
        .collect();
    o + &warnings_and_advice(&warnings, &a.per_task.advice)
}

/// The array script that asks for the estimate's request per task.
fn job_script(args: &EstimateArgs, a: &ArrayEstimate, request: &Request) -> anyhow::Result<String> {
    super::script_run(args)?;
    let e = &a.per_task;
    let (binary, notes) = super::script_notes(args, Model::Array, format!(
        "From {}: {} images in {} tasks; one task predicted to take {} (interval {} to {}) and {:.0} MiB; the array {} with {} at once; request per task with a {:.0}% margin.",
        sources(args),
        a.shape.images,
        a.shape.tasks,
        span(e.wall_s.value),
        span(e.wall_s.low),
        span(e.wall_s.high),
        e.peak_rss_per_rank_bytes.value / MIB,
        span(a.span_s.value),
        a.at_once,
        100.0 * (args.margin - 1.0)
    ))?;
    let spec = JobSpec {
        time: request.time.clone(),
        partition: args.partition.clone(),
        cpus_per_task: e.target.threads,
        memory: request.memory,
        array_tasks: a.shape.tasks,
        array_limit: a.shape.limit,
        array_chunk: a.shape.chunk,
        notes,
        ..JobSpec::new(
            Model::Array,
            binary.display().to_string(),
            args.run_args.clone(),
        )
    }
    .shape();
    Ok(script::render(&spec))
}
