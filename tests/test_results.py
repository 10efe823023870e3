"The evidence tables as a user meets them: a folder without them, and verdicts that follow the numbers."
import pandas as pd
import pytest

from comet_nb.results import compare, load_evidence, verdict, claim_harm


def test_load_evidence_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"runs\.csv is missing: write the evidence with `comet-nb sweep --grid evidence"):
        load_evidence(tmp_path)


def _pairs(diffs, a="baseline@0", b="baseline@0.1", var_test=1e-5, cov_shared=1e-6):
    return pd.DataFrame([dict(category=c, model="simplenet", seed=s, a=a, b=b, diff=d, var_test=var_test, cov_shared=cov_shared)
                         for c, ds in diffs.items() for s, d in enumerate(ds)])


def test_the_harm_verdict_follows_the_interval():
    "A clear drop holds, a clear null does not, a noisy drop cannot be told; the SE adds each category's seed spread and shared test error."
    drop = _pairs({"brick": [-0.05, -0.06, -0.04], "grass": [-0.05, -0.055, -0.045]})
    assert claim_harm(drop)[1] == "holds"
    null = _pairs({"brick": [0.001, -0.002, 0.0], "grass": [0.002, 0.0, -0.001]})
    assert claim_harm(null)[1] == "does not hold"
    noisy = _pairs({"brick": [-0.2, 0.1, -0.05], "grass": [0.1, -0.2, 0.0]})
    assert claim_harm(noisy)[1] == "cannot tell"
    r = compare(drop, "baseline@0", "baseline@0.1").iloc[0]
    a_brick, a_grass = 1e-4 / 3, 2.5e-5 / 3                          # each category's seed variance / seeds
    total = a_brick + a_grass + 2 * 1e-6                               # plus the test-set covariance each category's seeds share
    assert r["se"] == pytest.approx((total / 4) ** 0.5)
    assert r["df"] == pytest.approx(total ** 2 / (a_brick ** 2 / 2 + a_grass ** 2 / 2))   # Welch–Satterthwaite
    assert verdict(r["lo"], r["hi"]).startswith("lower")
