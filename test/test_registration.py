"""Certified registration against ground truth, a second SDP solver, and finite differences."""
import numpy as np
import pytest
import torch

from sdpr_loc.geometry.instances import stereo_instance as make_instance
from sdpr_loc.geometry.registration import register
from sdpr_loc.geometry.se3 import random_rotation, rotation_angle


def stereo_instance(B, N, sigma_px=0.5, seed=0, offset=(0.0, 0.0, 0.0)):
    i = make_instance(B, N, sigma_px, seed, offset)
    return i.src, i.trg, i.weights, i.inv_cov, i.R, i.t


def T_from(R, t):
    T = torch.zeros(R.shape[0], 4, 4, dtype=R.dtype)
    T[:, :3, :3], T[:, :3, 3], T[:, 3, 3] = R, t, 1
    return T


def test_noise_free_exact_recovery():
    B, N = 8, 30
    R = random_rotation(B, dtype=torch.float64)
    t = torch.randn(B, 3, dtype=torch.float64)
    src = torch.randn(B, N, 3, dtype=torch.float64) * 2 + torch.tensor([0, 0, 8.0], dtype=torch.float64)
    trg = src @ R.transpose(1, 2) + t.unsqueeze(1)
    W = torch.randn(B, N, 3, 3, dtype=torch.float64)
    W = W @ W.transpose(-1, -2) + 0.1 * torch.eye(3, dtype=torch.float64)
    for method in ("certified", "sdp", "svd", "local"):
        reg = register(src, trg, None, W, method=method)
        assert (reg.R - R).abs().max() < 1e-9, method
        assert (reg.t - t).abs().max() < 1e-9, method
    assert register(src, trg, None, W).certificate.certified.all()


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_certified_equals_sdp_and_second_solver(sigma):
    src, trg, w, W, R, t = stereo_instance(6, 60, sigma, seed=int(sigma * 10))
    cert = register(src, trg, w, W)
    sdp = register(src, trg, w, W, method="sdp")
    scs = register(src, trg, w, W, method="sdp", solver="scs")
    assert cert.certificate.certified.all(), cert.certificate.reason
    assert set(cert.certificate.method) == {"local"}
    assert sdp.certificate.certified.all(), sdp.certificate.reason
    assert rotation_angle(cert.R, sdp.R).max() < 1e-6
    assert (cert.t - sdp.t).abs().max() < 1e-6
    # SCS is a first-order solver; after the KKT polish its solution must agree too
    assert rotation_angle(scs.R, sdp.R).max() < 1e-6
    # and the estimate is near the ground truth
    assert rotation_angle(cert.R, R).max() < 0.05


def _fd_check(fn, inp, eps=1e-6, n_checks=12, seed=0, symmetric=False):
    g = np.random.default_rng(seed)
    grad = inp.grad
    if symmetric:  # d/dv of f(sym(v)): the symmetric part of the gradient
        grad = 0.5 * (grad + grad.transpose(-1, -2))
    grad = grad.numpy()
    flat = inp.detach().numpy().reshape(-1)
    idx = g.choice(flat.size, size=n_checks, replace=False)
    for k in idx:
        p, m = flat.copy(), flat.copy()
        p[k] += eps
        m[k] -= eps
        fd = (fn(torch.tensor(p).reshape(inp.shape)) - fn(torch.tensor(m).reshape(inp.shape))) / (2 * eps)
        got = grad.reshape(-1)[k]
        assert abs(got - fd) <= 1e-6 * max(1.0, abs(fd)) + 1e-8, (k, got, fd)


def test_gradients_match_finite_differences():
    src, trg, w, W, _, _ = stereo_instance(2, 12, 0.5, seed=3)
    w = w * (0.5 + torch.rand(w.shape, dtype=torch.float64))
    C = torch.randn(3, 3, dtype=torch.float64)
    c = torch.randn(3, dtype=torch.float64)

    def loss(reg):
        return (reg.R * C).sum() + (reg.t * c).sum()

    def ref(s=src, tg=trg, ww=w, WW=W):  # independent: converged Gauss-Newton (no KKT backward)
        return float(loss(register(s, tg, ww, WW, method="local")))

    leaves = [x.clone().requires_grad_(True) for x in (src, trg, w, W)]
    reg = register(*leaves)
    assert reg.certificate.certified.all()
    loss(reg).backward()
    _fd_check(lambda v: ref(s=v), leaves[0])
    _fd_check(lambda v: ref(tg=v), leaves[1])
    _fd_check(lambda v: ref(ww=v), leaves[2])
    # inverse covariances: perturb through sym(v) so the input stays symmetric
    _fd_check(lambda v: ref(WW=0.5 * (v + v.transpose(-1, -2))), leaves[3], symmetric=True)


def test_far_from_origin_still_certifies_correctly():
    src, trg, w, W, R, t = stereo_instance(4, 60, 0.5, seed=5, offset=(1000.0, -700.0, 300.0))
    reg = register(src, trg, w, W)
    near = register(*stereo_instance(4, 60, 0.5, seed=5)[:4])
    assert reg.certificate.certified.all(), reg.certificate.reason
    assert rotation_angle(reg.R, near.R).max() < 1e-8
    assert rotation_angle(register(src, trg, w, W, method="sdp").R, reg.R).max() < 1e-6


def test_near_planar_and_minimal_cases():
    B = 3
    R = random_rotation(B, dtype=torch.float64)
    t = torch.randn(B, 3, dtype=torch.float64)
    for N, zscale in ((40, 1e-4), (3, 1.0), (4, 1.0)):
        src = torch.randn(B, N, 3, dtype=torch.float64)
        src[..., 2] *= zscale
        trg = src @ R.transpose(1, 2) + t.unsqueeze(1) + 1e-3 * torch.randn(B, N, 3, dtype=torch.float64)
        reg = register(src, trg)
        sdp = register(src, trg, method="sdp")
        assert reg.certificate.certified.all(), (N, reg.certificate.reason)
        assert rotation_angle(reg.R, sdp.R).max() < 1e-6, N


def test_local_minimum_trap_restarts_find_the_certified_optimum():
    src, trg, w, W, R, t = stereo_instance(4, 50, 0.5, seed=7)
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
    bad_init = T_from(R @ flip, t)
    reg = register(src, trg, w, W, init=bad_init)
    sdp = register(src, trg, w, W, method="sdp")
    assert reg.certificate.certified.all(), reg.certificate.reason
    assert rotation_angle(reg.R, sdp.R).max() < 1e-6
    # the plain local solver from that init is not trustworthy: it carries no certificate
    loc = register(src, trg, w, W, method="local", init=bad_init)
    assert not loc.certificate.certified.any()


def test_degenerate_inputs_are_never_certified():
    B, N = 1, 10
    R = random_rotation(B, dtype=torch.float64)
    line = torch.linspace(0, 1, N, dtype=torch.float64).view(1, N, 1) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    trg = line @ R.transpose(1, 2)
    reg = register(line, trg)
    assert not reg.certificate.certified.any() and "collinear" in reg.certificate.reason[0]
    src = torch.randn(B, N, 3, dtype=torch.float64)
    zero = register(src, src, torch.zeros(B, N, dtype=torch.float64))
    assert not zero.certificate.certified.any() and "fewer than 3" in zero.certificate.reason[0]
    w = torch.zeros(B, N, dtype=torch.float64)
    w[:, :2] = 1
    assert not register(src, src, w).certificate.certified.any()
    assert torch.isfinite(zero.R).all() and torch.isfinite(zero.t).all()


def test_duplicated_points_do_not_break_it():
    src, trg, w, W, _, _ = stereo_instance(2, 20, 0.5, seed=9)
    src2, trg2 = torch.cat([src, src], 1), torch.cat([trg, trg], 1)
    reg1 = register(src, trg, w, W)
    reg2 = register(src2, trg2, torch.cat([w, w], 1), torch.cat([W, W], 1))
    assert reg2.certificate.certified.all()
    assert rotation_angle(reg1.R, reg2.R).max() < 1e-9


@pytest.mark.parametrize("kwargs, msg", [
    (dict(src=torch.zeros(2, 5, 2)), "src must have shape"),
    (dict(trg=torch.zeros(2, 6, 3, dtype=torch.float64)), "same shape"),
    (dict(weights=torch.zeros(2, 4, dtype=torch.float64)), "weights must have shape"),
    (dict(weights=-torch.ones(2, 5, dtype=torch.float64)), ">= 0"),
    (dict(inv_cov=torch.zeros(2, 5, 3, dtype=torch.float64)), "inv_cov must have shape"),
    (dict(trg=torch.full((2, 5, 3), float("nan"), dtype=torch.float64)), "NaN"),
    (dict(method="magic"), "method must be one of"),
])
def test_bad_input_raises_value_error(kwargs, msg):
    args = dict(src=torch.randn(2, 5, 3, dtype=torch.float64), trg=torch.randn(2, 5, 3, dtype=torch.float64))
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        register(**args)


def test_ransac_rejects_outliers_and_certifies():
    from sdpr_loc.geometry.registration import ransac

    src, trg, w, W, R, t = stereo_instance(3, 80, 0.5, seed=12)
    g = torch.Generator().manual_seed(0)
    out = torch.rand(3, 80, generator=g) < 0.3  # 30% gross outliers
    trg_bad = torch.where(out.unsqueeze(-1), trg + 5 * torch.randn(3, 80, 3, generator=g, dtype=torch.float64), trg)
    reg, inl = ransac(src, trg_bad, w, W, generator=g)
    assert reg.certificate.certified.all(), reg.certificate.reason
    assert rotation_angle(reg.R, R).max() < 0.01
    assert (inl & out).sum() <= 2  # hardly any outlier kept
    clean = register(src, trg, w * (~out).double(), W)
    assert rotation_angle(reg.R, clean.R).max() < 5e-3
    # least squares on everything is pulled off by the outliers
    assert rotation_angle(register(src, trg_bad, w, W).R, R).max() > rotation_angle(reg.R, R).max()


def test_laplace_covariance_is_the_inverse_hessian_by_finite_differences():
    """With exact matches the Gauss-Newton Hessian is the Hessian of cost / 2 at the optimum, for
    a left perturbation T <- exp(xi) T; a central-difference Hessian is the reference."""
    from sdpr_loc.geometry.registration import laplace_covariance
    from sdpr_loc.geometry.se3 import se3_exp_np

    rng = np.random.default_rng(4)
    src = rng.normal(size=(30, 3)) * [3.0, 2.0, 5.0] + [0.0, 0.0, 10.0]
    A = rng.normal(size=(30, 3, 3))
    W = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(3)
    T = np.eye(4)
    T[:3, :3] = random_rotation(generator=torch.Generator().manual_seed(1)).numpy()
    T[:3, 3] = (0.5, -1.0, 2.0)
    trg = src @ T[:3, :3].T + T[:3, 3]

    def half_cost(xi):
        Tx = se3_exp_np(xi) @ T
        e = trg - (src @ Tx[:3, :3].T + Tx[:3, 3])
        return 0.5 * np.einsum("ni,nij,nj->", e, W, e)

    h, H = 1e-4, np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            d = np.zeros((4, 6))
            d[:, i] += h * np.array([1, 1, -1, -1])
            d[:, j] += h * np.array([1, -1, 1, -1])
            H[i, j] = (half_cost(d[0]) - half_cost(d[1]) - half_cost(d[2]) + half_cost(d[3])) / (4 * h * h)
    cov = laplace_covariance(src, W, T[:3, :3], T[:3, 3])
    np.testing.assert_allclose(cov @ H, np.eye(6), atol=1e-5)


def test_fused_points_are_the_information_weighted_mean():
    """Equal isotropic covariances: the midpoint; in general, the zero of the fused cost's gradient
    A (z - trg) + B (z - R src - t) = 0 with B = (R S_src R^T)^-1."""
    from sdpr_loc.geometry.registration import fused_points
    from sdpr_loc.geometry.se3 import se3_exp_np

    rng = np.random.default_rng(2)
    T = se3_exp_np(np.r_[0.3, -0.1, 0.5, 0.2, -0.1, 0.3])
    R, t = T[:3, :3], T[:3, 3]
    src, trg = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    I = np.tile(np.eye(3) * 0.04, (6, 1, 1))
    np.testing.assert_allclose(fused_points(src, I, trg, I, R, t), 0.5 * (trg + src @ R.T + t), atol=1e-12)
    M = rng.normal(size=(6, 3, 3))
    S_src, S_trg = M @ M.transpose(0, 2, 1) + 0.1 * np.eye(3), M.transpose(0, 2, 1) @ M + 0.2 * np.eye(3)
    z = fused_points(src, S_src, trg, S_trg, R, t)
    grad = (np.einsum("nij,nj->ni", np.linalg.inv(S_trg), z - trg)
            + np.einsum("nij,nj->ni", np.linalg.inv(R @ S_src @ R.T), z - src @ R.T - t))
    np.testing.assert_allclose(grad, 0.0, atol=1e-10)
