"""SDPRLayer: certified solutions and gradients against independent references."""
import numpy as np
import pytest
import torch

from certify_problems import (brute_force_boolean, cycle_cost, kabsch, kabsch_solver, maxcut_qcqp,
                              wahba_cost, wahba_instance, wahba_qcqp)
from sdpr_loc.certify import QCQP, SDPRLayer, certify


def _C_from_x(x):
    return x[:, 1:10].reshape(-1, 3, 3).transpose(1, 2)


def test_wahba_local_and_sdp_agree_with_kabsch():
    a, b = wahba_instance(6, 12, 0.3, seed=1)
    Q = wahba_cost(a, b)
    local = SDPRLayer(wahba_qcqp(), local_solver=kabsch_solver, use_sdp=False)
    sdp = SDPRLayer(wahba_qcqp())
    x_l, c_l = local(Q)
    x_s, c_s = sdp(Q)
    assert c_l.certified.all(), c_l.reason
    assert c_s.certified.all(), c_s.reason
    assert set(c_l.method) == {"local"} and set(c_s.method) == {"sdp"}
    for i in range(6):
        C_ref = kabsch(a[i].numpy(), b[i].numpy())
        assert np.abs(_C_from_x(x_l)[i].numpy() - C_ref).max() < 1e-6
        assert np.abs(_C_from_x(x_s)[i].numpy() - C_ref).max() < 1e-6
    assert (c_s.rank_ratio > 1e4).all()
    # the SDP's own duals are a certificate: H = Q + sum l_i A_i is PSD without any repair
    A, b_ = wahba_qcqp().constraints((), 6)
    Qs = Q / Q.flatten(1).norm(dim=-1).view(-1, 1, 1)
    sol = sdp.relaxation.solve(Qs.numpy())
    H = Qs + torch.einsum("bk,bkij->bij", torch.tensor(sol.duals), A)
    assert torch.linalg.eigvalsh(H)[:, 0].min() > -1e-7
    assert np.allclose(sol.primal, sol.dual, atol=1e-7)
    assert torch.allclose(x_l, x_s, atol=1e-6)


def test_wahba_gradient_matches_finite_differences_of_kabsch():
    a, b = wahba_instance(3, 8, 0.2, seed=2)
    layer = SDPRLayer(wahba_qcqp(), local_solver=kabsch_solver)
    a = a.clone().requires_grad_(True)
    W = torch.randn(3, 3, dtype=torch.float64)  # loss = <W, C>
    x, cert = layer(wahba_cost(a, b))
    assert cert.certified.all()
    loss = (_C_from_x(x) * W).sum()
    loss.backward()
    eps = 1e-6
    an, bn, Wn = a.detach().numpy(), b.numpy(), W.numpy()
    fd = np.zeros_like(an)
    for idx in np.ndindex(*an.shape):
        ap, am = an.copy(), an.copy()
        ap[idx] += eps
        am[idx] -= eps
        i = idx[0]
        fd[idx] = ((kabsch(ap[i], bn[i]) * Wn).sum() - (kabsch(am[i], bn[i]) * Wn).sum()) / (2 * eps)
    err = np.linalg.norm(a.grad.numpy() - fd) / np.linalg.norm(fd)
    assert err < 1e-6, err


def _ellipse_projection(M: np.ndarray, p: np.ndarray) -> np.ndarray:
    """argmin |z - p|^2 s.t. z^T M z = 1 by the secular equation (independent of the layer)."""
    from scipy.optimize import brentq

    w, V = np.linalg.eigh(M)
    q = V.T @ p
    f = lambda mu: np.sum(w * (q / (1 + mu * w)) ** 2) - 1.0  # noqa: E731
    lo = -1.0 / w.max() + 1e-12
    hi = 1.0
    while f(hi) > 0:
        hi *= 2
    mu = brentq(f, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500)
    return V @ (q / (1 + mu * w))


def test_parametrized_constraint_gradient():
    """min |z - p|^2 on an ellipse z^T M z = 1 with M a parameter: grads w.r.t. M and p."""
    qcqp = QCQP(A=torch.zeros(0, 3, 3, dtype=torch.float64) if False else
                torch.eye(3, dtype=torch.float64)[None] * torch.tensor([1.0, 0, 0]).view(3, 1) * 0 +
                torch.diag(torch.tensor([1.0, 0, 0], dtype=torch.float64))[None],
                b=torch.ones(1, dtype=torch.float64), n_params=1, param_b=[0.0])
    g = torch.Generator().manual_seed(3)
    B = 4
    L = torch.randn(B, 2, 2, generator=g, dtype=torch.float64)
    Mz = (L @ L.transpose(1, 2) + 0.5 * torch.eye(2, dtype=torch.float64)).requires_grad_(True)
    p = (3 * torch.randn(B, 2, generator=g, dtype=torch.float64)).requires_grad_(True)

    def build(Mz, p):
        Q = torch.zeros(B, 3, 3, dtype=torch.float64)
        Q = Q + torch.zeros_like(Q)
        top = torch.cat([(p * p).sum(-1, keepdim=True), -p], -1)
        Q = torch.cat([top.unsqueeze(1), torch.cat([-p.unsqueeze(-1), torch.eye(2, dtype=torch.float64).expand(B, 2, 2)], -1)], 1)
        A = torch.zeros(B, 3, 3, dtype=torch.float64)
        A = torch.cat([torch.cat([-torch.ones(B, 1, 1, dtype=torch.float64), torch.zeros(B, 1, 2, dtype=torch.float64)], -1),
                       torch.cat([torch.zeros(B, 2, 1, dtype=torch.float64), Mz], -1)], 1)
        return Q, A

    layer = SDPRLayer(qcqp, local_solver=None)
    Q, A = build(Mz, p)
    x, cert = layer(Q, A)
    assert cert.certified.all(), cert.reason
    w = torch.tensor([0.7, -1.3], dtype=torch.float64)
    (x[:, 1:] @ w).sum().backward()
    for i in range(B):
        Mi, pi = Mz[i].detach().numpy(), p[i].detach().numpy()
        assert np.abs(x[i, 1:].detach().numpy() - _ellipse_projection(Mi, pi)).max() < 1e-6
        eps = 1e-6
        for (k, l) in [(0, 0), (0, 1), (1, 1)]:
            E = np.zeros((2, 2)); E[k, l] = E[l, k] = 1.0
            fd = (w.numpy() @ (_ellipse_projection(Mi + eps * E, pi) - _ellipse_projection(Mi - eps * E, pi))) / (2 * eps)
            got = Mz.grad[i, k, l] + (Mz.grad[i, l, k] if k != l else 0)
            assert abs(float(got) - fd) <= 1e-6 * max(1.0, abs(fd)) + 1e-7, (i, k, l, float(got), fd)
        for k in range(2):
            E = np.zeros(2); E[k] = eps
            fd = (w.numpy() @ (_ellipse_projection(Mi, pi + E) - _ellipse_projection(Mi, pi - E))) / (2 * eps)
            assert abs(float(p.grad[i, k]) - fd) <= 1e-6 * max(1.0, abs(fd)) + 1e-7


def test_not_tight_is_never_certified():
    """Odd-cycle MaxCut: even the true global optimum has no certificate; the SDP is not rank one."""
    n = 5
    qcqp = maxcut_qcqp(n)
    Q = cycle_cost(n)[None]
    x_true = brute_force_boolean(Q[0])[None]
    layer = SDPRLayer(qcqp, local_solver=lambda Q, A, b: x_true.clone(), use_sdp=False)
    _, cert = layer(Q)
    assert not cert.certified.any()
    assert "PSD" in cert.reason[0]
    x_sdp, cert_sdp = SDPRLayer(qcqp)(Q)
    assert not cert_sdp.certified.any()
    assert cert_sdp.rank_ratio[0] < 1e4
    with pytest.raises(RuntimeError, match="not certified"):
        SDPRLayer(qcqp, uncertified="raise")(Q)


def test_tight_boolean_instance_is_certified():
    """A boolean problem with a dominant linear term has a tight relaxation."""
    n = 4
    Q = 0.05 * cycle_cost(n)
    Q[0, 1:] = Q[1:, 0] = torch.tensor([1.0, -2.0, 1.5, -1.0], dtype=torch.float64)
    x_true = brute_force_boolean(Q)
    x, cert = SDPRLayer(maxcut_qcqp(n))(Q[None])
    assert cert.certified.all(), cert.reason
    assert torch.allclose(x[0], x_true, atol=1e-6)


def test_masked_items_get_zero_gradient_and_flag():
    n = 5
    Q = torch.stack([cycle_cost(n), cycle_cost(n) * 0.05 + torch.diag(torch.zeros(n + 1, dtype=torch.float64))])
    Q[1, 0, 1:] = Q[1, 1:, 0] = 1.0
    Q.requires_grad_(True)
    x, cert = SDPRLayer(maxcut_qcqp(n), uncertified="mask")(Q)
    assert cert.certified.tolist() == [False, True]
    x.sum().backward()
    assert float(Q.grad[0].abs().max()) == 0.0
    assert torch.isfinite(Q.grad).all()


def test_wrong_local_candidate_falls_back_to_sdp():
    a, b = wahba_instance(2, 10, 0.1, seed=4)
    Q = wahba_cost(a, b)

    def flipped(Q, A, b_):  # a feasible but wrong rotation: 180 degrees off
        x = kabsch_solver(Q, A, b_)
        C = _C_from_x(x) @ torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
        return torch.cat([x[:, :1], C.transpose(1, 2).reshape(-1, 9)], 1)

    x, cert = SDPRLayer(wahba_qcqp(), local_solver=flipped)(Q)
    assert cert.certified.all() and set(cert.method) == {"sdp"}
    for i in range(2):
        assert np.abs(_C_from_x(x)[i].numpy() - kabsch(a[i].numpy(), b[i].numpy())).max() < 1e-6


def test_certify_function_reports_gap_and_margin():
    a, b = wahba_instance(2, 10, 0.1, seed=5)
    Q = wahba_cost(a, b)
    Q = Q / Q.flatten(1).norm(dim=-1).view(-1, 1, 1)
    qcqp = wahba_qcqp()
    A, bb = qcqp.constraints((), 2)
    x = kabsch_solver(Q, A, bb)
    cert = certify(Q, A, bb, x)
    assert cert.certified.all()
    assert (cert.gap.abs() < 1e-9).all() and (cert.margin > 1e-6).all()


def test_float32_with_documented_tolerance():
    a, b = wahba_instance(3, 20, 0.05, seed=6)
    Q = wahba_cost(a, b).float()
    layer = SDPRLayer(wahba_qcqp(), local_solver=kabsch_solver, use_sdp=False)
    x, cert = layer(Q)
    assert x.dtype == torch.float32 and cert.certified.all(), cert.reason


@pytest.mark.parametrize("bad, msg", [
    (lambda Q: Q + torch.triu(torch.ones_like(Q), 1), "symmetric"),
    (lambda Q: Q.masked_fill(torch.eye(10, dtype=torch.bool), float("nan")), "NaN"),
    (lambda Q: Q[:, :9, :9], "10x10"),
    (lambda Q: Q[0, 0], "shape"),
    (lambda Q: Q.long(), "floating"),
])
def test_bad_input_raises_readable_value_error(bad, msg):
    a, b = wahba_instance(2, 5, 0.1)
    Q = wahba_cost(a, b)
    with pytest.raises(ValueError, match=msg):
        SDPRLayer(wahba_qcqp(), local_solver=kabsch_solver)(bad(Q))


def test_bad_template_and_params():
    with pytest.raises(ValueError, match="b must have shape"):
        QCQP(A=torch.zeros(2, 3, 3, dtype=torch.float64), b=torch.zeros(3))
    with pytest.raises(ValueError, match="uncertified"):
        SDPRLayer(wahba_qcqp(), uncertified="ignore")
    q = QCQP(A=torch.zeros(1, 3, 3, dtype=torch.float64), n_params=1)
    with pytest.raises(ValueError, match="parametrized"):
        SDPRLayer(q)(torch.eye(3, dtype=torch.float64)[None])
    with pytest.raises(ValueError, match="batch size"):
        SDPRLayer(q)(torch.eye(3, dtype=torch.float64).expand(2, 3, 3),
                     torch.eye(3, dtype=torch.float64).expand(3, 3, 3))


def test_sdp_policy_keeps_gradient_and_flag():
    """uncertified='sdp': the item keeps the SDP solution and a gradient, and is still flagged."""
    n = 5
    Q = cycle_cost(n)[None].clone().requires_grad_(True)
    x, cert = SDPRLayer(maxcut_qcqp(n), uncertified="sdp")(Q)
    assert not cert.certified.any() and cert.method == ["sdp"]
    x.sum().backward()
    assert torch.isfinite(Q.grad).all()


def test_shared_parametrized_constraint_broadcasts_over_batch():
    """A single (n, n) parameter matrix is shared by every item of the batch."""
    qcqp = QCQP(A=torch.diag(torch.tensor([1.0, 0, 0], dtype=torch.float64))[None],
                b=torch.ones(1, dtype=torch.float64), n_params=1)
    A = torch.diag(torch.tensor([-1.0, 1.0, 2.0], dtype=torch.float64))  # ellipse z1^2 + 2 z2^2 = 1
    p = torch.tensor([[2.0, 0.5], [-1.0, 3.0]], dtype=torch.float64)
    Q = torch.zeros(2, 3, 3, dtype=torch.float64)
    Q[:, 0, 0] = (p * p).sum(-1)
    Q[:, 0, 1:] = Q[:, 1:, 0] = -p
    Q[:, 1:, 1:] = torch.eye(2, dtype=torch.float64)
    x, cert = SDPRLayer(qcqp)(Q, A)
    assert cert.certified.all(), cert.reason
    for i in range(2):
        ref = _ellipse_projection(np.diag([1.0, 2.0]), p[i].numpy())
        assert np.abs(x[i, 1:].numpy() - ref).max() < 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda():
    a, b = wahba_instance(4, 10, 0.1, seed=8)
    Q = wahba_cost(a, b).cuda().requires_grad_(True)
    x, cert = SDPRLayer(wahba_qcqp(), local_solver=kabsch_solver)(Q)
    assert x.device.type == "cuda" and cert.certified.all()
    x.sum().backward()
    assert Q.grad.device.type == "cuda" and torch.isfinite(Q.grad).all()


def test_family_search_matches_a_second_solver():
    """The exact multiplier-family search (Clarabel called directly) against the same SDP written
    in cvxpy: the same optimal smallest eigenvalue, and its w attains it."""
    import cvxpy as cp

    from sdpr_loc.certify.psd_multipliers import max_min_eigenvalue

    rng = np.random.default_rng(0)
    for d, K in ((4, 2), (12, 6), (12, 20)):
        B = rng.standard_normal((d, d))
        H = B @ B.T / d - 0.5 * np.eye(d)
        M = rng.standard_normal((K, d, d))
        M = 0.5 * (M + M.transpose(0, 2, 1))
        w, t = max_min_eigenvalue(H, M)
        wv, tv = cp.Variable(K), cp.Variable()
        prob = cp.Problem(cp.Maximize(tv), [H + sum(wv[k] * M[k] for k in range(K)) - tv * np.eye(d) >> 0,
                                            cp.norm(wv, "inf") <= 1e4])
        prob.solve(solver="SCS", eps=1e-9, max_iters=200000)
        assert abs(t - tv.value) < 1e-4 * max(1.0, abs(tv.value)), (d, K, t, tv.value)
        lam = np.linalg.eigvalsh(H + np.einsum("k,kij->ij", w, M)).min()
        assert abs(lam - t) < 1e-6 * max(1.0, abs(t))
