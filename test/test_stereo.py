"""Stereo camera: roundtrips, bad-disparity handling, and the first-order
covariance against Monte-Carlo sampling of pixel noise (the independent reference)."""
import math

import numpy as np

import pytest
import torch
from torch.autograd import gradcheck

from sdpr_loc.geometry.stereo import InvalidReason, StereoCamera

F64 = torch.float64
FX, B, SIGMA = 400.0, 0.24, 0.5


@pytest.fixture
def cam():
    return StereoCamera(FX, 410.0, 320.0, 240.0, B, width=640, height=480)


def _points(n, gen, zmin=1.0, zmax=30.0):
    z = zmin + (zmax - zmin) * torch.rand(n, generator=gen, dtype=F64)
    xy = (torch.rand(n, 2, generator=gen, dtype=F64) - 0.5) * z[:, None]
    return torch.cat([xy, z[:, None]], -1)


def test_project_triangulate_roundtrip(cam):
    gen = torch.Generator().manual_seed(0)
    p = _points(500, gen).reshape(5, 100, 3)
    uvd = cam.project(p)
    assert uvd.shape == (5, 100, 3)
    back, valid = cam.triangulate(uvd)
    assert valid.all()
    torch.testing.assert_close(back, p, atol=1e-12, rtol=1e-12)
    # closed form for one point: z = fx B / d
    pt, _ = cam.triangulate(torch.tensor([[320.0, 240.0, 9.6]], dtype=F64))
    torch.testing.assert_close(pt, torch.tensor([[0.0, 0.0, 10.0]], dtype=F64))


def test_project_behind_camera_is_masked(cam):
    uvd = cam.project(torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, -3.0]], dtype=F64))
    assert torch.isfinite(uvd).all() and (uvd == 0).all()
    assert not cam.triangulate(uvd)[1].any()


def test_intrinsics(cam):
    torch.testing.assert_close(cam.intrinsics(), torch.tensor([FX, 410.0, 320.0, 240.0, B],
                                                              dtype=F64))


@pytest.mark.parametrize("kwargs, field", [
    (dict(fx=0.0), "fx"), (dict(fy=-1.0), "fy"), (dict(baseline=0.0), "baseline"),
    (dict(cx=float("nan")), "cx"), (dict(cy=float("inf")), "cy"),
    (dict(fx="a"), "fx"), (dict(width=0), "width"), (dict(height=1.5), "height"),
    (dict(min_disparity=0.0), "min_disparity"),
])
def test_bad_camera_params(kwargs, field):
    args = dict(fx=FX, fy=FX, cx=320.0, cy=240.0, baseline=B) | kwargs
    with pytest.raises(ValueError, match=field):
        StereoCamera(**args)


def test_bad_disparity_is_masked_with_reasons(cam):
    nan, inf = float("nan"), float("inf")
    uvd = torch.tensor([[300.0, 200.0, 10.0],   # valid
                        [300.0, 200.0, 0.0],    # zero
                        [300.0, 200.0, -3.0],   # negative
                        [300.0, 200.0, 0.1],    # tiny
                        [300.0, 200.0, nan],
                        [nan, 200.0, 10.0],
                        [300.0, inf, 10.0]], dtype=F64, requires_grad=True)
    pts, valid = cam.triangulate(uvd)
    assert valid.tolist() == [True] + [False] * 6
    assert torch.isfinite(pts).all() and (pts[1:] == 0).all()
    W, valid_w = cam.inverse_covariance(uvd, SIGMA)
    cov = cam.point_covariance(uvd, SIGMA)
    assert torch.equal(valid_w, valid) and torch.isfinite(W).all() and (W[1:] == 0).all()
    assert torch.isfinite(cov).all() and (cov[1:] == 0).all()
    (pts.sum() + W.sum() + cov.sum()).backward()
    assert torch.isfinite(uvd.grad).all() and (uvd.grad[1:] == 0).all()
    assert list(cam.invalid_reasons(uvd)) == [
        "", "non-positive disparity", "non-positive disparity", "disparity below min",
        "non-finite", "non-finite", "non-finite"]
    assert cam.invalid_codes(uvd)[3] == InvalidReason.DISPARITY_BELOW_MIN
    # the threshold is a parameter
    assert cam.triangulate(uvd.detach()[3:4], min_disparity=0.05)[1].all()


def _monte_carlo(cam, p, n, gen):
    """Triangulate ``n`` noisy copies of (u_l, v, u_r); return (predicted, empirical) covs."""
    uvd = cam.project(p[None])
    u_l, v, d = uvd[0]
    meas = torch.stack([u_l, v, u_l - d]) + SIGMA * torch.randn(n, 3, generator=gen, dtype=F64)
    noisy = torch.stack([meas[:, 0], meas[:, 1], meas[:, 0] - meas[:, 2]], -1)
    pts, valid = cam.triangulate(noisy, min_disparity=1e-9)
    assert valid.all()
    return cam.point_covariance(uvd, SIGMA)[0], torch.cov(pts.T), d.item()


@pytest.mark.parametrize("depth", [2.0, 5.0, 10.0])
def test_covariance_matches_monte_carlo(cam, depth):
    gen = torch.Generator().manual_seed(int(depth))
    p = torch.tensor([0.4 * depth, -0.25 * depth, depth], dtype=F64)  # off-axis: x, y correlate
    pred, emp, _ = _monte_carlo(cam, p, 200_000, gen)
    assert torch.linalg.norm(emp - pred) / torch.linalg.norm(pred) < 0.10
    # the depth direction dominates, as it should
    evals = torch.linalg.eigvalsh(pred)
    assert evals[-1] > 100 * evals[-2] > 0


def test_covariance_first_order_is_optimistic_at_small_disparity(cam):
    """At 20 m (d = 4.8 px) first order misses ~20 % of the depth variance: 1/d is nonlinear.

    The Gaussian moment series Var(1/(d+e)) = s^2 (1 + 8 s^2 + 69 s^4 + ...) / d^2, with
    s = sigma_d / d, accounts for the gap, which is why the 10 % test above stops at 10 m.
    """
    gen = torch.Generator().manual_seed(20)
    pred, emp, d = _monte_carlo(cam, torch.tensor([0.0, 0.0, 20.0], dtype=F64), 400_000, gen)
    s2 = 2 * SIGMA ** 2 / d ** 2
    ratio = (emp[2, 2] / pred[2, 2]).item()
    assert ratio > 1.1
    assert ratio == pytest.approx(1 + 8 * s2 + 69 * s2 ** 2, rel=0.03)


def test_inverse_covariance_is_spd_inverse(cam):
    gen = torch.Generator().manual_seed(3)
    uvd = cam.project(_points(300, gen, 1.0, 60.0))
    sigma = 0.3 + torch.rand(300, generator=gen, dtype=F64)  # per-point sigma
    W, valid = cam.inverse_covariance(uvd, sigma)
    cov = cam.point_covariance(uvd, sigma)
    assert valid.all()
    assert torch.equal(W, W.transpose(-1, -2)) and torch.equal(cov, cov.transpose(-1, -2))
    assert (torch.linalg.eigvalsh(W) > 0).all()
    eye = torch.eye(3, dtype=F64).expand(300, 3, 3)
    torch.testing.assert_close(W @ cov, eye, atol=1e-8, rtol=0)
    # float32 stays finite and close
    W32, _ = cam.inverse_covariance(uvd.float(), sigma.float())
    assert W32.dtype == torch.float32
    torch.testing.assert_close(W32.double(), W, rtol=1e-4, atol=1e-6 * W.abs().max().item())


def test_gradcheck_through_triangulation(cam):
    gen = torch.Generator().manual_seed(4)
    uvd = cam.project(_points(4, gen)).requires_grad_()
    assert gradcheck(lambda x: cam.triangulate(x)[0], (uvd,))
    assert gradcheck(lambda x: cam.inverse_covariance(x, SIGMA)[0], (uvd,))
    assert gradcheck(lambda x: cam.point_covariance(x, SIGMA), (uvd,))


def test_shape_and_sigma_errors(cam):
    with pytest.raises(ValueError, match=r"uvd must have shape \(\.\.\., N, 3\)"):
        cam.triangulate(torch.zeros(4, 2))
    uvd = torch.tensor([[320.0, 240.0, 10.0]], dtype=F64)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="sigma_px"):
            cam.inverse_covariance(uvd, bad)
    with pytest.raises(ValueError, match="sigma_px"):
        cam.point_covariance(uvd, torch.ones(5, dtype=F64))


def test_camera_is_recovered_from_its_triangulated_points(cam):
    """Keypoints carry no camera: the one that triangulated them is fitted back exactly, and
    points it did not triangulate are refused."""
    from sdpr_loc.geometry.stereo import StereoCamera

    g = torch.Generator().manual_seed(3)
    uvd = torch.stack([torch.rand(40, generator=g, dtype=torch.float64) * 600,
                       torch.rand(40, generator=g, dtype=torch.float64) * 400,
                       torch.rand(40, generator=g, dtype=torch.float64) * 30 + 1], -1)
    P, _ = cam.triangulate(uvd)
    fit = StereoCamera.from_triangulation(uvd.numpy(), P.numpy())
    for name in ("fx", "fy", "cx", "cy", "baseline"):
        assert getattr(fit, name) == pytest.approx(getattr(cam, name), rel=1e-9, abs=1e-9), name
    with pytest.raises(ValueError, match="3 triangulated"):
        StereoCamera.from_triangulation(uvd[:2].numpy(), P[:2].numpy())
    with pytest.raises(ValueError, match="pinhole"):
        StereoCamera.from_triangulation(uvd.numpy(), P.numpy() + np.r_[0.1, 0, 0] * (np.arange(40) % 2)[:, None])
    with pytest.raises(ValueError, match="spread"):
        StereoCamera.from_triangulation(np.tile(uvd[:1].numpy(), (5, 1)), np.tile(P[:1].numpy(), (5, 1)))


def test_covariance_at_another_point_keeps_each_items_pixel_noise(cam):
    """covariance_at(measured -> at) equals the camera's covariance at ``at`` with each item's own
    sigma (read off its covariance at the measured point); unseen points keep theirs."""
    from sdpr_loc.geometry.stereo import covariance_at

    g = torch.Generator().manual_seed(5)
    uvd = torch.stack([torch.rand(20, generator=g, dtype=torch.float64) * 600,
                       torch.rand(20, generator=g, dtype=torch.float64) * 400,
                       torch.rand(20, generator=g, dtype=torch.float64) * 30 + 2], -1)
    sigma = torch.rand(20, generator=g, dtype=torch.float64) + 0.3
    P, _ = cam.triangulate(uvd)
    S = cam.point_covariance(uvd, sigma).numpy()
    at = P.numpy() * 1.3 + 0.2
    want = cam.point_covariance(cam.project(torch.from_numpy(at)), sigma).numpy()
    np.testing.assert_allclose(covariance_at(cam, P.numpy(), S, at), want, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(covariance_at(cam, P.numpy(), S, P.numpy()), S, rtol=1e-9, atol=1e-15)
    behind = at.copy()
    behind[0, 2] = -1.0
    np.testing.assert_array_equal(covariance_at(cam, P.numpy(), S, behind)[0], S[0])
