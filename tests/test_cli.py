"The installed package and its `comet-nb` console script, run as a user would."
import shutil
import subprocess
import sys

import pytest

import comet_nb

EXE = shutil.which("comet-nb")


def run(*args, cwd=None):
    assert EXE is not None, "the comet-nb console script is not installed: run `pip install -e .` first"
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_demo_compares_comet_with_plain_training(tmp_path):
    r = run("demo", "--seeds", "2", "--epochs", "30", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "plain" in r.stdout and "CoMet" in r.stdout and "higher on 2 of 2 seed(s)" in r.stdout


def test_weights_report_is_reproducible(tmp_path):
    r = run("weights", "--n", "120", "--seed", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "threshold t = Q3 + κ·IQR" in r.stdout and "anomalies" in r.stdout
    assert r.stdout == run("weights", "--n", "120", "--seed", "3").stdout


@pytest.mark.parametrize("args", [[], ["demo"], ["weights"]])
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
    (["demo", "--seeds", "0"], "seeds must be >= 1"),
    (["demo", "--epochs", "0"], "epochs must be >= 1"),
    (["train"], "invalid choice"),
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
