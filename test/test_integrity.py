"""Integrity checks (sdpr_loc/vision/integrity.py): the chi-square statistic against its law on
simulated stereo noise, its false-alarm rate, wrong-but-consistent matches that are certified yet
FAIL, and the NEES / publish helpers against hand computations."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from sdpr_loc.geometry.registration import ransac
from sdpr_loc.geometry.se3 import so3_exp
from sdpr_loc.geometry.stereo import StereoCamera
from sdpr_loc.vision import integrity as integ

GATE = 11.34          # the model's RANSAC gate (LocalizerConfig.ransac_threshold)


def _stereo_problems(B, N, seed, sigma_px=0.5):
    """B registration problems of N matches with stereo covariances (240x320, fx 200, 0.24 m) and
    Gaussian noise drawn from exactly those covariances: the modelled noise."""
    g = torch.Generator().manual_seed(seed)
    cam = StereoCamera(fx=200.0, fy=200.0, cx=159.5, cy=119.5, baseline=0.24, width=320, height=240)
    d = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    uvd = torch.stack([d(B, N) * 300 + 10, d(B, N) * 220 + 10, d(B, N) * 20 + 4], -1)   # 2.4-12 m deep
    P, _ = cam.triangulate(uvd)
    S = cam.point_covariance(uvd, sigma_px) + cam.point_covariance(uvd, sigma_px)   # keyframe + live
    R = so3_exp(0.01 * torch.randn(B, 3, generator=g, dtype=torch.float64))          # < 1 degree
    t = 0.5 * torch.randn(B, 3, generator=g, dtype=torch.float64)
    src = (P - t[:, None]) @ R                                                        # R^T (P - t)
    noise = (torch.linalg.cholesky(S) @ torch.randn(B, N, 3, 1, generator=g, dtype=torch.float64))[..., 0]
    return src, P + noise, torch.linalg.inv(S)


def _p_values(src, trg, W, gate, seed=0):
    """Tracker's path: RANSAC with the Mahalanobis gate, certified refit; cost over the inliers."""
    reg, inl = ransac(src, trg, inv_cov=W, threshold=gate, generator=torch.Generator().manual_seed(seed))
    e = trg - (src @ reg.R.transpose(1, 2) + reg.t[:, None])
    d2 = torch.einsum("bni,bnij,bnj->bn", e, W, e)
    cost = (d2 * inl).sum(1).numpy()
    n = inl.sum(1).numpy()
    assert bool(reg.certificate.certified.all())
    return cost, n, np.array([integ.consistency(c, k, gate)[2] for c, k in zip(cost, n)])


@pytest.fixture(scope="module")
def simulated():
    src, trg, W = _stereo_problems(B=800, N=40, seed=3)
    return _p_values(src, trg, W, math.inf), _p_values(src, trg, W, GATE)


def test_gated_law_moments_reduce_to_chi_square_without_gate():
    assert integ.gated_chi2_moments(40, math.inf) == pytest.approx((114.0, 228.0))
    m, v = integ.gated_chi2_moments(40, GATE)
    # independent reference: Monte Carlo of chi2(3) residuals that pass the gate, n f of them
    # (f = 114 / 120, the fit's share of the dof) in the mean and in the variance
    f = 114 / 120
    x = stats.chi2.rvs(3, size=2_000_000, random_state=np.random.default_rng(0))
    x = x[x < GATE]
    assert m == pytest.approx(40 * f * x.mean(), rel=2e-3) and v == pytest.approx(40 * f * x.var(), rel=1e-2)
    stat, dof, p = integ.consistency(114.0, 40, math.inf)
    assert (stat, dof) == (114.0, 114) and p == pytest.approx(stats.chi2.sf(114, 114))
    assert integ.consistency(10.0, 2, GATE)[2] != integ.consistency(10.0, 2, GATE)[2]   # < 3 inliers: NaN


def test_chi_square_statistic_follows_its_law_on_simulated_noise(simulated):
    """No gate: the cost at the certified optimum is chi2(3N - 6) (Kolmogorov-Smirnov); with the
    99 % RANSAC gate, the gated law's p-values have uniform deciles (within 0.05) where the
    plain chi2(3N - 6) is far off."""
    (cost0, n0, p0), (cost, n, p) = simulated
    assert (n0 == 40).all() and stats.kstest(p0, "uniform").pvalue > 0.05
    assert stats.kstest(cost0, stats.chi2(114).cdf).pvalue > 0.05
    assert 39.0 < np.mean(n) < 40                              # the gate drops ~1-2 % of correct matches
    deciles = np.arange(1, 10) / 10
    assert np.abs(np.quantile(p, deciles) - deciles).max() < 0.05
    naive = stats.chi2.sf(cost, 3 * n - 6)                      # ignoring the gate
    assert np.abs(np.quantile(naive, deciles) - deciles).max() > 0.1


@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("gated", [False, True])
def test_false_alarm_rate_within_twice_nominal(simulated, alpha, gated):
    p = simulated[int(gated)][2]
    rate = float(np.mean(p < alpha))
    assert alpha / 2 <= rate <= 2 * alpha, rate


def test_too_much_noise_fails_consistency():
    """Noise twice the modelled std (a wrong noise model): the default FAIL level catches most."""
    src, trg, W = _stereo_problems(B=100, N=40, seed=5)
    g = torch.Generator().manual_seed(9)
    S = torch.linalg.inv(W)
    extra = (torch.linalg.cholesky(S) @ torch.randn(*trg.shape, 1, generator=g, dtype=torch.float64))[..., 0]
    _, _, p = _p_values(src, trg + 1.7 * extra, W, math.inf)   # total std 2x the model's
    assert np.mean(p < integ.IntegrityConfig().alpha_fail) > 0.9


def test_nees_and_publish_helpers():
    T_gt = np.eye(4)
    T = np.eye(4)
    T[:3, 3] = [0.3, 0.0, -0.4]
    R = so3_exp(torch.tensor([[0.0, 0.0, 0.02]], dtype=torch.float64))[0].numpy()
    T[:3, :3] = R
    cov = np.diag([0.01, 0.04, 0.04, 1e-4, 1e-4, 4e-4])
    assert integ.nees(T, cov, T_gt) == pytest.approx(0.09 / 0.01 + 0.16 / 0.04 + 0.02 ** 2 / 4e-4)
    assert integ.publishable("WARN") and not integ.publishable("FAIL")
    assert not integ.publishable("WARN", "OK") and integ.publishable("FAIL", "FAIL")
    with pytest.raises(ValueError, match="publish_integrity"):
        integ.publishable("OK", "maybe")
