"Backbones (weights: random, local file, offline download) and the feature cache (keys, corruption, interruption)."
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torchvision

from comet_nb.data import ADDataset, mvtec, write_mvtec_fixture
from comet_nb.features import (AlexNetMultiScale, RandomWeightsWarning, WideResNetPatches, alexnet_features, default_device,
                               extract_features, feature_key)


@pytest.fixture(scope="module")
def wrn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return WideResNetPatches(image_size=64, pretrained=False)


@pytest.fixture
def ds(tmp_path):
    write_mvtec_fixture(tmp_path / "mv", n_train=5)
    return ADDataset(mvtec(tmp_path / "mv", "widget").train, size=64)


def test_random_weights_warn():
    with pytest.warns(RandomWeightsWarning, match="not comparable to the paper"):
        alexnet_features(pretrained=False)


def test_alexnet_offline_download_fails_with_instructions(monkeypatch):
    def offline(*a, **k): raise OSError("Name or service not known")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="pretrained='/path/to/that/file'"):
        alexnet_features(pretrained=True)


def test_timm_offline_download_fails_with_instructions(tmp_path):
    code = ("from comet_nb.features import timm_features\n"
            "try: timm_features('resnet18', (2, 3), pretrained=True)\n"
            "except RuntimeError as e: print('ERR', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "ERR could not load the ImageNet weights of resnet18" in r.stdout and "pretrained='/path/to/that/file'" in r.stdout, r.stderr[-2000:]


def test_device_choice():
    assert default_device("cpu") == torch.device("cpu")
    assert default_device() == (torch.device("cuda") if torch.cuda.is_available() else default_device())
    if not torch.cuda.is_available():
        assert default_device().type in ("cpu", "mps")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            default_device("cuda")


def test_cache_roundtrip_and_key(tmp_path, ds, wrn):
    fs = extract_features(ds, wrn, cache=tmp_path / "c", progress=False)
    assert fs.features.shape == (5, 1536, 8, 8) and fs.features.dtype == torch.float16
    assert json.loads((fs.path / "manifest.json").read_text())["key"] == fs.key
    calls = []
    hook = wrn.register_forward_hook(lambda *a: calls.append(1))
    try: again = extract_features(ds, wrn, cache=tmp_path / "c", progress=False)
    finally: hook.remove()
    assert calls == [] and torch.equal(again.features, fs.features)            # read from disk, not recomputed
    direct = wrn(torch.stack([ds[i]["image"] for i in range(5)])).half()
    assert torch.equal(direct, fs.features)
    # the key follows the content of the files, not their dates
    p = ds.records[0].path; st = p.stat(); os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert feature_key(ds, wrn) == fs.key
    raw = bytearray(p.read_bytes()); p.write_bytes(bytes(raw)); os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    from PIL import Image
    Image.fromarray((np.asarray(Image.open(p).convert("RGB")) // 2).astype(np.uint8)).save(p); os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert feature_key(ds, wrn) != fs.key                                       # edited, same mtime: a new entry


def _flip_last_byte(f):
    raw = bytearray((f / "features.npy").read_bytes()); raw[-3] ^= 0xFF; (f / "features.npy").write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, reason", [
    (_flip_last_byte, "rows fail their checksum"),
    (lambda f: (f / "manifest.json").write_text("{not json"), "corrupted"),
    (lambda f: (f / "features.npy").write_bytes((f / "features.npy").read_bytes()[:500]), "corrupted"),
    (lambda f: (f / "manifest.json").write_text(json.dumps({**json.loads((f / "manifest.json").read_text()), "key": "x"})), "stale"),
])
def test_damaged_cache_is_rebuilt_not_used(tmp_path, ds, wrn, damage, reason):
    fs = extract_features(ds, wrn, cache=tmp_path / "c", progress=False)
    damage(fs.path)
    with pytest.warns(UserWarning, match=reason):
        back = extract_features(ds, wrn, cache=tmp_path / "c", progress=False)
    assert torch.equal(back.features, fs.features)


def test_interrupted_extraction_leaves_nothing(tmp_path, ds, wrn):
    class Broken(ADDataset):
        def __getitem__(self, i):
            if i == 3: raise KeyboardInterrupt
            return super().__getitem__(i)
    bad = Broken(ds.records, size=64)
    with pytest.raises(KeyboardInterrupt):
        extract_features(bad, wrn, cache=tmp_path / "c", batch_size=2, progress=False)
    leftovers = [p.name for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert leftovers == []


def test_memory_bound_memory_maps(tmp_path, ds, wrn):
    fs = extract_features(ds, wrn, cache=tmp_path / "c", progress=False, max_memory=10_000)
    assert not fs.in_memory and len(fs.features) == 5 and fs.features[2].shape == (1536, 8, 8)


def test_views(tmp_path, ds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        ax = AlexNetMultiScale(image_size=256, pretrained=False)
    fs = extract_features(ds, ax, n_views=3, cache=tmp_path / "c", progress=False)
    assert fs.features.shape == (5, 3, 768)
    assert feature_key(ds, ax, n_views=3, view_seed=1) != fs.key


def test_weight_file_content_is_in_the_key(tmp_path, ds):
    full = torchvision.models.alexnet(weights=None)
    a, b = tmp_path / "a" / "alexnet.pth", tmp_path / "b" / "alexnet.pth"
    a.parent.mkdir(); b.parent.mkdir()
    torch.save(full.state_dict(), a)
    with torch.no_grad(): full.features[0].weight.add_(1.0)
    torch.save(full.state_dict(), b)
    assert a.stat().st_size == b.stat().st_size
    ka = feature_key(ds, AlexNetMultiScale(image_size=256, pretrained=a))
    kb = feature_key(ds, AlexNetMultiScale(image_size=256, pretrained=b))
    assert ka != kb
