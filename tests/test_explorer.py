"The explorer as a library user and the widget code meet it: bad settings, a failed run, κ without the model, restarts, other datasets."
import time

import numpy as np
import pytest
from PIL import Image

from comet_nb import explorer
from comet_nb.explorer import Explorer, ExplorerSession, app_notebook, check_settings, gamma_effect, kappa_weights, lambda_figure


@pytest.mark.parametrize("bad, msg", [
    (dict(noise=0.6), "noise slider goes from 0 to 0.5"), (dict(noise=-0.1), "noise slider"), (dict(kappa=7), "kappa slider goes from 0 to 5"),
    (dict(gamma="big"), "gamma = 'big'"), (dict(epochs=0), "epochs slider goes from 1 to 200"), (dict(epochs=3.5), "whole number"),
    (dict(lambda0=0.0), "from 1e-6 to 1"), (dict(model="patchcore"), "not one of differnet, simplenet"), (dict(method="maml"), "not 'comet' or 'baseline'"),
    (dict(noise=True), "noise = True")])
def test_bad_settings_get_clear_errors(bad, msg):
    with pytest.raises(ValueError, match=msg): check_settings(**bad)
    with pytest.raises(ValueError, match=msg): Explorer(**bad, device="cpu", pretrained=False, autostart=False)


def test_numpy_numbers_are_settings_and_gallery_dpi_are_checked():
    check_settings(noise=np.float32(0.2), epochs=np.int64(3), kappa=np.float64(2.0))       # what a slider or an array hands over
    with pytest.raises(ValueError, match="gallery = -1: give a whole number >= 0"): Explorer(gallery=-1, device="cpu", pretrained=False, autostart=False)
    with pytest.raises(ValueError, match="dpi = 5: give a whole number >= 20"): Explorer(dpi=5, device="cpu", pretrained=False, autostart=False)


def test_unknown_category_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="its categories are: brick, grass, gravel"): Explorer(category="carpet", device="cpu", pretrained=False, autostart=False)
    with pytest.raises(FileNotFoundError, match="nowhere"): Explorer(data=tmp_path / "nowhere", device="cpu", pretrained=False, autostart=False)


@pytest.fixture
def photos(tmp_path):
    "A plain folder of 24 small photos, as a user would point the explorer at (no test split, no labels)."
    rng = np.random.default_rng(0)
    for i in range(24): Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"img{i:02d}.png")
    return tmp_path


def test_a_plain_folder_trains_and_noise_it_cannot_make_is_shown(photos):
    s = ExplorerSession(photos, device="cpu", pretrained=False)
    assert s.categories == [None]
    ex = Explorer(data=photos, noise=0.0, epochs=1, device="cpu", pretrained=False, autostart=False, gallery=4)
    ex.start(); ex.wait(600)
    assert ex.state["n_train"] == 24 and ex.state["n_contaminants"] == 0 and ex.state["epoch"] == 1
    assert ex.scores_image.value[:4] == b"\x89PNG" and ex.gallery_image.value[:4] == b"\x89PNG"
    assert ex.run["test"] is None and ex.session.results == []          # no labelled test images: no point of Fig. 5, and no error
    ex.noise.value = 0.1                                       # no defective images to plant: the run fails, the page says why
    with pytest.raises(ValueError, match="unlabeled: it is uncurated already"): ex.wait(600)
    assert ex.status.value.startswith("<span") and "error:" in ex.status.value and "uncurated already" in ex.status.value


@pytest.fixture(scope="module")
def trained():
    ex = Explorer(category="brick", noise=0.1, epochs=1, device="cpu", pretrained=False, autostart=False)
    ex.start(); ex.wait(600)
    return ex


def test_kappa_needs_no_model(trained, monkeypatch):
    ex = trained
    def refuse(*a, **k): raise AssertionError("κ ran the model")
    monkeypatch.setattr(ex.run["trainer"].model, "forward", refuse)
    before = ex.scores_image.value
    for kappa in (0.0, 0.5, 4.0, 1.5):
        ex.kappa.value = kappa
        k = kappa_weights(ex.run["scores"], kappa)                    # the trained model's scores, cached at the end of the run
        assert ex.state["kappa"] == kappa and ex.state["t"] == pytest.approx(k["t"]) and ex.state["n_flagged"] == k["n_flagged"]
    assert ex.scores_image.value == before                     # back at κ = 1.5: the same figure, byte for byte


def test_a_new_setting_stops_the_run_in_progress(trained):
    ex = trained
    ex.epochs.value = 200                                     # starts a long run in the background
    t0 = time.monotonic()
    while not (ex.run and ex.run["rounds"] and ex.run["trainer"].target_epochs == 200) and time.monotonic() - t0 < 300: time.sleep(0.05)
    assert ex.run and ex.run["rounds"], "the long run never got going"
    long_run, first = ex.run, ex._thread
    ex.gamma.value = 1.0                                      # a new setting: returns at once; that run stops within a round, a new one starts
    assert ex._thread is not first and ex.run is None and ex.state == {}   # the old figures no longer count
    ex.stop(); ex.wait(300)
    assert not first.is_alive() and long_run["stopped"] and len(long_run["history"]) < 200
    assert not ex._thread.is_alive()


def test_wait_times_out_instead_of_hanging(trained):
    ex = trained
    ex.epochs.value = 200; ex.start()                         # (start: the slider may hold 200 already)
    with pytest.raises(TimeoutError, match="still going after 0.01 s"): ex.wait(0.01)
    ex.stop(); ex.wait(300)


def test_unticking_lambda0_auto_starts_from_the_measured_value(trained):
    ex = trained
    ex.epochs.value = 1; ex.wait(300)
    lam0 = ex.run["lambda0"]
    ex.lambda0_auto.value = False; ex.wait(300)
    assert ex.lambda0.value == pytest.approx(min(max(lam0, 1e-6), 1.0), rel=1e-9) and ex.settings()["lambda0"] == ex.lambda0.value
    assert ex.run["lambda0"] == pytest.approx(ex.lambda0.value)
    ex.lambda0_auto.value = True; ex.wait(300)


def _text(fig):
    import matplotlib.text
    return " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


def _rounds(dets, gamma, lam0=1e-3):
    return [dict(epoch=i // 4, lam=lam0 * (1 + gamma * d), det_sigma=d) for i, d in enumerate(dets)]


def test_lambda_figure_says_how_far_gamma_moved_lambda():
    tiny = _rounds([1e-8, 4e-8, 1e-7, 1e-7, 2e-7, 3e-5], gamma=2.0)             # det Σ as our models give it
    txt = _text(lambda_figure(tiny, [], 1e-3, gamma=2.0))
    assert "max λ/λ0 − 1 = 6.0e-05" in txt and "invisible at this scale" in txt
    assert "median 1.0e-07" in txt and "≈ 1e+07" in txt and "(here γ = 2)" in txt   # the run's own numbers
    assert lambda_figure(tiny, [], 1e-3).axes[1].get_yscale() == "log"
    g = gamma_effect(tiny, 1e-3)                                                 # γ read off the rounds when not given
    assert g["gamma"] == pytest.approx(2.0, rel=1e-6) and g["gamma_to_double"] == pytest.approx(1e7) and not g["visible"]
    txt = _text(lambda_figure(_rounds([0.0, 0.3, 0.1], gamma=0.5), [], 1e-3, gamma=0.5))
    assert "max λ/λ0 − 1 = 1.5e-01" in txt and "invisible" not in txt and "moved λ by up to 15 %" in txt
    assert "γ = 0: λ = λ0" in _text(lambda_figure(_rounds([1e-7, 2e-7], gamma=0.0), [], 1e-3, gamma=0.0))


def test_the_widget_draws_lambda_with_the_runs_gamma(trained, monkeypatch):
    ex, seen = trained, []
    ex.epochs.value = 1; ex.wait(300)
    real = explorer.lambda_figure
    def spy(*a, **k):
        seen.append((k, real(*a, **k))); return seen[-1][1]
    monkeypatch.setattr(explorer, "lambda_figure", spy)
    ex.gamma.value = 2.0; ex.wait(300)
    assert ex.run["config"].gamma == 2.0 and seen and all(k.get("gamma") == 2.0 for k, _ in seen)
    assert "max λ/λ0 − 1 = " in _text(seen[-1][1]) and ex.lambda_image.value[:4] == b"\x89PNG"
    if max(r["det_sigma"] for r in ex.run["rounds"]) > 1e-10:                    # γ read off the rounds: they were trained with it
        assert gamma_effect(ex.run["rounds"], ex.run["lambda0"])["gamma"] == pytest.approx(2.0, rel=1e-3)
    ex.gamma.value = 0.5; ex.wait(300)


def test_app_notebook_passes_settings_through():
    from pathlib import Path
    nb = app_notebook(data=Path("some/folder"), noise=0.2, pretrained=True)
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


def test_scores_histogram_is_drawn_by_seaborn_with_the_down_weighted_side_shaded(monkeypatch):
    "Fig. 1's histogram: seaborn's stacked histplot (every image counted, contaminants red), t dashed, a > t shaded."
    import matplotlib.colors
    import seaborn as sns
    from comet_nb.scl import demo_scores
    calls = []
    real = sns.histplot
    monkeypatch.setattr(explorer.sns, "histplot", lambda *a, **k: calls.append(k) or real(*a, **k))
    a, bad = demo_scores(n=300, contamination=0.1, seed=1)
    fig = explorer.scores_figure(a, bad, 1.5)
    assert len(calls) == 1 and calls[0]["multiple"] == "stack"
    h, t = fig.axes[0], kappa_weights(a, 1.5)["t"]
    edges = calls[0]["bins"]
    tops = {matplotlib.colors.to_hex(c.get_facecolor()[0][:3]): max(p.vertices[:, 1].max() for p in c.get_paths()) for c in h.collections}
    assert max(tops.values()) == np.histogram(a, edges)[0].max()
    assert tops[matplotlib.colors.to_hex("C3")] == np.histogram(np.asarray(a)[np.asarray(bad)], edges)[0].max()
    (span,) = h.patches
    assert span.get_x() == pytest.approx(t) and span.get_x() + span.get_width() == pytest.approx(edges[-1])
    assert [l.get_xdata()[0] for l in h.lines] == [pytest.approx(t)]
    labels = [x.get_text() for x in h.get_legend().get_texts()]
    assert labels[:3] == [f"nominal ({int((~np.asarray(bad)).sum())})", f"contaminant ({int(np.asarray(bad).sum())})", "a > t: w < 1"]
