"The explorer as a library user and the widget code meet it: bad settings, a failed run, κ without the model, restarts, other datasets."
import time

import numpy as np
import pytest
from PIL import Image

from comet_nb.explorer import Explorer, ExplorerSession, app_notebook, check_settings, kappa_weights


@pytest.mark.parametrize("bad, msg", [
    (dict(noise=0.6), "noise slider goes from 0 to 0.5"), (dict(noise=-0.1), "noise slider"), (dict(kappa=7), "kappa slider goes from 0 to 5"),
    (dict(gamma="big"), "gamma = 'big'"), (dict(epochs=0), "epochs slider goes from 1 to 200"), (dict(epochs=3.5), "whole number"),
    (dict(lambda0=0.0), "from 1e-6 to 1"), (dict(model="patchcore"), "not one of differnet, simplenet"), (dict(method="maml"), "not 'comet' or 'baseline'"),
    (dict(noise=True), "noise = True")])
def test_bad_settings_get_clear_errors(bad, msg):
    with pytest.raises(ValueError, match=msg): check_settings(**bad)
    with pytest.raises(ValueError, match=msg): Explorer(**bad, device="cpu", autostart=False)


def test_unknown_category_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="its categories are: brick, grass, gravel"): Explorer(category="carpet", device="cpu", autostart=False)
    with pytest.raises(FileNotFoundError, match="nowhere"): Explorer(data=tmp_path / "nowhere", device="cpu", autostart=False)


@pytest.fixture
def photos(tmp_path):
    "A plain folder of 24 small photos, as a user would point the explorer at (no test split, no labels)."
    rng = np.random.default_rng(0)
    for i in range(24): Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"img{i:02d}.png")
    return tmp_path


def test_a_plain_folder_trains_and_noise_it_cannot_make_is_shown(photos):
    s = ExplorerSession(photos, device="cpu")
    assert s.categories == [None]
    ex = Explorer(data=photos, noise=0.0, epochs=1, device="cpu", autostart=False, gallery=4)
    ex.start(); ex.wait()
    assert ex.state["n_train"] == 24 and ex.state["n_contaminants"] == 0 and ex.state["epoch"] == 1
    assert ex.scores_image.value[:4] == b"\x89PNG" and ex.gallery_image.value[:4] == b"\x89PNG"
    ex.noise.value = 0.1                                       # no defective images to plant: the run fails, the page says why
    with pytest.raises(ValueError, match="unlabeled: it is uncurated already"): ex.wait()
    assert ex.status.value.startswith("<span") and "error:" in ex.status.value and "uncurated already" in ex.status.value


@pytest.fixture(scope="module")
def trained():
    ex = Explorer(category="brick", noise=0.1, epochs=1, device="cpu", autostart=False)
    ex.start(); ex.wait()
    return ex


def test_kappa_needs_no_model(trained, monkeypatch):
    ex = trained
    def refuse(*a, **k): raise AssertionError("κ ran the model")
    monkeypatch.setattr(ex.run["trainer"].model, "forward", refuse)
    before = ex.scores_image.value
    for kappa in (0.0, 0.5, 4.0, 1.5):
        ex.kappa.value = kappa
        k = kappa_weights(ex.run["history"][-1]["scores"], kappa)
        assert ex.state["kappa"] == kappa and ex.state["t"] == pytest.approx(k["t"]) and ex.state["n_flagged"] == k["n_flagged"]
    assert ex.scores_image.value == before                     # back at κ = 1.5: the same figure, byte for byte


def test_a_new_setting_stops_the_run_in_progress(trained):
    ex = trained
    ex.epochs.value = 200                                     # starts a long run in the background
    t0 = time.monotonic()
    while not (ex.run and ex.run["trainer"].target_epochs == 200 and ex.run["rounds"]) and time.monotonic() - t0 < 300: time.sleep(0.05)
    long_run, first = ex.run, ex._thread
    ex.gamma.value = 1.0                                      # a new setting: that run stops within a round, a new one starts
    assert not first.is_alive()
    assert ex._thread is not first
    ex.stop(); ex.wait()
    assert len(long_run["history"]) < 200
    assert not ex._thread.is_alive()


def test_app_notebook_passes_settings_through():
    nb = app_notebook(data="some/folder", noise=0.2, pretrained=True)
    assert nb.cells[-1].source.splitlines()[-1] == "Explorer(data='some/folder', noise=0.2, pretrained=True).show()"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def _cli(*argv):
    import contextlib, io
    from comet_nb.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def test_explore_command_refuses_bad_settings_before_serving(tmp_path, monkeypatch):
    import subprocess
    def no_server(*a, **k): raise AssertionError("a server was started")
    monkeypatch.setattr(subprocess, "Popen", no_server)
    for argv, msg in [(("--noise", "0.9"), "noise slider goes from 0 to 0.5"), (("--category", "carpet"), "its categories are: brick, grass, gravel"),
                      (("--data", str(tmp_path / "nowhere")), "data folder not found"), (("--epochs", "0"), "epochs slider goes from 1 to 200")]:
        rc, _, err = _cli("explore", *argv, "--no-pretrained")
        assert rc == 2 and err.startswith("comet-nb explore: error: ") and msg in err, (argv, err)


def test_explore_command_without_voila_says_how_to_install_it(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "voila" else real(name, *a))
    rc, _, err = _cli("explore", "--no-pretrained")
    assert rc == 1 and "Voilà, which is not installed here: pip install voila" in err, err
