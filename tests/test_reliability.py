"""Reliability: the bad inputs and faults of tests/README.md that no other test file covers, each asserting the message the user gets."""
import errno
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from comet_nb.data import ADDataset, Record, write_mvtec_fixture
from comet_nb.experiments import Detector, RunConfig, atomic_write, eval_run, train_run
from comet_nb.features import AlexNetMultiScale, extract_features, view_key
from comet_nb.meta import CoMet, CoMetConfig, TrainingDiverged, atomic_save, load_checkpoint
from comet_nb.toy import GaussianModel, toy_data

pytestmark = pytest.mark.filterwarnings("ignore::comet_nb.features.RandomWeightsWarning")   # offline: random backbone weights, on purpose

SMALL_DN = dict(model="differnet", method="comet", image_size=64, overrides=dict(n_scales=1, train_views=2, test_views=2, n_blocks=2, hidden=32),
                batch_size=4, epochs=2, pretrained=False, device="cpu")
SMALL_SN = dict(model="simplenet", method="comet", image_size=32, overrides=dict(dim=32, hidden=16), batch_size=4, epochs=2,
                pretrained=False, device="cpu")


def write_images(folder, sizes, seed=0, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (w, h) in enumerate(sizes):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(a).convert(mode).save(folder / f"{i:03d}.png")
    return folder


def cli(*args):
    from comet_nb.cli import main
    import contextlib, io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_mvtec_fixture(tmp_path_factory.mktemp("mvtec"), "widget", n_train=12, n_good=4, n_each=3, size=(40, 40))


# ---- images: mixed sizes and channels, where the files live

def test_mixed_sizes_and_channels_train_differnet(tmp_path):
    "A user's folder: several sizes, gray, RGB and RGBA. DifferNet's extractor resizes each image; a batch of mixed sizes goes one at a time."
    folder = write_images(tmp_path / "photos", [(40, 40), (48, 32), (64, 64), (40, 40)] * 2)
    Image.open(folder / "001.png").convert("L").save(folder / "001.png")
    Image.open(folder / "002.png").convert("RGBA").save(folder / "002.png")
    m = train_run(RunConfig(data=str(folder), **SMALL_DN), tmp_path / "run", progress=False)
    assert m["n_train"] == 8 and m["epochs"] == 2
    ds = ADDataset([Record(p, -1, "unknown", has_mask=False) for p in sorted(folder.glob("*.png"))])
    ext = AlexNetMultiScale(64, pretrained=False, n_scales=1)
    batched = extract_features(ds, ext, n_views=2, cache=False, batch_size=8, progress=False).features.float()
    for i in (0, 1, 2):                                                         # the same rows as one image at a time
        one = extract_features(ADDataset([ds.records[i]]), ext, n_views=2, cache=False, progress=False).features.float()
        torch.testing.assert_close(batched[i:i + 1], one, atol=2e-3, rtol=2e-3)
    scores = Detector.load(tmp_path / "run", device="cpu").predict(folder)["scores"]
    assert scores.shape == (8,) and torch.isfinite(scores).all()


class GrayPixels(torch.nn.Module):
    "An extractor that keeps the input's size (the kit's backbones resize every image to their input size)."
    spec = dict(backbone="gray-pixels")
    def forward(self, x): return x.mean(1)


def test_mixed_sizes_without_a_common_input_size_name_the_files(tmp_path):
    folder = write_images(tmp_path / "photos", [(32, 32), (64, 48)])
    ds = ADDataset([Record(p, -1, "unknown", has_mask=False) for p in sorted(folder.glob("*.png"))])   # no size given
    with pytest.raises(ValueError, match=r"images of different sizes \(000.png \(32, 32\), 001.png \(48, 64\).*ADDataset\(records, size=...\)"):
        extract_features(ds, GrayPixels(), cache=False, progress=False)
    f = extract_features(ADDataset(ds.records, size=32), GrayPixels(), cache=False, progress=False).features   # with one size: fine
    assert f.shape == (2, 32, 32)
    with pytest.raises(ValueError, match=r"images of different sizes \(000.png \(32, 32\), 001.png \(48, 64\)\)"):
        extract_features(ds, GrayPixels(), cache=False, progress=False, batch_size=1)                 # one size per batch, two batches


def test_a_killed_builds_temporary_cache_files_are_cleared(tmp_path):
    "A feature build killed mid-way leaves its temporary array; the next build on this host removes it, another host's is left alone."
    import socket
    from comet_nb.features import _clear_stale_tmp
    host = socket.gethostname().replace(".", "_")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    mine, other, alive = (tmp_path / f".features.{dead}@{host}.npy.tmp", tmp_path / f".features.{dead}@elsewhere.npy.tmp",
                          tmp_path / f".features.{os.getpid() + 0}@{host}.npy.tmp")
    for f in (mine, other, alive): f.write_bytes(b"\x93NUMPY half")
    _clear_stale_tmp(tmp_path)
    assert not mine.exists() and other.exists() and alive.exists()


def test_views_follow_the_pixels_not_the_folder(tmp_path):
    "The same images in two folders under other names give the same DifferNet features: results do not depend on where data lives."
    a = write_images(tmp_path / "a", [(40, 40)] * 3)
    b = tmp_path / "elsewhere" / "b"; b.mkdir(parents=True)
    for i, p in enumerate(sorted(a.glob("*.png"))): (b / f"copy_{i}.png").write_bytes(p.read_bytes())
    ext = AlexNetMultiScale(64, pretrained=False, n_scales=1)
    f = [extract_features(ADDataset([Record(p, -1, "unknown", has_mask=False) for p in sorted(d.glob("*.png"))]), ext, n_views=4,
                          cache=False, progress=False).features for d in (a, b)]
    assert torch.equal(f[0], f[1])
    img = torch.rand(3, 8, 8)
    assert view_key(img) == view_key(img.clone()) != view_key(img.flip(-1))


def test_identical_images_train_without_nan(tmp_path):
    "All-identical images: constant scores, IQR 0, every weight 1; training and evaluation stay finite."
    folder = tmp_path / "same"; folder.mkdir()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    for i in range(8): img.save(folder / f"{i}.png")
    m = train_run(RunConfig(data=str(folder), **SMALL_SN), tmp_path / "run", progress=False)
    w = [float(l.split(",")[1]) for l in (tmp_path / "run" / "weights.csv").read_text().splitlines()[1:]]
    assert w == [1.0] * 8 and m["curation"]["n_flagged"] == 0 and np.isfinite(m["threshold"])


def test_a_single_training_image_is_refused_with_advice(tmp_path):
    folder = write_images(tmp_path / "one", [(40, 40)])
    rc, _, err = cli("train", "--data", str(folder), "--model", "simplenet", "--epochs", "1", "--image-size", "32", "--no-pretrained", "--quiet",
                     "--out", str(tmp_path / "o"))
    assert rc == 2 and "the training set has 1 sample(s); CoMet needs at least 2" in err and "Traceback" not in err


def test_an_empty_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    rc, _, err = cli("train", "--data", str(tmp_path / "empty"), "--no-pretrained", "--quiet", "--out", str(tmp_path / "o"))
    assert rc == 2 and str(tmp_path / "empty") in err and "no images" in err and "Traceback" not in err


def test_an_undecodable_image_is_named_by_the_command(tmp_path):
    folder = write_images(tmp_path / "photos", [(40, 40)] * 4)
    (folder / "002.png").write_bytes(b"this is not a PNG file at all")
    rc, _, err = cli("train", "--data", str(folder), "--model", "simplenet", "--epochs", "1", "--image-size", "32", "--no-pretrained", "--quiet",
                     "--out", str(tmp_path / "o"))
    assert rc in (1, 2) and "cannot decode image" in err and "002.png" in err and "Traceback" not in err, err


# ---- writing results: full disk, permissions, leftovers of a killed run

def test_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = atomic_write(tmp_path / "metrics.json", '{"old": 1}\n')
    real_fsync = os.fsync
    def full(fd): raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"could not write .*metrics.json: No space left on device; the previous file, if any, is unchanged. The disk is full"):
        atomic_write(target, '{"new": 2}\n')
    with pytest.raises(OSError, match="checkpoint.pt: No space left on device"):
        atomic_save({"x": torch.zeros(3)}, tmp_path / "checkpoint.pt")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]      # no temporary file, no half-written checkpoint


def test_result_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try: p = atomic_write(tmp_path / "r.csv", "a,b\n")
    finally: os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644                          # readable like any file the user writes, not 0600


def test_temporary_files_of_a_killed_run_are_cleared(root, tmp_path):
    out = tmp_path / "run"; out.mkdir()
    (out / ".metrics.json.abc123.tmp").write_text('{"half": ')                # what SIGKILL in the middle of a write leaves
    (out / ".checkpoint.pt.xyz.tmp").write_bytes(b"\x80\x02")
    (out / "notes.tmp").write_text("the user's own file")
    train_run(RunConfig(data=str(root), category="widget", **{**SMALL_SN, "epochs": 1}), out, progress=False)
    assert not list(out.glob(".*.tmp")) and (out / "notes.tmp").read_text() == "the user's own file"


# ---- checkpoints: another version, corrupted, another model, another device

def toy_trainer():
    torch.manual_seed(0)
    return CoMet(GaussianModel(), CoMetConfig(alpha=0.05, beta=0.05, epochs=1, batch_size=32)).fit(toy_data(40, 4, seed=0)[0])


@pytest.mark.parametrize("change, msg", [
    (lambda sd: sd.pop("history"), r"missing entries \['history'\]"),
    (lambda sd: sd["config"].update(warp_drive=True), r"config fields this version does not know \['warp_drive'\]"),
])
def test_checkpoint_of_another_version(tmp_path, change, msg):
    sd = toy_trainer().state_dict(); sd["version"] = "9.9.9"; change(sd)
    atomic_save(sd, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"c.pt was written by comet_nb 9.9.9 and this is comet_nb .*which cannot read it \(" + msg):
        CoMet.load(tmp_path / "c.pt", GaussianModel())


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"garbage that is not a zip archive"])
def test_corrupted_checkpoint_bytes(tmp_path, content):
    (tmp_path / "c.pt").write_bytes(content)
    with pytest.raises(ValueError, match=r"c.pt is not a readable checkpoint \(corrupted, truncated, or not written by comet_nb\)"):
        load_checkpoint(tmp_path / "c.pt")


def test_eval_with_the_checkpoint_of_another_model(root, tmp_path):
    sn = tmp_path / "sn"; dn = tmp_path / "dn"
    train_run(RunConfig(data=str(root), category="widget", **{**SMALL_SN, "epochs": 1}), sn, progress=False)
    train_run(RunConfig(data=str(root), category="widget", **{**SMALL_DN, "epochs": 1}), dn, progress=False)
    (sn / "checkpoint.pt").write_bytes((dn / "checkpoint.pt").read_bytes())   # a DifferNet checkpoint in a SimpleNet run
    rc, _, err = cli("eval", "--checkpoint", str(sn), "--data", str(root), "--category", "widget", "--quiet")
    assert rc == 2 and "the checkpoint holds a DifferNet model, not a SimpleNet" in err and "Traceback" not in err, err


def test_a_run_trained_on_cuda_evaluates_on_a_cpu_machine(root, tmp_path):
    out = tmp_path / "run"
    train_run(RunConfig(data=str(root), category="widget", **{**SMALL_SN, "epochs": 1}), out, progress=False)
    cfg = json.loads((out / "config.json").read_text()); cfg["device"] = "cuda"
    (out / "config.json").write_text(json.dumps(cfg))                     # as if trained on a GPU machine
    if torch.cuda.is_available(): pytest.skip("this machine has CUDA: the CPU-only case cannot be shown here")
    r = eval_run(out, str(root), category="widget")                         # device 'auto': this machine's CPU
    assert 0 <= r["i_auroc"] <= 1
    rc, _, err = cli("eval", "--checkpoint", str(out), "--data", str(root), "--category", "widget", "--device", "cuda", "--quiet")
    assert rc == 2 and "this machine has no CUDA GPU" in err and "Traceback" not in err


# ---- NaN and inf while training

class NanGrad(torch.autograd.Function):
    "The identity forward, NaN backward: a finite loss whose gradient is not."
    @staticmethod
    def forward(x): return x.clone()
    @staticmethod
    def setup_context(ctx, inputs, output): pass
    @staticmethod
    def backward(ctx, g): return g * float("nan")


class Poisoned(GaussianModel):
    "A model whose losses, scores or gradients turn NaN on request (forward returns (losses, scores), as every CoMet model)."
    def __init__(self, where):
        super().__init__(); self.where = where
    def forward(self, x):
        losses, scores = super().forward(x)
        if self.where == "loss": losses = losses * float("nan")
        if self.where == "grad": losses = NanGrad.apply(losses)
        if self.where == "score": scores = scores * float("nan")
        return losses, scores


@pytest.mark.parametrize("where, meta, msg", [
    ("loss", True, r"a task loss is NaN/inf"), ("loss", False, r"the training loss is nan \(NaN/inf\)"),
    ("score", True, "anomaly scores of the training set are NaN/inf"), ("grad", False, r"the gradient norm is nan \(NaN/inf\)"),
])
def test_nan_stops_training_and_keeps_the_last_good_parameters(where, meta, msg):
    x = toy_data(40, 4, seed=0)[0]
    torch.manual_seed(0)
    model = Poisoned(where)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=msg) as e:
        CoMet(model, CoMetConfig(alpha=0.05, beta=0.05, epochs=2, batch_size=32, use_meta=meta)).fit(x)
    assert "keeps its last good parameters" in str(e.value) and "Lower beta/alpha" in str(e.value)
    for k, v in model.state_dict().items(): assert torch.isfinite(v).all() and torch.equal(v, before[k]), k


def test_cuda_device_on_a_machine_without_one(root, tmp_path):
    if torch.cuda.is_available(): pytest.skip("this machine has CUDA")
    rc, _, err = cli("train", "--data", str(root), "--category", "widget", "--device", "cuda", "--no-pretrained", "--quiet", "--out", str(tmp_path / "o"))
    assert rc == 2 and "device 'cuda' was asked for, but this machine has no CUDA GPU" in err and "Traceback" not in err


# ---- memory: features larger than the bound stream from disk

@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssAnon from /proc (Linux)")
def test_features_above_the_memory_bound_stream_from_disk(tmp_path):
    """100 MiB of features, one CoMet epoch, in a fresh process each: under COMET_NB_MAX_MEMORY=16M they stay on disk (memory-mapped),
    and the process's own memory grows by at least 80 MiB less than when the same features are loaded (bound 1G)."""
    script = os.path.join(os.path.dirname(__file__), "scripts", "stream_memory.py")
    got = {}
    for bound in ("16M", "1G"):
        r = subprocess.run([sys.executable, script, str(tmp_path / "feats")], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, COMET_NB_MAX_MEMORY=bound))
        assert r.returncode == 0, r.stderr
        got[bound] = json.loads(r.stdout.strip().splitlines()[-1])
    stream, loaded = got["16M"], got["1G"]
    assert stream["in_memory"] is False and loaded["in_memory"] is True
    assert loaded["peak_growth"] - stream["peak_growth"] >= 0.8 * stream["feature_bytes"], got
    print(f"peak growth of anonymous memory: streaming {stream['peak_growth'] / 2**20:.0f} MiB, loaded {loaded['peak_growth'] / 2**20:.0f} MiB, "
          f"features {stream['feature_bytes'] / 2**20:.0f} MiB")


def test_memory_bound_setting(monkeypatch):
    from comet_nb.features import max_memory_bytes
    monkeypatch.delenv("COMET_NB_MAX_MEMORY", raising=False)
    assert max_memory_bytes() == 2 ** 31 and max_memory_bytes("512M") == 512 * 2 ** 20 and max_memory_bytes(1000) == 1000
    monkeypatch.setenv("COMET_NB_MAX_MEMORY", "1.5G")
    assert max_memory_bytes() == int(1.5 * 2 ** 30)
    monkeypatch.setenv("COMET_NB_MAX_MEMORY", "plenty")
    with pytest.raises(ValueError, match=r"\$COMET_NB_MAX_MEMORY\) = 'plenty' is not a size: give bytes, or a number with K, M, G or T"):
        max_memory_bytes()


# ---- settings out of range: the whole message

@pytest.mark.parametrize("kw, msg", [
    (dict(kappa=-1), "kappa must be a finite number >= 0 (κ, the IQR multiplier of the threshold t, Eq. 2); got -1."),
    (dict(gamma=-0.5), "gamma must be a finite number >= 0 (γ, how much det Σ raises λ, Eq. 5); got -0.5."),
    (dict(lambda0=float("nan")), "lambda0 must be a finite number >= 0 (λ0, the base L2 strength, Eq. 5); got nan."),
    (dict(n_tasks=1), "n_tasks must be an integer >= 2 (one task to adapt on, the others to validate on); got 1."),
])
def test_trainer_settings_out_of_range(kw, msg):
    with pytest.raises(ValueError) as e: CoMetConfig(**kw)
    assert str(e.value) == msg


@pytest.mark.parametrize("noise", [1.0, -0.1])
def test_noise_out_of_range(noise):
    with pytest.raises(ValueError) as e: RunConfig(noise=noise)
    assert str(e.value) == (f"noise = {noise} is not valid: give a fraction in [0, 1) of the training set to replace by defective test images (0: none).")


def test_n_tasks_larger_than_the_training_set():
    with pytest.raises(ValueError, match=r"n_tasks = 8 is larger than the training set \(5 samples\); use n_tasks <= 5."):
        CoMet(GaussianModel(), CoMetConfig(n_tasks=8, epochs=1)).fit(toy_data(4, 1, seed=0)[0])


def test_feature_cache_of_another_backbone_or_size_is_not_reused(tmp_path):
    from comet_nb.features import WideResNetPatches, feature_key
    folder = write_images(tmp_path / "p", [(40, 40)] * 2)
    ds = ADDataset([Record(p, -1, "unknown", has_mask=False) for p in sorted(folder.glob("*.png"))], size=32)
    keys = {feature_key(ds, AlexNetMultiScale(64, pretrained=False, n_scales=1)), feature_key(ds, AlexNetMultiScale(96, pretrained=False, n_scales=1)),
            feature_key(ds, WideResNetPatches(32, pretrained=False, dim=32)), feature_key(ds, WideResNetPatches(32, pretrained=False, dim=64)),
            feature_key(ds, AlexNetMultiScale(64, pretrained=False, n_scales=1), n_views=2)}
    assert len(keys) == 5                                                   # five extractors or view settings, five cache entries


def test_every_row_of_the_bad_input_table_names_existing_tests():
    "tests/README.md's table stays true: every row names at least one test, and every test it names exists."
    import re
    from pathlib import Path
    here = Path(__file__).parent
    text = (here / "README.md").read_text()
    table = text[text.index("## Bad input"):text.index("## Faults")]
    rows = [l for l in table.splitlines() if l.startswith("| ") and not l.startswith("| bad input")]
    assert len(rows) >= 24
    for row in rows:
        refs = re.findall(r"`(test_\w+)::(test_\w+)`", row.rsplit(" | ", 1)[-1])
        assert refs, f"a row without a test: {row[:80]}"
        for f, t in refs: assert re.search(rf"^def {t}\(", (here / f"{f}.py").read_text(), re.M), f"{f}.py has no {t}"
