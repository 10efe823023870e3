"Property-based checks of the Soft Confident Learning weights (Eq. 1-2) and the uncertainty terms (Eq. 4-5)."
import numpy as np
import torch
from hypothesis import given, settings, strategies as st
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
    o = min(0.0, a.min())  # signed scores are measured from the lowest one (o = 0, Eq. 1, for positive scores)
    above = a > t
    np.testing.assert_allclose(w[above], np.maximum((t - o) / (a[above] - o), np.finfo(w.dtype).eps), rtol=1e-9)
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
    np.testing.assert_allclose(S.numpy(), np.cov(np.stack([tr, va])), rtol=1e-9, atol=1e-6)
    assert det_sigma(S).item() >= 0
    assert adaptive_lambda(S, lambda0, gamma).item() >= lambda0


def test_float32_and_device_are_kept():
    a = torch.tensor([1.0, 2.0, 3.0, 50.0])
    w = confidence_weights(a)
    assert w.dtype == torch.float32 and w.device == a.device
    assert torch.equal(w[:3], torch.ones(3)) and 0 < w[3] < 1
