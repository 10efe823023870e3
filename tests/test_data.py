"Dataset readers, contamination and the demo set, on fixture trees built here; every bad input names its path."
import numpy as np
import pytest
import torch
from PIL import Image

from comet_nb.data import (ADDataset, Record, UNKNOWN, collate, contaminate, image_folder, ksdd2, load_image, load_mask, mvtec, viaduct,
                           write_ksdd2_fixture, write_mvtec_fixture)
from comet_nb.demo import DEMO_CATEGORIES, demo, make_demo


def save(path, a, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(a, mode) if mode else Image.fromarray(a)).save(path)


@pytest.mark.parametrize("make, expect", [
    (lambda: np.full((5, 7), 128, np.uint8), 128 / 255),                       # grayscale
    (lambda: np.full((5, 7), 32896, np.uint16), 32896 / 65535),                # 16-bit
    (lambda: np.dstack([np.full((5, 7), 10, np.uint8)] * 3 + [np.full((5, 7), 255, np.uint8)]), 10 / 255),   # RGBA, opaque
    (lambda: np.dstack([np.full((5, 7), 10, np.uint8)] * 3 + [np.zeros((5, 7), np.uint8)]), 1.0),        # RGBA, transparent: white
    (lambda: np.full((5, 7, 3), 255, np.uint8), 1.0),                          # RGB
])
def test_formats_load_as_3_channel_floats(tmp_path, make, expect):
    save(tmp_path / "x.png", make())
    x = load_image(tmp_path / "x.png")
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.full_like(x, expect))


def test_palette_and_jpeg(tmp_path):
    Image.fromarray(np.arange(35, dtype=np.uint8).reshape(5, 7)).convert("P").save(tmp_path / "p.png")
    Image.fromarray(np.zeros((9, 11, 3), np.uint8)).save(tmp_path / "j.jpg")
    assert load_image(tmp_path / "p.png").shape == (3, 5, 7)
    assert load_image(tmp_path / "j.jpg").shape == (3, 9, 11)


def test_transparency_is_composited_on_white(tmp_path):
    px = np.array([[[255, 0, 0, 128], [0, 0, 255, 255], [0, 255, 0, 0]]], np.uint8)   # half-transparent red, opaque blue, clear green
    save(tmp_path / "rgba.png", px, "RGBA")
    x = load_image(tmp_path / "rgba.png")
    a = 128 / 255
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 1 - a, 1 - a]))         # red over white: (1, 0.5, 0.5)
    assert x[:, 0, 0].tolist() == pytest.approx([1.0, 0.5, 0.5], abs=0.005)
    torch.testing.assert_close(x[:, 0, 1], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(x[:, 0, 2], torch.ones(3))                             # clear green → white
    save(tmp_path / "la.png", np.array([[[0, 128], [100, 255]]], np.uint8), "LA")        # gray with alpha
    torch.testing.assert_close(load_image(tmp_path / "la.png")[:, 0], torch.tensor([[1 - a, 100 / 255]] * 3))
    Image.fromarray(np.array([[0, 1]], np.uint8)).convert("P").save(tmp_path / "p.png", transparency=1)
    torch.testing.assert_close(load_image(tmp_path / "p.png")[:, 0, 1], torch.ones(3))  # the palette's transparent entry
    Image.fromarray(np.array([[0, 200]], np.uint8)).save(tmp_path / "l.png", transparency=0)
    torch.testing.assert_close(load_image(tmp_path / "l.png")[:, 0], torch.tensor([[1.0, 200 / 255]] * 3))   # a colour marked transparent
    save(tmp_path / "m_mask.png", np.array([[[255, 0, 0, 0], [0, 0, 0, 0]]], np.uint8), "RGBA")
    assert load_mask(tmp_path / "m_mask.png").tolist() == [[1.0, 0.0]]               # masks: colours only, a clear background stays good


def test_short_side_keeps_the_aspect_ratio(tmp_path):
    img = np.zeros((30, 90), np.uint8); img[:, 30:60] = 255                              # a white square in the middle of a wide strip
    save(tmp_path / "w.png", img); save(tmp_path / "w_mask.png", img)
    rec = [Record(tmp_path / "w.png", 1, "x", tmp_path / "w_mask.png")]
    s = ADDataset(rec, short_side=15, crop=15)[0]
    assert s["image"].shape == (3, 15, 15) and s["mask"].shape == (15, 15)
    assert s["mask"].all() and s["image"][..., 1:-1].min() > 0.95                        # the crop is the square, not a squashed strip
    assert ADDataset(rec, short_side=15)[0]["image"].shape == (3, 15, 45)
    assert ADDataset(rec, size=15)[0]["mask"].float().mean().item() == pytest.approx(1 / 3, abs=0.05)   # size=S still squashes
    assert ADDataset(rec, size=(10, 30))[0]["image"].shape == (3, 10, 30)
    assert ADDataset(rec, short_side=15).size == [15]
    sq = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8); save(tmp_path / "sq.png", sq)
    one = [Record(tmp_path / "sq.png", 0)]
    assert torch.equal(ADDataset(one, short_side=33, crop=32)[0]["image"], ADDataset(one, size=33, crop=32)[0]["image"])


@pytest.mark.parametrize("kw, match", [
    (dict(size=16, short_side=16), "give size or short_side, not both"),
    (dict(short_side=8, crop=16), r"short_side=8 is smaller than crop=16.*Give short_side >= 16"),
    (dict(short_side=8, crop=(4, 12)), "Give short_side >= 12"),
    (dict(short_side=0), "short_side must be a whole number of pixels >= 1; got 0"),
    (dict(short_side=2.5), "got 2.5"),
])
def test_short_side_bad_input(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        ADDataset([Record(tmp_path / "none.png", 0)], **kw)


def test_mvtec_fixture_counts_labels_masks(tmp_path):
    write_mvtec_fixture(tmp_path, n_train=5, n_good=3, defects=("crack",), n_each=4)
    s = mvtec(tmp_path, "widget")
    assert len(s.train) == 5 and len(s.test) == 7
    assert [r.label for r in s.test] == [1, 1, 1, 1, 0, 0, 0]                   # test/crack, then test/good (sorted)
    ds = ADDataset(s.test, size=32)
    smp = ds[2]
    assert smp["index"] == 2 and smp["label"] == 1 and smp["mask"].shape == (32, 32) and smp["mask"].max() == 1
    assert ds[5]["mask"].sum() == 0 and smp["path"].endswith("crack/002.png")


def test_missing_mask_required_for_mvtec_optional_for_viaduct(tmp_path):
    write_mvtec_fixture(tmp_path, defects=("crack",), n_each=2)
    (tmp_path / "widget" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="001_mask.png"):
        mvtec(tmp_path, "widget")
    v = viaduct(tmp_path, "widget")
    rec = [r for r in v.test if r.path.name == "001.png" and r.label == 1][0]
    assert rec.mask_path is None and ADDataset([rec])[0]["mask"] is None


def test_mask_size_mismatch_names_both_files(tmp_path):
    write_mvtec_fixture(tmp_path, defects=("crack",), n_each=1)
    save(tmp_path / "widget" / "ground_truth" / "crack" / "000_mask.png", np.zeros((3, 3), np.uint8))
    s = mvtec(tmp_path, "widget")
    with pytest.raises(ValueError, match=r"000_mask.png is 3x3 pixels but its image .*crack/000.png is 45x37"):
        ADDataset(s.test)[0]


@pytest.mark.parametrize("setup, call, match", [
    (lambda p: None, lambda p: mvtec(p / "absent", "widget"), "mvtec root folder not found: .*absent"),
    (lambda p: write_mvtec_fixture(p), lambda p: mvtec(p, "gizmo"), "categories there are: widget"),
    (lambda p: (write_mvtec_fixture(p, n_train=1), (p / "widget" / "train" / "good" / "000.png").unlink()),
     lambda p: mvtec(p, "widget"), "training folder .*good holds no images"),
    (lambda p: (p / "empty").mkdir(), lambda p: image_folder(p / "empty"), "holds no images"),
    (lambda p: write_mvtec_fixture(p), lambda p: image_folder(p / "widget" / "train" / "good", p / "widget" / "ground_truth"), "needs a good/"),
    (lambda p: (p / "ksdd2").mkdir(), lambda p: ksdd2(p / "ksdd2"), "KSDD2 train folder not found"),
])
def test_bad_folders(tmp_path, setup, call, match):
    setup(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        call(tmp_path)


def test_undecodable_images_name_the_file(tmp_path):
    write_mvtec_fixture(tmp_path, n_train=2)
    bad = tmp_path / "widget" / "train" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:60])                                      # truncated PNG
    ds = ADDataset(mvtec(tmp_path, "widget").train)
    with pytest.raises(ValueError, match="cannot decode image .*001.png"):
        ds[1]
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="001.png: the file is empty"):
        ds[1]


def test_ksdd2_as_shipped_and_noise(tmp_path):
    write_ksdd2_fixture(tmp_path, n_train=10, n_train_bad=3)
    k = ksdd2(tmp_path)
    assert len(k.train) == 10 and len(k.contaminants) == 3 and sum(r.known_defective for r in k.train) == 3
    clean = contaminate(k, 0)
    assert len(clean.train) == 7 and clean.contaminants == [] and "kept 0 of its 3" in clean.notes[-1]
    assert len(contaminate(k, 0.3, seed=1).contaminants) == 2                  # int(0.3 · 7) = 2
    assert contaminate(k, "as-shipped") is k
    with pytest.raises(ValueError, match="has only 3 defective training images"):
        contaminate(k, 0.6)                                                     # int(0.6 · 7) = 4 > 3
    (tmp_path / "train" / "4_GT.png").unlink()
    with pytest.raises(FileNotFoundError, match="4_GT.png"):
        ksdd2(tmp_path)


def test_contamination_protocol(tmp_path):
    write_mvtec_fixture(tmp_path, n_train=30, defects=("a", "b"), n_each=5)
    s = mvtec(tmp_path, "widget")
    c = contaminate(s, 0.2, seed=3)
    assert len(c.contaminants) == 6 and len(c.train) == 36 and len(c.test) == len(s.test) - 6
    assert {str(r.path) for r in c.train if r.known_defective} == set(c.contaminants)
    assert {r.label for r in c.train if r.known_defective} == {UNKNOWN}            # unlabeled to the model
    assert all(r.mask_path is None for r in c.train)
    assert not set(c.contaminants) & {str(r.path) for r in c.test}
    assert contaminate(s, 0.2, seed=3).contaminants == c.contaminants
    assert contaminate(s, 0.2, seed=4).contaminants != c.contaminants
    kept = contaminate(s, 0.2, seed=3, keep_test=True)
    assert len(kept.test) == len(s.test) and "kept intact" in kept.notes[-1]
    for bad in (-0.1, 1.0, "lots", None):
        with pytest.raises(ValueError, match="noise"):
            contaminate(s, bad)


def test_unlabeled_folder_cannot_be_contaminated(tmp_path):
    write_mvtec_fixture(tmp_path)
    f = image_folder(tmp_path / "widget" / "train" / "good")
    assert {r.label for r in f.train} == {UNKNOWN}
    with pytest.raises(ValueError, match="unlabeled"):
        contaminate(f, 0.1)


def test_demo_dataset_is_deterministic_and_cached(tmp_path):
    a = make_demo(tmp_path / "a", n_train=5, n_test_good=4, n_test_each=2, categories=("grass",))
    b = make_demo(tmp_path / "b", n_train=5, n_test_good=4, n_test_each=2, categories=("grass",))
    fa = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert fa == sorted(p.relative_to(b) for p in b.rglob("*.png")) and len(fa) == 5 + 4 + 8 + 8
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)
    mtime = (a / "params.json").stat().st_mtime_ns
    assert make_demo(tmp_path / "a", n_train=5, n_test_good=4, n_test_each=2, categories=("grass",)) == a
    assert (a / "params.json").stat().st_mtime_ns == mtime                      # not regenerated
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp")]


def test_demo_default_in_cache_dir(_private_cache):
    s = demo("gravel")
    assert str(s.train[0].path).startswith(_private_cache)
    assert len(s.train) == 80 and len(s.test) == 120 and sum(r.label for r in s.test) == 60
    with pytest.raises(ValueError, match="brick, grass, gravel"):
        demo("carpet")
    assert DEMO_CATEGORIES == ("brick", "grass", "gravel")


def test_exif_orientation_is_applied(tmp_path):
    im = Image.fromarray(np.zeros((5, 7, 3), np.uint8))
    exif = im.getexif(); exif[0x0112] = 6                                       # "rotate 90° clockwise to view"
    im.save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").shape == (3, 7, 5)


def test_32bit_image_holding_8bit_values(tmp_path):
    Image.fromarray(np.full((4, 4), 200, np.int32), "I").save(tmp_path / "i.tif")
    torch.testing.assert_close(load_image(tmp_path / "i.tif"), torch.full((3, 4, 4), 200 / 255))


def test_collate_keeps_missing_masks(tmp_path):
    write_mvtec_fixture(tmp_path)
    f = image_folder(tmp_path / "widget" / "train" / "good", tmp_path / "widget" / "test")
    loader = torch.utils.data.DataLoader(ADDataset(f.train + f.test, size=16), batch_size=8, collate_fn=collate)
    b = next(iter(loader))
    assert b["image"].shape == (8, 3, 16, 16) and b["mask"][0] is None and b["mask"][4].shape == (16, 16)   # unlabeled: None; good: zeros
    assert b["label"][:4].tolist() == [UNKNOWN] * 4


def _gen(root):
    from comet_nb.demo import make_demo
    return str(make_demo(root, n_train=3, n_test_good=2, n_test_each=1, categories=("brick",)))


def test_demo_generation_is_safe_in_parallel(tmp_path):
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(3) as pool:
        outs = pool.map(_gen, [tmp_path] * 3)
    assert len(set(outs)) == 1
    s = mvtec(outs[0], "brick")
    assert len(s.train) == 3 and len(s.test) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_demo_size_limits(tmp_path):
    with pytest.raises(ValueError, match="between 16 and 192"):
        make_demo(tmp_path, size=200)
    assert make_demo(tmp_path, size=192, n_train=2, n_test_good=1, n_test_each=1, categories=("grass",)).is_dir()


def test_the_two_geometries_never_share_a_feature_cache_entry(tmp_path):
    from comet_nb.features import EfficientNetPatches, feature_key
    save(tmp_path / "w.png", np.zeros((30, 60, 3), np.uint8))
    recs, ext = [Record(tmp_path / "w.png", 0)], EfficientNetPatches(32)
    keys = {feature_key(ADDataset(recs, size=32, crop=32), ext), feature_key(ADDataset(recs, short_side=32, crop=32), ext),
            feature_key(ADDataset(recs, size=32), ext), feature_key(ADDataset(recs, short_side=32), ext)}
    assert len(keys) == 4
