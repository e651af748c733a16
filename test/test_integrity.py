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
from sdpr_loc.vision.keypoints import StereoKeypoints

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
    99 % RANSAC gate, the gated law's p-values have nearly uniform deciles (measured: at most
    0.057 too high, i.e. conservative) where the plain chi2(3N - 6) is far off."""
    (cost0, n0, p0), (cost, n, p) = simulated
    assert (n0 == 40).all() and stats.kstest(p0, "uniform").pvalue > 0.05
    assert stats.kstest(cost0, stats.chi2(114).cdf).pvalue > 0.05
    assert 39.0 < np.mean(n) < 40                              # the gate drops ~1-2 % of correct matches
    deciles = np.arange(1, 10) / 10
    assert np.abs(np.quantile(p, deciles) - deciles).max() < 0.06
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


def test_a_pose_the_data_barely_determine_is_not_published():
    """Precision: a calibrated 1-sigma position error above ``max_position_std`` FAILs, naming
    it; the same pose a little more precise is OK."""
    cfg = integ.IntegrityConfig()
    base = {"chi2": 60.0, "chi2_dof": 60, "chi2_p": 0.5, "inliers": 35, "inlier_ratio": 0.6}
    verdict, why = integ.assess({**base, "position_std": cfg.max_position_std * 1.1}, cfg)
    assert verdict == integ.FAIL and len(why) == 1 and why[0].startswith("precision"), why
    assert integ.assess({**base, "position_std": cfg.max_position_std * 0.9}, cfg) == (integ.PASS, [])


def test_an_innovation_warning_that_another_check_corroborates_fails():
    """Off the motion prediction (p 1e-5: a warning alone) and doubted by a second check (a
    candidate 3 m away, or a consistency warning): FAIL, naming both; each warning alone, and a
    consistency warning with a disagreeing candidate, stays WARN."""
    cfg = integ.IntegrityConfig()
    base = {"chi2": 60.0, "chi2_dof": 60, "chi2_p": 0.5, "inliers": 35, "inlier_ratio": 0.6, "position_std": 0.1}
    off = {"innovation": 34.2, "innovation_p": 1e-5}
    far = {"agreement_m": 3.1}
    loose = {"chi2": 100.0, "chi2_p": 4e-3}
    for extra, n in ((off, 1), (far, 1), (loose, 1), ({**far, **loose}, 2)):
        verdict, why = integ.assess({**base, **extra}, cfg)
        assert verdict == integ.WARNING and len(why) == n, why
    for second in (far, loose):
        verdict, why = integ.assess({**base, **off, **second}, cfg)
        assert verdict == integ.FAIL, why
        assert any(w.startswith("innovation") and "corroborated" in w for w in why)
        assert any(w.startswith(("agreement", "consistency")) for w in why)


def keypoint_frames(K=120, seed=0, noise=(1.0,), shift=None):
    """A keyframe and live keypoint frames (StereoKeypoints, B = 1) of K points 3-12 m ahead with
    stereo covariances (sigma 0.5 px) and unique descriptors; live frame i moves 0.1 i m forward
    with noise ``noise[i]`` times the modelled std. ``shift``: (index set, offset (3,)) moves those
    keyframe matches consistently (a repeated structure matched one period off) in the last frame."""
    g = torch.Generator().manual_seed(seed)
    cam = StereoCamera(fx=200.0, fy=200.0, cx=159.5, cy=119.5, baseline=0.24, width=320, height=240)
    d = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    uvd = torch.stack([d(K) * 300 + 10, d(K) * 220 + 10, d(K) * 12 + 4], -1)
    P, _ = cam.triangulate(uvd)
    S = cam.point_covariance(uvd, 0.5)
    desc = torch.nn.functional.normalize(torch.randn(1, K, 32, generator=g), dim=-1)

    def kp(points):
        return StereoKeypoints(uv=uvd[None, :, :2].float(), disparity=uvd[None, :, 2].float(),
                               points=points[None].float(), inv_cov=torch.linalg.inv(S)[None].float(),
                               scores=torch.ones(1, K), descriptors=desc, valid=torch.ones(1, K, dtype=torch.bool))

    frames = [kp(P)]
    L = torch.linalg.cholesky(2 * S)                         # keyframe and live noise, both modelled
    for i, a in enumerate(noise, 1):
        live = P - torch.tensor([0.0, 0.0, 0.1 * i], dtype=torch.float64)
        if shift is not None and i == len(noise):
            live = live.clone()
            live[shift[0]] -= torch.as_tensor(shift[1], dtype=torch.float64)
        e = (L @ torch.randn(K, 3, 1, generator=g, dtype=torch.float64))[..., 0]
        frames.append(kp(live + a * e))
    return frames


def test_certified_but_inconsistent_or_wrong_poses_fail_integrity():
    """Clean frames pass; noise 1.5x the model's std (chi-square) and a consistent majority of wrong
    matches (a repeated structure one period off: innovation against the motion prediction) give
    certified poses that FAIL integrity, with the check named."""
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    def run(frames):
        tr = Tracker(TrackerConfig(mode="odometry", keyframe_distance=100.0))
        return [tr.process(f, 10**8 * i) for i, f in enumerate(frames)]

    clean = run(keypoint_frames(noise=(1.0, 1.0, 1.0, 1.0)))[1:]
    assert all(r.certified and r.integrity == "OK" for r in clean), [r.integrity_reasons for r in clean]
    noisy = run(keypoint_frames(K=240, noise=(1.0, 1.0, 1.5)))[-1]
    assert noisy.certified and noisy.integrity == "FAIL"
    assert any(w.startswith("consistency") for w in noisy.integrity_reasons), noisy.integrity_reasons
    facade = np.arange(0, 120, 2)                           # 60 of 120 matches, plus ...
    facade = np.r_[facade, np.arange(1, 120, 4)][:85]       # ... 25 more: 85 wrong, consistent
    wrong = run(keypoint_frames(noise=(1.0, 1.0, 1.0), shift=(facade, [2.0, 0.0, 0.0])))[-1]
    assert wrong.certified and abs(wrong.T[0, 3]) > 1.5      # the wrong consensus won, certified
    assert wrong.integrity == "FAIL", wrong.integrity_reasons
    assert any(w.startswith(("innovation", "support")) for w in wrong.integrity_reasons)


def test_a_relocalization_whose_candidates_disagree_needs_a_clear_margin():
    """Relocalized (no prior vouches for it) with another candidate keyframe's pose 3 m away: the
    pose FAILs unless it has ``relocalization_margin`` times that candidate's inliers; the same
    disagreement under a prior that checks the pose, or with a clear margin, is a warning."""
    cfg = integ.IntegrityConfig()
    base = {"chi2": 110.0, "chi2_dof": 114, "chi2_p": 0.6, "inliers": 40, "inlier_ratio": 0.78, "position_std": 0.12}
    close = {**base, "agreement_m": 3.16, "agreement_margin": 40 / 37}
    verdict, why = integ.assess(close, cfg, unvouched="place recognition: no motion prior")
    assert verdict == integ.FAIL and any(w.startswith("agreement") and "1.08 x" in w
                                         and "relocalized (place recognition: no motion prior)" in w for w in why), why
    assert integ.assess(close, cfg)[0] == integ.WARNING
    clear = {**close, "agreement_margin": 68 / 43}
    assert integ.assess(clear, cfg, unvouched="place recognition: no motion prior")[0] == integ.WARNING
    with pytest.raises(ValueError, match="relocalization_margin"):
        integ.IntegrityConfig(relocalization_margin=0.5)


def test_a_loose_motion_prediction_does_not_vouch_for_a_pose():
    """Map mode, 25 matches a frame (enough to track, fewer than a relocalization needs): with the
    default prediction error the poses after the first velocity are checked by the motion
    prediction and pass; with 6 m/s of prediction error (1-sigma 0.6 m after 0.1 s, looser than
    ``max_prediction_std``) nothing vouches for them, and the same poses FAIL for support, as a
    relocalization would, with ``prediction_std`` reported."""
    from sdpr_loc.data.maps import KeyframeMap
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    frames = keypoint_frames(K=25, noise=(1.0, 1.0, 1.0, 1.0))
    kmap = KeyframeMap.from_keyframes([(np.eye(4), 0, frames[0])])

    def run(sigma_mps):
        tr = Tracker(TrackerConfig(mode="map", prior_sigma_mps=sigma_mps), kmap)
        T1 = np.eye(4)
        T1[2, 3] = 0.1
        tr.set_pose(T1, 10**8)
        return [tr.process(f, 10**8 * i) for i, f in enumerate(frames[1:], 1)]

    tight, loose = run(0.2), run(6.0)
    for a, b in zip(tight, loose):
        assert a.certified and b.certified and np.allclose(a.T, b.T)        # the same poses
        assert abs(a.T[2, 3] - 0.1 * a.stamp_ns / 10**8) < 0.05
    assert all(r.integrity == integ.PASS for r in tight), [r.integrity_reasons for r in tight]
    assert [r.integrity for r in loose[:2]] == [integ.PASS] * 2             # no velocity yet
    for r in loose[2:]:
        assert r.integrity == integ.FAIL, r.integrity_reasons
        assert any(w.startswith("support: relocalized") for w in r.integrity_reasons)
        assert r.integrity_stats["prediction_std"] > integ.IntegrityConfig().max_prediction_std
    assert any(w.startswith("support: relocalized (prediction std") for w in loose[2].integrity_reasons)
    assert tight[2].integrity_stats["prediction_std"] < integ.IntegrityConfig().max_prediction_std


def test_a_pose_nothing_vouched_for_cannot_vouch_for_the_next():
    """Map mode, 25 matches a frame: a frame whose prediction is too loose to vouch for it FAILs
    for support and is tracked from (before: the next prediction, tight again, vouched for the
    next pose, and a wrong track 3 m off was published through it). The poses after it are judged
    like relocalizations until one passes; the prediction from that one vouches again."""
    from dataclasses import replace

    from sdpr_loc.data.maps import KeyframeMap
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    frames = keypoint_frames(K=25, noise=(1.0,) * 6)
    kmap = KeyframeMap.from_keyframes([(np.eye(4), 0, frames[0])])
    tr = Tracker(TrackerConfig(mode="map"), kmap)
    T1 = np.eye(4)
    T1[2, 3] = 0.1
    tr.set_pose(T1, 10**8)
    default, weak = tr.config.integrity, replace(tr.config.integrity, min_relocalization_inliers=20)
    out = []
    for i, f in enumerate(frames[1:], 1):
        tr.config.prior_sigma_mps = 6.0 if i == 3 else 0.2            # frame 3: a loose prediction
        tr.config.integrity = weak if i == 5 else default             # frame 5: 25 inliers pass as a relocalization
        r = tr.process(f, 10**8 * i)
        assert r.certified and abs(r.T[2, 3] - 0.1 * i) < 0.05, r.reason
        out.append(r)
    assert [r.integrity for r in out] == [integ.PASS, integ.PASS, integ.FAIL, integ.FAIL, integ.PASS, integ.PASS], \
        [r.integrity_reasons for r in out]
    for r in out[2:4]:
        assert any(w.startswith("support: relocalized") for w in r.integrity_reasons), r.integrity_reasons
    # the certificate says why nothing vouched: frame 3 its loose prediction, frame 4 the pose before
    assert any("prediction std" in w for w in out[2].integrity_reasons), out[2].integrity_reasons
    assert any("predicted from an unvouched pose that failed" in w for w in out[3].integrity_reasons), out[3].integrity_reasons
    assert out[3].integrity_stats["prediction_std"] < default.max_prediction_std     # tight, yet no vouch
    assert not any(w.startswith("support") for w in out[5].integrity_reasons)
