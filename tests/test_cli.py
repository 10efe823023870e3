"The installed package and its `comet-nb` console script, run as a user would."
import json
import re
import shutil
import subprocess
import sys

import pytest

import comet_nb

EXE = shutil.which("comet-nb")


def run(*args, cwd=None):
    assert EXE is not None, "the comet-nb console script is not installed: run `pip install -e .` first"
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_toy_demo_compares_comet_with_plain_training(tmp_path):
    r = run("demo", "--toy", "--seeds", "2", "--epochs", "30", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "plain" in r.stdout and "CoMet" in r.stdout and "higher on 2 of 2 seed(s)" in r.stdout


def test_image_demo_writes_tables_figure_and_galleries(tmp_path, capsys):
    "The README's first command, shrunk to one seed and one epoch: both models, both methods, the tables, the figure and the galleries."
    r = cli(capsys, "demo", "--seeds", "1", "--epochs", "1", "--quiet", "--out", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    tables = [[l for l in t.splitlines() if l.startswith("|")] for t in r.stdout.split("\n\n") if t.startswith("|")]
    levels, harm, vs = tables
    assert levels[0].startswith("| model | method | defective training images | runs | image AUROC (%) | pixel AUROC (%) | NN reference (%)")
    assert harm[0].startswith("| model | runs | baseline@0.1 − baseline@0 (points")
    assert vs[0].startswith("| model | defective training images | CoMet − baseline (points")
    assert len(vs) == 4 and {l.split(" | ")[0][2:] for l in vs[2:]} == {"SimpleNet", "DifferNet"}
    assert all("one seed" in l for l in harm[2:] + vs[2:])
    assert "features: EfficientNet-Lite0, ImageNet weights shipped with the kit" in r.stdout and "contaminants" in r.stdout
    for f in ("results.csv", "runs.csv", "pairs.csv", "training_scores.csv", "scores.png", "gallery-simplenet.png", "gallery-differnet.png"):
        assert (tmp_path / "d" / f).stat().st_size > 0, f
    assert "DeLong" in r.stdout
    first, stamps = r.stdout, {p: p.stat().st_mtime_ns for p in (tmp_path / "d" / "runs").glob("*/metrics.json")}
    assert len(stamps) == 6                                                # per model: clean baseline, baseline and CoMet at 10 %
    r = cli(capsys, "demo", "--seeds", "1", "--epochs", "1", "--quiet", "--out", str(tmp_path / "d"))   # finished runs are reused
    assert r.returncode == 0 and r.stdout.splitlines()[:-1] == first.splitlines()[:-1]                  # all but the timing line
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_sweep_jobs_and_evidence_grid_arguments(tmp_path, capsys):
    "--jobs runs a grid in parallel processes (every run finishes, a second call reuses them); bad --jobs and --grid mixes are refused."
    args = ["sweep", "--categories", "brick", "--models", "simplenet", "--methods", "baseline,comet", "--noise", "0.1", "--seeds", "0",
            "--epochs", "1", "--image-size", "64", "--quiet", "--out", str(tmp_path / "sw")]
    r = cli(capsys, *args, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sw" / "runs").glob("*/metrics.json")}
    assert len(stamps) == 2
    assert cli(capsys, *args).returncode == 0 and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    r = cli(capsys, *args, "--jobs", "0")
    assert r.returncode == 2 and "--jobs 0" in r.stderr
    r = cli(capsys, "sweep", "--grid", "evidence", "--methods", "comet", "--out", str(tmp_path / "ev"))
    assert r.returncode == 2 and "leave out --methods and --noise" in r.stderr
    r = cli(capsys, "demo", "--jobs", "0", "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "--jobs 0" in r.stderr


def test_sweep_grid_evidence_writes_the_report(tmp_path, capsys):
    "The results notebook's sweep from the command line, shrunk (one category, one model, one seed, one epoch): tables, figures, report."
    r = cli(capsys, "sweep", "--grid", "evidence", "--categories", "brick", "--models", "simplenet", "--seeds", "0", "--epochs", "1",
            "--image-size", "64", "--jobs", "2", "--quiet", "--out", str(tmp_path / "ev"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# Does CoMet work?") and "(4) Each part of CoMet contributes" in r.stdout
    assert len(list((tmp_path / "ev" / "runs").glob("*/metrics.json"))) == 2 * 4 + 4      # (baseline, CoMet) × noise levels + Table 5 rows
    for f in ("runs.csv", "pairs.csv", "training_scores.csv", "report.md", "fig5.png", "pixel.png", "scores.png", "kappa.png"):
        assert (tmp_path / "ev" / f).stat().st_size > 0, f
    assert "one seed" in (tmp_path / "ev" / "report.md").read_text()                        # one seed: no interval, and it says so


def test_weights_report_is_reproducible(tmp_path):
    r = run("weights", "--n", "120", "--seed", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "threshold t = Q3 + κ·IQR" in r.stdout and "anomalies" in r.stdout
    assert r.stdout == run("weights", "--n", "120", "--seed", "3").stdout


@pytest.mark.parametrize("args", [[], ["demo"], ["weights"], ["train"], ["eval"], ["export"], ["cache"], ["sweep"]])
def test_help(args):
    r = run(*args, "--help")
    assert r.returncode == 0 and "usage: comet-nb" in r.stdout


def test_version():
    r = run("--version")
    assert r.returncode == 0 and comet_nb.__version__ in r.stdout


@pytest.mark.parametrize("args, msg", [
    (["weights", "--kappa", "-2"], "kappa must be a finite number >= 0"),
    (["weights", "--contamination", "1.5"], "contamination must be in [0, 1)"),
    (["weights", "--n", "0"], "n must be >= 1"),
    (["weights", "--n", "many"], "invalid int value"),
    (["demo", "--seeds", "0"], "--seeds 0: give a number of seeds >= 1"),
    (["demo", "--epochs", "0"], "--epochs 0: give a number of epochs >= 1"),
    (["demo", "--noise", "lots"], "argument --noise: 'lots'"),
    (["demo", "--noise", "0.1,2"], "argument --noise: '2' (in '0.1,2') is not valid: give comma-separated fractions in [0, 1)"),
    (["sweep", "--seeds", "x", "--out", "x"], "argument --seeds: 'x' (in 'x') is not valid: give comma-separated whole numbers"),
    (["sweep", "--noise", "abc", "--out", "x"], "argument --noise: 'abc'"),
    (["sweep", "--models", "simplenet,foo", "--out", "x"], "argument --models: 'foo' (in 'simplenet,foo') is not valid"),
    (["sweep", "--methods", "comet,best", "--out", "x"], "argument --methods: 'best'"),
    (["demo", "--category", "marble"], "invalid choice"),
    (["sweep", "--executor", "slurm", "--out", "x"], "invalid choice"),
    (["train"], "--out is required"),
    (["export"], "the following arguments are required: --checkpoint"),
    (["export", "--checkpoint", "x", "--format", "tflite"], "invalid choice: 'tflite'"),
    (["train", "--overrides", "dim", "--out", "x"], "argument --overrides: 'dim': give k=v pairs"),
    (["train", "--n-tasks", "many", "--out", "x"], "argument --n-tasks: invalid int value: 'many'"),
    (["sweep", "--model", "simplenet", "--out", "x"], "unrecognized arguments: --model"),
    (["fly"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_exit_2_with_a_message(args, msg):
    r = run(*args)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_package_imports_outside_the_repo(tmp_path):
    code = "import comet_nb, comet_nb.scl, comet_nb.uncertainty, comet_nb.meta, comet_nb.toy, comet_nb.cli; print(comet_nb.__version__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == comet_nb.__version__


# ---- train / eval / sweep on a tiny generated dataset, through the installed command


@pytest.fixture(scope="module")
def mv(tmp_path_factory):
    from comet_nb.data import write_mvtec_fixture
    return write_mvtec_fixture(tmp_path_factory.mktemp("data") / "mv", n_train=6)


def cli(capsys, *args):
    "comet-nb in-process (the parsing, messages and exit codes of the console script, without a new interpreter per call)."
    from comet_nb.cli import main
    try: rc = main(list(args))
    except SystemExit as e: rc = e.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


TINY = ["--model", "simplenet", "--epochs", "2", "--image-size", "32", "--batch-size", "2", "--no-pretrained", "--quiet"]


def test_train_eval_end_to_end(mv, tmp_path, capsys):
    r = cli(capsys, "train", "--data", str(mv), "--category", "widget", "--method", "comet", *TINY, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "image AUROC" in r.stdout and "Traceback" not in r.stderr
    import json
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for k in ("i_auroc", "p_auroc", "precision", "recall", "f1", "f1_max", "threshold", "curation", "config", "versions"):
        assert k in m, k
    assert 0 <= m["i_auroc"] <= 1 and m["config"]["method"] == "comet"
    lines = (tmp_path / "run" / "weights.csv").read_text().splitlines()
    assert lines[0].split(",")[:2] == ["path", "weight"] and len(lines) == 1 + 6
    r = cli(capsys, "eval", "--checkpoint", str(tmp_path / "run"), "--data", str(mv), "--category", "widget", "--quiet", "--out", str(tmp_path / "ev"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ev" / "scores.csv").is_file()
    r = cli(capsys, "train", "--data", str(mv), "--category", "widget", *TINY, "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "holds a run already" in r.stderr          # never overwrites silently
    r = cli(capsys, "train", "--data", str(mv), "--category", "widget", "--method", "comet", *TINY[:2], "--epochs", "3", *TINY[4:],
            "--resume", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "3 epochs" in r.stdout


@pytest.mark.parametrize("extra, msg", [
    (["--category", "nope"], "no category 'nope'"),
    (["--category", "widget", "--noise", "-0.1"], "noise"),
    (["--category", "widget", "--noise", "0.9"], "defective"),
    (["--category", "widget", "--epochs", "0"], "epochs"),
])
def test_train_bad_arguments(mv, tmp_path, capsys, extra, msg):
    r = cli(capsys, "train", "--data", str(mv), *TINY[:2], "--no-pretrained", "--quiet", *extra, "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_missing_dataset_and_unwritable_output(tmp_path, capsys):
    r = cli(capsys, "train", "--data", str(tmp_path / "absent"), "--no-pretrained", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and str(tmp_path / "absent") in r.stderr and "Traceback" not in r.stderr
    blocker = tmp_path / "file"; blocker.write_text("not a folder")
    r = cli(capsys, "train", "--data", "demo", "--no-pretrained", "--out", str(blocker / "sub"))
    assert r.returncode in (1, 2) and "cannot write to the output folder" in r.stderr and "Traceback" not in r.stderr


def test_offline_the_default_trains_and_the_papers_backbone_says_what_to_do(tmp_path):
    "Offline: the shipped backbone needs nothing downloaded; the paper's backbone fails with one line that names the way out."
    import os
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    run = lambda *a: subprocess.run([EXE, "train", "--data", "demo", "--model", "simplenet", "--epochs", "1", "--image-size", "64", "--quiet", *a],
                                    capture_output=True, text=True, timeout=300, env=env)
    r = run("--out", str(tmp_path / "shipped"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads((tmp_path / "shipped" / "metrics.json").read_text())["backbone"]["name"] == "efficientnet_lite0"
    r = run("--backbone", "paper", "--out", str(tmp_path / "paper"))
    assert r.returncode == 1 and "--backbone efficientnet_lite0" in r.stderr and "--pretrained" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_offline_the_papers_backbone_fails_at_once(tmp_path):
    "Without HF_HUB_OFFLINE, on a machine that cannot reach the weights' server, the refusal comes in seconds, not after a minute of retries."
    import os, socket, time
    from comet_nb.features import _reachable
    if _reachable("https://huggingface.co/"): pytest.skip("this machine reaches huggingface.co: the offline path cannot be shown here")
    t0 = time.perf_counter()
    r = subprocess.run([EXE, "train", "--data", "demo", "--model", "simplenet", "--backbone", "wrn50", "--epochs", "1", "--quiet",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300, env={**os.environ, "COMET_NB_CACHE": str(tmp_path / "c")})
    assert r.returncode == 1 and "cannot be reached" in r.stderr and "--pretrained" in r.stderr, r.stderr
    assert time.perf_counter() - t0 < 45


def test_eval_with_a_checkpoint_of_another_kind(tmp_path, capsys):
    import torch
    (tmp_path / "run").mkdir(); torch.save({"hello": 1}, tmp_path / "run" / "checkpoint.pt")
    r = cli(capsys, "eval", "--checkpoint", str(tmp_path / "run"), "--data", "demo")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


def test_sweep_resumes_and_writes_tables(mv, tmp_path, capsys):
    args = ["sweep", "--data", str(mv), "--categories", "widget", "--models", "simplenet", "--methods", "baseline,no-scl-data",
            "--noise", "0", "--epochs", "1", "--image-size", "32", "--no-pretrained", "--quiet", "--out", str(tmp_path / "sw")]
    r = cli(capsys, *args)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sw" / "results.csv").is_file() and (tmp_path / "sw" / "noise.png").is_file()
    assert "Table 5" in (tmp_path / "sw" / "tables.md").read_text()
    first = (tmp_path / "sw" / "results.csv").read_text()
    kept = tmp_path / "sw" / "runs" / "widget-simplenet-no-scl-data-noise0-seed0" / "metrics.json"
    stamp = kept.stat().st_mtime_ns
    (tmp_path / "sw" / "runs" / "widget-simplenet-baseline-noise0-seed0" / "metrics.json").unlink()   # as if killed before the end
    r = cli(capsys, *args)
    assert r.returncode == 0, r.stderr
    assert kept.stat().st_mtime_ns == stamp                                   # the finished run was skipped
    assert (tmp_path / "sw" / "runs" / "widget-simplenet-baseline-noise0-seed0" / "metrics.json").is_file()   # the other one redone
    assert (tmp_path / "sw" / "results.csv").read_text().splitlines()[0] == first.splitlines()[0]


def test_ray_executor_without_ray_says_how_to_install_it(mv, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)                 # as if Ray were not installed: `import ray` fails
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    r = cli(capsys, "sweep", "--data", str(mv), "--categories", "widget", "--models", "simplenet", "--methods", "baseline", "--noise", "0",
            "--epochs", "1", "--image-size", "32", "--no-pretrained", "--quiet", "--executor", "ray", "--out", str(tmp_path / "sw"))
    assert r.returncode == 1 and 'pip install "comet_nb[ray]"' in r.stderr and "Traceback" not in r.stderr, r.stderr
    import os
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"             # switched off before Ray would have been imported


@pytest.mark.slow
def test_ray_executor_matches_the_local_one(mv, tmp_path, capsys):
    """A tiny sweep on a private local Ray instance gives the local executor's results: same rows, metrics within 1e-9.
    Ray gives each task one CPU and so one thread; the local runs are pinned to one thread too. (With two threads, float sums
    run in another order: after two epochs the thresholds here differ by ~2e-3, the AUROCs by ~1e-5.)"""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'comet_nb[ray]'")
    import csv
    import torch
    threads = torch.get_num_threads()
    args = ["sweep", "--data", str(mv), "--categories", "widget", "--models", "simplenet", "--methods", "baseline,comet",
            "--noise", "0,0.2", "--epochs", "2", "--image-size", "32", "--no-pretrained", "--quiet"]
    rows = {}
    for ex in ("local", "ray"):
        torch.set_num_threads(1)
        try: r = cli(capsys, *args, "--executor", ex, "--out", str(tmp_path / ex))
        finally: torch.set_num_threads(threads)
        assert r.returncode == 0, r.stderr
        rows[ex] = list(csv.DictReader(open(tmp_path / ex / "results.csv")))
    assert len(rows["local"]) == len(rows["ray"]) == 4
    for a, b in zip(rows["local"], rows["ray"]):
        assert [a[k] for k in ("category", "model", "method", "noise", "seed")] == [b[k] for k in ("category", "model", "method", "noise", "seed")]
        for k in ("i_auroc", "p_auroc", "precision", "recall", "f1", "threshold", "n_flagged"):
            assert (a[k] == b[k]) if a[k] in ("", None) else abs(float(a[k]) - float(b[k])) <= 1e-9, (k, a, b)


def test_cli_format_choices_match_the_experiments_module():
    "The parser keeps its own copy (so --help never imports torch); it must not drift from the library's."
    from comet_nb.cli import _FORMATS
    from comet_nb.experiments import FORMATS
    assert _FORMATS == FORMATS


def test_a_backbone_the_model_lacks_exits_2(tmp_path, capsys):
    r = cli(capsys, "train", "--model", "simplenet", "--backbone", "alexnet", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "--backbone alexnet is not valid: choose 'efficientnet_lite0' or 'wrn50'" in r.stderr
    assert not (tmp_path / "x" / "config.json").exists()


def test_demo_help_and_toy_output_folder(tmp_path):
    r = run("demo", "--help")
    assert r.returncode == 0 and "%%" not in r.stdout and "10%" in r.stdout
    r = run("demo", "--toy", "--seeds", "1", "--epochs", "5", "--out", str(tmp_path / "toy"))
    assert r.returncode == 0, r.stderr
    written = (tmp_path / "toy" / "toy.txt").read_text()
    assert written.strip() and written.splitlines()[0] in r.stdout


def test_sweep_checks_every_argument_before_any_work(tmp_path, capsys):
    "A bad value anywhere in the grid stops the sweep before its first run trains (no folder, no runs)."
    from comet_nb.sweeps import run_sweep, sweep_grid
    runs = sweep_grid(["brick"], ["simplenet"], ["baseline"], [0.1, 1.5], [0], epochs=1, image_size=64)
    with pytest.raises(ValueError, match=r"run brick-simplenet-baseline-noise1.5-seed0: noise = 1.5"): run_sweep(runs, tmp_path / "sw")
    assert not (tmp_path / "sw").exists()
    r = cli(capsys, "sweep", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "sw2"))
    assert r.returncode == 2 and "--data" in r.stderr and not (tmp_path / "sw2").exists()


def test_messages_speak_in_flags(mv, tmp_path, capsys):
    base = ["train", "--data", str(mv), "--category", "widget", *TINY, "--out", str(tmp_path / "run")]
    assert cli(capsys, *base).returncode == 0
    r = cli(capsys, *base)
    assert r.returncode == 2 and "--resume" in r.stderr and "--overwrite" in r.stderr and "=True" not in r.stderr, r.stderr
    r = cli(capsys, "train", "--data", str(mv), "--category", "widget", "--model", "simplenet", "--epochs", "0", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "--epochs 0 is not valid" in r.stderr and "None" not in r.stderr, r.stderr
    r = cli(capsys, *base[:-2], "--checkpoint-every", "0", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "--checkpoint-every 0" in r.stderr and not (tmp_path / "y").exists(), r.stderr


def test_unlabelled_tiny_images_get_a_warning_and_a_summary_of_what_is_known(tmp_path):
    "A plain folder of 8×8 images: one warning line (no source code), then what the weights found — no 'n/a' placeholders."
    import numpy as np
    from PIL import Image
    folder = tmp_path / "imgs"; folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(12): Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"part{k:02d}.png")
    r = run("train", "--data", str(folder), *TINY, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    tiny = [l for l in r.stderr.splitlines() if "smaller than 32 px" in l]
    assert len(tiny) == 1 and "8×8" in tiny[0] and tiny[0].startswith("comet-nb train: warning: "), r.stderr
    assert "warnings.warn" not in r.stderr and "Warning:" not in r.stderr, r.stderr          # one line each, no source code
    assert "n/a" not in r.stdout and "no labelled test images" in r.stdout, r.stdout
    assert "of 12 training images down-weighted" in r.stdout and "Threshold τ = " in r.stdout and "part" in r.stdout
    assert (tmp_path / "run" / "gallery.png").stat().st_size > 0 and "gallery.png" in r.stdout


# ---- flags generated from RunConfig, --config with overrides, --print-config


def test_every_config_field_is_a_flag_of_train_and_sweep():
    "Generated from the dataclass: a field added to RunConfig is a flag at once (train), or shared by every run (sweep)."
    import dataclasses
    from comet_nb.cli import build_parser, config_flags, flag_of
    from comet_nb.sweeps import SWEPT
    from comet_nb.experiments import RunConfig
    names = [f.name for f in dataclasses.fields(RunConfig)]
    parse = build_parser().parse_args
    helps = {c: build_parser()._subparsers._group_actions[0].choices[c].format_help() for c in ("train", "sweep")}
    assert list(parse(["train"]).config_fields) == names                  # one flag per field, in order
    shared = parse(["sweep", "--out", "x"]).config_fields
    assert set(shared) | set(SWEPT) == set(names) and not set(shared) & set(SWEPT)   # shared by the runs, or set by the lists
    for n in names: assert re.search(rf"{flag_of(n)}\b(?!-)", helps["train"]), n
    for flag in ("--gamma", "--lambda0", "--n-tasks", "--pixel-maps", "--cache", "--overrides", "--sigma"): assert flag in helps["train"]
    for flag in ("--kappa", "--lr", "--batch-size", "--gamma", "--n-tasks"): assert flag in helps["sweep"]
    Wider = dataclasses.make_dataclass("Wider", [("warmup_epochs", int, dataclasses.field(default=3))], bases=(RunConfig,))
    import argparse
    p = argparse.ArgumentParser()
    config_flags(p, Wider)
    assert p.parse_args(["--warmup-epochs", "7"]).warmup_epochs == 7 and "--warmup-epochs" in p.format_help()


def test_help_imports_no_torch():
    "The top-level help answers at once: the generated flags are built only when train or sweep is used."
    code = ("import sys, contextlib, io\nfrom comet_nb.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    try: main(['--help'])\n    except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr


def test_names_moved_to_sweeps_still_import_from_cli():
    "For one release, the grid machinery's old names in comet_nb.cli are comet_nb.sweeps' objects, with a warning naming the new place."
    import comet_nb.cli as cli
    import comet_nb.sweeps as sweeps
    for old, new in [("METHODS", "RECIPES"), ("COLUMNS", "COLUMNS"), ("EXECUTORS", "EXECUTORS"), ("SWEPT", "SWEPT"),
                     ("sweep_grid", "sweep_grid"), ("train_one", "train_one"), ("run_sweep", "run_sweep"),
                     ("pool_runs", "pool_runs"), ("paper_tables", "paper_tables"), ("noise_plot", "noise_plot"),
                     ("ray_runs", "ray_runs")]:
        with pytest.warns(DeprecationWarning, match=rf"comet_nb\.cli\.{old} moved to comet_nb\.sweeps\.{new}"):
            assert getattr(cli, old) is getattr(sweeps, new)
    with pytest.warns(DeprecationWarning):
        from comet_nb.cli import sweep_grid
    assert sweep_grid is sweeps.sweep_grid
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"): cli.nothing_here


def test_sweep_methods_come_from_the_trainers_table():
    "One list of method names (comet_nb.meta.METHODS): the sweep's recipes, --methods and the results' ablations follow it."
    from comet_nb.experiments import RunConfig
    from comet_nb.meta import METHODS
    from comet_nb.results import ABLATIONS
    from comet_nb.sweeps import RECIPES
    before = {"baseline": dict(method="baseline"), "comet": dict(method="comet"), "no-meta": dict(method="comet", use_meta=False),
              "no-scl": dict(method="comet", scl_data=False, scl_model=False), "no-scl-data": dict(method="comet", scl_data=False),
              "comet-pooled": dict(method="comet", sigma="pooled")}      # the sweep's recipes before they were derived
    assert list(RECIPES) == list(METHODS) == list(before)
    assert RECIPES == before and all(RunConfig(**RECIPES[k]) == RunConfig(**v) for k, v in before.items())
    assert ABLATIONS == ("no-meta", "no-scl", "no-scl-data", "comet-pooled")
    from comet_nb.cli import build_parser
    sweep = build_parser()._subparsers._group_actions[0].choices["sweep"].format_help()
    assert "baseline,comet): baseline, comet, no-meta, no-scl, no-scl-data, comet-pooled" in " ".join(sweep.split())


def test_print_config_round_trips_through_config(tmp_path, capsys):
    r = cli(capsys, "train", "--model", "differnet", "--gamma", "0.25", "--lambda0", "0.001", "--n-tasks", "5", "--no-nn-reference",
            "--overrides", "n_blocks=2", "--print-config")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert (cfg["model"], cfg["gamma"], cfg["lambda0"], cfg["n_tasks"], cfg["nn_reference"]) == ("differnet", 0.25, 0.001, 5, False)
    assert cfg["overrides"] == {"n_blocks": 2} and cfg["backbone"] == "efficientnet_lite0"   # the default backbone, not an old run's
    (tmp_path / "c.json").write_text(r.stdout)
    again = cli(capsys, "train", "--config", str(tmp_path / "c.json"), "--print-config")
    assert json.loads(again.stdout) == cfg                                  # the printed config is a file for --config
    varied = json.loads(cli(capsys, "train", "--config", str(tmp_path / "c.json"), "--seed", "7", "--print-config").stdout)
    assert {k for k in cfg if cfg[k] != varied[k]} == {"seed"}
    assert list(tmp_path.iterdir()) == [tmp_path / "c.json"]                # nothing trained, nothing written


def test_sweep_print_config_applies_the_shared_flags(tmp_path, capsys):
    r = cli(capsys, "sweep", "--models", "simplenet", "--methods", "baseline,no-meta", "--noise", "0.1", "--seeds", "0,1",
            "--kappa", "2", "--lr", "0.01", "--batch-size", "8", "--print-config", "--out", str(tmp_path / "sw"))
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)
    assert len(runs) == 4 and not (tmp_path / "sw").exists()
    assert {(c["kappa"], c["lr"], c["batch_size"]) for c in runs.values()} == {(2.0, 0.01, 8)}
    assert sorted((c["method"], c["use_meta"], c["seed"]) for c in runs.values()) == [
        ("baseline", True, 0), ("baseline", True, 1), ("comet", False, 0), ("comet", False, 1)]


def test_export_command_writes_an_onnx_file_onnxruntime_runs(mv, tmp_path, capsys):
    r = cli(capsys, "train", "--data", str(mv), "--category", "widget", *TINY, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    r = cli(capsys, "export", "--checkpoint", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert f"wrote {tmp_path / 'run' / 'detector.onnx'} (onnx" in r.stdout and "input: image: float32 (batch, 3, 32, 32)" in r.stdout
    import numpy as np
    import onnxruntime
    sess = onnxruntime.InferenceSession(str(tmp_path / "run" / "detector.onnx"), providers=["CPUExecutionProvider"])
    score, amap = sess.run(None, {"image": np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)})
    assert score.shape == (3,) and amap.shape == (3, 32, 32)
    r = cli(capsys, "export", "--checkpoint", str(tmp_path / "run"), "--format", "torchscript", "--out", str(tmp_path / "d.onnx"))
    assert r.returncode == 2 and "does not end in .pt" in r.stderr and "Traceback" not in r.stderr


def test_eval_takes_the_weight_file_where_it_is_now(mv, tmp_path, capsys):
    "A run trained on a local weight file is evaluated on a machine where the file sits elsewhere: --pretrained FILE."
    from comet_nb.features import lite0_weight_file
    weights = tmp_path / "w" / "lite0.pth"
    weights.parent.mkdir()
    shutil.copy(lite0_weight_file(), weights)
    small = ["--model", "simplenet", "--epochs", "1", "--image-size", "32", "--batch-size", "2", "--quiet"]
    r = cli(capsys, "train", "--data", str(mv), "--category", "widget", *small, "--pretrained", str(weights), "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    moved = tmp_path / "moved.pth"
    weights.rename(moved)
    ev = ["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(mv), "--category", "widget", "--quiet"]
    r = cli(capsys, *ev)
    assert r.returncode == 1 and "cannot rebuild the backbone" in r.stderr, r.stderr
    r = cli(capsys, *ev, "--pretrained", str(moved))
    assert r.returncode == 0 and "image AUROC" in r.stdout, r.stderr


def test_a_device_this_machine_lacks_stops_before_any_work(tmp_path, capsys):
    r = cli(capsys, "train", "--device", "cuda:7", "--no-pretrained", "--out", str(tmp_path / "run"))
    assert r.returncode in (1, 2) and "cuda:7" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_cache_lists_and_prunes_only_its_entries(tmp_path, capsys):
    from comet_nb.data import ADDataset, write_mvtec_fixture
    from comet_nb.experiments import load_split
    from comet_nb.features import EfficientNetPatches, extract_features
    root = write_mvtec_fixture(tmp_path / "mv", n_train=3)
    folder = tmp_path / "cache"
    ext = EfficientNetPatches(32, pretrained=False, dim=16)
    for size in (32, 40):                                                   # two entries
        extract_features(ADDataset(load_split(str(root), "widget").train, size=size), ext, cache=str(folder))
    (folder / "notes.txt").write_text("mine")                               # not the cache's
    r = cli(capsys, "cache", "--dir", str(folder))
    assert r.returncode == 0 and r.stdout.startswith("2 entries, ") and len(r.stdout.splitlines()) == 3, r.stdout
    r = cli(capsys, "cache", "--dir", str(folder), "--max-size", "0", "--dry-run")
    assert r.stdout.startswith("would remove 2 entries") and cli(capsys, "cache", "--dir", str(folder)).stdout.startswith("2 entries")
    r = cli(capsys, "cache", "--dir", str(folder), "--prune")                # nothing is 30 days old
    assert r.returncode == 0 and r.stdout.startswith("removed 0 entries"), r.stdout
    r = cli(capsys, "cache", "--dir", str(folder), "--max-size", "0")
    assert r.returncode == 0 and r.stdout.startswith("removed 2 entries")
    assert cli(capsys, "cache", "--dir", str(folder)).stdout.startswith("0 entries") and (folder / "notes.txt").read_text() == "mine"
    for args, msg in [(["--max-size", "lots"], "--max-size = 'lots' is not a size"), (["--older-than", "-1"], "--older-than -1"),
                      (["--dir", str(tmp_path / "none")], "no such folder")]:
        r = cli(capsys, "cache", "--dir", str(folder), *args) if args[0] != "--dir" else cli(capsys, "cache", *args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_eval_maps_draws_overlays_and_checks_their_number(mv, tmp_path, capsys):
    r = cli(capsys, "train", "--data", str(mv), "--category", "widget", *TINY, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    ev = ["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(mv), "--category", "widget", "--quiet", "--maps"]
    r = cli(capsys, *ev, "--overlays", "1", "--out", str(tmp_path / "ev"))
    assert r.returncode == 0 and "AUPRO" in r.stdout and "overlays in" in r.stdout, r.stdout + r.stderr
    assert list((tmp_path / "ev" / "overlays").glob("*.png"))
    assert (tmp_path / "run" / "history.csv").is_file() and (tmp_path / "run" / "curves.png").is_file()
    r = cli(capsys, *ev, "--overlays", "-1", "--out", str(tmp_path / "ev2"))
    assert r.returncode == 2 and "--overlays -1 is not valid" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_sweep_config_and_print_config_checks(tmp_path, capsys):
    "A saved config as the sweep's base: its CoMet switches are --methods' job; --print-config needs no --out."
    from comet_nb.experiments import RunConfig
    RunConfig(sigma="pooled", use_meta=False).to_json(tmp_path / "c.json")
    r = cli(capsys, "sweep", "--config", str(tmp_path / "c.json"), "--print-config")
    assert r.returncode == 2 and '"use_meta": false, "sigma": "pooled"' in r.stderr and "--methods" in r.stderr, r.stderr
    RunConfig(kappa=2.5, n_tasks=5).to_json(tmp_path / "d.json")
    r = cli(capsys, "sweep", "--config", str(tmp_path / "d.json"), "--models", "simplenet", "--print-config")
    assert r.returncode == 0, r.stderr
    assert {(c["kappa"], c["n_tasks"]) for c in json.loads(r.stdout).values()} == {(2.5, 5)}
    r = cli(capsys, "sweep", "--models", "simplenet")
    assert r.returncode == 2 and "--out is required" in r.stderr
    r = cli(capsys, "train", "--config", str(tmp_path / "d.json"), "--method", "baseline", "--no-meta", "--print-config")
    assert r.returncode == 2 and "--no-meta switch off parts of CoMet; they need --method comet" in r.stderr, r.stderr


def test_a_bad_device_in_a_config_leaves_the_run_it_would_overwrite(mv, tmp_path, capsys):
    r = cli(capsys, "train", "--data", str(mv), "--category", "widget", *TINY, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps(dict(cfg, device="cuda:3")))
    r = cli(capsys, "train", "--config", str(tmp_path / "c.json"), "--overwrite", "--quiet", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "cuda:3" in r.stderr, r.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before       # nothing removed


def test_library_messages_become_flags_that_parse():
    from comet_nb.cli import flag_words
    assert flag_words("Give n_tasks >= 3, sigma='pooled', or scl_model=False.") == "Give n_tasks >= 3, --sigma 'pooled', or --no-scl-model."
    assert flag_words("'epochs' has a field of its own: set RunConfig(epochs=...) instead.").endswith("set --epochs ... instead.")
