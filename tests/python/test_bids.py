"""nismooth bids: a BIDS dataset in (built by scripts/make_bids_sample.py
from nilearn's MNI template and nibabel's 4-D example), a derivatives
dataset out that the official validator accepts, smooth_img's bits inside."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import BIN, ROOT, nismooth

nilearn_image = pytest.importorskip("nilearn.image")
VALIDATOR = shutil.which("bids-validator-deno")
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("bids") / "raw"
    subprocess.run(["python3", str(ROOT / "scripts" / "make_bids_sample.py"), str(d)], check=True)
    return d


def validate(dataset):
    """The validator's issues on `dataset` (errors and warnings), from its JSON."""
    assert VALIDATOR, "bids-validator-deno is not installed (ci/install-deps.sh installs it)"
    proc = subprocess.run([VALIDATOR, str(dataset), "--format", "json"], capture_output=True,
                          text=True, timeout=300)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = [i for i in issues if i["severity"] == "error"]
    return proc.returncode, errors, issues


def images(d):
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob("*.nii.gz"))


def test_the_sample_dataset_is_valid(raw):
    code, errors, _ = validate(raw)
    assert code == 0 and not errors, errors


def test_derivatives_are_valid_and_smooth_img_bit_for_bit(raw, tmp_path):
    out = tmp_path / "deriv"
    nismooth("bids", raw, out, "participant", "--fwhm", "6", "--compat", "nilearn")
    code, errors, issues = validate(out)
    assert code == 0 and not errors, errors
    print(f"validator: {len(errors)} errors, {len(issues)} warnings:",
          sorted({i['code'] for i in issues}))
    got = images(out)
    assert len(got) == len(images(raw)) == 9
    assert "sub-02/func/sub-02_task-rest_run-2_desc-smooth6mm_bold.nii.gz" in got
    assert "sub-01/ses-02/anat/sub-01_ses-02_desc-smooth6mm_T1w.nii.gz" in got
    for rel in got:
        sidecar = json.loads((out / rel.replace(".nii.gz", ".json")).read_text())
        (source,) = sidecar["Sources"]
        assert source.startswith("bids:raw:")
        src = raw / source[len("bids:raw:"):]
        want = np.asanyarray(nilearn_image.smooth_img(str(src), 6).dataobj)
        have = np.asanyarray(nib.load(str(out / rel)).dataobj)
        assert have.dtype == want.dtype and have.tobytes() == want.tobytes(), rel
        assert sidecar["SkullStripped"] is False
        assert sidecar["Smoothing"]["fwhm"] == [6.0, 6.0, 6.0]
        assert "FWHM 6 mm" in sidecar["Description"]
    # Inheritance: the root's TaskName, sub-03's own RepetitionTime, a run's own EchoTime.
    s3 = json.loads((out / "sub-03/func/sub-03_task-rest_desc-smooth6mm_bold.json").read_text())
    assert s3["TaskName"] == "rest" and s3["RepetitionTime"] == 2.5
    r2 = json.loads((out / "sub-02/func/sub-02_task-rest_run-2_desc-smooth6mm_bold.json").read_text())
    r1 = json.loads((out / "sub-02/func/sub-02_task-rest_run-1_desc-smooth6mm_bold.json").read_text())
    assert r2["EchoTime"] == 0.035 and r1["EchoTime"] == 0.03
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "nismooth"
    assert "--compat nilearn" in desc["GeneratedBy"][0]["Description"]
    assert desc["SourceDatasets"] == [{"URL": "bids:raw:"}]
    assert (out / desc["DatasetLinks"]["raw"]).resolve() == raw.resolve()


def test_labels_select_participants_and_sessions(raw, tmp_path):
    out = tmp_path / "o"
    nismooth("bids", raw, out, "participant", "--participant-label", "sub-01", "03",
             "--session-label", "02", "--suffix", "T1w")
    assert images(out) == ["sub-01/ses-02/anat/sub-01_ses-02_desc-smoothsigma2vox_T1w.nii.gz"]
    proc = nismooth("bids", raw, tmp_path / "o2", "participant", "--participant-label", "99",
                    expect=2)
    assert "participant 99 is not in" in proc.stderr
    assert not (tmp_path / "o2").exists()


def test_group_level_does_nothing_and_says_so(raw, tmp_path):
    proc = nismooth("bids", raw, tmp_path / "o", "group")
    assert "nothing to do" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_a_derivatives_input_keeps_its_entities_and_gets_a_new_desc(raw, tmp_path):
    """An fMRIPrep-style input: space- kept, desc-preproc replaced, masks not smoothed."""
    prep = tmp_path / "prep"
    (prep / "sub-01/func").mkdir(parents=True)
    (prep / "dataset_description.json").write_text(json.dumps({
        "Name": "prep", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fmriprep-like"}]}))
    src = raw / "sub-02/func/sub-02_task-rest_run-1_bold.nii.gz"
    name = "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold"
    shutil.copy(src, prep / "sub-01/func" / f"{name}.nii.gz")
    (prep / "sub-01/func" / f"{name}.json").write_text(json.dumps(
        {"RepetitionTime": 2.0, "TaskName": "rest", "SkullStripped": True}))
    shutil.copy(src, prep / "sub-01/func/sub-01_task-rest_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    out = tmp_path / "o"
    nismooth("bids", prep, out, "participant", "--fwhm", "4")
    assert images(out) == [
        "sub-01/func/sub-01_task-rest_space-MNI152NLin2009cAsym_desc-smooth4mm_bold.nii.gz"]
    side = json.loads((out / "sub-01/func/sub-01_task-rest_space-MNI152NLin2009cAsym_desc-smooth4mm_bold.json").read_text())
    assert side["SkullStripped"] is True
    assert side["Sources"] == [f"bids:source:sub-01/func/{name}.nii.gz"]
    code, errors, _ = validate(out)
    assert code == 0 and not errors, errors


def test_mpi_and_array_tasks_give_the_same_dataset(raw, tmp_path):
    serial = tmp_path / "serial"
    nismooth("bids", raw, serial, "participant", "--fwhm", "5")
    mpi = tmp_path / "mpi"
    proc = subprocess.run(["mpirun", "-n", "2", str(BIN), "bids", str(raw), str(mpi), "participant",
                           "--fwhm", "5", "--threads", "1"], capture_output=True, text=True,
                          env={**os.environ, **MPI_ENV}, timeout=180)
    assert proc.returncode == 0, proc.stderr
    arr = tmp_path / "array"
    shares = []
    for task in range(2):
        env = {"SLURM_JOB_ID": str(78 + task), "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(task),
               "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "1",
               "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_STEP": "1"}
        report = tmp_path / f"r{task}.json"
        nismooth("bids", raw, arr, "participant", "--fwhm", "5", "--report", report,
                 "--no-deadline", env=env)
        recs = json.loads(report.read_text())["images"]
        shares.append({Path(r["input"]).name.split("_")[0] for r in recs})
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == {"sub-01", "sub-02", "sub-03"}
    for d in (mpi, arr):
        assert images(d) == images(serial)
        for rel in images(serial):
            assert (d / rel).read_bytes() == (serial / rel).read_bytes(), rel
            side = rel.replace(".nii.gz", ".json")
            assert (d / side).read_text() == (serial / side).read_text(), side


def test_sbatch_writes_the_bids_form_with_an_array_of_participants(raw, tmp_path):
    proc = nismooth("sbatch", "--model", "array", "--", "bids", raw, tmp_path / "o", "participant",
                    "--fwhm", "6")
    script = proc.stdout
    assert "#SBATCH --array=0-2" in script, script
    assert f'"$NISMOOTH" bids {raw} {tmp_path / "o"} participant --fwhm 6' in script, script


def test_broken_metadata_is_refused_before_any_work(raw, tmp_path):
    broken = tmp_path / "raw"
    shutil.copytree(raw, broken)
    (broken / "task-rest_bold.json").write_text('{"RepetitionTime": 2.0,')
    proc = nismooth("bids", broken, tmp_path / "o", "participant", expect=2)
    assert "task-rest_bold.json: invalid JSON" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_an_empty_selection_says_what_was_asked(raw, tmp_path):
    proc = nismooth("bids", raw, tmp_path / "o", "participant", "--participant-label", "02",
                    "--session-label", "01", expect=2)
    assert "no image in" in proc.stderr and "sessions 01" in proc.stderr, proc.stderr


def test_output_inside_the_dataset_must_be_below_derivatives(raw, tmp_path):
    ds = tmp_path / "raw"
    shutil.copytree(raw, ds)
    proc = nismooth("bids", ds, ds / "sub-01", "participant", expect=2)
    assert "below" in proc.stderr and "derivatives" in proc.stderr
    nismooth("bids", ds, ds / "derivatives" / "nismooth", "participant", "--participant-label", "02")
    code, errors, _ = validate(ds)
    assert code == 0 and not errors, errors
    link = json.loads((ds / "derivatives/nismooth/dataset_description.json").read_text())
    assert link["DatasetLinks"]["raw"] == "../.."


def test_two_kernels_in_one_derivatives_dataset_are_both_described(raw, tmp_path):
    out = tmp_path / "o"
    nismooth("bids", raw, out, "participant", "--participant-label", "03", "--fwhm", "6")
    nismooth("bids", raw, out, "participant", "--participant-label", "03", "--fwhm", "8")
    gen = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"]
    assert [("FWHM 6 mm" in g["Description"], "FWHM 8 mm" in g["Description"]) for g in gen] == [
        (True, False), (False, True)]
    code, errors, _ = validate(out)
    assert code == 0 and not errors, errors


def test_group_level_still_needs_a_dataset(tmp_path):
    proc = nismooth("bids", tmp_path / "nothing", tmp_path / "o", "group", expect=2)
    assert "nothing does not exist" in proc.stderr
    (tmp_path / "plain").mkdir()
    proc = nismooth("bids", tmp_path / "plain", tmp_path / "o", "group", expect=2)
    assert "not a BIDS dataset" in proc.stderr
