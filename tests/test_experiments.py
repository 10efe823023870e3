"One run end to end on tiny generated datasets: config round trip and bad input, training, files, resume, the Detector and eval_run."
import csv
import json
import math
import shutil
from dataclasses import replace

import warnings

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import comet_nb.experiments as ex
from comet_nb.data import write_ksdd2_fixture, write_mvtec_fixture
from comet_nb.data import load_image
from comet_nb.experiments import Detector, RunConfig, VersionMismatchWarning, detect_format, eval_run, load_split, train_run
from comet_nb.meta import Callback

pytestmark = pytest.mark.filterwarnings("ignore::comet_nb.features.RandomWeightsWarning")   # offline: random backbone weights, on purpose

METRIC_KEYS = ("i_auroc", "i_auroc_se", "p_auroc", "p_aupro", "precision", "recall", "f1", "threshold", "f1_max", "nn_reference_i_auroc",
               "curation", "epochs", "seconds", "n_train", "n_test", "config", "versions", "protocol")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    "A miniature MVTec-layout category: 12 training images, 4 good and 6 defective test images, 40x40 px."
    return write_mvtec_fixture(tmp_path_factory.mktemp("mvtec"), "widget", n_train=12, n_good=4, n_each=3, size=(40, 40))


def sn_cfg(root, **kw) -> RunConfig:
    "A tiny SimpleNet run: 32 px, 32-d features, 3 contaminants moved in from the 6 defective test images."
    base = dict(data=str(root), category="widget", model="simplenet", method="comet", noise=0.25, image_size=32,
                overrides=dict(dim=32, hidden=16), batch_size=4, epochs=2, pretrained=False, device="cpu")
    return RunConfig(**{**base, **kw})


def dn_cfg(root, **kw) -> RunConfig:
    "A tiny DifferNet run: 64 px, one scale, 2 views."
    base = dict(data=str(root), category="widget", model="differnet", method="baseline", image_size=64,
                overrides=dict(n_scales=1, train_views=2, test_views=2, n_blocks=2, hidden=32), batch_size=4, epochs=2,
                pretrained=False, device="cpu")
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def sn_run(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sn") / "run"
    return out, train_run(sn_cfg(root), out, progress=False)


def no_temp_files(folder):
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")] == []


class Crash(Callback):
    def __init__(self, at): self.at = at
    def after_epoch(self, trainer, record):
        if trainer.epoch == self.at: raise RuntimeError("power cut")


# ---- configuration

def test_config_json_round_trip(tmp_path, root):
    cfg = sn_cfg(root, lambda0=0.01, lr=3e-4, cache=str(tmp_path / "c"), kappa=0.5)
    assert RunConfig.from_json(cfg.to_json(tmp_path / "c.json")) == cfg
    assert json.loads((tmp_path / "c.json").read_text())["overrides"] == {"dim": 32, "hidden": 16}
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("kw, msg", [
    (dict(data=""), "data = '' is not valid"),
    (dict(category=3), "category = 3"),
    (dict(format="zip"), "format = 'zip' is not valid: choose one of"),
    (dict(model="padim"), "model = 'padim'"),
    (dict(method="full"), "method = 'full'"),
    (dict(preset="large"), "preset = 'large'"),
    (dict(use_meta=1), "use_meta = 1 is not valid: give True or False"),
    (dict(pixel_maps="no"), "pixel_maps"),
    (dict(noise=1), "noise = 1 is not valid"),
    (dict(noise=-0.01), "noise = -0.01"),
    (dict(noise=float("nan")), "noise = nan"),
    (dict(noise=True), "noise = True"),
    (dict(epochs=0), "epochs = 0"),
    (dict(epochs=1.5), "epochs = 1.5"),
    (dict(image_size=8), "image_size = 8 is not valid: give an integer >= 16"),
    (dict(batch_size=0), "batch_size = 0"),
    (dict(lr=-1e-3), "lr = -0.001"),
    (dict(lr=float("inf")), "lr = inf"),
    (dict(kappa=-1), "kappa = -1"),
    (dict(gamma="x"), "gamma = 'x'"),
    (dict(lambda0="auto2"), "lambda0 = 'auto2'"),
    (dict(lambda0=-0.1), "lambda0 = -0.1"),
    (dict(n_tasks=1), "n_tasks = 1"),
    (dict(seed=-1), "seed = -1"),
    (dict(seed=1.0), "seed = 1.0"),
    (dict(pretrained=""), "pretrained = ''"),
    (dict(pretrained=3), "pretrained = 3"),
    (dict(device=""), "device = ''"),
    (dict(cache=""), "cache = ''"),
    (dict(overrides=[1]), "overrides = [1] is not valid: give a dict"),
    (dict(overrides=dict(layers=3)), "'layers' is not an entry of the simplenet preset"),
    (dict(overrides=dict(lr=1e-3)), "'lr' has a field of its own"),
    (dict(overrides=dict(dim=[1])), "the value of 'dim' must be"),
    (dict(data="demo", format="ksdd2"), "data='demo' is the generated demo set"),
    (dict(data="/somewhere", format="demo"), "format 'demo' goes with data='demo'"),
    (dict(model="differnet", backbone="alexnet", image_size=200), "AlexNet needs >= 63 px"),
    (dict(model="differnet", image_size=100), "EfficientNet-Lite0 needs >= 32 px"),
    (dict(model="simplenet", backbone="alexnet"), "backbone = 'alexnet' is not valid: choose 'efficientnet_lite0' or 'wrn50'"),
    (dict(backbone=3), "backbone = 3"),
])
def test_bad_config_values(kw, msg):
    with pytest.raises(ValueError) as e:
        RunConfig(**kw)
    assert msg in str(e.value), str(e.value)


def test_config_files_with_unknown_keys_bad_json_or_bad_values(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"data": "demo", "nosie": 0.1}))
    with pytest.raises(ValueError, match="unknown key.*'nosie'.*valid keys are:.*noise"): RunConfig.from_json(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"): RunConfig.from_json(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"epochs": "ten"}))
    with pytest.raises(ValueError, match="epochs = 'ten'"): RunConfig.from_json(tmp_path / "c.json")
    (tmp_path / "d.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"): RunConfig.from_json(tmp_path / "d.json")
    with pytest.raises(FileNotFoundError, match="config file not found"): RunConfig.from_json(tmp_path / "none.json")


# ---- datasets

def test_detect_format(tmp_path, root):
    assert detect_format(root) == "mvtec"
    assert detect_format(write_ksdd2_fixture(tmp_path / "k")) == "ksdd2"
    vi = write_mvtec_fixture(tmp_path / "v", "panel", n_train=4)
    (vi / "panel" / "ground_truth" / "scratch" / "000_mask.png").unlink()
    assert detect_format(vi) == "viaduct" and detect_format(vi, "panel") == "viaduct"
    (tmp_path / "imgs").mkdir(); shutil.copy(root / "widget" / "train" / "good" / "000.png", tmp_path / "imgs" / "x.png")
    assert detect_format(tmp_path / "imgs") == "folder"
    (tmp_path / "odd" / "stuff").mkdir(parents=True); (tmp_path / "odd" / "a.csv").write_text("1")
    with pytest.raises(ValueError, match=r"1 folder\(s\) \(stuff\) and 1 file\(s\) \(a.csv\).*Expected KSDD2"): detect_format(tmp_path / "odd")
    with pytest.raises(FileNotFoundError, match="data folder not found"): detect_format(tmp_path / "missing")


def test_category_and_noise_errors(root):
    with pytest.raises(ValueError, match="has no category 'gadget'; the categories there are: widget"): load_split(root, "gadget")
    with pytest.raises(ValueError, match="needs a category.*widget"): load_split(root)
    with pytest.raises(ValueError, match="asks for 10 anomalous training images.*only 6 defective test images"): load_split(root, "widget", noise=0.9)
    with pytest.raises(ValueError, match="the categories there are: brick, grass, gravel"): load_split("demo", "marble")
    with pytest.raises(ValueError, match="KSDD2 has no categories"): load_split(write_ksdd2_fixture(root.parent / "k2"), "widget")
    s = load_split(root, "widget", noise=0.25, seed=1)
    assert len(s.contaminants) == 3 and len(s.test) == 10 - 3


def test_unwritable_output_fails_before_any_work(tmp_path, root, monkeypatch):
    monkeypatch.setattr(ex, "run_features", lambda *a, **k: pytest.fail("features were computed"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="cannot write to the output folder"): train_run(sn_cfg(root), tmp_path / "file" / "run", progress=False)
    with pytest.raises(ValueError, match="the categories there are"): train_run(sn_cfg(root, category="nope"), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "config.json").exists()                   # nothing written for a run that cannot start


# ---- a run, its files, the detector

def test_metrics_and_files(sn_run, root):
    out, m = sn_run
    for k in METRIC_KEYS: assert k in m, k
    for k in ("i_auroc", "i_auroc_se", "p_auroc", "p_aupro", "precision", "recall", "f1", "threshold", "f1_max", "nn_reference_i_auroc", "seconds"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), (k, m[k])
    assert 0 <= m["p_aupro"] <= 1 and "p_aupro" in m["protocol"]
    assert (m["epochs"], m["n_train"], m["n_test"], m["n_contaminants"]) == (2, 15, 7, 3)
    assert "test set" in m["protocol"] and "ranking" not in m["curation"] and len(m["curation"]["lowest_weight"]) == 10
    assert set(m["versions"]) == {"comet_nb", "torch", "torchvision", "timm", "python", "device", "threads"}
    assert json.loads((out / "metrics.json").read_text()) == m
    assert RunConfig.from_json(out / "config.json") == sn_cfg(root)
    w = list(csv.DictReader(open(out / "weights.csv")))
    assert list(w[0]) == ["path", "weight", "score", "contaminant"] and len(w) == 15 and sum(int(r["contaminant"]) for r in w) == 3
    s = list(csv.DictReader(open(out / "scores.csv")))
    assert list(s[0]) == ["path", "label", "score", "verdict"] and len(s) == 7
    assert all(int(r["verdict"]) == (float(r["score"]) > m["threshold"]) for r in s)
    assert Image.open(out / "weights.png").size[0] > 100
    assert no_temp_files(out)


def test_detector_predict(sn_run, root):
    out, m = sn_run
    rng = torch.get_rng_state()
    det = Detector.load(out)
    assert torch.equal(rng, torch.get_rng_state())                        # the checkpoint's RNG states do not leak into the session
    assert det.threshold == m["threshold"] and "simplenet" in repr(det)
    rows = list(csv.DictReader(open(out / "scores.csv")))
    paths = [r["path"] for r in rows[:3]]
    r = det.predict(paths)
    assert r["scores"].shape == (3,) and r["maps"].shape == (3, 32, 32) and r["verdicts"].dtype == torch.bool and r["paths"] == paths
    torch.testing.assert_close(r["scores"], torch.tensor([float(x["score"]) for x in rows[:3]]), atol=2e-2, rtol=0)
    folder = det.predict(root / "widget" / "test" / "good")
    assert len(folder["scores"]) == 4
    x = torch.rand(2, 3, 50, 50)
    assert det.predict(x)["scores"].shape == (2,) and det.predict(x[0])["scores"].shape == (1,)
    assert Detector.load(out / "checkpoint.pt", threshold=0.0).predict(x)["verdicts"].tolist() == (det.predict(x)["scores"] > 0).tolist()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*got shape \(2, 5, 8, 8\)"): det.predict(torch.rand(2, 5, 8, 8))
    with pytest.raises(ValueError, match="images must be a tensor"): det.predict(42)
    with pytest.raises(FileNotFoundError, match="no image or folder"): det.predict(root / "nothing.png")


def test_eval_run_on_a_test_split_and_on_new_images(sn_run, root, tmp_path):
    out, m = sn_run
    e = eval_run(out, str(root), "widget", out=tmp_path / "ev", maps=True)
    for k in ("i_auroc", "p_auroc", "p_aupro", "precision", "recall", "f1", "threshold"): assert e[k] == pytest.approx(m[k], abs=1e-9), k
    assert e["n_test"] == 7 and any("replayed" in n for n in e["notes"])
    assert len(list((tmp_path / "ev" / "maps").glob("0*.png"))) == 7 and (tmp_path / "ev" / "eval.json").is_file()
    assert (tmp_path / "ev" / "maps" / "colorbar.png").stat().st_size > 0                    # one colour scale for all seven
    new = eval_run(out, root / "widget" / "test" / "hole", out=tmp_path / "new")
    assert new["mode"] == "images" and new["n"] == 3 and len(new["verdicts"]) == 3 and "i_auroc" not in new
    assert len(list(csv.DictReader(open(tmp_path / "new" / "scores.csv")))) == 3
    assert no_temp_files(tmp_path)


def test_a_run_from_other_library_versions_warns_on_load(sn_run, root, tmp_path):
    out, _ = sn_run
    run = tmp_path / "r"; shutil.copytree(out, run)
    m = json.loads((run / "metrics.json").read_text())
    here = m["versions"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", VersionMismatchWarning)
        assert Detector.load(run).version_differences == []                            # the same versions: silent
        m["versions"] = dict(here, threads=here["threads"] + 7, device="cuda:0", python="3.0.1")
        (run / "metrics.json").write_text(json.dumps(m))
        assert Detector.load(run).version_differences == []                            # threads, device, python: not warned
    m["versions"] = dict(here, torch="1.0.0", timm="0.0.1")
    (run / "metrics.json").write_text(json.dumps(m))
    with pytest.warns(VersionMismatchWarning) as w:
        det = Detector.load(run)
    msg = str(w[0].message)
    assert f"torch: run 1.0.0, here {torch.__version__}; timm: run 0.0.1, here {timm.__version__}" in msg, msg
    assert str(run) in msg and "may differ slightly" in msg and "retrain here" in msg and "torchvision:" not in msg
    assert det.version_differences == [f"torch: run 1.0.0, here {torch.__version__}", f"timm: run 0.0.1, here {timm.__version__}"]
    with pytest.warns(VersionMismatchWarning):
        e = eval_run(run, str(root), "widget")
    assert any("other library versions (torch: run 1.0.0" in n for n in e["notes"])
    m["versions"] = dict(here, comet_nb="0.5.0")                                     # before 0.6: other image geometry
    (run / "metrics.json").write_text(json.dumps(m))
    with pytest.warns(VersionMismatchWarning) as w:
        Detector.load(run)
    assert "comet_nb: run 0.5.0" in str(w[0].message) and "comet_nb before 0.6" in str(w[0].message) and "retrain" in str(w[0].message)


def test_eval_with_the_weight_file_the_run_trained_on(root, tmp_path):
    from comet_nb.features import lite0_weight_file
    w = tmp_path / "here" / "lite0.pth"; w.parent.mkdir(); shutil.copy(lite0_weight_file(), w)
    m = train_run(sn_cfg(root, pretrained=str(w), epochs=1), tmp_path / "run", progress=False)
    moved = tmp_path / "elsewhere" / "lite0.pth"; moved.parent.mkdir(); shutil.move(w, moved)   # the run goes to another machine
    with pytest.raises(RuntimeError, match=r"cannot rebuild the backbone .*pretrained='/path/to/weight/file'"):
        eval_run(tmp_path / "run", str(root), "widget")
    e = eval_run(tmp_path / "run", str(root), "widget", pretrained=moved)
    for k in ("i_auroc", "p_auroc", "p_aupro", "threshold"): assert e[k] == pytest.approx(m[k], abs=1e-9), k
    assert e["config"]["pretrained"] == str(moved)
    sd = torch.load(moved, weights_only=True); sd["_conv_stem.weight"] = sd["_conv_stem.weight"] * 1.01
    torch.save(sd, tmp_path / "other.pth")                                          # not the weights the run trained on
    with pytest.raises(RuntimeError, match="was trained on efficientnet_lite0 weights"):
        eval_run(tmp_path / "run", str(root), "widget", pretrained=tmp_path / "other.pth")


def test_simplenet_keeps_the_aspect_ratio_in_training_and_in_the_detector(tmp_path):
    wide = write_mvtec_fixture(tmp_path / "wide", "widget", n_train=8, n_good=2, n_each=2, size=(36, 60))
    out = tmp_path / "run"
    train_run(sn_cfg(wide, noise=0.0, epochs=1), out, progress=False)
    det = Detector.load(out)
    rows = list(csv.DictReader(open(out / "weights.csv")))
    paths = [r["path"] for r in rows[:3]]
    by_path = det.predict(paths)["scores"]
    torch.testing.assert_close(by_path, torch.tensor([float(r["score"]) for r in rows[:3]]), atol=2e-2, rtol=0)   # as trained
    x = torch.stack([load_image(p) for p in paths])                                 # 36 × 60 tensors: the detector's own geometry
    torch.testing.assert_close(det.predict(x)["scores"], by_path, atol=1e-5, rtol=0)
    ds = ex.make_dataset([ex._record(p) for p in paths], det.config)
    assert ds.size == [32] and ds[0]["image"].shape == (3, 32, 32)
    squashed = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
    assert (det.predict(squashed)["scores"] - by_path).abs().max() > 1e-3              # the old squashing gives other scores


def test_differnet_run_with_gradient_maps(root, tmp_path):
    m = train_run(dn_cfg(root, pixel_maps=True), tmp_path / "dn", progress=False)
    assert math.isfinite(m["i_auroc"]) and math.isfinite(m["p_auroc"]) and math.isfinite(m["p_aupro"]) and m["lambda0"] == 0.0
    det = Detector.load(tmp_path / "dn")
    rows = list(csv.DictReader(open(tmp_path / "dn" / "scores.csv")))
    r = det.predict([x["path"] for x in rows[:2]], maps=True)
    torch.testing.assert_close(r["scores"], torch.tensor([float(x["score"]) for x in rows[:2]]), atol=2e-2, rtol=2e-2)
    assert r["maps"].shape == (2, 40, 40)
    assert det.predict(torch.rand(2, 3, 40, 40))["maps"] is None                      # DifferNet maps only when asked
    m0 = train_run(dn_cfg(root), tmp_path / "dn0", progress=False)
    assert m0["p_auroc"] is None and m0["p_aupro"] is None


def test_checkpoint_of_another_model_class(sn_run, tmp_path):
    out, _ = sn_run
    shutil.copy(out / "checkpoint.pt", tmp_path)
    dn = replace(RunConfig.from_json(out / "config.json"), model="differnet", image_size=64, overrides={"n_scales": 1})
    dn.to_json(tmp_path / "config.json")
    with pytest.raises(ValueError, match="holds a SimpleNet model, not a DifferNet"): Detector.load(tmp_path)
    (tmp_path / "lonely").mkdir(); shutil.copy(out / "checkpoint.pt", tmp_path / "lonely")
    with pytest.raises(FileNotFoundError, match="config.json is missing"): Detector.load(tmp_path / "lonely" / "checkpoint.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"): Detector.load(tmp_path / "nowhere")


# ---- resume and crashes

def test_crash_then_resume_equals_an_uninterrupted_run(root, tmp_path):
    cfg = sn_cfg(root, epochs=3)
    with pytest.raises(RuntimeError, match="power cut"): train_run(cfg, tmp_path / "cut", progress=False, callbacks=[Crash(1)], checkpoint_every=1)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["checkpoint.pt", "config.json", "history.csv"]   # no metrics, no temporary files
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = train_run(cfg, tmp_path / "cut", resume=True, progress=False)
    whole = train_run(cfg, tmp_path / "whole", progress=False)
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("cut", "whole"))
    assert [h["epoch"] for h in a["history"]] == [0, 1, 2]
    for k, v in b["model"].items(): assert torch.equal(v, a["model"][k]), k
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert resumed["i_auroc"] == whole["i_auroc"] and resumed["epochs"] == 3
    longer = train_run(replace(cfg, epochs=4), tmp_path / "cut", resume=True, progress=False)   # a finished run trains on
    assert longer["epochs"] == 4 and RunConfig.from_json(tmp_path / "cut" / "config.json").epochs == 4
    assert no_temp_files(tmp_path)


def test_resume_and_overwrite_rules(sn_run, root, tmp_path):
    out, _ = sn_run
    with pytest.raises(ValueError, match=r"another config \(noise: 0.25 → 0.1"): train_run(sn_cfg(root, noise=0.1), out, resume=True, progress=False)
    with pytest.raises(ValueError, match="kappa: 1.5 → 1.0"): train_run(sn_cfg(root, kappa=1.0), out, resume=True, progress=False)
    with pytest.raises(FileExistsError, match="holds a run already.*resume=True"): train_run(sn_cfg(root), out, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"): train_run(sn_cfg(root), tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(ValueError, match="cannot resume to 1 epochs: the checkpoint has trained 2"): train_run(sn_cfg(root, epochs=1), out, resume=True, progress=False)
    assert train_run(sn_cfg(root, method="baseline"), tmp_path / "o", progress=False)["lambda0"] == 0.0
    assert train_run(sn_cfg(root), tmp_path / "o", progress=False, overwrite=True)["lambda0"] > 0           # the CoMet run replaced it
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["config"]["method"] == "comet"


# ---- other layouts

def test_ksdd2_as_shipped_and_a_folder_without_test_set(tmp_path):
    ks = write_ksdd2_fixture(tmp_path / "k", n_train=10, n_train_bad=2, n_test=6, n_test_bad=3)
    m = train_run(RunConfig(data=str(ks), model="simplenet", image_size=32, overrides=dict(dim=32, hidden=16), batch_size=4, epochs=1,
                            pretrained=False, device="cpu"), tmp_path / "rk", progress=False)
    assert m["n_contaminants"] == 2 and m["curation"]["n_known_defective"] == 2 and math.isfinite(m["i_auroc"])
    plain = tmp_path / "plain"; plain.mkdir()
    for p in sorted((ks / "train").glob("?.png")): shutil.copy(p, plain / p.name)
    mf = train_run(RunConfig(data=str(plain), model="simplenet", image_size=32, overrides=dict(dim=32, hidden=16), batch_size=4, epochs=1,
                             pretrained=False, device="cpu", method="baseline"), tmp_path / "rf", progress=False)
    assert mf["i_auroc"] is None and mf["p_auroc"] is None and mf["n_test"] == 0 and mf["n_train"] == 10
    assert not (tmp_path / "rf" / "scores.csv").exists() and (tmp_path / "rf" / "weights.csv").is_file()
    with pytest.raises(ValueError, match="unlabeled"): train_run(RunConfig(data=str(plain), noise=0.1, pretrained=False), tmp_path / "rn", progress=False)


def test_sigma_is_a_run_setting():
    "RunConfig(sigma=...) reaches the trainer; an unknown Σ is refused; two tasks are fine once rounds are pooled."
    from comet_nb.experiments import RunConfig, trainer_config
    assert trainer_config(RunConfig(sigma="pooled"), 1e-3).sigma == "pooled"
    with pytest.raises(ValueError, match="sigma = 'median' is not valid: give 'paper'"):
        RunConfig(sigma="median")
    assert RunConfig(n_tasks=2, sigma="pooled").n_tasks == 2
    with pytest.raises(ValueError, match="det Σ ≡ 0"):
        RunConfig(n_tasks=2)


def test_base_methods_are_the_trainers_own_names():
    "RunConfig.method takes BASE_METHODS, each a row of the trainer's one table (ablations: CoMet with switches)."
    from comet_nb.meta import METHODS
    assert set(ex.BASE_METHODS) <= set(METHODS)
    for method in ex.BASE_METHODS:
        tcfg = ex.trainer_config(RunConfig(method=method), lambda0=0.0)
        assert all(getattr(tcfg, k) == v for k, v in METHODS[method].items()), method
    with pytest.raises(ValueError, match="choose one of 'baseline', 'comet'"): RunConfig(method="no-meta")
