"""Scaling study: the outputs are complete, relative paths work, and a failed point says so.

That the estimate made from a study comes true is test_estimate_matrix.py's.
"""
import csv
import json
import os
import shutil
import subprocess

import pytest

from conftest import BIN

pytestmark = pytest.mark.skipif(
    shutil.which("mpirun") is None and os.environ.get("NISMOOTH_REQUIRE_MPI") != "1",
    reason="needs mpirun",
)
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def nis(*args, timeout=600):
    proc = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_study_writes_the_course_tables_and_plots(tmp_path):
    out = tmp_path / "s"
    nis("study", "--ranks", "1,2", "--threads", "1,2", "--tasks", "1,3", "--reps", "1", "--shape", "24,20,16",
        "--vary-size",
        "-o", out)
    study = json.loads((out / "study.json").read_text())
    assert study["schema"] == "nismooth-study"
    points = study["points"]
    assert {(p["ranks"], p["threads"], p["tasks"]) for p in points} == {
        (r, t, n) for r in (1, 2) for t in (1, 2) for n in (1, 3)}
    for p in points:
        assert p["failed"] == 0 and p["wall_s"] > 0 and p["peak_rss_max_bytes"] > 0
        report = json.loads(open(p["report"]).read())
        assert len(report["processes"]) == p["ranks"] and len(report["images"]) == p["tasks"]
        assert report["config"]["threads"] == p["threads"]
        assert p["peak_rss_total_bytes"] == sum(q["peak_rss_bytes"] for q in report["processes"])
    rows = list(csv.DictReader(open(out / "study.csv")))
    assert len(rows) == 8 and "write_per_task_s" in rows[0] and "mem_per_task_MiB" in rows[0]
    md = (out / "study.md").read_text()
    assert md.count("\n| ") == 1 + 8, md  # header + one row per point
    for name in ["wall_vs_tasks", "speedup_vs_ranks", "efficiency_vs_ranks", "memory_vs_tasks", "stages"]:
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<svg")
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_study_with_relative_paths_works_and_one_with_a_failed_point_says_so(tmp_path):
    # Relative --data and -o (a list's relative lines are read from the list's folder:
    # every point used to fail on them, and the study exited 0 with tables and plots).
    data = tmp_path / "data"
    nis("generate", "-o", data, "-n", "3", "--shape", "12,10,8")
    run = lambda *a: subprocess.run([str(BIN), *map(str, a)], capture_output=True, text=True, env=ENV,
                                    cwd=tmp_path, timeout=300)
    ok = run("study", "--ranks", "1", "--threads", "1", "--tasks", "1,3", "--reps", "1", "--data", "data", "-o", "rel")
    assert ok.returncode == 0, ok.stderr
    points = json.loads((tmp_path / "rel" / "study.json").read_text())["points"]
    assert [p["failed"] for p in points] == [0, 0] and (tmp_path / "rel" / "study.md").exists()

    # The third image is not NIfTI: the 3-image point fails, the 1-image point does not.
    (data / "sub-0002_T1w.nii.gz").write_bytes(b"not a nifti file")
    # Into the same folder: the earlier study's table and plots must not stand beside the new record.
    bad = run("study", "--ranks", "1", "--threads", "1", "--tasks", "1,3", "--reps", "1", "--data", "data", "-o", "rel")
    assert bad.returncode == 1, bad.stderr
    assert "1 of 2 point(s) failed" in bad.stderr and "r1-t1-n3-rep0: 1 of 3 images failed" in bad.stderr
    out = tmp_path / "rel"
    assert (out / "study.json").exists(), "the raw record stays, for a look"
    assert not any((out / n).exists() for n in ["study.md", "study.csv", "wall_vs_tasks.svg", "stages.png"])


def test_an_array_estimate_is_its_task_in_waves_and_its_script_asks_per_task(tmp_path):
    # A study this machine made (tests/data/studies): 40 000 images in 200 tasks, 50 at once.
    study = os.path.join(os.path.dirname(__file__), "..", "data", "studies", "three-reps.json")
    out = tmp_path / "e.json"
    script = tmp_path / "job.sh"
    nis("estimate", "--from", study, "--tasks", "40000", "--model", "array", "--array-tasks", "200",
        "--array-limit", "50", "--json", out, "--sbatch", script, "--no-check-inputs", "--",
        "/cluster/data", "-o", "/cluster/out")
    e = json.loads(out.read_text())
    a = e["array"]
    assert (a["images_per_task"], a["at_once"], a["waves"]) == (200, 50, 4)
    task = a["per_task"]["wall_s"]
    for k in ("value", "low", "high"):
        assert abs(a["span_s"][k] - 4 * task[k]) < 1e-6 * task[k]
        assert abs(a["cpu_hours"][k] - 200 * task[k] / 3600) < 1e-6 * task[k]
    assert a["per_task"]["target"]["tasks"] == 200 and a["per_task"]["target"]["ranks_per_node"] == 1
    # The one-task prediction is what a plain estimate of its 200 images says.
    plain = tmp_path / "plain.json"
    nis("estimate", "--from", study, "--tasks", "200", "--threads", "1", "--json", plain)
    assert json.loads(plain.read_text())["estimate"]["wall_s"] == task
    text = script.read_text()
    assert "#SBATCH --array=0-199%50" in text and f"#SBATCH --time={e['request']['time']}" in text, text
    assert "#SBATCH --mem=" in text and "--mem-per-cpu" not in text and " --array" in text, text
    # An array with ranks, or array options without the model: refused.
    for bad in (["--model", "array", "--ranks", "2"], ["--array-limit", "5"], ["--model", "gpu"]):
        proc = subprocess.run([str(BIN), "estimate", "--from", study, "--tasks", "400", *bad], capture_output=True,
                              text=True)
        assert proc.returncode != 0 and "error" in proc.stderr, (bad, proc.stderr)
