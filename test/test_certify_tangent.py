"""The KKT backward reuses the certificate's eigenpairs of G^T G: same gradients as recomputing them."""
import torch

from sdpr_loc.certify import SDPRLayer
from sdpr_loc.certify.certificate import gram_eig, lagrangian, stationarity_rows, tangent_rtol
from sdpr_loc.certify.layer import kkt_adjoint

from certify_problems import kabsch_solver, wahba_cost, wahba_instance, wahba_qcqp


def _reference_dQ(layer, Q, x, lam, g):
    """dL/dQ from a fresh eigendecomposition at the returned x (the pre-reuse computation)."""
    A, _ = layer.qcqp.constraints((), Q.shape[0], Q.dtype)
    u, _ = kkt_adjoint(lagrangian(Q, A, lam), stationarity_rows(A, x), g, tangent_rtol(Q.dtype), need_v=False)
    ux = u.unsqueeze(-1) * x.unsqueeze(-2)
    return -0.5 * (ux + ux.transpose(-1, -2))


def _check(layer, Q0, seed=0):
    Q = Q0.clone().requires_grad_(True)
    x, cert = layer(Q)
    assert cert.certified.all(), cert.reason
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    (x * g).sum().backward()
    scale = Q0.flatten(1).norm(dim=-1).view(-1, 1)
    ref = _reference_dQ(layer, Q0, x.detach(), cert.multipliers * scale, g)
    assert torch.allclose(Q.grad, ref, rtol=1e-9, atol=1e-12)


def test_backward_with_reused_eigenpairs_matches_recomputed_local_and_sdp_items():
    a, b = wahba_instance(6, 20, 0.05, seed=1)
    Q0 = wahba_cost(a, b)
    _check(SDPRLayer(wahba_qcqp(), local_solver=kabsch_solver), Q0)  # eigenpairs from the certificate
    _check(SDPRLayer(wahba_qcqp()), Q0[:2], seed=1)  # every item from the SDP: recomputed in the forward


def test_gram_eig_spans_the_tangent_space_of_so3():
    """At a rotation the feasible set (SO(3), x0 = 1) has 3 tangent directions: e ~ 0 exactly 3 times."""
    a, b = wahba_instance(1, 10, 0.0, seed=2)
    x = kabsch_solver(wahba_cost(a, b), None, None)
    A, _ = wahba_qcqp().constraints((), 1, x.dtype)
    e, V = gram_eig(stationarity_rows(A, x))
    zero = e <= tangent_rtol(x.dtype) * e[..., -1:]
    assert int(zero.sum()) == 3
    # those directions keep every constraint to first order: G v = 0
    G = stationarity_rows(A, x)[0]
    assert (G @ V[0][:, zero[0]]).abs().max() < 1e-12


def test_layer_single_problem_path_equals_batched(monkeypatch):
    """B = 1 certifies in numpy (certify_one): same certificate, pose and gradient as in a batch."""
    import sdpr_loc.certify.layer as layer_module

    answers = []
    real = layer_module.certify_one
    monkeypatch.setattr(layer_module, "certify_one", lambda *a, **k: answers.append(real(*a, **k)) or answers[-1])
    a, b = wahba_instance(3, 15, 0.05, seed=3)
    Q0 = wahba_cost(a, b)
    layer = SDPRLayer(wahba_qcqp(), local_solver=kabsch_solver)
    Qb = Q0.clone().requires_grad_(True)
    xb, cb = layer(Qb)
    xb[:, 1:].sum().backward()
    for k in range(3):
        Q1 = Q0[k:k + 1].clone().requires_grad_(True)
        x1, c1 = layer(Q1)
        x1[:, 1:].sum().backward()
        assert torch.allclose(x1, xb[k:k + 1], rtol=0, atol=1e-12)
        assert bool(c1.certified[0]) and c1.reason == [""] and cb.reason[k] == ""
        for f in ("min_eig", "margin", "gap", "residual", "violation", "multipliers"):
            assert torch.allclose(getattr(c1, f)[0], getattr(cb, f)[k], rtol=0, atol=1e-12), f
        assert torch.allclose(Q1.grad[0], Qb.grad[k], rtol=1e-9, atol=1e-12)
    assert len(answers) == 3 and all(r is not None for r in answers)  # the numpy path ran each time
