//! `nismooth sbatch`: a job script for one parallel model that runs as
//! written: its run arguments read as `run` reads them, its inputs found,
//! its binary absolute and able to run the model, its array inside the
//! cluster's `MaxArraySize` and covering every image once, and a memory
//! request from the largest input and the run's own readers.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::io::read_header_info;
use crate::metrics::MIB;
use crate::plan::array::{self, DEFAULT_MAX_ARRAY_SIZE};
use crate::resources::{held_bytes, pipeline_images, rank_request_bytes, RANK_BASE_BYTES};
use crate::slurm::parse_mib;
use crate::slurm::script::{self, JobSpec, Memory, Model, DEFAULT_MEMORY_MIB};

use super::cli::{parse_run_args, RunArgs, SbatchArgs};
use super::EXIT_OK;

/// `nismooth sbatch`: a job script for one parallel model.
pub fn sbatch(args: &SbatchArgs) -> anyhow::Result<u8> {
    // The run arguments are read as `run` will read them, so a script that
    // `run` would refuse is refused here, before it waits in a queue.
    let Job {
        run,
        inputs,
        units,
        guard,
    } = checked_job(&args.run_args)?;
    one_line_values(args)?;
    let (binary, mut notes) = job_binary(args.binary.as_deref(), args.model)?;
    let cpus = args.cpus_per_task.unwrap_or(default_cpus(args.model));
    let mut spec = JobSpec {
        job_name: args.job_name.clone(),
        partition: args.partition.clone(),
        account: args.account.clone(),
        qos: args.qos.clone(),
        constraint: args.constraint.clone(),
        mail_type: args.mail_type.clone(),
        mail_user: args.mail_user.clone(),
        modules: args.modules.clone(),
        setup: args.setup.clone(),
        time: args.time.clone(),
        nodes: args.nodes,
        ntasks_per_node: args.ntasks_per_node,
        cpus_per_task: cpus,
        gpus_per_node: args.gpus_per_node,
        array_limit: args.array_limit,
        requeue: args.requeue.then_some(script::Requeue {
            max: args.max_requeues,
            lead_s: args.requeue_lead,
        }),
        ..JobSpec::new(
            args.model,
            binary.display().to_string(),
            args.run_args.clone(),
        )
    }
    .shape();
    if let Some(r) = spec.requeue {
        let limit = crate::slurm::time::parse(&args.time)?;
        anyhow::ensure!(
            (r.lead_s as u64) < limit,
            "--requeue-lead {} s is not shorter than --time {} ({limit} s): Slurm would signal the job as it starts",
            r.lead_s,
            args.time
        );
    }
    if args.model == Model::Array {
        let plan = array_plan(args, &run, units, &mut notes)?;
        (spec.array_tasks, spec.array_chunk) = (plan.tasks, plan.chunk);
    }
    spec.memory = memory(args, &run, &inputs, spec.cpus_per_task, &mut notes)?;
    notes.push(format!(
        "Time limit {}: a guess until measured; `nismooth estimate` predicts it from a study.",
        args.time
    ));
    spec.notes = notes;
    let text = script::render(&spec);
    match &args.write {
        Some(p) => {
            script_target("--write", p, &inputs, Some(&run.output), &guard)?;
            crate::io::write_report_file(p, text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?
        }
        None => super::say(&text)?,
    }
    Ok(EXIT_OK)
}

/// The array of an array job: `units` (images or participants) over tasks
/// inside the cluster's `MaxArraySize`, with the run's own `--array-chunk`
/// when it gives one.
fn array_plan(
    args: &SbatchArgs,
    run: &RunArgs,
    units: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<array::ArrayPlan> {
    let max = crate::slurm::max_array_size();
    // A chunk among the run arguments is the run's: the plan must use it.
    let asked = match (args.array_chunk, run.array_chunk.map(|k| k as usize)) {
        (Some(a), Some(b)) if a != b => {
            anyhow::bail!("--array-chunk {a} for sbatch but {b} among the run arguments: give one")
        }
        (a, b) => a.or(b),
    };
    let plan = array::plan(
        units,
        args.array_tasks,
        asked,
        max.unwrap_or(DEFAULT_MAX_ARRAY_SIZE),
    )?;
    if run
        .array_chunk
        .is_some_and(|k| Some(k as usize) != plan.chunk)
    {
        anyhow::bail!(
            "the run's --array-chunk {} would not cover the images inside this cluster's MaxArraySize: leave it to sbatch",
            run.array_chunk.unwrap_or(0)
        );
    }
    notes.extend(plan.note.clone());
    if max.is_none() {
        notes.push(format!("Array: Slurm's default MaxArraySize ({DEFAULT_MAX_ARRAY_SIZE}) assumed: scontrol did not answer here."));
    }
    Ok(plan)
}

/// `--write` never lands on one of the run's inputs (through a link or a
/// hard link too, or a pair's voxel file), on what `guard` keeps, on a
/// NIfTI name in its OUTDIR, or inside OUTDIR/.nismooth (when there is a
/// run, `outdir`).
pub(super) fn script_target(
    flag: &str,
    path: &Path,
    inputs: &[PathBuf],
    outdir: Option<&Path>,
    guard: &crate::plan::Guard,
) -> anyhow::Result<()> {
    use crate::plan::guard::is_input;
    use crate::plan::identity::{resolve_future, Place};
    let place = Place::of(path);
    if let Some(input) = inputs.iter().find(|i| is_input(&place, i)) {
        anyhow::bail!(
            "{flag} {}: refused, it is the run's input {}",
            path.display(),
            input.display()
        );
    }
    if let Some(why) = guard.refuses(path) {
        anyhow::bail!("{flag} {}: refused, {why}", path.display());
    }
    let Some(outdir) = outdir else {
        return never_text(flag, path);
    };
    let (real, out) = (resolve_future(path), resolve_future(outdir));
    let state = real.starts_with(out.join(crate::plan::STATE_DIR));
    // Any NIfTI name at or below OUTDIR: a tree's (`-r`) outputs keep their
    // input's subfolders, and a script written over one was kept as the
    // output by --skip-existing.
    let output = real.starts_with(&out) && crate::plan::is_nifti_name(&real);
    anyhow::ensure!(
        !state && !output,
        "{flag} {}: refused, it is inside the run's output directory {} (an output or nismooth's own folder)",
        path.display(),
        outdir.display()
    );
    never_text(flag, path)
}

/// `plan::guard::never_text` as a refusal of `flag`'s target (also
/// `report merge`'s).
pub(super) fn never_text(flag: &str, path: &Path) -> anyhow::Result<()> {
    match crate::plan::guard::never_text(path) {
        Some(why) => anyhow::bail!("{flag} {}: refused, {why}", path.display()),
        None => Ok(()),
    }
}

/// The job after `--`: `run`'s arguments, or `bids BIDS_DIR OUT participant
/// …`; its images, what an array shares (images, or participants), and
/// what a script is never written over.
struct Job {
    run: RunArgs,
    inputs: Vec<PathBuf>,
    units: usize,
    guard: crate::plan::Guard,
}

fn checked_job(words: &[String]) -> anyhow::Result<Job> {
    if words.first().map(String::as_str) != Some("bids") {
        let (run, inputs) = checked_run(words)?;
        return Ok(Job {
            units: inputs.len(),
            guard: run_guard(&run),
            run,
            inputs,
        });
    }
    let bids = super::cli::parse_bids_args(&words[1..]).context("the bids arguments after `--`")?;
    let query = super::bids::query_of(&bids)?;
    let found = query.discover().context("the BIDS dataset")?;
    anyhow::ensure!(
        !found.is_empty(),
        "the query selects no image in {}",
        query.root.display()
    );
    let participants: std::collections::BTreeSet<&str> =
        found.iter().filter_map(|i| i.group.as_deref()).collect();
    let guard = crate::plan::Guard {
        trees: vec![("the BIDS dataset", query.root.clone())],
        datasets: vec![bids.output_dir.clone()],
        ..Default::default()
    };
    Ok(Job {
        units: participants.len(),
        inputs: found.iter().map(|i| i.path.clone()).collect(),
        run: super::bids::run_args(&bids),
        guard,
    })
}

/// What a script for `run` is never written over besides its images: its list.
pub(super) fn run_guard(run: &RunArgs) -> crate::plan::Guard {
    crate::plan::Guard {
        read: run.list.iter().map(|l| ("--list", l.clone())).collect(),
        ..Default::default()
    }
}

/// The run arguments parsed and checked as far as they can be without
/// their inputs (which may exist only on the cluster).
pub(super) fn parsed_run(words: &[String]) -> anyhow::Result<RunArgs> {
    let run = parse_run_args(words)
        .map_err(|e| anyhow::anyhow!("{} (see nismooth run --help)", one_line(&e)))
        .context("the run arguments after `--`")?;
    crate::config::parse_sigma(&run.sigma).context("the run arguments after `--`")?;
    if run.list.as_deref() == Some(std::path::Path::new("-")) {
        anyhow::bail!(
            "--list - reads standard input, which a batch job does not have: give a file"
        );
    }
    Ok(run)
}

/// clap's message without its usage block, on one line: it goes inside a
/// message of ours, which prints a newline as `\u{a}`.
fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let text = text.trim_start_matches("error: ");
    let words: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    words.join(" ")
}

/// The run arguments after `--`, read as `run` will read them (so a script
/// that `run` would refuse is refused before it waits in a queue), and
/// the images they name, which must exist.
pub(super) fn checked_run(words: &[String]) -> anyhow::Result<(RunArgs, Vec<PathBuf>)> {
    let run = parsed_run(words)?;
    if let Some(missing) = run.inputs.iter().chain(&run.list).find(|p| !p.exists()) {
        anyhow::bail!("the run's input {} does not exist", missing.display());
    }
    let found = super::run::sources(&run)
        .discover()
        .context("the run's inputs")?;
    anyhow::ensure!(!found.is_empty(), "the run arguments name no input image");
    let inputs = found.iter().map(|i| i.path.clone()).collect();
    // What the run refuses of its outputs (an OUTDIR that holds an input,
    // two inputs with one output, …), its script refuses too.
    crate::plan::plan_tasks(
        found,
        &run.output,
        run.format.map(super::run::output_format),
    )
    .context("the run arguments after `--`")?;
    Ok((run, inputs))
}

/// Every value written into a `#SBATCH` or shell line is one line: a
/// newline would end the directive and start a command of its own.
fn one_line_values(args: &SbatchArgs) -> anyhow::Result<()> {
    let named = [
        ("--job-name", Some(&args.job_name)),
        ("--partition", args.partition.as_ref()),
        ("--account", args.account.as_ref()),
        ("--qos", args.qos.as_ref()),
        ("--constraint", args.constraint.as_ref()),
        ("--mail-type", args.mail_type.as_ref()),
        ("--mail-user", args.mail_user.as_ref()),
    ];
    let many = args
        .modules
        .iter()
        .map(|m| ("--module", m))
        .chain(args.setup.iter().map(|l| ("--setup", l)));
    for (flag, value) in named
        .into_iter()
        .filter_map(|(f, v)| Some((f, v?)))
        .chain(many)
    {
        if value.chars().any(|c| c.is_control()) {
            anyhow::bail!(
                "{flag} {value:?}: a line break or control character would break the script"
            );
        }
    }
    Ok(())
}

/// CPUs per task when `--cpus-per-task` is not given: one where the model
/// says so, two for an array task (a reader beside the filter), four for a
/// rank that feeds a GPU or runs threads beside other ranks, eight for a
/// single threaded task.
fn default_cpus(model: Model) -> usize {
    match model {
        Model::Serial | Model::Mpi => 1,
        Model::Array => 2,
        Model::Gpu | Model::Hybrid => 4,
        Model::Threads => 8,
    }
}

/// The binary the job runs, absolute: `--binary` (a bare name looked up on
/// PATH), else `nismooth` on PATH, else this one. The models that srun
/// starts as MPI ranks need a binary built with MPI, and a GPU job one
/// built with CUDA, which `--version`'s first line says: a `nismooth` on
/// PATH without them (the pip wheel has no MPI) gives way to this binary
/// when this one has them.
pub(super) fn job_binary(
    asked: Option<&Path>,
    model: Model,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let mut notes = Vec::new();
    let needs: &[&str] = match model {
        Model::Gpu => &["cuda", "mpi"],
        Model::Mpi | Model::Hybrid => &["mpi"],
        _ => &[],
    };
    let lacking = |version: &str| -> Option<&str> {
        let features = version.lines().next().unwrap_or("");
        needs
            .iter()
            .copied()
            .find(|f| !features.contains(f))
            .map(|f| match f {
                "mpi" => "MPI",
                _ => "CUDA",
            })
    };
    let me = || std::env::current_exe().context("locating this nismooth binary");
    let binary = match asked {
        Some(p) if p.components().count() == 1 => {
            on_path(p).with_context(|| format!("--binary {}: not found on PATH", p.display()))?
        }
        Some(p) => std::path::absolute(p)?,
        None => match on_path(Path::new("nismooth")) {
            Some(p) => match version_of(&p).ok().as_deref().map(lacking) {
                Some(Some(feature))
                    if me()
                        .ok()
                        .and_then(|m| version_of(&m).ok())
                        .is_some_and(|v| lacking(&v).is_none()) =>
                {
                    let me = me()?;
                    notes.push(format!(
                        "Binary: the nismooth on PATH ({}) was built without {feature} (the pip wheel has no MPI), so the job runs this one ({}); pass --binary to choose.",
                        p.display(),
                        me.display()
                    ));
                    me
                }
                _ => {
                    let here = me().ok().filter(|m| {
                        !crate::plan::identity::Place::of(m)
                            .same(&crate::plan::identity::Place::of(&p))
                    });
                    if let Some(here) = here {
                        notes.push(format!(
                            "Binary: the nismooth on PATH ({}), not the one that wrote this script ({}); pass --binary to choose.",
                            p.display(),
                            here.display()
                        ));
                    }
                    p
                }
            },
            None => {
                let me = me()?;
                notes.push(format!(
                    "Binary: nismooth is not on PATH here, so the job runs this one ({}); install it where the nodes see it, or pass --binary.",
                    me.display()
                ));
                me
            }
        },
    };
    let version = version_of(&binary)?;
    if let Some(feature) = lacking(&version) {
        let how = if feature == "MPI" {
            "cargo build --release (MPI is a default feature)"
        } else {
            "cargo build --release --features cuda"
        };
        anyhow::bail!(
            "--model {}: {} was built without {feature} ({}); build with `{how}` or pass --binary",
            format!("{model:?}").to_lowercase(),
            binary.display(),
            version.lines().next().unwrap_or("").trim()
        );
    }
    Ok((binary, notes))
}

/// What `binary --version` says, checked to be nismooth's; stdin closed and
/// ten seconds at most, so that a wrong `--binary` cannot hang sbatch.
fn version_of(binary: &Path) -> anyhow::Result<String> {
    use std::process::{Command, Stdio};
    let runs_here = || format!("the job's binary {} does not run here", binary.display());
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(runs_here)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{}: `--version` did not answer within 10 s", runs_here());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().with_context(runs_here)?;
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        version.starts_with("nismooth"),
        "--binary {} is not nismooth (its --version says {:?})",
        binary.display(),
        version.lines().next().unwrap_or("")
    );
    Ok(version)
}

/// `name` in a PATH folder, as an executable file.
fn on_path(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .and_then(|p| std::path::absolute(p).ok())
}

/// `--mem`, `--mem-per-cpu`, or the request for the largest input. A
/// request below what the model says a rank holds is kept (the user may
/// know better) but said, with the model's figure, on standard error and
/// in the script.
fn memory(
    args: &SbatchArgs,
    run: &RunArgs,
    inputs: &[PathBuf],
    cpus: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<Memory> {
    let known = rank_memory_mib(run, inputs, cpus, notes);
    let rank_mib = known.unwrap_or(DEFAULT_MEMORY_MIB as f64);
    let modelled = Memory::for_ranks(args.model, rank_mib, cpus);
    let (given, need, flag) = match (&args.mem, &args.mem_per_cpu) {
        (Some(m), _) => {
            let ranks = if args.model.uses_srun() {
                args.ntasks_per_node
            } else {
                1
            };
            let mib = parse_mib(m).context("--mem")?;
            (
                Memory::PerNode { mib },
                rank_mib * ranks as f64,
                format!("--mem {m}"),
            )
        }
        (None, Some(m)) => {
            let mib = parse_mib(m).context("--mem-per-cpu")?;
            (
                Memory::PerCpu { mib },
                rank_mib / cpus.max(1) as f64,
                format!("--mem-per-cpu {m}"),
            )
        }
        (None, None) => return Ok(modelled),
    };
    let asked = match given {
        Memory::PerNode { mib } | Memory::PerCpu { mib } => mib as f64,
    };
    if known.is_some() && asked < need {
        let what = format!(
            "{flag} is below the {need:.0} MiB the model says this job holds there: it may end \
             OUT_OF_MEMORY (the model would ask {})",
            match given {
                Memory::PerNode { .. } => format!("--mem={}M", (need / 64.0).ceil() as u64 * 64),
                Memory::PerCpu { .. } =>
                    format!("--mem-per-cpu={}M", (need / 64.0).ceil() as u64 * 64),
            }
        );
        eprintln!("nismooth sbatch: warning: {what}");
        notes.push(format!("Memory: WARNING: {what}."));
    }
    Ok(given)
}

/// Memory per rank (MiB) from the largest input image and the run's
/// readers: the run's own `--threads`, when it sets one, decides them.
fn rank_memory_mib(
    run: &RunArgs,
    inputs: &[PathBuf],
    cpus: usize,
    notes: &mut Vec<String>,
) -> Option<f64> {
    let readers = super::run::readers(run, run.threads.unwrap_or(cpus));
    let largest = inputs
        .iter()
        .filter_map(|p| read_header_info(p).ok())
        .map(|h| held_bytes(h.memory_bytes(), h.shape.volumes))
        .max();
    let Some(bytes) = largest else {
        notes.push(
            "Memory: a default (no input header could be read here); measure with a study.".into(),
        );
        return None;
    };
    let need = rank_request_bytes(bytes, readers) as f64 / MIB;
    notes.push(format!(
        "Memory: largest input image (a series: its largest part of whole volumes) {:.1} MiB in memory; a rank with {readers} reader(s) holds up to {}× that + {} MiB = {need:.0} MiB.",
        bytes as f64 / MIB,
        pipeline_images(readers),
        RANK_BASE_BYTES >> 20,
    ));
    Some(need)
}
