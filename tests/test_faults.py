"Fault tests: runs killed with SIGKILL at seeded random moments resume to the same result, and nothing half-written is ever trusted."
import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest
import torch

EXE = shutil.which("comet-nb")


@pytest.fixture(scope="module")
def mv(tmp_path_factory):
    from comet_nb.data import write_mvtec_fixture
    return write_mvtec_fixture(tmp_path_factory.mktemp("data") / "mv", n_train=8)


def train_args(mv, out, *extra):
    return [EXE, "train", "--data", str(mv), "--category", "widget", "--model", "simplenet", "--method", "comet", "--noise", "0.2",
            "--epochs", "8", "--image-size", "32", "--batch-size", "2", "--no-pretrained", "--quiet",
            "--checkpoint-every", "1", *extra, "--out", str(out)]   # every epoch: kills land between checkpoints, not before the first


def env(cache=None):
    "One thread (the same float sums in every process); a private feature cache when given, so a run extracts features again."
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if cache is not None: e["COMET_NB_CACHE"] = str(cache)
    return e


def complete_files_only(folder, tmp_allowed=False):
    "Every result file in a run folder is whole: JSON parses, CSVs have their header, the checkpoint loads; no temporary file is left."
    for p in folder.iterdir():
        if p.name.endswith(".tmp"):
            assert tmp_allowed, f"temporary file left behind: {p.name}"
            continue
        if p.suffix == ".json": json.loads(p.read_text())
        if p.suffix == ".csv": assert p.read_text().splitlines()[0].startswith(("path,", "category,", "epoch,"))   # epoch: history.csv
        if p.name == "checkpoint.pt": assert torch.load(p, weights_only=True)["format"] == "comet_nb.CoMet"


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result(mv, tmp_path):
    t0 = time.perf_counter()
    r = subprocess.run(train_args(mv, tmp_path / "whole"), capture_output=True, text=True, env=env(tmp_path / "cache-whole"), timeout=600)
    assert r.returncode == 0, r.stderr
    T = time.perf_counter() - t0                                     # a cold run: start-up, feature extraction, 8 epochs, files
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    ref = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    rnd, hits = random.Random(20261129), 0
    for k in range(4):                                               # four kills at seeded random moments of a cold run
        out = tmp_path / f"cut{k}"
        p = subprocess.Popen(train_args(mv, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(tmp_path / f"cache{k}"))
        time.sleep(rnd.uniform(0.3, 0.9) * T)
        hits += p.poll() is None                                     # still running: the kill interrupts it
        p.send_signal(signal.SIGKILL); p.wait()
        if out.is_dir(): complete_files_only(out, tmp_allowed=True)  # killed mid-write: the temporary file may remain, never a torn result
        resume = (out / "checkpoint.pt").is_file()
        r = subprocess.run(train_args(mv, out, *(["--resume"] if resume else [])), capture_output=True, text=True,
                           env=env(tmp_path / f"cache{k}"), timeout=600)
        assert r.returncode == 0, (k, resume, r.stderr)
        complete_files_only(out)                                     # a killed run's temporary files are cleared by the next one
        got = json.loads((out / "metrics.json").read_text())
        for key in ("i_auroc", "p_auroc", "threshold", "f1", "precision", "recall", "curation"):
            assert got[key] == whole[key], (k, key, got[key], whole[key])
        ck = torch.load(out / "checkpoint.pt", weights_only=True)
        assert [h["loss"] for h in ck["history"]] == [h["loss"] for h in ref["history"]]
        for name, v in ref["model"].items(): assert torch.equal(v, ck["model"][name]), (k, name)
    assert hits >= 3, f"only {hits} of 4 kills hit a running process: the run is too short for this test"


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_runs(mv, tmp_path):
    args = [EXE, "sweep", "--data", str(mv), "--categories", "widget", "--models", "simplenet", "--methods", "baseline,comet,no-meta",
            "--noise", "0", "--epochs", "20", "--image-size", "32", "--no-pretrained", "--quiet", "--out", str(tmp_path / "sw")]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())   # 20 epochs: the later runs take seconds
    first = tmp_path / "sw" / "runs" / "widget-simplenet-baseline-noise0-seed0" / "metrics.json"
    deadline = time.time() + 300
    while not first.is_file() and time.time() < deadline and p.poll() is None: time.sleep(0.05)
    assert first.is_file(), "the first run never finished"
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL); p.wait()
    stamp, content = first.stat().st_mtime_ns, first.read_text()
    assert not (tmp_path / "sw" / "results.csv").exists()           # the sweep's CSV is written at the end, whole
    r = subprocess.run(args, capture_output=True, text=True, env=env(), timeout=600)
    assert r.returncode == 0, r.stderr
    assert first.stat().st_mtime_ns == stamp and first.read_text() == content   # the finished run was not redone
    rows = (tmp_path / "sw" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
    for d in (tmp_path / "sw" / "runs").iterdir(): complete_files_only(d)
