"""`--trace FILE` and `report FILE --trace OUT` (issue 41): the run's
timeline in the Chrome trace-event format that Perfetto opens. Checked
against the format's event schema and against the report it is drawn
from: every image has its read, filter and write; slices of one track
never overlap; each stage's slices add up to the report's totals."""
import json
import os
import subprocess
from collections import defaultdict

import pytest

from conftest import BIN, MPIRUN, mpi_launch, nismooth

MPI_ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
needs_mpi = pytest.mark.skipif(
    MPIRUN is None and os.environ.get("NISMOOTH_REQUIRE_MPI") != "1",
    reason="no mpirun (CI sets NISMOOTH_REQUIRE_MPI=1 so that this cannot pass silently)",
)


def check_trace(trace, report):
    events = trace["traceEvents"]
    assert trace["displayTimeUnit"] == "ms"
    for e in events:
        assert e["ph"] in ("X", "M", "C") and isinstance(e["pid"], int) and isinstance(e["name"], str)
        if e["ph"] == "X":
            assert isinstance(e["tid"], int) and e["ts"] >= 0 and e["dur"] >= 0 and e["cat"] in (
                "read", "filter", "write")
        if e["ph"] == "C":
            assert e["ts"] >= 0 and e["args"]["images"] >= 0
    slices = [e for e in events if e["ph"] == "X"]
    per_image = defaultdict(set)
    for e in slices:
        per_image[e["args"]["index"]].add(e["cat"])
    ok = [i for i in report["images"] if i["status"] == "ok"]
    assert ok and all(per_image[i["index"]] == {"read", "filter", "write"} for i in ok)
    tracks = defaultdict(list)
    for e in slices:
        tracks[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for spans in tracks.values():
        spans.sort()
        assert all(a[1] <= b[0] + 1e-3 for a, b in zip(spans, spans[1:])), "slices of one track overlap"
    named = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert set(tracks) <= named
    for stage in ("read", "filter", "write"):
        traced = sum(e["dur"] for e in slices if e["cat"] == stage) / 1e6
        total = sum(i[f"{stage}_s"] for i in report["images"])
        assert traced == pytest.approx(total, rel=0.01, abs=1e-4), stage
    return slices


@needs_mpi
def test_a_two_rank_runs_trace_is_its_report_drawn(tmp_path):
    nismooth("generate", "-q", "-o", tmp_path / "in", "-n", 12, "--shape", "32,32,24")
    r = subprocess.run([*mpi_launch(2), str(BIN), "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                        "--threads", "1", "-q", "--report", str(tmp_path / "r.json"),
                        "--trace", str(tmp_path / "t.json")], capture_output=True, text=True, env=MPI_ENV)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    slices = check_trace(json.loads((tmp_path / "t.json").read_text()), report)
    assert {e["pid"] for e in slices} == {0, 1}
    # The same timeline drawn afterwards from the report.
    nismooth("report", tmp_path / "r.json", "--trace", tmp_path / "t2.json")
    assert json.loads((tmp_path / "t2.json").read_text()) == json.loads((tmp_path / "t.json").read_text())
    # One image over both ranks: its parts' slices on each.
    nismooth("generate", "-q", "-o", tmp_path / "big", "-n", 1, "--shape", "64,64,128")
    r = subprocess.run([*mpi_launch(2), str(BIN), "run", str(tmp_path / "big" / "sub-0000_T1w.nii.gz"), "-o",
                        str(tmp_path / "s"), "--threads", "1", "-q", "--split", "always", "--report",
                        str(tmp_path / "rs.json"), "--trace", str(tmp_path / "ts.json")],
                       capture_output=True, text=True, env=MPI_ENV)
    assert r.returncode == 0, r.stderr
    slices = check_trace(json.loads((tmp_path / "ts.json").read_text()),
                         json.loads((tmp_path / "rs.json").read_text()))
    assert {e["pid"] for e in slices if e["cat"] == "filter"} == {0, 1}


def test_a_reports_trace_never_goes_over_a_file_it_names(tmp_path):
    nismooth("generate", "-q", "-o", tmp_path / "in", "-n", 2, "--shape", "40,40,30")
    nismooth("run", tmp_path / "in", "-o", tmp_path / "out", "-q", "--report", tmp_path / "r.json")
    check_trace_file = tmp_path / "t.json"
    nismooth("report", tmp_path / "r.json", "--trace", check_trace_file)
    check_trace(json.loads(check_trace_file.read_text()), json.loads((tmp_path / "r.json").read_text()))
    before = (tmp_path / "r.json").read_bytes()
    nismooth("report", tmp_path / "r.json", "--trace", tmp_path / "r.json", expect=2)
    out = next((tmp_path / "out").glob("*.nii.gz"))
    kept = out.read_bytes()
    r = nismooth("report", tmp_path / "r.json", "--trace", out, expect=2)
    assert r.stderr.startswith("nismooth: error: --trace "), r.stderr
    nismooth("run", tmp_path / "in", "-o", tmp_path / "o2", "-q", "--trace", next((tmp_path / "in").glob("*")),
             expect=2)
    assert (tmp_path / "r.json").read_bytes() == before and out.read_bytes() == kept
