"Metrics: clear errors for bad input, the streaming pixel AUROC against scikit-learn, and properties of the AUROC, thresholds and curation report."
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from matplotlib.figure import Figure
from PIL import Image
from scipy import ndimage
from sklearn.metrics import f1_score, roc_auc_score

from comet_nb.metrics import (StreamingAUPRO, StreamingAUROC, _weighted_aucs, aupro, bootstrap_se, curation_report,
                              decision_threshold, f1_max, hanley_mcneil_se, image_auroc, lowest_weight_gallery, nn_image_scores,
                              nn_patch_scores, pixel_auroc, precision_recall_f1, region_weights)
from comet_nb.scl import confidence_weights, iqr_threshold

SETTINGS = settings(max_examples=60, deadline=None)


# ---------------------------------------------------------------- image AUROC and its standard error

@pytest.mark.parametrize("labels, scores, match", [
    ([0, 1, 1], [0.1, 0.2], "3 entries but `scores` has 2"),
    ([0, 0, 0], [0.1, 0.2, 0.3], "0 defective and 3 nominal"),
    ([1, 1], [0.1, 0.2], "2 defective and 0 nominal"),
    ([0, 1], [0.1, np.nan], "1 NaN"),
    ([0, 1], [np.inf, 0.2], "1 inf"),
    ([0, 2], [0.1, 0.2], r"0 \(nominal\) or 1 \(defective\)"),
    ([[0, 1]], [0.1, 0.2], "1-D"),
    ([0, 1], [[0.1, 0.2]], "1-D"),
    (["a", "b"], [0.1, 0.2], "0/1 or bool"),
    ([0, 1], ["x", "y"], "real numbers"),
])
def test_image_auroc_bad_input(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        image_auroc(labels, scores)


def test_image_auroc_values_and_types():
    r = image_auroc(torch.tensor([True, False, True, False]), torch.tensor([0.9, 0.1, 0.4, 0.5], dtype=torch.float16))
    assert r["auroc"] == 0.75 and (r["n_pos"], r["n_neg"]) == (2, 2)
    assert r["se"] == pytest.approx(hanley_mcneil_se(0.75, 2, 2))
    assert image_auroc(np.array([0, 1]), [1, 1])["auroc"] == 0.5  # a tie counts half


@pytest.mark.parametrize("n", [1, 2, 10, 100])
def test_hanley_mcneil_at_chance(n):
    # A = 1/2: Q1 = Q2 = 1/3, so Q - A^2 = 1/12 for both terms
    assert hanley_mcneil_se(0.5, n, n) == pytest.approx(math.sqrt((0.25 + 2 * (n - 1) / 12) / n ** 2))


def test_hanley_mcneil_shrinks_with_n_and_is_zero_at_perfection():
    assert hanley_mcneil_se(0.8, 100, 100) < hanley_mcneil_se(0.8, 10, 10)
    assert hanley_mcneil_se(1.0, 5, 7) == 0.0 and hanley_mcneil_se(0.0, 5, 7) == 0.0


@pytest.mark.parametrize("args, match", [((1.5, 3, 3), r"\[0, 1\]"), ((0.7, 0, 3), ">= 1"), ((0.7, 2.5, 3), "whole numbers")])
def test_hanley_mcneil_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        hanley_mcneil_se(*args)


@SETTINGS
@given(st.integers(2, 30), st.integers(2, 30), st.integers(0, 2 ** 32 - 1))
def test_weighted_auc_equals_sklearn_with_sample_weights(n_pos, n_neg, seed):
    rng = np.random.default_rng(seed)
    pos, neg = rng.integers(0, 6, n_pos).astype(float), rng.integers(0, 6, n_neg).astype(float)  # many ties
    cp, cn = rng.integers(0, 4, (1, n_pos)), rng.integers(0, 4, (1, n_neg))
    cp[0, 0] = cn[0, 0] = 1                                                                     # both classes present
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    expected = roc_auc_score(y, np.r_[pos, neg], sample_weight=np.r_[cp[0], cn[0]])
    assert _weighted_aucs(pos, neg, cp, cn)[0] == pytest.approx(expected, abs=1e-12)


def test_bootstrap_se_reproducible_and_close_to_hanley_mcneil():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(80), np.zeros(80)]
    s = np.r_[rng.normal(1, 1, 80), rng.normal(0, 1, 80)]
    se = bootstrap_se(y, s, n_boot=2000)
    assert se == bootstrap_se(y, s, n_boot=2000) and se != bootstrap_se(y, s, n_boot=2000, seed=1)
    assert se == pytest.approx(hanley_mcneil_se(roc_auc_score(y, s), 80, 80), rel=0.25)
    assert bootstrap_se([0, 1], [0.2, 0.7], n_boot=50) == 0.0   # one image per class: every replicate is the same set
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_se(y, s, n_boot=1)


def test_bootstrap_se_memory_blocks_do_not_change_the_answer():
    rng = np.random.default_rng(3)
    y = rng.random(3000) < 0.3
    s = rng.normal(size=3000) + y
    se = bootstrap_se(y, s, n_boot=1500)                        # ~2100 nominal: 2**21 // 2100 = 998 replicates per block, two blocks
    assert se == pytest.approx(hanley_mcneil_se(roc_auc_score(y, s), int(y.sum()), int((~y).sum())), rel=0.25)


@SETTINGS
@given(arrays(np.int64, st.integers(4, 40), elements=st.integers(-50, 50)), st.integers(0, 2 ** 32 - 1))
def test_image_auroc_invariant_to_increasing_transforms(s, seed):
    y = np.random.default_rng(seed).random(len(s)) < 0.5
    y[0], y[1] = True, False
    base = image_auroc(y, s)["auroc"]
    for f in (lambda x: 3 * x + 7, lambda x: x ** 3, lambda x: np.exp(x / 10.0), np.arctan):
        assert image_auroc(y, f(s.astype(float)))["auroc"] == pytest.approx(base, abs=1e-12)
    assert image_auroc(y, -s)["auroc"] == pytest.approx(1 - base, abs=1e-12)


# ---------------------------------------------------------------- streaming pixel AUROC

def _case(kind, seed, n=20, hw=32):
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(n, hw, hw, generator=g) < 0.1).float()
    x = torch.randn(n, hw, hw, generator=g, dtype=torch.float64)
    if kind == "normal": maps = x + 1.0 * masks
    elif kind == "heavy": maps = torch.tan(0.49 * math.pi * torch.tanh(x + masks))     # heavy tails: a few huge scores
    elif kind == "ties": maps = (x + masks).round()                                    # ~10 distinct values
    elif kind == "offset": maps = 1e6 + 1e-3 * (x + masks)                             # a large offset, a small spread
    elif kind == "tiny": maps = 1e-9 * (x + 0.5 * masks)
    else: raise ValueError(kind)
    return masks, maps


KINDS = ["normal", "heavy", "ties", "offset", "tiny"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_auroc_matches_sklearn(kind, seed):
    masks, maps = _case(kind, seed)
    exact = roc_auc_score(masks.flatten().numpy(), maps.flatten().numpy())
    order = torch.randperm(len(masks), generator=torch.Generator().manual_seed(seed))
    sizes = [1, 3, 7, 2, 7]                                                              # unequal batches, shuffled images
    starts = np.cumsum([0] + sizes)
    acc = StreamingAUROC()
    for a, b in zip(starts[:-1], starts[1:]): acc.update(masks[order[a:b]], maps[order[a:b]])
    results = {
        "full": pixel_auroc(masks, maps),
        "list": pixel_auroc(list(masks), list(maps)),
        "numpy": pixel_auroc(masks.numpy(), maps.numpy()),
        "generator": pixel_auroc((masks[i:i + 4], maps[i:i + 4]) for i in range(0, len(masks), 4)),
        "stream": acc.compute(),
    }
    bound = acc.error_bound()
    for name, v in results.items():
        assert abs(v - exact) < 1e-3, (name, v, exact)
    assert abs(results["stream"] - exact) <= bound + 1e-12
    full_acc = StreamingAUROC(score_range=(maps.min().item(), maps.max().item())).update(masks, maps)
    assert abs(results["full"] - exact) <= full_acc.error_bound() + 1e-12
    if kind == "ties":
        assert full_acc.error_bound() == 0.0 and results["full"] == pytest.approx(exact, abs=1e-12)


def test_pixel_auroc_histogram_grows_over_many_orders_of_magnitude():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(6, 64, 64, generator=g) < 0.2).float()
    maps = torch.randn(6, 64, 64, generator=g, dtype=torch.float64) + 2 * masks
    maps[0] *= 1e-6                                       # a nearly constant first batch
    maps[5] *= 1e3                                        # a late batch a billion times wider
    acc = StreamingAUROC()
    for m, a in zip(masks, maps): acc.update(m, a)
    exact = roc_auc_score(masks.flatten().numpy(), maps.flatten().numpy())
    assert abs(acc.compute() - exact) <= acc.error_bound() + 1e-12
    R = (maps.max() - maps.min()).item()
    assert acc.width < 2 * R / (acc.bins - 2)              # bins at most twice as wide as needed


def test_pixel_auroc_constant_batches_before_the_range_is_known():
    m1, a1 = torch.tensor([1.0, 0.0, 0.0]), torch.full((3,), 2.0)
    m2, a2 = torch.tensor([0.0, 1.0]), torch.full((2,), 2.0)
    m3, a3 = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([5.0, -1.0, 2.0, 2.0])
    acc = StreamingAUROC().update(m1, a1).update(m2, a2)
    assert acc.pos is None and acc.compute() == 0.5 and acc.error_bound() == 0.0   # all scores equal so far: every pair ties
    acc.update(m3, a3)
    y, s = torch.cat([m1, m2, m3]).numpy(), torch.cat([a1, a2, a3]).numpy()
    assert acc.compute() == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert acc.error_bound() == 0.0


def test_pixel_auroc_user_range_and_channel_dim():
    g = torch.Generator().manual_seed(1)
    masks = (torch.rand(4, 16, 16, generator=g) < 0.3)
    maps = torch.sigmoid(torch.randn(4, 1, 16, 16, generator=g) + 2 * masks[:, None])   # (B, 1, H, W) maps, bool masks
    exact = roc_auc_score(masks.flatten().numpy(), maps.flatten().numpy())
    assert pixel_auroc(masks, maps, score_range=(0, 1)) == pytest.approx(exact, abs=1e-4)
    assert pixel_auroc([(masks, maps)], score_range=(0.4, 0.6)) == pytest.approx(exact, abs=1e-4)  # a too-narrow range grows


@pytest.mark.parametrize("call, match", [
    (lambda: pixel_auroc(torch.zeros(2, 4, 4), torch.rand(2, 4, 4)), "no defective pixels among the 32"),
    (lambda: pixel_auroc(torch.ones(2, 4, 4), torch.rand(2, 4, 4)), "all 32 pixels seen are defective"),
    (lambda: pixel_auroc(torch.ones(2, 4, 4) * 0.5, torch.rand(2, 4, 4)), "0/1"),
    (lambda: pixel_auroc(torch.eye(4)[None], torch.full((1, 4, 4), float("nan"))), "NaN"),
    (lambda: pixel_auroc(torch.eye(4)[None], torch.full((1, 4, 4), float("inf"))), "inf"),
    (lambda: pixel_auroc(torch.eye(4)[None], torch.rand(1, 8, 8)), "upsample"),
    (lambda: pixel_auroc([torch.eye(4)] * 2, [torch.rand(4, 4)] * 3), "2 masks but 3 anomaly maps"),
    (lambda: pixel_auroc([torch.eye(4), torch.eye(4)]), r"\(mask, map\) pairs"),
    (lambda: pixel_auroc(torch.eye(4)[None], torch.eye(4)[None].bool()), "real numbers"),
    (lambda: StreamingAUROC(bins=1), "whole number >= 2"),
    (lambda: StreamingAUROC(score_range=(1, 1)), "high > low"),
    (lambda: StreamingAUROC().compute(), "no pixels seen"),
    (lambda: pixel_auroc(iter([])), "no pixels seen"),
    (lambda: pixel_auroc(torch.ones(2, 2, 2)), "pass the anomaly maps too"),
])
def test_pixel_auroc_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(2, 300), elements=st.floats(-1e3, 1e3, width=32)), st.integers(0, 2 ** 32 - 1),
       st.sampled_from([2, 16, 2 ** 10, 2 ** 16]))
def test_pixel_auroc_within_its_bound_of_sklearn(a, seed, bins):
    y = np.random.default_rng(seed).random(len(a)) < 0.4
    y[0], y[1] = True, False
    acc = StreamingAUROC(bins=bins)
    for i in range(0, len(a), 37): acc.update(torch.from_numpy(y[i:i + 37]), torch.from_numpy(a[i:i + 37]))
    exact = roc_auc_score(y, a)
    assert abs(acc.compute() - exact) <= acc.error_bound() + 1e-9
    assert 0 <= acc.error_bound() <= 0.5


# ---------------------------------------------------------------- AUPRO

def reference_aupro(masks, maps, fpr_limit=0.3, connectivity=8):
    "AUPRO the slow, plain way: every distinct score a threshold, every region's overlap counted, trapezoids cut at the limit."
    masks, maps = np.asarray(masks) != 0, np.asarray(maps, dtype=np.float64)
    structure = np.ones((3, 3)) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    regions = []                                                      # (image, boolean region) for every connected component
    for i in range(len(masks)):
        lab, k = ndimage.label(masks[i], structure=structure)
        regions += [(i, lab == j) for j in range(1, k + 1)]
    good = ~masks
    points = [(0.0, 0.0)]                                             # threshold above every score: nothing flagged
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        flagged = maps >= t
        pro = sum(flagged[i][r].sum() / r.sum() for i, r in regions) / len(regions)
        points.append(((flagged & good).sum() / good.sum(), pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x1 <= fpr_limit: area += (x1 - x0) * (y0 + y1) / 2
        else:                                                         # this step crosses the limit: interpolate there, stop
            if x0 < fpr_limit:
                y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
                area += (fpr_limit - x0) * (y0 + y_lim) / 2
            break
    return area / fpr_limit


def blobs(seed, n=5, h=20, w=24):
    "Masks with rectangles and scattered pixels (regions touching at corners included), and maps that partly see them."
    g = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), bool)
    for i in range(n - 1):                                            # the last image is good
        for _ in range(g.integers(1, 4)):
            r, c, dh, dw = g.integers(0, h - 4), g.integers(0, w - 4), g.integers(1, 6), g.integers(1, 6)
            masks[i, r:r + dh, c:c + dw] = True
        masks[i] |= g.random((h, w)) < 0.02
    maps = g.normal(size=(n, h, w)) + g.uniform(0, 2, size=(n, 1, 1)) * masks
    return torch.from_numpy(masks.astype(np.float32)), torch.from_numpy(maps)


def test_aupro_perfect_inverted_constant_and_by_hand():
    masks, maps = blobs(0)
    assert aupro(masks, masks) == pytest.approx(1.0, abs=1e-12) and aupro(masks, 1 - masks) == pytest.approx(0.0, abs=1e-12)
    assert aupro(masks, torch.zeros_like(maps)) == pytest.approx(0.15, abs=1e-12)      # one step, (0, 0) to (1, 1)
    assert aupro(masks, torch.zeros_like(maps), fpr_limit=1.0) == pytest.approx(0.5, abs=1e-12)
    hand = torch.tensor([[[1, 1, 0], [0, 0, 1], [0, 0, 0]]])
    s = torch.tensor([[[0.9, 0.9, 0.8], [0.1, 0.1, 0.5], [0.1, 0.1, 0.1]]])
    assert aupro(hand, s) == pytest.approx(22 / 27, abs=1e-12)                          # one region of 3 (a corner joins it)
    assert aupro(hand, s, connectivity=4) == pytest.approx(13 / 18, abs=1e-12)         # two regions: 2 and 1 pixels
    assert aupro(hand, s, fpr_limit=0.1) == pytest.approx(2 / 3, abs=1e-12)            # before the first false alarm: PRO 2/3
    w, k = region_weights(torch.stack([hand[0], hand[0]]))
    assert k == 2 and w.sum().item() == pytest.approx(2.0)                              # one region per image, each weighing 1


@pytest.mark.parametrize("seed", [0, 1])
def test_aupro_matches_the_reference_on_small_cases(seed):
    masks, maps = blobs(seed, n=3, h=8, w=9)
    for conn in (8, 4):
        acc = StreamingAUPRO(score_range=(maps.min().item(), maps.max().item()), connectivity=conn).update(masks, maps)
        for limit in (0.3, 0.05, 1.0):
            got, ref = aupro(masks, maps, fpr_limit=limit, connectivity=conn), reference_aupro(masks, maps, limit, conn)
            assert got == acc.aupro(limit) and abs(got - ref) <= acc.aupro_bound(limit) + 1e-12, (conn, limit, got, ref)
            assert acc.aupro_bound(limit) < 1e-3


def test_aupro_stream_keeps_the_pixel_auroc_and_constant_first_batches():
    masks, maps = blobs(2, n=4, h=8, w=8)
    a, b = StreamingAUROC(), StreamingAUPRO()
    for m, x in zip(masks, maps): a.update(m, x); b.update(m, x)
    assert b.compute() == a.compute() and b.error_bound() == a.error_bound()          # the subclass adds, changes nothing
    flat = torch.zeros(2, 8, 8); flat[0, 2:4, 2:4] = 1
    s = StreamingAUPRO().update(flat[:1], torch.full((1, 8, 8), 0.5)).update(flat[1:], torch.full((1, 8, 8), 0.5))
    assert s.pos is None and s.aupro() == pytest.approx(0.15, abs=1e-12)              # all one value so far: the diagonal
    s.update(masks, maps)
    both_m, both_s = torch.cat([flat, masks]), torch.cat([torch.full((2, 8, 8), 0.5), maps.float()])
    assert s.aupro() == pytest.approx(reference_aupro(both_m, both_s), abs=max(1e-9, s.aupro_bound()))
    assert s.n_regions == region_weights(both_m)[1]


@pytest.mark.parametrize("call, match", [
    (lambda: aupro(torch.zeros(2, 4, 4), torch.rand(2, 4, 4)), "no defective region among the 32 pixels seen"),
    (lambda: aupro(torch.ones(2, 4, 4), torch.rand(2, 4, 4)), "all 32 pixels seen are defective: AUPRO needs good pixels"),
    (lambda: aupro(torch.eye(4)[None], torch.rand(1, 8, 8)), "upsample"),
    (lambda: aupro(torch.eye(4)[None] * 0.5, torch.rand(1, 4, 4)), "0/1"),
    (lambda: aupro(torch.eye(4)[None], torch.full((1, 4, 4), float("nan"))), "NaN"),
    (lambda: aupro(torch.tensor([0, 1, 1]), torch.rand(3)), r"regions need 2-D masks, \(H, W\) or \(N, H, W\); got shape \(3,\)"),
    (lambda: aupro(torch.eye(4)[None], torch.rand(1, 4, 4), fpr_limit=0), r"fpr_limit must be a number in \(0, 1\]"),
    (lambda: aupro(torch.eye(4)[None], torch.rand(1, 4, 4), fpr_limit=1.5), r"got 1.5"),
    (lambda: aupro(torch.eye(4)[None], torch.rand(1, 4, 4), connectivity=6), "connectivity must be 4 or 8"),
    (lambda: aupro([torch.eye(4)] * 2, [torch.rand(4, 4)] * 3), "2 masks but 3 anomaly maps"),
    (lambda: aupro(torch.eye(4)[None]), r"aupro\(masks, maps\)"),
    (lambda: StreamingAUPRO().aupro(), "no pixels seen"),
])
def test_aupro_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_aupro_matches_the_slow_reference(seed):
    "The histogram AUPRO against the loop over every threshold and region: within its computed bound (and 1e-4), exact with ties."
    masks, maps = blobs(seed)
    for limit in (0.3, 0.1, 1.0):
        ref = reference_aupro(masks, maps, limit)
        full = StreamingAUPRO(score_range=(maps.min().item(), maps.max().item())).update(masks, maps)   # what aupro() builds
        assert aupro(masks, maps, fpr_limit=limit) == full.aupro(limit)
        grown = StreamingAUPRO()
        for m, x in zip(masks, maps): grown.update(m, x)                # image by image: the window grows
        for acc in (full, grown):
            got, bound = acc.aupro(limit), acc.aupro_bound(limit)
            assert abs(got - ref) <= bound + 1e-12 and bound < 2e-4, (limit, got, ref, bound)
    q = (maps * 4).round() / 4                                          # ties only: no mixed bin, nothing to bound
    acc = StreamingAUPRO().update(masks, q)
    assert acc.aupro_bound() == 0.0 and acc.aupro() == pytest.approx(reference_aupro(masks, q), abs=1e-12)
    assert aupro(masks, maps, connectivity=4) == pytest.approx(reference_aupro(masks, maps, connectivity=4), abs=1e-4)
    coarse = StreamingAUPRO(bins=16).update(masks, maps)                # few bins: a real error, still within the bound
    assert abs(coarse.aupro() - reference_aupro(masks, maps)) <= coarse.aupro_bound() + 1e-12


# ---------------------------------------------------------------- thresholds

def test_decision_threshold_is_the_iqr_rule_of_the_training_scores():
    a = np.arange(1.0, 11.0)
    assert decision_threshold(a) == pytest.approx(14.5)
    assert decision_threshold(a, kappa=0) == pytest.approx(7.75)
    assert decision_threshold(torch.tensor(a), 3.0) == pytest.approx(iqr_threshold(a, 3.0).item())
    with pytest.raises(ValueError, match="kappa"):
        decision_threshold(a, kappa=-1)


def test_precision_recall_f1_by_hand():
    y = [1, 1, 1, 0, 0, 0]
    s = [0.9, 0.8, 0.2, 0.7, 0.1, 0.0]
    r = precision_recall_f1(y, s, 0.5)                         # flagged: 0.9, 0.8, 0.7 -> tp 2, fp 1, fn 1
    assert (r["precision"], r["recall"], r["tau"]) == (2 / 3, 2 / 3, 0.5) and r["f1"] == pytest.approx(2 / 3)
    assert precision_recall_f1(y, s, 0.8)["recall"] == 1 / 3    # strictly above tau
    assert precision_recall_f1(y, s, 5.0) == dict(precision=0.0, recall=0.0, f1=0.0, tau=5.0)
    with pytest.raises(ValueError, match="recall needs at least one defective"):
        precision_recall_f1([0, 0], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="finite"):
        precision_recall_f1(y, s, float("nan"))


@SETTINGS
@given(arrays(np.float64, st.integers(2, 40), elements=st.sampled_from([-2.0, 0.0, 0.5, 1.0, 3.0, 1e-300, 7.25])),
       st.integers(0, 2 ** 32 - 1))
def test_f1_max_is_the_best_threshold_and_its_tau_reproduces_it(s, seed):
    y = np.random.default_rng(seed).random(len(s)) < 0.5
    y[0] = True
    r = f1_max(y, s)
    assert precision_recall_f1(y, s, r["tau"])["f1"] == pytest.approx(r["f1"], abs=1e-12)
    for t in np.unique(np.r_[s, s.min() - 1]):                 # every cut "s > t" is at most the oracle
        assert f1_score(y, s > t, zero_division=0) <= r["f1"] + 1e-12


# ---------------------------------------------------------------- curation report and gallery

def test_curation_report_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 40.0, 30.0])
    w = confidence_weights(a).numpy()
    known = np.zeros(11, bool); known[[9, 3]] = True
    r = curation_report(w, a, known)
    assert r["n_flagged"] == 2 and r["ranking"][:2] == [9, 10]
    assert r["n_flagged_known"] == 1 and r["precision_flagged"] == 0.5 and r["recall_flagged"] == 0.5
    assert r["auroc_scores"] == pytest.approx(roc_auc_score(known, a))
    assert r["auroc_one_minus_w"] == pytest.approx(roc_auc_score(known, 1 - w))


def test_curation_report_without_labels_has_no_metrics():
    a = np.array([1.0, 2.0, 3.0, 50.0])
    w = confidence_weights(a)
    for known in (None, [False] * 4, np.zeros(4)):
        r = curation_report(w, a, known)
        assert set(r) == {"n", "n_flagged", "ranking"} and r["n_flagged"] == 1 and r["ranking"][0] == 3


@pytest.mark.parametrize("args, match", [
    (([1.0, 0.5], [1.0]), "2 weights but 1 training scores"),
    (([1.0, 1.5], [1.0, 2.0]), r"\(0, 1\]"),
    (([0.0, 1.0], [1.0, 2.0]), r"\(0, 1\]"),
    (([1.0, 0.5], [1.0, 2.0], [True, True]), "every training image as defective"),
    (([1.0, 0.5], [1.0, 2.0], [True, False, False]), "3 entries but there are 2 weights"),
    (([1.0, 0.5], [1.0, float("nan")]), "NaN"),
    (([], []), "empty"),
])
def test_curation_report_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        curation_report(*args)


@SETTINGS
@given(arrays(np.float64, st.integers(2, 50), elements=st.floats(0, 1e4)), st.floats(0, 5), st.integers(0, 2 ** 32 - 1))
def test_curation_report_values_in_unit_interval(a, kappa, seed):
    w = confidence_weights(a, kappa).numpy()
    known = np.random.default_rng(seed).random(len(a)) < 0.3
    known[0], known[1] = True, False
    r = curation_report(w, a, known)
    assert sorted(r["ranking"]) == list(range(len(a))) and r["n_flagged"] == int((w < 1).sum())
    for k in ("auroc_scores", "auroc_one_minus_w", "recall_flagged"):
        assert 0 <= r[k] <= 1
    if r["n_flagged"]: assert 0 <= r["precision_flagged"] <= 1
    else: assert math.isnan(r["precision_flagged"]) and r["auroc_one_minus_w"] == 0.5
    assert r["n_flagged_known"] <= min(r["n_flagged"], r["n_known_defective"])


def test_gallery_from_tensors_and_paths(tmp_path):
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(10, 3, 12, 12, generator=g)
    a = torch.arange(10.0); a[3] = 100.0; a[7] = 80.0
    w = confidence_weights(a)
    known = torch.zeros(10, dtype=torch.bool); known[3] = True
    fig = lowest_weight_gallery(imgs, w, a, k=4, known_defective=known, ncols=3)
    assert isinstance(fig, Figure)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [t.get_title().split()[0] for t in titled] == ["#3", "#7", "#9", "#8"]
    assert titled[0].spines["top"].get_edgecolor()[:3] == (1.0, 0.0, 0.0)
    assert titled[1].spines["top"].get_edgecolor()[:3] != (1.0, 0.0, 0.0)
    paths = []
    for i, im in enumerate(imgs):
        p = tmp_path / f"{i}.png"
        Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(p)
        paths.append(str(p))
    fig_p = lowest_weight_gallery(paths, w, a, k=2)
    np.testing.assert_allclose(fig_p.axes[0].images[0].get_array(), imgs[3].permute(1, 2, 0).numpy(), atol=1 / 255)
    gray = lowest_weight_gallery(list(imgs[:, 0]), w, a, k=1)   # (H, W) images are shown as gray
    assert gray.axes[0].images[0].get_array().shape == (12, 12, 3)
    with pytest.raises(ValueError, match="10 images, 9 weights"):
        lowest_weight_gallery(imgs, w[:9], a[:9])
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        lowest_weight_gallery(torch.rand(10, 4, 8, 8), w, a, k=1)


# ---------------------------------------------------------------- nearest-neighbour reference

def _brute(train, test, k):
    d = torch.cdist(test.permute(0, 2, 3, 1).reshape(-1, test.shape[1]).double(), train.permute(0, 2, 3, 1).reshape(-1, train.shape[1]).double())
    return d.sort(1).values[:, k - 1].reshape(len(test), *test.shape[2:]).float()


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("chunk", [1, 7, 50, 10_000])
def test_nn_patch_scores_chunked_equals_brute_force(k, chunk):
    g = torch.Generator().manual_seed(k)
    train, test = torch.randn(9, 5, 3, 4, generator=g), torch.randn(4, 5, 3, 4, generator=g)
    s = nn_patch_scores(train, test, k=k, chunk=chunk)
    assert s.shape == (4, 3, 4)
    torch.testing.assert_close(s, _brute(train, test, k), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nn_image_scores(train, test, k=k, chunk=chunk), s.flatten(1).amax(1))


def test_nn_scores_from_numpy_rows_and_feature_sets():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(6, 4, 2, 2, generator=g).half(), torch.randn(3, 4, 2, 2, generator=g).half()
    ref = nn_patch_scores(train.float(), test.float())

    class Rows:  # a memory-mapped feature set: indexable rows, no slicing
        def __init__(self, a): self.a = a
        def __len__(self): return len(self.a)
        def __getitem__(self, i): return torch.from_numpy(np.array(self.a[i]))

    class FS:
        def __init__(self, f): self.features = f

    for tr, te in [(train.numpy(), test.numpy()), (FS(Rows(train.numpy())), FS(test)), (Rows(train.numpy()), Rows(test.numpy()))]:
        torch.testing.assert_close(nn_patch_scores(tr, te, chunk=5), ref, atol=1e-4, rtol=1e-4)


def test_nn_scores_for_image_level_features():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(12, 3, 6, generator=g), torch.randn(5, 7, 6, generator=g)   # views may differ: 3 vs 7
    s = nn_patch_scores(train, test, k=2)
    assert s.shape == (5, 1, 1)
    expected = torch.cdist(test.mean(1), train.mean(1)).sort(1).values[:, 1]
    torch.testing.assert_close(s.flatten(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nn_patch_scores(train.mean(1), test.mean(1), k=2), s)     # (N, D) is the view mean
    shifted = test.clone(); shifted[:2] += 5
    assert (nn_image_scores(train, shifted)[:2] > nn_image_scores(train, shifted)[2:].max()).all()


@pytest.mark.parametrize("call, match", [
    (lambda: nn_patch_scores(torch.randn(3, 4, 2, 2), torch.randn(2, 5, 2, 2)), "D = 4 but test features D = 5"),
    (lambda: nn_patch_scores(torch.randn(3, 4, 2, 2), torch.randn(2, 4)), "both be patch features"),
    (lambda: nn_patch_scores(torch.randn(3, 4, 2, 2), torch.randn(2, 4, 2, 2), k=13), "1 to the 12 training patches"),
    (lambda: nn_patch_scores(torch.randn(3, 4, 2, 2), torch.randn(2, 4, 2, 2), k=0), "k must be"),
    (lambda: nn_patch_scores(torch.randn(3, 2, 2, 2, 2), torch.randn(2, 2, 2, 2, 2)), "both be patch features"),
    (lambda: nn_patch_scores([], torch.randn(2, 4)), "non-empty"),
    (lambda: nn_patch_scores(5, torch.randn(2, 4)), "non-empty"),
])
def test_nn_patch_scores_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@settings(max_examples=40, deadline=None)
@given(arrays(np.int64, st.integers(2, 400), elements=st.integers(-1000, 1000)), st.integers(0, 2 ** 32 - 1),
       st.sampled_from([1e-6, 0.1, 1.0, 3.0, 1e5]), st.integers(1, 60))
def test_streaming_ties_stay_exact_while_the_window_grows(a, seed, scale, batch):
    # integer-valued scores sit exactly on bin edges: a bin split or merged inconsistently would break a tie unnoticed
    rng = np.random.default_rng(seed)
    y = rng.random(len(a)) < 0.3
    y[0], y[1] = True, False
    s = a * scale
    acc = StreamingAUROC(bins=2 ** 12)
    for i in range(0, len(s), batch): acc.update(torch.from_numpy(y[i:i + batch]), torch.from_numpy(s[i:i + batch]))
    exact = roc_auc_score(y, s)
    assert abs(acc.compute() - exact) <= acc.error_bound() + 1e-12
    assert acc.error_bound() == 0.0   # bins < 2R/(B-2) < scale wide: no bin holds two distinct values, ties are counted exactly


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(3, 16, 16, generator=g) < 0.2).float()
    maps = torch.randn(3, 16, 16, generator=g) + masks
    assert pixel_auroc(masks.cuda(), maps.cuda()) == pixel_auroc(masks, maps)
    assert pixel_auroc((m.cuda(), a.cuda()) for m, a in zip(masks, maps)) == pytest.approx(pixel_auroc(masks, maps), abs=1e-4)
    train, test = torch.randn(5, 8, 3, 3, generator=g), torch.randn(2, 8, 3, 3, generator=g)
    s = nn_patch_scores(train.cuda(), test.cuda(), k=2, chunk=10)
    assert s.device.type == "cuda"
    torch.testing.assert_close(s.cpu(), nn_patch_scores(train, test, k=2), atol=1e-4, rtol=1e-4)
