"Overlays of anomaly maps: exact contour colours, the images picked, one colour scale, and what eval_run writes for each model."
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import comet_nb.experiments as ex
from comet_nb.data import write_mvtec_fixture
from comet_nb.experiments import GT_COLOUR, PRED_COLOUR, RunConfig, eval_run, overlay, overlay_picks, train_run

pytestmark = pytest.mark.filterwarnings("ignore::comet_nb.features.RandomWeightsWarning")   # offline: random backbone weights, on purpose

GROUPS = ("worst_good", "worst_defective", "best_defective", "best_good", "sample")


def colour(px, c): return (px == np.array(c, np.uint8)).all(-1)


def right_half(px, w): return px[:, w + 4:]


def test_overlay_draws_the_truth_and_the_prediction_in_exact_colours():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 20, 30, generator=g)
    amap = torch.rand(20, 30, generator=g) * 0.4
    amap[2:7, 3:9] = 0.9                                                    # predicted: a 5 x 6 block
    gt = torch.zeros(20, 30); gt[10:18, 20:30] = 1                          # the truth: an 8 x 10 block at the right border
    o = overlay(img, amap, 0.0, 1.0, gt, tau=0.5)
    assert o.shape == (20, 64, 3) and o.dtype == np.uint8
    assert np.array_equal(o[:, :30], np.round(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))   # the left panel: the image
    r = right_half(o, 30)
    pred, truth = colour(r, PRED_COLOUR), colour(r, GT_COLOUR)
    assert pred.sum() == 2 * 5 + 2 * 6 - 4 and pred[2:7, 3:9].sum() == pred.sum() and not pred[3:6, 4:8].any()
    assert truth.sum() == 2 * 8 + 2 * 10 - 4 and truth[10:18, 20:30].sum() == truth.sum() and truth[10:18, 29].all()   # the border closes it
    bare = right_half(overlay(img, amap, 0.0, 1.0), 30)
    assert not colour(bare, PRED_COLOUR).any() and not colour(bare, GT_COLOUR).any()      # no exact red or white in any blend
    black = right_half(overlay(torch.zeros(3, 4, 4), torch.full((4, 4), -5.0), 0.0, 1.0), 4)
    assert not colour(black, GT_COLOUR).any() and (black[..., 1] > 0).all()
    with pytest.raises(ValueError, match=r"the anomaly map is \(20, 20\) but its image \(20, 30\)"):
        overlay(img, amap[:, :20], 0.0, 1.0)


def test_one_scale_gives_one_colour_per_score():
    img, m = torch.full((3, 8, 8), 0.5), torch.zeros(8, 8)
    m[2:4, 2:4] = 0.5
    a = right_half(overlay(img, m, 0.0, 1.0), 8)
    b = right_half(overlay(img, m * 2, 0.0, 1.0), 8)
    assert not np.array_equal(a[2, 2], b[2, 2])                             # 0.5 and 1.0 on one scale: two colours
    assert np.array_equal(right_half(overlay(img, m, 0.0, 0.5), 8)[2, 2], b[2, 2])   # 0.5 on its own scale looks like 1.0


def test_overlay_picks_the_worst_the_best_and_a_seeded_sample():
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1])
    s = np.array([0.1, 0.9, 0.3, 0.5, 0.2, 0.4, 1.0, 0.8, 0.05, 0.7, 0.6, 0.95])
    p = overlay_picks(y, s, k=2)
    by = {g: [i for grp, i in p if grp == g] for g in GROUPS}
    assert by["worst_good"] == [1, 10] and by["worst_defective"] == [8, 5]   # highest-scoring good, lowest-scoring defective
    assert by["best_defective"] == [6, 11] and by["best_good"] == [0, 4]
    assert len(by["sample"]) == 2 and not set(by["sample"]) & {1, 10, 8, 5, 6, 11, 0, 4}
    assert overlay_picks(y, s, k=2) == p and len({i for _, i in p}) == len(p)  # reproducible, each image once
    small = overlay_picks([0, 1, 0], [0.2, 0.9, 0.1], k=3)
    assert small == [("worst_good", 0), ("worst_good", 2), ("worst_defective", 1)]   # a tiny set: every image once, in the first group


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_mvtec_fixture(tmp_path_factory.mktemp("mvtec"), "widget", n_train=10, n_good=4, n_each=3, size=(40, 40))


@pytest.fixture(scope="module")
def sn_run(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sn") / "run"
    cfg = RunConfig(data=str(root), category="widget", model="simplenet", method="baseline", image_size=32,
                    overrides=dict(dim=32, hidden=16), batch_size=4, epochs=2, pretrained=False, device="cpu")
    return out, train_run(cfg, out, progress=False)


def test_eval_run_writes_overlays_on_one_scale(sn_run, root, tmp_path, monkeypatch):
    out, m = sn_run
    seen, draw = [], ex.overlay
    def spy(image, amap, lo, hi, mask=None, tau=None, alpha=0.5):
        seen.append((lo, hi, tau, amap.float().clone()))
        return draw(image, amap, lo, hi, mask, tau, alpha)
    monkeypatch.setattr(ex, "overlay", spy)
    e = eval_run(out, str(root), "widget", out=tmp_path / "ev", maps=True, overlays=2)
    folder = tmp_path / "ev" / "overlays"
    files = sorted(p.name for p in folder.glob("*.png"))
    assert len(e["overlays"]) == 10 and files == sorted([o["file"] for o in e["overlays"]] + ["colorbar.png"])
    assert [o["group"] for o in e["overlays"]] == [g for g in GROUPS for _ in range(2)]
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["overlays"] == e["overlays"]
    rows = list(csv.DictReader(open(folder / "overlays.csv")))
    assert [r["file"] for r in rows] == [o["file"] for o in e["overlays"]] and set(rows[0]) == {"file", "group", "path", "label", "score", "verdict"}
    all_maps = [mp for _, _, _, mp in seen]
    assert len({(lo, hi) for lo, hi, _, _ in seen}) == 1                             # one colour scale for every overlay...
    lo, hi = seen[0][:2]
    assert lo < hi and all(t == m["threshold"] for _, _, t, _ in seen)               # ...and SimpleNet's region at the run's τ
    assert max(mp.max().item() for mp in all_maps) > lo                              # the scale spans the maps drawn
    assert (tmp_path / "ev" / "maps" / "colorbar.png").is_file() and Image.open(folder / "colorbar.png").size[0] > 300
    for o in e["overlays"]:
        px = np.asarray(Image.open(folder / o["file"]))
        assert px.shape == (32, 68, 3)
        r = right_half(px, 32)
        if colour(r, PRED_COLOUR).any(): assert o["verdict"] is True, o               # a predicted region only in a flagged image
        if o["label"] == 1: assert colour(r, GT_COLOUR).any(), o                    # every defective fixture image has a mask
        else: assert not colour(r, GT_COLOUR).any(), o


def test_the_scale_is_that_of_all_test_maps(sn_run, root, tmp_path, monkeypatch):
    out, _ = sn_run
    scales, kept = [], {}
    real_scale, real_write = ex.map_scale, ex._write_overlays
    monkeypatch.setattr(ex, "map_scale", lambda maps: scales.append(len(maps)) or real_scale(maps))
    def write(folder, model, cfg, records, scores, maps, tau, k):
        kept.update(maps); return real_write(folder, model, cfg, records, scores, maps, tau, k)
    monkeypatch.setattr(ex, "_write_overlays", write)
    e = eval_run(out, str(root), "widget", out=tmp_path / "ev", maps=True, overlays=1)
    assert len(kept) == e["n_test"] and scales == [e["n_test"], e["n_test"]]       # maps/ and overlays/: both over all test maps


def test_overlays_off_and_bad_values(sn_run, root, tmp_path):
    out, _ = sn_run
    e = eval_run(out, str(root), "widget", out=tmp_path / "none", maps=True, overlays=0)
    assert "overlays" not in e and not (tmp_path / "none" / "overlays").exists() and (tmp_path / "none" / "maps").is_dir()
    assert not (tmp_path / "nomaps" / "overlays").exists() and "overlays" not in eval_run(out, str(root), "widget", out=tmp_path / "nomaps")
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match=f"overlays = {bad!r} is not valid: give the number of test images to draw per group"):
            eval_run(out, str(root), "widget", out=tmp_path / "bad", maps=True, overlays=bad)


def test_differnet_overlays_draw_no_predicted_region(root, tmp_path):
    cfg = RunConfig(data=str(root), category="widget", model="differnet", method="baseline", image_size=64,
                    overrides=dict(n_scales=1, train_views=2, test_views=2, n_blocks=2, hidden=32), batch_size=4, epochs=1,
                    pretrained=False, device="cpu")
    train_run(cfg, tmp_path / "dn", progress=False)
    e = eval_run(tmp_path / "dn", str(root), "widget", out=tmp_path / "ev", maps=True, overlays=1)
    assert len(e["overlays"]) == 5 and e["p_aupro"] is not None
    for o in e["overlays"]:
        r = right_half(np.asarray(Image.open(tmp_path / "ev" / "overlays" / o["file"])), 40)   # gradient maps at the image size
        assert not colour(r, PRED_COLOUR).any()                                       # no pixel threshold on this scale
        assert colour(r, GT_COLOUR).any() == (o["label"] == 1)
    assert "DifferNet's gradient maps are on another scale" in ex._overlay_note(None, simplenet=False)
    assert Image.open(tmp_path / "ev" / "overlays" / "colorbar.png").size[0] > 300     # the legend that says so
