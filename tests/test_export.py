"Exported detectors (ONNX, TorchScript) against PyTorch on images, for both models on the shipped backbone; their metadata and bad input."
import json
import shutil
import sys

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from comet_nb.data import load_image, write_mvtec_fixture
from comet_nb.experiments import Detector, RunConfig, train_run
from comet_nb.export import ExportedDetector, export_onnx, export_run, read_metadata
from comet_nb.features import apply_views, lite0_weight_file
from comet_nb.simplenet import predict as simplenet_predict

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")   # TorchScript is the second format, on purpose


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_mvtec_fixture(tmp_path_factory.mktemp("mv"), "widget", n_train=8, n_good=3, n_each=2, size=(48, 40))


def tiny(root, model, **kw) -> RunConfig:
    "A one-epoch run on the shipped EfficientNet-Lite0 (ImageNet weights, offline)."
    size = dict(simplenet=dict(image_size=64), differnet=dict(overrides=dict(n_blocks=2, hidden=32)))[model]
    base = dict(data=str(root), category="widget", model=model, method="comet", epochs=1, batch_size=4, device="cpu")
    return RunConfig(**{**base, **size, **kw})


@pytest.fixture(scope="module")
def runs(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for model in ("simplenet", "differnet"): train_run(tiny(root, model), out / model, progress=False)
    return out


def images_at(root, size: int) -> torch.Tensor:
    "The fixture's test images (real files, not noise), at the graph's input size."
    files = sorted((root / "widget" / "test").rglob("*.png"))
    return torch.stack([TF.resize(load_image(f), [size, size], antialias=True) for f in files])


def reference(det: Detector, x: torch.Tensor) -> tuple:
    "PyTorch's scores (and SimpleNet's maps) through the library's own path, DifferNet's views at the export's angles."
    if det.config.model == "simplenet": return simplenet_predict(det.model, det.extractor, x)
    V = det.preset["test_views"]
    with torch.no_grad():
        f = det.extractor(apply_views(x, [[360.0 * v / V for v in range(V)]] * len(x)).flatten(0, 1))
        return (det.model(f.unflatten(0, (len(x), V)))[1],)


def relative(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("model", ["simplenet", "differnet"])
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_exported_file_gives_pytorchs_scores_and_maps(runs, root, tmp_path, model, format):
    path = export_run(runs / model, tmp_path / f"d.{'onnx' if format == 'onnx' else 'pt'}", format=format)
    exported = ExportedDetector(path)
    det = Detector.load(runs / model, device="cpu")
    x = images_at(root, det.preset["image_size"])
    assert len(x) == 7                                                    # not the traced batch size
    got, want = exported(x), reference(det, x)
    assert relative(got["scores"], want[0]) < 1e-4
    if model == "simplenet":
        assert got["maps"].shape == tuple(want[1].shape) and relative(got["maps"], want[1]) < 1e-4
    else: assert got["maps"] is None
    if model == "simplenet": assert exported.threshold == pytest.approx(det.threshold)    # the graph is the kit's inference
    assert got["verdicts"].tolist() == (got["scores"] > exported.threshold).tolist()


def test_metadata_says_what_the_file_expects(runs):
    meta = read_metadata(export_run(runs / "simplenet"))
    m = json.loads((runs / "simplenet" / "metrics.json").read_text())
    assert meta["threshold"] == pytest.approx(m["threshold"]) and meta["kappa"] == 1.5
    assert meta["outputs"] == ["score", "map"] and "(batch, 3, 64, 64)" in meta["input"]
    assert meta["backbone"]["weights"] == m["backbone"]["weights"]
    dn = read_metadata(export_run(runs / "differnet", format="torchscript"))
    assert dn["outputs"] == ["score"] and "gradients" in dn["map"] and dn["views"]["phase"] == 0.0


def test_a_failed_export_leaves_the_previous_file(runs, tmp_path, monkeypatch):
    path = export_run(runs / "simplenet", tmp_path / "d.onnx")
    before = path.read_bytes()
    def broken(*a, **k): raise RuntimeError("exporter crashed")
    with monkeypatch.context() as m:
        m.setattr(torch.onnx, "export", broken)
        with pytest.raises(RuntimeError, match="exporter crashed"): export_run(runs / "simplenet", path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx"]
    import errno
    import comet_nb.utils
    def full(fd): raise OSError(errno.ENOSPC, "No space left on device")    # the disk fills after the bytes are written
    monkeypatch.setattr(comet_nb.utils.os, "fsync", full)
    with pytest.raises(OSError, match="disk is full"): export_run(runs / "simplenet", path, format="onnx")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx"]


def test_retraining_removes_a_stale_export(root, tmp_path):
    out = tmp_path / "run"
    train_run(tiny(root, "simplenet", method="baseline"), out, progress=False)
    export_run(out)
    export_run(out, format="torchscript")
    train_run(tiny(root, "simplenet", method="baseline", seed=1), out, progress=False, overwrite=True)
    assert not (out / "detector.onnx").exists() and not (out / "detector.pt").exists()   # they held the old model


def test_differnets_threshold_is_measured_on_the_graphs_own_scores(runs):
    "Eq. 2 over the run's training images, scored by the exported file itself."
    import csv
    from comet_nb.metrics import decision_threshold
    path = export_run(runs / "differnet")
    exported = ExportedDetector(path)
    with open(runs / "differnet" / "weights.csv", newline="") as f: files = [r["path"] for r in csv.DictReader(f)]
    S = exported.metadata["image_size"]
    x = torch.stack([TF.resize(load_image(p), [S, S], antialias=True) for p in files])
    t = decision_threshold(torch.as_tensor(exported(x)["scores"]), exported.metadata["kappa"])
    assert exported.threshold == pytest.approx(float(t), rel=1e-5)
    assert exported.metadata["run_threshold"] == pytest.approx(Detector.load(runs / "differnet").threshold)
    assert exported.metadata["threshold_from"].startswith("Eq. 2 over the run's 8 training images")


def test_bad_input_is_named(runs, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="one of onnx, torchscript"): export_run(runs / "simplenet", format="tflite")
    with pytest.raises(ValueError, match=r"does not end in \.onnx"): export_run(runs / "simplenet", tmp_path / "d.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"): export_run(tmp_path / "nothing")
    exported = ExportedDetector(export_run(runs / "simplenet", tmp_path / "d.onnx"))
    with pytest.raises(ValueError, match=r"takes images of shape \(batch, 3, 64, 64\), got \(2, 3, 32, 32\): resize"):
        exported(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="got uint8: divide 8-bit images by 255"): exported(np.zeros((2, 3, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="takes pixels in \\[0, 1\\], got values from 255 to 255"):
        exported(np.full((2, 3, 64, 64), 255.0, np.float32))
    other = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(other))
    with pytest.raises(ValueError, match="holds no comet_nb metadata"): read_metadata(other)
    with pytest.raises(FileNotFoundError, match="no exported detector at"): read_metadata(tmp_path / "absent.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)                        # as if onnx were not installed
    with pytest.raises(ImportError, match=r'pip install "comet_nb\[export\]"'): export_onnx(Detector.load(runs / "simplenet"), tmp_path / "x.onnx")


def test_a_run_on_a_local_weight_file_exports_where_the_file_moved(root, tmp_path):
    "Trained with --pretrained FILE; the file moves; export (like eval) takes the new place."
    weights = tmp_path / "lite0.pth"
    shutil.copy(lite0_weight_file(), weights)
    train_run(tiny(root, "simplenet", pretrained=str(weights), method="baseline"), tmp_path / "run", progress=False)
    moved = tmp_path / "elsewhere" / "lite0.pth"
    moved.parent.mkdir()
    weights.rename(moved)
    with pytest.raises(RuntimeError, match="cannot rebuild the backbone"): export_run(tmp_path / "run")
    path = export_run(tmp_path / "run", pretrained=str(moved))
    assert read_metadata(path)["threshold"] is not None
