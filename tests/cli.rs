//! The command line's contract: refusals (exit 2, nothing touched), per-image
//! failures (exit 1, the rest processed), skip-existing, report consistency,
//! deterministic generation. Numerical exactness is tested against scipy in
//! tests/python.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nismooth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nismooth"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run nismooth")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn generate(dir: &Path, n: usize, extra: &[&str]) -> Vec<PathBuf> {
    let n = n.to_string();
    let mut args = vec![
        "generate",
        "-o",
        s(dir),
        "-n",
        &n,
        "--shape",
        "12,10,8",
        "--seed",
        "5",
    ];
    args.extend_from_slice(extra);
    let out = nismooth(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// The outputs in `dir` (nismooth's journal folder left out).
fn outputs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".nismooth")
        .collect();
    v.sort();
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn refusals_exit_2_and_touch_nothing() {
    let t = tempfile::tempdir().unwrap();
    let inp = t.path().join("in");
    let imgs = generate(&inp, 2, &[]);
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();

    let o = nismooth(&["run", s(&empty), "-o", s(&t.path().join("o1"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no input images"), "{}", stderr(&o));

    let o = nismooth(&["run", s(&inp), "-o", s(&inp)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("holds input"), "{}", stderr(&o));

    let other = t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(&imgs[0], other.join(imgs[0].file_name().unwrap())).unwrap();
    let o = nismooth(&["run", s(&inp), s(&other), "-o", s(&t.path().join("o2"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("would both write"), "{}", stderr(&o));

    let o3 = t.path().join("o3");
    for bad in [
        &["--sigma", "1,2"][..],
        &["--mode", "grid"],
        &["--threads", "0"],
        &["--readers", "0"],
        &["--compression-level", "12"],
    ] {
        let mut args = vec!["run", s(&inp), "-o", s(&o3)];
        args.extend_from_slice(bad);
        assert_eq!(nismooth(&args).status.code(), Some(2), "{bad:?}");
    }
    // generate and study read a phantom shape by one rule.
    for cmd in ["generate", "study"] {
        for shape in ["0,4,4", "64,x", "1,2,3,4,5,6,7,8", "40000,2,2"] {
            let o = nismooth(&[cmd, "--shape", shape, "-o", s(&o3)]);
            assert_eq!(o.status.code(), Some(2), "{cmd} --shape {shape}");
            assert!(stderr(&o).contains("--shape: shape"), "{}", stderr(&o));
        }
    }
    for o in ["o1", "o2", "o3"] {
        assert!(
            !t.path().join(o).exists(),
            "{o} was created by a refused run"
        );
    }
    assert_eq!(
        std::fs::read_dir(&inp).unwrap().count(),
        2,
        "inputs untouched"
    );
}

#[test]
fn a_missing_input_on_the_command_line_is_refused_and_in_a_list_fails_alone() {
    let t = tempfile::tempdir().unwrap();
    let imgs = generate(&t.path().join("in"), 2, &[]);
    let missing = t.path().join("in").join("nope.nii.gz");
    let out = t.path().join("out");
    // A typo on the command line: nothing runs, nothing is created.
    let o = nismooth(&["run", s(&imgs[0]), s(&missing), s(&imgs[1]), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("nope.nii.gz does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // In a list of many, it is named before the run and fails as its image.
    let list = t.path().join("list.txt");
    let lines = [&imgs[0], &missing, &imgs[1]].map(|p| p.display().to_string());
    std::fs::write(&list, lines.join("\n")).unwrap();
    let o = nismooth(&["run", "--list", s(&list), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("1 of 3 image(s)"), "{err}");
    assert!(err.contains("nope.nii.gz"), "{err}");
    assert_eq!(outputs(&out).len(), 2);
}

#[test]
fn skip_existing_leaves_outputs_alone() {
    let t = tempfile::tempdir().unwrap();
    let inp = t.path().join("in");
    generate(&inp, 3, &[]);
    let out = t.path().join("out");
    assert!(nismooth(&["run", s(&inp), "-o", s(&out)]).status.success());
    let victim = out.join(&outputs(&out)[0]);
    std::fs::write(&victim, b"sentinel").unwrap();
    let report = t.path().join("r.json");
    let o = nismooth(&[
        "run",
        s(&inp),
        "-o",
        s(&out),
        "--skip-existing",
        "--report",
        s(&report),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&victim).unwrap(), b"sentinel");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(r["summary"]["skipped"], 3);
}

#[test]
fn reports_agree_with_each_other_and_the_work_done() {
    let t = tempfile::tempdir().unwrap();
    let inp = t.path().join("in");
    generate(&inp, 4, &["--vary-size"]);
    let (json, csv) = (t.path().join("r.json"), t.path().join("r.csv"));
    let o = nismooth(&[
        "run",
        s(&inp),
        "-o",
        s(&t.path().join("out")),
        "--threads",
        "2",
        "--report",
        s(&json),
        "--csv",
        s(&csv),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The summary is the result: standard output; the logs are on stderr.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("CPU efficiency"), "{stdout}");
    assert!(!stderr(&o).contains("CPU efficiency"), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["schema"], "nismooth-report");
    assert_eq!(r["schema_version"], nismooth::report::SCHEMA_VERSION);
    let images = r["images"].as_array().unwrap();
    assert_eq!(images.len(), 4);
    let mut voxels = std::collections::HashSet::new();
    for (i, img) in images.iter().enumerate() {
        assert_eq!(img["index"], i);
        assert_eq!(img["status"], "ok");
        let shape: u64 = img["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .product();
        assert_eq!(img["voxels"].as_u64().unwrap(), shape);
        voxels.insert(shape);
        assert!(img["bytes_out"].as_u64().unwrap() > 0);
    }
    assert!(voxels.len() > 1, "--vary-size gives different sizes");
    let sum: f64 = images.iter().map(|i| i["filter_s"].as_f64().unwrap()).sum();
    assert!((r["summary"]["filter_s"].as_f64().unwrap() - sum).abs() < 1e-9);
    let p = &r["processes"][0];
    assert_eq!(p["threads"], 2);
    // CPU efficiency against the CPUs the process was given (outside Slurm: the
    // machine's, when more than its filter threads), as seff measures.
    let given = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(2);
    assert_eq!(p["cpus"].as_u64(), Some(given as u64));
    let cpu = p["cpu_user_s"].as_f64().unwrap() + p["cpu_sys_s"].as_f64().unwrap();
    let eff = cpu / (p["wall_s"].as_f64().unwrap() * given as f64);
    assert!((p["cpu_efficiency"].as_f64().unwrap() - eff).abs() < 1e-9);
    assert!(p["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(p["wall_s"].as_f64().unwrap() >= p["busy_s"].as_f64().unwrap());
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv_text.lines().count(), 5);
    assert!(csv_text.starts_with("index,input,output,rank,status"));
    // `report FILE` shows the table once, then the memory verdict against a request.
    let shown = nismooth(&["report", s(&json), "--mem-request", "1G"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = String::from_utf8(shown.stdout).unwrap();
    assert_eq!(text.matches("CPU efficiency").count(), 1, "{text}");
    assert!(
        text.contains("MiB requested per rank): ask for less"),
        "{text}"
    );
}

#[test]
fn generation_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let a = generate(&t.path().join("a"), 2, &["--dtype", "int16"]);
    let b = generate(&t.path().join("b"), 2, &["--dtype", "int16"]);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    }
    assert_ne!(std::fs::read(&a[0]).unwrap(), std::fs::read(&a[1]).unwrap());
}

#[test]
fn list_files_and_nii_outputs() {
    let t = tempfile::tempdir().unwrap();
    let imgs = generate(&t.path().join("in"), 3, &["--format", "nii"]);
    let list = t.path().join("list.txt");
    std::fs::write(
        &list,
        format!("# two of three\n{}\n{}\n", s(&imgs[0]), s(&imgs[2])),
    )
    .unwrap();
    let out = t.path().join("out");
    assert!(nismooth(&[
        "run",
        "--list",
        s(&list),
        "-o",
        s(&out),
        "--format",
        "nii.gz"
    ])
    .status
    .success());
    assert_eq!(
        outputs(&out),
        ["sub-0000_T1w.nii.gz", "sub-0002_T1w.nii.gz"]
    );
}

/// On a machine without a GPU (CI): `--backend cuda` is refused before any
/// image is touched, with exit 2 and the reason; `--backend auto` says why it
/// runs on the CPU, and does; `--compat fsl` is never sent to a GPU.
#[test]
fn cuda_is_refused_with_its_reason_and_auto_falls_back_to_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = generate(&tmp.path().join("in"), 2, &[]);
    let out = tmp.path().join("out");
    let cuda = nismooth(&["run", s(&inputs[0]), "-o", s(&out), "--backend", "cuda"]);
    if cuda.status.success() {
        eprintln!("skipped: this machine has a usable GPU (tests/python/test_cuda.py covers it)");
        return;
    }
    let reason = if cfg!(feature = "cuda") {
        "built with CUDA, but no CUDA driver was found"
    } else {
        "nismooth was built without CUDA support"
    };
    assert_eq!(cuda.status.code(), Some(2), "{}", stderr(&cuda));
    assert!(
        stderr(&cuda).contains(&format!("--backend cuda: {reason}")),
        "{}",
        stderr(&cuda)
    );
    assert!(
        !out.exists() || outputs(&out).is_empty(),
        "nothing may be written"
    );

    let report = tmp.path().join("report.json");
    let auto = Command::new(env!("CARGO_BIN_EXE_nismooth"))
        .args([
            "run",
            s(&inputs[0]),
            s(&inputs[1]),
            "-o",
            s(&out),
            "--progress",
            "none",
        ])
        .args(["--backend", "auto", "--report", s(&report), "-v"])
        .output()
        .unwrap();
    assert!(auto.status.success(), "{}", stderr(&auto));
    assert!(
        stderr(&auto).contains(&format!("backend auto: cpu ({reason}")),
        "{}",
        stderr(&auto)
    );
    assert_eq!(outputs(&out).len(), 2);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["backend"], "cpu");

    let fsl = nismooth(&[
        "run",
        s(&inputs[0]),
        "-o",
        s(&tmp.path().join("fsl")),
        "--backend",
        "cuda",
        "--compat",
        "fsl",
    ]);
    assert_eq!(fsl.status.code(), Some(2));
    assert!(
        stderr(&fsl).contains("--compat fsl runs on the CPU backend only"),
        "{}",
        stderr(&fsl)
    );
}

#[test]
fn sbatch_asks_memory_for_each_reader() {
    let t = tempfile::tempdir().unwrap();
    let inp = t.path().join("in");
    // One 32 MiB float32 image.
    let g = nismooth(&[
        "generate",
        "-o",
        s(&inp),
        "-n",
        "1",
        "--shape",
        "256,256,128",
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    let out = t.path().join("out");
    let mem = |cpus: &str, run: &str| {
        let mut args = vec!["sbatch", "--model", "threads", "--cpus-per-task", cpus];
        args.extend(["--", s(&inp), "-o", s(&out)]);
        args.extend(run.split_whitespace());
        let o = nismooth(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        let line = |p: &str| {
            text.lines()
                .find(|l| l.contains(p))
                .unwrap_or("")
                .to_string()
        };
        (line("#SBATCH --mem="), line("reader(s)"))
    };
    // (readers + 3) images of 32 MiB + 64 MiB, rounded up to 64 MiB, at least 256 MiB.
    // The run's own --threads, when it sets one, decides the default readers.
    for (cpus, run, want, note) in [
        ("1", "", "--mem=256M", "1 reader(s) holds up to 4×"),
        ("2", "", "--mem=256M", "2 reader(s) holds up to 5×"),
        (
            "2",
            "--readers 1",
            "--mem=256M",
            "1 reader(s) holds up to 4×",
        ),
        (
            "1",
            "--readers 9",
            "--mem=448M",
            "9 reader(s) holds up to 12×",
        ),
        (
            "1",
            "--readers 6",
            "--mem=384M",
            "6 reader(s) holds up to 9×",
        ),
        (
            "1",
            "--threads 4",
            "--mem=256M",
            "2 reader(s) holds up to 5×",
        ),
        (
            "4",
            "--threads 1",
            "--mem=256M",
            "1 reader(s) holds up to 4×",
        ),
    ] {
        let (m, n) = mem(cpus, run);
        assert!(m.ends_with(want), "{cpus} cpus, run {run:?}: {m}");
        assert!(n.contains(note), "{n}");
    }
    // MPI asks per CPU, by the same rule: 448 MiB per rank over 2 CPUs.
    let o = nismooth(&[
        "sbatch",
        "--model",
        "hybrid",
        "--cpus-per-task",
        "2",
        "--",
        s(&inp),
        "-o",
        s(&out),
        "--readers",
        "9",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("#SBATCH --mem-per-cpu=256M"),
        "{}",
        stderr(&o)
    );
    // Run arguments that `run` would refuse are refused here, before the job queues.
    for (run, why) in [
        (vec![s(&inp)], "--output"),
        (vec![s(&t.path().join("missing")), "-o", s(&out)], "missing"),
        (
            vec![s(&inp), "-o", s(&out), "--no-such-option"],
            "--no-such-option",
        ),
    ] {
        let mut args = vec!["sbatch", "--model", "serial", "--"];
        args.extend(run);
        let o = nismooth(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "no script for a refused run");
    }
    assert!(!out.exists(), "sbatch runs nothing");
}

#[test]
fn stop_options_are_checked_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    let inp = t.path().join("in");
    generate(&inp, 2, &[]);
    let out = t.path().join("out");
    for (flag, value, why) in [
        ("--deadline", "soon", "a duration (90s, 55m"),
        ("--deadline", "90", "a duration (90s, 55m"),
        ("--deadline-margin", "x", "a duration (90s, 55m"),
        ("--drain-signal", "KILL", "one of TERM, INT, USR1"),
        ("--drain-signal", "17", "one of TERM, INT, USR1"),
        ("--grace", "-1", "seconds, 0 or more"),
    ] {
        let o = nismooth(&["run", s(&inp), "-o", s(&out), flag, value]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(why), "{flag} {value}: {err}");
        assert!(!out.exists(), "nothing written for a refused run");
    }
    // A deadline already past: nothing starts, every image is reported, exit 3.
    let report = t.path().join("r.json");
    let o = nismooth(&[
        "run",
        s(&inp),
        "-o",
        s(&out),
        "--deadline",
        "2000-01-01T00:00",
        "--report",
        s(&report),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["summary"]["not_started"], 2);
    assert_eq!(r["stopped"]["reason"], "deadline");
}

#[test]
fn completions_man_page_and_version_come_from_the_command_line_itself() {
    let o = nismooth(&["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = String::from_utf8_lossy(&o.stdout);
    for word in [
        "_nismooth",
        "bids",
        "--fwhm",
        "--recursive",
        "--participant-label",
    ] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    for shell in ["zsh", "fish"] {
        let o = nismooth(&["completions", shell]);
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}");
    }
    let o = nismooth(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    let o = nismooth(&["man"]);
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH nismooth"),
        "{page:.200}"
    );
    for sub in ["nismooth-run", "nismooth-bids", "nismooth-sbatch"] {
        assert!(page.contains(&format!(".TH {sub}")), "man page lacks {sub}");
    }
    assert!(
        !page.contains(".TH nismooth-bench"),
        "hidden commands stay out"
    );
    let o = nismooth(&["--version"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("nismooth 0."), "{text}");
    assert!(text.contains("SIMD: ") && text.contains("exp: "), "{text}");
    // The MPI library the build links, named (a site's module must match it).
    let mpi = text.lines().find(|l| l.starts_with("MPI: "));
    if cfg!(feature = "mpi") {
        let mpi = mpi.unwrap_or_else(|| panic!("no MPI line: {text}"));
        assert!(
            ["Open MPI", "MPICH"].iter().any(|m| mpi.contains(m)),
            "{mpi}"
        );
    } else {
        assert!(mpi.is_none(), "{text}");
    }
    let short = nismooth(&["-V"]);
    assert_eq!(String::from_utf8_lossy(&short.stdout).lines().count(), 1);
}
