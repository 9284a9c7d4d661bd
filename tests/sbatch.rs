//! `nismooth sbatch` writes scripts that run as written: Slurm's time
//! forms, arrays that cover every image once inside MaxArraySize, the
//! binary absolute and able to run the model, the request lines a cluster
//! asks for, and default CPUs per model. (tests/slurm runs the scripts.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{phantoms, s};

fn sbatch(args: &[&str], path: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nismooth"));
    c.arg("sbatch").args(args).env("RUST_LOG", "warn");
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().expect("run nismooth")
}

/// `n` phantoms in TMP/in, and TMP/out for the run's outputs.
fn inputs(n: usize) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (inp, out) = (t.path().join("in"), t.path().join("out"));
    phantoms(&inp, n);
    (t, inp, out)
}

fn script(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn refused(o: &Output, why: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(why), "{why:?} not in: {err}");
    assert!(o.stdout.is_empty(), "no script for a refused job");
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[test]
fn time_limits_are_read_as_slurm_reads_them() {
    let (_t, inp, out) = inputs(1);
    let run = ["--", s(&inp), "-o", s(&out)];
    for ok in ["90", "1-12:00:00", "00:30:00", "90:00"] {
        let args = [&["--model", "serial", "--time", ok][..], &run].concat();
        assert!(script(&sbatch(&args, None)).contains(&format!("#SBATCH --time={ok}\n")));
    }
    for bad in ["90min", "1h", "1:60:00", "0"] {
        let args = [&["--model", "serial", "--time", bad][..], &run].concat();
        let o = sbatch(&args, None);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("Slurm reads MM, MM:SS, HH:MM:SS"));
    }
}

#[test]
fn arrays_cover_every_image_once_within_max_array_size() {
    let (t, inp, out) = inputs(20);
    let run = ["--", s(&inp), "-o", s(&out)];
    let array = |extra: &[&str]| sbatch(&[&["--model", "array"], extra, &run].concat(), None);
    // The reviewed case: chunks of 2 on four tasks covered 8 of 20 images.
    refused(
        &array(&["--array-chunk", "2", "--array-tasks", "4"]),
        "covers 8 of 20 images",
    );
    refused(
        &array(&["--array-chunk", "2", "--array-tasks", "11"]),
        "need only 10 task(s)",
    );
    refused(
        &array(&["--array-tasks", "21"]),
        "1 task(s) would have none",
    );
    let text = script(&array(&["--array-chunk", "2"]));
    assert_eq!(line(&text, "#SBATCH --array="), "#SBATCH --array=0-9");
    assert!(text.contains("--array --array-chunk 2"), "{text}");
    let text = script(&array(&["--array-limit", "5"]));
    assert_eq!(line(&text, "#SBATCH --array="), "#SBATCH --array=0-19%5");

    // 2500 images (a list of 2500 links to one image, each its own output) pass Slurm's
    // default MaxArraySize: chunks of 3.
    let list = t.path().join("list.txt");
    let first = first_image(&inp);
    let many = t.path().join("many");
    std::fs::create_dir(&many).unwrap();
    let mut text = String::new();
    for k in 0..2500 {
        let link = many.join(format!("sub-{k:04}_T1w.nii.gz"));
        std::os::unix::fs::symlink(&first, &link).unwrap();
        text += &format!("{}\n", s(&link));
    }
    std::fs::write(&list, text).unwrap();
    let o = sbatch(
        &["--model", "array", "--", "--list", s(&list), "-o", s(&out)],
        Some("/usr/bin:/bin"),
    );
    let text = script(&o);
    assert_eq!(line(&text, "#SBATCH --array="), "#SBATCH --array=0-833");
    assert!(
        text.contains("--array-chunk 3") && text.contains("MaxArraySize 1001"),
        "{text}"
    );
}

#[test]
fn the_binary_is_absolute_and_can_run_the_model() {
    let (t, inp, out) = inputs(1);
    let run = ["--", s(&inp), "-o", s(&out)];
    // nismooth on PATH is the one the script runs.
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nismooth"), bin.join("nismooth")).unwrap();
    let path = format!("{}:/usr/bin:/bin", s(&bin));
    let text = script(&sbatch(
        &[&["--model", "serial"][..], &run].concat(),
        Some(&path),
    ));
    assert_eq!(
        line(&text, "NISMOOTH="),
        format!("NISMOOTH={}", s(&bin.join("nismooth")))
    );
    // Off PATH: this binary, said in a comment.
    let text = script(&sbatch(
        &[&["--model", "serial"][..], &run].concat(),
        Some("/usr/bin:/bin"),
    ));
    assert!(line(&text, "NISMOOTH=").ends_with("/nismooth") && text.contains("not on PATH"));
    refused(
        &sbatch(
            &[
                &["--model", "serial", "--binary", "no-such-nismooth"][..],
                &run,
            ]
            .concat(),
            None,
        ),
        "not found on PATH",
    );
    // Something that is not nismooth, and something that never answers.
    refused(
        &sbatch(
            &[&["--model", "serial", "--binary", "/bin/cat"][..], &run].concat(),
            None,
        ),
        "is not nismooth",
    );
    let stuck = t.path().join("stuck");
    std::fs::write(&stuck, "#!/bin/sh\nsleep 60\n").unwrap();
    std::fs::set_permissions(&stuck, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let started = std::time::Instant::now();
    refused(
        &sbatch(
            &[&["--model", "serial", "--binary", s(&stuck)][..], &run].concat(),
            None,
        ),
        "did not answer within 10 s",
    );
    assert!(started.elapsed().as_secs() < 30);
    // The pip wheel's nismooth (no MPI) on PATH gives way to this binary
    // for the models srun starts as MPI ranks, and is refused by name.
    let wheel = t.path().join("wheel");
    std::fs::create_dir(&wheel).unwrap();
    let fake = wheel.join("nismooth");
    std::fs::write(&fake, "#!/bin/sh\necho 'nismooth 0.1.0 (features: cpu)'\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", s(&wheel));
    let text = script(&sbatch(
        &[&["--model", "mpi"][..], &run].concat(),
        Some(&path),
    ));
    assert_eq!(
        line(&text, "NISMOOTH="),
        format!("NISMOOTH={}", env!("CARGO_BIN_EXE_nismooth"))
    );
    assert!(text.contains("was built without MPI"), "{text}");
    let text = script(&sbatch(
        &[&["--model", "serial"][..], &run].concat(),
        Some(&path),
    ));
    assert_eq!(line(&text, "NISMOOTH="), format!("NISMOOTH={}", s(&fake)));
    refused(
        &sbatch(
            &[&["--model", "hybrid", "--binary", s(&fake)][..], &run].concat(),
            None,
        ),
        "was built without MPI",
    );
    // A GPU job needs a CUDA build.
    let gpu = sbatch(&[&["--model", "gpu"][..], &run].concat(), None);
    let version = Command::new(env!("CARGO_BIN_EXE_nismooth"))
        .arg("--version")
        .output()
        .unwrap();
    if String::from_utf8_lossy(&version.stdout).contains("cuda") {
        assert!(script(&gpu).contains("--backend cuda"));
    } else {
        refused(&gpu, "was built without CUDA");
    }
}

#[test]
fn request_lines_setup_and_default_cpus() {
    let (_t, inp, out) = inputs(1);
    let o = sbatch(
        &[
            "--model",
            "threads",
            "--account",
            "lab42",
            "--qos",
            "short",
            "--constraint",
            "avx512",
            "--mail-type",
            "END,FAIL",
            "--mail-user",
            "me@example.org",
            "--module",
            "openmpi/4.1",
            "--module",
            "nismooth",
            "--setup",
            "source /opt/env.sh",
            "--",
            s(&inp),
            "-o",
            s(&out),
        ],
        None,
    );
    let text = script(&o);
    for want in [
        "#SBATCH --account=lab42\n",
        "#SBATCH --qos=short\n",
        "#SBATCH --constraint=avx512\n",
        "#SBATCH --mail-type=END,FAIL\n",
        "#SBATCH --mail-user=me@example.org\n",
        "module load openmpi/4.1\nmodule load nismooth\nsource /opt/env.sh\n",
        "#SBATCH --cpus-per-task=8\n",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    for (model, cpus) in [("serial", 1), ("mpi", 1), ("array", 2), ("hybrid", 4)] {
        let text = script(&sbatch(
            &["--model", model, "--", s(&inp), "-o", s(&out)],
            None,
        ));
        assert_eq!(
            line(&text, "#SBATCH --cpus-per-task="),
            format!("#SBATCH --cpus-per-task={cpus}"),
            "{model}"
        );
    }
    assert!(!Path::new(&out).exists(), "sbatch runs nothing");
}

#[test]
fn a_run_refuses_an_array_whose_chunks_leave_images_out() {
    // What a hand-written `--array=0-3` with `--array-chunk 2` on 20 images does on
    // each task: refused (exit 2) before anything is written, not a warning and a
    // COMPLETED job with 12 images never smoothed.
    let (_t, inp, out) = inputs(20);
    for task in ["0", "3"] {
        let o = Command::new(env!("CARGO_BIN_EXE_nismooth"))
            .args([
                "run",
                s(&inp),
                "-o",
                s(&out),
                "--array",
                "--array-chunk",
                "2",
                "--progress",
                "none",
            ])
            .envs([
                ("SLURM_JOB_ID", "70"),
                ("SLURM_ARRAY_JOB_ID", "70"),
                ("SLURM_ARRAY_TASK_ID", task),
                ("SLURM_ARRAY_TASK_MIN", "0"),
                ("SLURM_ARRAY_TASK_MAX", "3"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ])
            .output()
            .unwrap();
        refused(
            &o,
            "leaves the last 12 of 20 images to no task: submit --array=0-9",
        );
        assert!(!out.exists(), "a refused task writes nothing");
    }
}

#[test]
fn scripts_run_as_written_whatever_the_run_arguments_say() {
    let (_t, inp, out) = inputs(4);
    let count = |text: &str, flag: &str| {
        text.matches(&format!(" {flag} ")).count() + text.matches(&format!(" {flag}\n")).count()
    };
    // A flag the model adds is not added again when the run arguments give it (`run` refuses repeats).
    let text = script(&sbatch(
        &[
            "--model",
            "serial",
            "--",
            s(&inp),
            "-o",
            s(&out),
            "--threads",
            "4",
        ],
        None,
    ));
    assert_eq!(count(&text, "--threads"), 1, "{text}");
    let text = script(&sbatch(
        &[
            "--model",
            "array",
            "--",
            s(&inp),
            "-o",
            s(&out),
            "--array",
            "--array-chunk",
            "2",
        ],
        None,
    ));
    assert_eq!(
        (count(&text, "--array"), count(&text, "--array-chunk")),
        (1, 1),
        "{text}"
    );
    assert_eq!(line(&text, "#SBATCH --array="), "#SBATCH --array=0-1");
    refused(
        &sbatch(
            &[
                "--model",
                "array",
                "--array-chunk",
                "1",
                "--",
                s(&inp),
                "-o",
                s(&out),
                "--array-chunk",
                "2",
            ],
            None,
        ),
        "give one",
    );
    // What `run` would refuse.
    refused(
        &sbatch(
            &[
                "--model",
                "serial",
                "--",
                s(&inp),
                "-o",
                s(&out),
                "--sigma",
                "abc",
            ],
            None,
        ),
        "--sigma",
    );
    refused(
        &sbatch(&["--model", "serial", "--", "-o", s(&out)], None),
        "no input",
    );
    refused(
        &sbatch(&["--model", "serial", "--", s(&inp), "-o", s(&inp)], None),
        "holds input",
    );
    // The run's own refusals (plan::plan_tasks), so through a link too, and
    // two inputs that would write one output; none creates OUTDIR.
    let alias = inp.with_extension("alias");
    std::os::unix::fs::symlink(&inp, &alias).unwrap();
    refused(
        &sbatch(&["--model", "serial", "--", s(&inp), "-o", s(&alias)], None),
        "holds input",
    );
    let twin = inp.with_extension("twin");
    std::fs::create_dir(&twin).unwrap();
    let first = first_image(&inp);
    std::fs::copy(&first, twin.join(first.file_name().unwrap())).unwrap();
    refused(
        &sbatch(
            &["--model", "serial", "--", s(&inp), s(&twin), "-o", s(&out)],
            None,
        ),
        "would both write",
    );
    assert!(!out.exists(), "sbatch creates no output folder");
    // A line break in a value would end a directive and start a command.
    refused(
        &sbatch(
            &[
                "--model",
                "serial",
                "--account",
                "x\ntouch /tmp/pwned",
                "--",
                s(&inp),
                "-o",
                s(&out),
            ],
            None,
        ),
        "--account",
    );
    refused(
        &sbatch(
            &[
                "--model",
                "serial",
                "--setup",
                "a\nb",
                "--",
                s(&inp),
                "-o",
                s(&out),
            ],
            None,
        ),
        "--setup",
    );
}

#[test]
fn counts_of_zero_and_margins_below_one_are_refused() {
    let (_t, inp, out) = inputs(1);
    let run = ["--", s(&inp), "-o", s(&out)];
    for flag in [
        "--nodes",
        "--ntasks-per-node",
        "--cpus-per-task",
        "--array-limit",
        "--array-chunk",
    ] {
        let o = sbatch(&[&["--model", "array", flag, "0"][..], &run].concat(), None);
        assert_eq!(o.status.code(), Some(2), "{flag}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("must be at least 1"),
            "{flag}"
        );
    }
    let estimate = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nismooth"))
            .args([&["estimate", "--from", "study.json"][..], args].concat())
            .output()
            .unwrap()
    };
    for (flag, value, why) in [
        ("--tasks", "0", "must be at least 1"),
        ("--ranks", "0", "must be at least 1"),
        ("--margin", "0.5", "must be between 1"),
    ] {
        let args = if flag == "--tasks" {
            vec![flag, value]
        } else {
            vec!["--tasks", "8", flag, value]
        };
        let o = estimate(&args);
        assert_eq!(o.status.code(), Some(2), "{flag}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(why),
            "{flag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn requeue_scripts_pass_the_signal_on_and_requeue_only_a_run_stopped_early() {
    let (_t, inp, out) = inputs(2);
    let run = ["--", s(&inp), "-o", s(&out)];
    for model in ["serial", "mpi", "array"] {
        let args = [
            &["--model", model, "--time", "2:00:00", "--requeue"][..],
            &["--max-requeues", "5", "--requeue-lead", "120"],
            &run,
        ]
        .concat();
        let text = script(&sbatch(&args, None));
        for want in ["#SBATCH --requeue\n", "#SBATCH --signal=B:USR1@120\n"] {
            assert!(text.contains(want), "{model}: no {want:?} in\n{text}");
        }
        // The run in the background, the trap passing USR1 on, and a requeue
        // only for exit 3 with requeues left.
        assert!(text.contains(" &\nrun_pid=$!\n"), "{text}");
        let (traps, run) = (
            text.find("trap 'pass_on USR1' USR1").unwrap(),
            text.find(" &\nrun_pid").unwrap(),
        );
        assert!(traps < run, "the traps are set before the run starts");
        assert!(text.contains("trap 'pass_on TERM' TERM"), "{text}");
        let requeue = line(&text, "if [ \"$rc\" -eq 3 ]");
        assert!(
            requeue.contains("${SLURM_RESTART_COUNT:-0}\" -lt 5"),
            "{requeue}"
        );
        // An array task requeues itself alone (the array's id would requeue them all).
        let id = if model == "array" {
            "scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\" ||"
        } else {
            "scontrol requeue \"${SLURM_JOB_ID}\" ||"
        };
        assert!(text.contains(id), "{text}");
        // Each attempt keeps its own report (a requeued job keeps its id).
        assert!(text.contains(".%r.json"), "{text}");
        // The run knows the script requeues it, to say so when it stops early.
        let export =
            text.find("export NISMOOTH_REQUEUES_LEFT=$(( 5 - ${SLURM_RESTART_COUNT:-0} ))");
        assert!(export.is_some_and(|e| e < run), "{text}");
        assert_eq!(
            text.contains("--kill-on-bad-exit=1"),
            model == "mpi",
            "{text}"
        );
    }
    // A lead as long as the limit would signal the job as it starts.
    let args = [&["--model", "serial", "--time", "1", "--requeue"][..], &run].concat();
    refused(
        &sbatch(&args, None),
        "--requeue-lead 90 s is not shorter than --time 1",
    );
    // Requeue's own options need it.
    let args = [&["--model", "serial", "--max-requeues", "2"][..], &run].concat();
    assert_eq!(sbatch(&args, None).status.code(), Some(2));
}

/// The first image `read_dir` lists in `dir`.
fn first_image(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn srun_is_never_timed_and_a_request_below_the_model_is_said() {
    let (_t, inp, out) = inputs(2);
    let run = ["--", s(&inp), "-o", s(&out)];
    // /usr/bin/time around srun measures srun, not the ranks: only the
    // models without srun are timed.
    for (model, timed) in [
        ("serial", true),
        ("array", true),
        ("mpi", false),
        ("hybrid", false),
    ] {
        let text = script(&sbatch(&[&["--model", model][..], &run].concat(), None));
        assert_eq!(text.contains("/usr/bin/time"), timed, "{model}:\n{text}");
        assert_eq!(text.contains("\ntimed "), timed, "{model}:\n{text}");
    }
    // A request below the model: kept, said on stderr and in the script, with the model's figure.
    let o = sbatch(
        &[&["--model", "serial", "--mem", "10M"][..], &run].concat(),
        None,
    );
    let (text, err) = (script(&o), String::from_utf8_lossy(&o.stderr).to_string());
    assert!(text.contains("#SBATCH --mem=10M\n"), "{text}");
    for said in [&err, &text] {
        assert!(
            said.contains("--mem 10M is below the") && said.contains("the model would ask --mem="),
            "{said}"
        );
    }
    let o = sbatch(
        &[&["--model", "mpi", "--mem-per-cpu", "1M"][..], &run].concat(),
        None,
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--mem-per-cpu 1M is below the"));
    // At or above the model: nothing to say.
    let o = sbatch(
        &[&["--model", "serial", "--mem", "8G"][..], &run].concat(),
        None,
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains("below the"));
}
