"""The batch-1 numpy/LAPACK path of `register` against the batched torch path it stands in for."""
import numpy as np
import pytest
import torch

from sdpr_loc.certify import certify
from sdpr_loc.certify.single import certify_one
from sdpr_loc.geometry import registration as reg
from sdpr_loc.geometry import registration_single as one
from sdpr_loc.geometry.instances import stereo_instance
from sdpr_loc.geometry.se3 import random_rotation, rotation_angle

FIELDS = ("min_eig", "margin", "gap", "residual", "violation", "multipliers")


def _args(inst):
    return inst.src, inst.trg, inst.weights, inst.inv_cov


@pytest.mark.parametrize("sigma, offset", [(0.5, (0.0, 0.0, 0.0)), (1.0, (0.0, 0.0, 0.0)), (0.5, (300.0, -50.0, 900.0))])
def test_single_path_equals_batched_path(sigma, offset):
    inst = stereo_instance(5, 80, sigma, seed=int(10 * sigma), offset=offset)
    args = _args(inst)
    batched = reg.register(*args)  # B = 5: the batched torch path
    for k in range(5):
        item = [a[k:k + 1] for a in args]
        assert reg._register_one(*item, None) is not None, "the single path must handle a plain certified item"
        single = reg.register(*item)
        cb, cs = batched.certificate, single.certificate
        assert float(rotation_angle(single.R, batched.R[k:k + 1])) < 1e-12
        assert torch.allclose(single.t, batched.t[k:k + 1], rtol=0, atol=1e-10)
        assert torch.allclose(single.cost, batched.cost[k:k + 1], rtol=1e-10)
        assert bool(cs.certified[0]) and bool(cb.certified[k]) and cs.reason == [cb.reason[k]] == [""]
        assert cs.method == [cb.method[k]] == ["local"]
        for f in FIELDS:
            assert torch.allclose(getattr(cs, f)[0], getattr(cb, f)[k], rtol=0, atol=1e-12), f
        assert torch.isnan(cs.rank_ratio).all()


def test_single_path_restarts_from_the_flips_in_a_wrong_basin():
    """Gauss-Newton from a flipped rotation stops in a wrong minimum (no certificate); the single
    path restarts from its flips, as the batched layer does, and certifies the same optimum."""
    from sdpr_loc.certify.single import certify_one

    inst = stereo_instance(3, 50, 0.5, seed=7)
    args = _args(inst)
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
    T = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    T[:, :3, :3], T[:, :3, 3] = inst.R @ flip, inst.t
    item = [a[:1] for a in args]
    calls = []
    real = reg.certify_one
    reg.certify_one = lambda *a, **k: calls.append(real(*a, **k)) or calls[-1]
    try:
        single = reg._register_one(*item, T[:1])
    finally:
        reg.certify_one = real
    assert calls[0] is None or not calls[0].certified      # the first local solution is not certifiable
    assert single is not None and bool(single.certificate.certified[0])
    assert certify_one is real
    batched = reg.register(*args, init=T)
    assert bool(single.certificate.certified[0]) and bool(batched.certificate.certified[0])
    assert float(rotation_angle(single.R, batched.R[:1])) < 1e-12
    assert float(rotation_angle(single.R, inst.R[:1])) < 0.05


def test_single_path_with_gradients_matches_the_no_grad_result():
    inst = stereo_instance(1, 40, 0.5, seed=4)
    plain = reg.register(*_args(inst))
    leaves = [a.clone().requires_grad_(True) for a in _args(inst)]
    out = reg.register(*leaves)  # gradients requested: the autograd path
    out.R.sum().backward()
    assert leaves[0].grad is not None and torch.isfinite(leaves[0].grad).all()
    assert float(rotation_angle(out.R.detach(), plain.R)) < 1e-12
    with torch.no_grad():  # leaves that require grad, but no graph wanted: the single path
        assert reg._register_one(*leaves, None) is not None
        quiet = reg.register(*leaves)
    assert float(rotation_angle(quiet.R, plain.R)) < 1e-12 and not quiet.R.requires_grad


def test_certify_one_matches_certify_or_defers_to_it():
    """Certified optima, infeasible points and wrong minima: same verdict, reason and numbers as `certify`."""
    inst = stereo_instance(2, 60, 0.5, seed=2)
    layer = reg._layer(True, "clarabel", "mask")
    q = layer.qcqp
    arrays = layer.template_arrays
    src, trg = inst.src[:1], inst.trg[:1]
    W = inst.weights[:1, :, None, None] * inst.inv_cov[:1]
    Q = reg.cost_matrix(src - src.mean(1, keepdim=True), trg - trg.mean(1, keepdim=True), W)
    Q = Q / Q.flatten(1).norm()
    x_opt = reg._local_solver(Q, None, None)
    R, t = reg.pose_from_x(x_opt)
    g = torch.Generator().manual_seed(0)
    candidates = [x_opt, x_opt + 1e-3 * torch.randn(1, 13, generator=g, dtype=torch.float64),
                  reg.gauss_newton(Q, R @ torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)), t),
                  reg.x_from_pose(random_rotation(1, generator=g, dtype=torch.float64), t)]
    A = q.A.expand(1, -1, -1, -1)
    seen_none = seen_fail = 0
    for x, margin in [(x, None) for x in candidates] + [(x_opt, 1.0)]:  # margin 1: "not unique"
        ref = certify(Q, A, q.b, x, tol=1e-7, min_margin=margin)
        got = certify_one(Q[0].numpy(), x[0].numpy(), arrays, 1e-7, margin)
        if got is None:  # only when the least-squares multipliers leave H indefinite
            seen_none += 1
            assert float(certify(Q, A, q.b, x, tol=1e-7, refine=False).min_eig[0]) < -1e-7
            continue
        c = got.to_certificate()
        assert bool(c.certified[0]) == bool(ref.certified[0]) and c.reason == ref.reason
        seen_fail += not bool(c.certified[0])
        for f in FIELDS:
            assert torch.allclose(getattr(c, f), getattr(ref, f), rtol=1e-9, atol=1e-12), f
    assert seen_none >= 1 and seen_fail == 1 and bool(certify(Q, A, q.b, x_opt, tol=1e-7).certified[0])


def test_numpy_building_blocks_match_the_torch_ones():
    inst = stereo_instance(1, 30, 1.0, seed=11)
    s, tg, w = inst.src[0].numpy(), inst.trg[0].numpy(), inst.weights[0].numpy()
    W = w[:, None, None] * inst.inv_cov[0].numpy()
    Q = reg.cost_matrix(inst.src, inst.trg, torch.from_numpy(W)[None])[0].numpy()
    assert np.allclose(one.cost_matrix_one(s, tg, W), Q, rtol=0, atol=1e-10 * np.abs(Q).max())
    R0, t0 = one.weighted_svd_one(s, tg, w)
    Rt, tt = reg.weighted_svd(inst.src, inst.trg, inst.weights)
    assert np.allclose(R0, Rt[0].numpy(), atol=1e-13) and np.allclose(t0, tt[0].numpy(), atol=1e-12)
    Qs = torch.from_numpy(Q / np.linalg.norm(Q))[None]
    x_np = one.gauss_newton_one(Qs[0].numpy(), R0, t0)
    x_t = reg.gauss_newton(Qs, Rt, tt)[0].numpy()
    assert np.abs(x_np - x_t).max() < 1e-11
    w3 = np.array([0.3, -1.2, 0.7])
    for v in (w3, 1e-3 * w3, 1e-9 * w3):
        C = one.cayley_one(*v.tolist())
        assert np.abs(C - reg.cayley(torch.from_numpy(v)[None])[0].numpy()).max() < 1e-15
        assert np.abs(C.T @ C - np.eye(3)).max() < 1e-15 and abs(np.linalg.det(C) - 1) < 1e-15
    # the Cayley map is exp(hat(w)) up to third order in |w|
    from sdpr_loc.geometry.se3 import so3_exp
    for v in (1e-2 * w3, 1e-3 * w3):
        err = np.abs(one.cayley_one(*v.tolist()) - so3_exp(torch.from_numpy(v)).numpy()).max()
        assert err < 0.1 * np.linalg.norm(v) ** 3


def test_gradients_flow_when_a_batch_holds_a_degenerate_item():
    """register revokes degenerate items' certificates after the layer: the backward must still run."""
    inst = stereo_instance(2, 20, 0.5, seed=6)
    src, trg = inst.src.clone(), inst.trg.clone()
    src[1] = torch.linspace(0, 1, 20, dtype=torch.float64)[:, None] * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    trg[1] = src[1]
    leaf = src.requires_grad_(True)
    out = reg.register(leaf, trg, inst.weights, inst.inv_cov)
    assert out.certificate.certified.tolist() == [True, False] and "collinear" in out.certificate.reason[1]
    out.R.sum().backward()
    assert leaf.grad[1].abs().max() == 0 and leaf.grad[0].abs().max() > 0
