"""PolyMinLayer and AutoTight against independent references (numpy roots, known constraints)."""
import numpy as np
import pytest
import torch

from sdpr_loc.certify import PolyMinLayer, SDPRLayer, find_constraints
from sdpr_loc.certify.polymin import hankel_qcqp, poly_cost_matrix
from sdpr_loc.examples.polymin_fit import true_global_min  # numpy roots of p', independent of the layer


def random_polys(B, degree, seed):
    g = np.random.default_rng(seed)
    c = g.normal(size=(B, degree + 1))
    c[:, -1] = np.abs(c[:, -1]) + 0.2
    return torch.tensor(c)


@pytest.mark.parametrize("degree", [4, 6, 8])
def test_polymin_finds_the_global_minimiser(degree):
    c = random_polys(32, degree, seed=degree)
    x, cert = PolyMinLayer(degree)(c)
    assert cert.certified.all(), [r for r in cert.reason if r]
    ref = np.array([true_global_min(ci) for ci in c.numpy()])
    assert np.abs(x.numpy() - ref).max() < 1e-8


def test_polymin_gradient_matches_finite_differences():
    c = random_polys(8, 6, seed=11).requires_grad_(True)
    x, cert = PolyMinLayer(6)(c)
    assert cert.certified.all()
    x.sum().backward()
    eps = 1e-6
    cn = c.detach().numpy()
    fd = np.zeros_like(cn)
    for i in range(cn.shape[0]):
        for k in range(cn.shape[1]):
            cp, cm = cn[i].copy(), cn[i].copy()
            cp[k] += eps
            cm[k] -= eps
            fd[i, k] = (true_global_min(cp) - true_global_min(cm)) / (2 * eps)
    rel = np.linalg.norm(c.grad.numpy() - fd, axis=1) / np.linalg.norm(fd, axis=1)
    assert rel.max() < 1e-6, rel


def test_local_path_agrees_with_sdp_path():
    c = random_polys(6, 6, seed=5)
    x_local, cl = PolyMinLayer(6, use_sdp=False)(c)
    x_sdp, cs = SDPRLayer(hankel_qcqp(6))(poly_cost_matrix(c))
    assert cl.certified.all() and cs.certified.all()
    assert torch.allclose(x_local, x_sdp[:, 1], atol=1e-6)
    assert set(cl.method) == {"local"} and set(cs.method) == {"sdp"}


def test_two_global_minimisers_are_not_certified_as_unique():
    # p = (x^2 - 1)^2 has minimisers at +-1: a certificate of value exists but X is rank 2
    c = torch.tensor([[1.0, 0.0, -2.0, 0.0, 1.0]], dtype=torch.float64)
    _, cert = SDPRLayer(hankel_qcqp(4))(poly_cost_matrix(c))
    assert not cert.certified.any()
    assert "tight" in cert.reason[0] or "rank" in cert.reason[0]


def test_polymin_bad_input():
    layer = PolyMinLayer(6)
    with pytest.raises(ValueError, match="shape"):
        layer(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="leading coefficient"):
        layer(-random_polys(2, 6, 0))
    with pytest.raises(ValueError, match="NaN"):
        layer(torch.full((1, 7), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="even"):
        PolyMinLayer(5)


def test_find_constraints_recovers_rotation_constraints():
    from scipy.spatial.transform import Rotation

    from sdpr_loc.geometry.so3_qcqp import so3_constraints

    R = Rotation.random(200, random_state=0).as_matrix()
    x = np.concatenate([np.ones((200, 1)), R.transpose(0, 2, 1).reshape(200, 9)], 1)
    A = find_constraints(torch.tensor(x))
    # every found constraint holds on fresh rotations
    R2 = Rotation.random(50, random_state=1).as_matrix()
    x2 = torch.tensor(np.concatenate([np.ones((50, 1)), R2.transpose(0, 2, 1).reshape(50, 9)], 1))
    assert torch.einsum("ni,kij,nj->nk", x2, A, x2).abs().max() < 1e-9
    # the hand-written SO(3) constraints lie in their span (and nothing is missing)
    known, _, _ = so3_constraints(10)
    basis = A.flatten(1)
    proj = known.flatten(1) @ basis.T @ basis
    assert torch.allclose(proj, known.flatten(1), atol=1e-9)
    assert A.shape[0] == torch.linalg.matrix_rank(known.flatten(1)) == 20


def test_find_constraints_needs_enough_samples():
    with pytest.raises(ValueError, match="at least"):
        find_constraints(torch.randn(3, 4, dtype=torch.float64))
