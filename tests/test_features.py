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


# ---- cache management: entries, pruning

def _entry(root, name, nbytes, days_ago, now=None):
    "A fake cache entry: features.npy of `nbytes` bytes and a manifest, last used `days_ago` days ago."
    import time
    now = time.time() if now is None else now
    d = root / name; d.mkdir(parents=True)
    (d / "features.npy").write_bytes(b"\0" * nbytes)
    (d / "manifest.json").write_text(json.dumps(dict(key=name + "0" * 40, shape=[nbytes], spec=dict(backbone="fake"))))
    t = now - days_ago * 86400
    for f in d.iterdir(): os.utime(f, (t, t))
    return d


@pytest.fixture
def cache(tmp_path):
    "Four entries used 50, 20, 5 and 0 days ago (1000, 2000, 3000, 4000 bytes), and things of somebody else's beside them."
    root = tmp_path / "cache"
    dirs = [_entry(root, f"{i:x}" * 24, 1000 * (i + 1), days) for i, days in enumerate((50, 20, 5, 0))]
    (root / "notes.txt").write_text("mine")
    (root / ("e" * 24)).mkdir(); (root / ("e" * 24) / "features.npy").write_bytes(b"x"); (root / ("e" * 24) / "todo.txt").write_text("mine")
    (root / "photos").mkdir(); (root / "photos" / "manifest.json").write_text("{}")
    return root, dirs


def _foreign_intact(root):
    return ((root / "notes.txt").read_text() == "mine" and (root / ("e" * 24) / "todo.txt").read_text() == "mine"
            and (root / ("e" * 24) / "features.npy").exists() and (root / "photos" / "manifest.json").exists())


def test_cache_entries_lists_only_entries_least_recently_used_first(cache):
    from comet_nb.features import cache_entries
    root, dirs = cache
    es = cache_entries(root)
    assert [e.path for e in es] == dirs
    assert [e.bytes for e in es] == [1000 * (i + 1) + len((d / "manifest.json").read_bytes()) for i, d in enumerate(dirs)]
    assert all(e.complete and not e.building and e.files == ["features.npy", "manifest.json"] for e in es)
    assert es[0].key == dirs[0].name + "0" * 40 and es[0].backbone == "fake" and es[0].shape == (1000,)


def test_prune_by_size_removes_least_recently_used_first(cache):
    from comet_nb.features import cache_entries, prune_cache
    root, dirs = cache
    sizes = [e.bytes for e in cache_entries(root)]
    gone = prune_cache(root, max_bytes=sizes[2] + sizes[3])                  # room for the two newest
    assert [e.path for e in gone] == dirs[:2]
    assert [e.path for e in cache_entries(root)] == dirs[2:] and not dirs[0].exists() and not dirs[1].exists()
    assert _foreign_intact(root)
    assert prune_cache(root, max_bytes="1G") == []                           # fits already: nothing goes


def test_prune_by_age_and_dry_run(cache):
    from comet_nb.features import cache_entries, prune_cache
    root, dirs = cache
    would = prune_cache(root, older_than_days=10, dry_run=True)
    assert [e.path for e in would] == dirs[:2] and all(d.exists() for d in dirs)
    assert [e.path for e in prune_cache(root, older_than_days=10)] == dirs[:2]
    assert [e.path for e in cache_entries(root)] == dirs[2:] and _foreign_intact(root)
    both = prune_cache(root, older_than_days=1, max_bytes=0)                 # age first, then size: everything that is an entry
    assert [e.path for e in both] == dirs[2:] and cache_entries(root) == [] and _foreign_intact(root)


def test_a_build_in_progress_is_never_pruned_and_dead_builds_are_tidied(cache):
    import subprocess, sys
    from comet_nb.features import _tmp_tag, cache_entries, prune_cache
    root, dirs = cache
    live = dirs[0] / f".features.{_tmp_tag()}.npy.tmp"; live.write_bytes(b"1")      # this process is rebuilding it
    p = subprocess.Popen([sys.executable, "-c", "pass"]); p.wait()                 # a process that is gone
    host = _tmp_tag().split("@", 1)[1]
    dead = dirs[1] / f".manifest.{p.pid}@{host}.json.tmp"; dead.write_text("{")
    es = {e.path: e for e in cache_entries(root)}
    assert es[dirs[0]].building and not es[dirs[1]].building
    gone = prune_cache(root, max_bytes=0)
    assert [e.path for e in gone] == dirs[1:] and dirs[0].exists() and live.exists() and not dirs[1].exists()


def test_an_interrupted_removal_leaves_no_valid_half_entry(tmp_path, ds, wrn, monkeypatch):
    "The manifest goes first: if the array cannot be deleted, the entry is absent to every run, and rebuilt silently."
    from pathlib import Path
    from comet_nb.features import cache_entries, prune_cache
    fs = extract_features(ds, wrn, cache=tmp_path / "c", progress=False)
    real = Path.unlink
    def stuck(self, *a, **k):
        if self.name == "features.npy": raise PermissionError(13, "in use")
        return real(self, *a, **k)
    monkeypatch.setattr(Path, "unlink", stuck)
    gone = prune_cache(tmp_path / "c", max_bytes=0)
    monkeypatch.setattr(Path, "unlink", real)
    assert [e.path for e in gone] == [fs.path] and (fs.path / "features.npy").exists() and not (fs.path / "manifest.json").exists()
    assert [e.complete for e in cache_entries(tmp_path / "c")] == [False]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)                          # absent, not 'corrupted'
        again = extract_features(ds, wrn, cache=tmp_path / "c", progress=False)
    assert torch.equal(again.features, fs.features)


def test_a_cache_hit_counts_as_a_use(tmp_path, ds, wrn):
    import time
    from comet_nb.features import cache_entries, prune_cache
    fs = extract_features(ds, wrn, cache=tmp_path / "c", progress=False)
    old = time.time() - 90 * 86400
    os.utime(fs.path / "manifest.json", (old, old))
    assert [e.path for e in prune_cache(tmp_path / "c", older_than_days=30, dry_run=True)] == [fs.path]
    extract_features(ds, wrn, cache=tmp_path / "c", progress=False)
    assert time.time() - cache_entries(tmp_path / "c")[0].last_used < 60
    assert prune_cache(tmp_path / "c", older_than_days=30) == []


def test_the_default_cache_folder_follows_comet_nb_cache(tmp_path, monkeypatch):
    from comet_nb.features import cache_entries, feature_cache_dir, prune_cache
    monkeypatch.setenv("COMET_NB_CACHE", str(tmp_path / "nothing_yet"))
    assert feature_cache_dir() == tmp_path / "nothing_yet" / "features"
    assert cache_entries() == [] and prune_cache(max_bytes=0) == []             # no cache yet: nothing to list or prune
    d = _entry(feature_cache_dir(), "f" * 24, 10, 1)
    assert [e.path for e in cache_entries()] == [d]


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(max_bytes="lots"), ValueError, "max_bytes = 'lots' is not a size: give bytes, or a number with K, M, G or T"),
    (dict(max_bytes=-5), ValueError, "max_bytes = -5 is not a size"),
    (dict(max_bytes=True), ValueError, "max_bytes = True is not a size"),
    (dict(older_than_days=-1), ValueError, "older_than_days = -1: give a number of days >= 0"),
    (dict(older_than_days="old"), ValueError, "older_than_days = 'old'"),
    (dict(), ValueError, "needs older_than_days, max_bytes or both"),
])
def test_prune_bad_arguments_are_clear_errors_and_remove_nothing(cache, kw, exc, msg):
    from comet_nb.features import cache_entries, prune_cache
    root, dirs = cache
    with pytest.raises(exc, match=msg.replace("(", r"\(")):
        prune_cache(root, **kw)
    assert [e.path for e in cache_entries(root)] == dirs


def test_cache_folder_that_is_not_one(tmp_path):
    from comet_nb.features import cache_entries, prune_cache
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        cache_entries(tmp_path / "f")
    with pytest.raises(FileNotFoundError, match="no feature cache folder at"):
        prune_cache(tmp_path / "typo", max_bytes=0)


def test_the_cache_key_follows_every_step_from_file_to_tensor(tmp_path, monkeypatch):
    "A change to how images are read, composited or resized is a new cache entry, not stale features."
    import comet_nb.data as data
    from comet_nb.data import ADDataset, write_mvtec_fixture
    from comet_nb.experiments import load_split
    from comet_nb.features import EfficientNetPatches, feature_key
    root = write_mvtec_fixture(tmp_path, n_train=2)
    ds = ADDataset(load_split(str(root), "widget").train)
    with pytest.warns(Warning): ext = EfficientNetPatches(32, pretrained=False, dim=16)
    key = feature_key(ds, ext)
    assert feature_key(ds, ext) == key
    for name in ("_on_white", "_to_float", "resize_crop"):
        with monkeypatch.context() as m:
            m.setattr(data, name, lambda *a, **k: None)
            assert feature_key(ds, ext) != key, name
