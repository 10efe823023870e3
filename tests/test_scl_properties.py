"Property-based checks of the Soft Confident Learning weights (Eq. 1-2) and the uncertainty terms (Eq. 4-5)."
import numpy as np
import torch
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from comet_nb.scl import confidence_weights, iqr_threshold
from comet_nb.uncertainty import adaptive_lambda, det_sigma, loss_covariance

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)
score_vectors = arrays(np.float64, st.integers(1, 60), elements=finite)
positive_vectors = arrays(np.float64, st.integers(1, 60), elements=st.floats(1e-3, 1e6, width=64))
kappas = st.floats(0, 10, allow_nan=False)
SETTINGS = settings(max_examples=300, deadline=None)


@SETTINGS
@given(score_vectors, kappas)
def test_weights_finite_in_unit_interval_and_one_below_t(a, kappa):
    w = confidence_weights(a, kappa).numpy()
    t = iqr_threshold(a, kappa).item()
    assert w.shape == a.shape and np.isfinite(w).all()
    assert (w > 0).all() and (w <= 1).all()
    assert (w[a <= t] == 1).all()
    q1, q3 = np.percentile(a, [25, 75])
    o = min(0.0, q1)  # signed scores are measured from Q1 (o = 0, Eq. 1, for positive scores)
    if q1 == q3 and q1 <= 0: o = q1 - np.abs(a - q1).mean()  # IQR 0 at a tie <= 0: one mean absolute deviation below it
    above = a > t
    np.testing.assert_allclose(w[above], np.maximum((t - o) / (a[above] - o), np.finfo(w.dtype).tiny), rtol=1e-9)
    assert w[np.argmin(a)] == 1  # the most normal sample is never dropped


@SETTINGS
@given(score_vectors, kappas)
def test_weights_monotone_non_increasing_in_score(a, kappa):
    w = confidence_weights(a, kappa).numpy()
    order = np.argsort(a, kind="stable")
    assert (np.diff(w[order]) <= 1e-12).all()


@SETTINGS
@given(score_vectors, kappas, st.randoms(use_true_random=False))
def test_weights_follow_their_samples_under_permutation(a, kappa, rnd):
    perm = np.array(rnd.sample(range(len(a)), len(a)))
    np.testing.assert_array_equal(confidence_weights(a[perm], kappa).numpy(), confidence_weights(a, kappa).numpy()[perm])


positive_f32 = arrays(np.float32, st.integers(1, 60), elements=st.floats(0.5, 2.0 ** 90, width=32))


@SETTINGS
@given(positive_f32, st.floats(0, 8, width=32))
def test_weights_equal_eq1_for_positive_float32_scores(a, kappa):
    t = iqr_threshold(torch.from_numpy(a), kappa)
    w = confidence_weights(torch.from_numpy(a), kappa)
    assert w.dtype == torch.float32
    np.testing.assert_allclose(w.numpy(), np.minimum(1.0, t.numpy() / a), rtol=1e-6)


def _q1_q3(a):
    "Q1 and Q3 as the library computes them (torch.quantile): numpy's percentile can differ in the last subnormal bit."
    return torch.quantile(torch.as_tensor(a), torch.tensor([0.25, 0.75], dtype=torch.float64)).tolist()


@SETTINGS
@given(arrays(np.float64, st.integers(8, 60), elements=st.floats(-10, 10)), st.floats(1e3, 1e12))
@example(np.array([1.0, 5e-324] + [1.0] * 5 + [0.0] * 20), 1e3)   # Q3 a subnormal: numpy 5e-324, torch 0 (IQR-0 corner)
def test_one_extreme_low_score_does_not_switch_scl_off(a, depth):
    "The origin of signed scores is min(0, Q1): moving the lowest score far down changes no other weight (as long as Q1 stays)."
    low = a.copy(); low[np.argmin(low)] = -depth
    if _q1_q3(low)[0] != _q1_q3(a)[0]: return   # Q1 itself moved (ties at the minimum)
    q1, q3 = _q1_q3(a)
    if q1 == q3 and q1 <= 0: return   # the IQR-0 corner measures from the scores' mean absolute deviation, which the moved score is part of
    np.testing.assert_allclose(confidence_weights(low).numpy(), confidence_weights(a).numpy(), rtol=1e-12)


@SETTINGS
@given(positive_vectors, kappas)
def test_weights_equal_eq1_for_positive_scores(a, kappa):
    q1, q3 = np.percentile(a, [25, 75])
    t = q3 + kappa * (q3 - q1)
    np.testing.assert_allclose(iqr_threshold(a, kappa).item(), t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(confidence_weights(a, kappa).numpy(), np.minimum(1.0, t / a), rtol=1e-9)


@SETTINGS
@given(score_vectors, kappas, kappas)
def test_larger_kappa_never_lowers_a_weight(a, k1, k2):
    lo, hi = sorted([k1, k2])
    assert (confidence_weights(a, hi).numpy() >= confidence_weights(a, lo).numpy() - 1e-12).all()


@SETTINGS
@given(st.floats(-1e6, 1e6), st.integers(1, 50))
def test_constant_scores_give_all_ones(c, n):
    np.testing.assert_array_equal(confidence_weights(np.full(n, c)).numpy(), np.ones(n))


pairs = st.integers(2, 12).flatmap(lambda n: st.tuples(arrays(np.float64, n, elements=st.floats(-1e3, 1e3)),
                                                       arrays(np.float64, n, elements=st.floats(-1e3, 1e3))))


@SETTINGS
@given(pairs, st.floats(0, 1, allow_nan=False), st.floats(0, 100, allow_nan=False))
def test_det_sigma_nonnegative_and_lambda_at_least_lambda0(p, lambda0, gamma):
    tr, va = p
    S = loss_covariance(tr, va)
    C = np.cov(np.stack([tr, va]))
    np.testing.assert_allclose(S.numpy(), C, rtol=1e-9, atol=1e-6)
    d = det_sigma(S).item()
    scale = C[0, 0] * C[1, 1] + C[0, 1] ** 2                    # round-off of the 2x2 determinant is relative to this
    assert d >= 0 and abs(d - max(C[0, 0] * C[1, 1] - C[0, 1] * C[1, 0], 0.0)) <= 1e-9 * scale + 1e-12   # numpy, float64
    np.testing.assert_allclose(adaptive_lambda(S, lambda0, gamma).item(), lambda0 * (1 + gamma * d), rtol=1e-12)
    assert adaptive_lambda(S, lambda0, gamma).item() >= lambda0


def test_float32_and_device_are_kept():
    a = torch.tensor([1.0, 2.0, 3.0, 50.0])
    w = confidence_weights(a)
    assert w.dtype == torch.float32 and w.device == a.device
    assert torch.equal(w[:3], torch.ones(3)) and 0 < w[3] < 1
