"""Exact verification of certificates: the integer PD test against Fraction LDL^T, exact rotations,
proofs on certified registration optima, refusals on perturbed points and on a non-tight QCQP."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from sdpr_loc.certify import certify
from sdpr_loc.certify.verify import (ExactConstraints, dyadic, exact_pose_point, exact_rotation, positive_definite,
                                     positive_definite_rounded, verify_certificate, verify_point)
from sdpr_loc.geometry.instances import stereo_instance
from sdpr_loc.geometry.pose_problem import centred_problem
from sdpr_loc.geometry.registration import register, registration_qcqp, x_from_pose
from sdpr_loc.geometry.se3 import so3_exp
from sdpr_loc.poly.exact import ldl_exact


def test_integer_pd_test_matches_fraction_ldl():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 8))
        A = rng.integers(-4, 5, (n, n))
        M = A @ A.T - int(rng.integers(0, 3)) * np.eye(n, dtype=np.int64)
        if trial % 4 == 0:
            M = A[:, : n - 1] @ A[:, : n - 1].T  # PSD but singular: not positive definite
        psd, _, pivots, _ = ldl_exact([[Fraction(int(v)) for v in row] for row in M])
        pd_ref = psd and len(pivots) == n and all(p > 0 for p in pivots)
        assert positive_definite(M.tolist()) == pd_ref
        big = ((M.astype(object) << 200) + int(rng.integers(0, 1 << 40))).tolist()  # + junk in the low bits
        big = [[big[i][j] if i <= j else big[j][i] for j in range(n)] for i in range(n)]
        if positive_definite_rounded(big, 200):  # sound: never True unless the exact matrix is PD
            assert positive_definite(big)
        if pd_ref and n > 0:  # and not vacuous: a PD integer matrix scaled up is recognised
            assert positive_definite_rounded((M.astype(object) << 200).tolist(), 200)


def test_exactness_where_float64_cannot_tell():
    e = 1 << 60
    pd = [[e, e], [e, e + 1]]  # det = 2^60 > 0, but as floats the matrix is singular
    singular = [[e, e], [e, e]]
    assert positive_definite(pd) and not positive_definite(singular)
    assert np.linalg.eigvalsh(np.array(pd, dtype=np.float64))[0] <= 0.0  # float64 sees no difference
    with pytest.raises(ValueError, match="symmetric"):
        positive_definite([[1, 2], [0, 1]])


def test_dyadic_is_exact():
    a = np.array([0.1, -3.75e-12, 1e300, 0.0])
    ints, S = dyadic(a)
    assert all(Fraction(int(i), 1 << S) == Fraction(float(v)) for i, v in zip(ints, a))
    with pytest.raises(ValueError, match="NaN or inf"):
        dyadic(np.array([np.nan]))


@pytest.mark.parametrize("angle", [0.3, 2.0, 3.14159, np.pi])
def test_exact_rotation_is_orthonormal_and_close(angle):
    axis = np.array([0.3, -0.5, 0.81])
    R = so3_exp(torch.tensor(angle * axis / np.linalg.norm(axis))[None])[0].numpy()
    Rn, N = exact_rotation(R)
    Rf = [[Fraction(int(v), N) for v in row] for row in Rn]
    RtR = [[sum(Rf[k][i] * Rf[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    assert RtR == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    det = (Rf[0][0] * (Rf[1][1] * Rf[2][2] - Rf[1][2] * Rf[2][1]) - Rf[0][1] * (Rf[1][0] * Rf[2][2] - Rf[1][2] * Rf[2][0])
           + Rf[0][2] * (Rf[1][0] * Rf[2][1] - Rf[1][1] * Rf[2][0]))
    assert det == 1
    assert np.abs(np.array(Rn, dtype=np.float64) / N - R).max() < 1e-8


@pytest.mark.parametrize("sigma,N", [(0.5, 50), (1.0, 200)])
def test_certified_optima_are_proven_and_perturbed_points_refused(sigma, N):
    inst = stereo_instance(12, N, sigma, seed=7)
    reg = register(inst.src, inst.trg, inst.weights, inst.inv_cov, verify=True)
    c = reg.certificate
    assert c.certified.all()
    assert torch.equal(c.verified, c.certified)
    assert (c.proven_gap <= 1e-11).all() and (c.proven_gap >= 0).all()
    # the same optimum rotated by 1e-3 rad: with least-squares multipliers and with the optimum's ones
    Qs, x = centred_problem(inst.src, inst.trg, inst.weights[..., None, None] * inst.inv_cov, reg.R, reg.t)
    A, b = registration_qcqp().constraints((), 1, torch.float64)
    axis = torch.nn.functional.normalize(torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), dim=-1)
    xp = x_from_pose(so3_exp(1e-3 * axis) @ reg.R, x[:, 10:13])
    cp = verify_certificate(Qs, A, b, xp, certify(Qs, A.expand(12, -1, -1, -1), b, xp), exact_pose_point)
    co = verify_certificate(Qs, A, b, xp, c.select(range(12)), exact_pose_point)
    assert not cp.verified.any() and not co.verified.any()
    assert (co.proven_gap > 1e-11).all()  # the bounds are still valid: the gap is what refuses


def test_non_tight_qcqp_is_refused():
    """Max-cut on a 5-cycle, min -z^T L z over z in {-1, 1}^5: the Shor relaxation is not tight, so no
    multipliers make H PSD with H x = 0; the best cut is feasible and exact, yet never verified."""
    import itertools

    n = 5
    L = 2 * np.eye(n)
    for i in range(n):
        L[i, (i + 1) % n] = L[(i + 1) % n, i] = -1
    Q = np.zeros((n + 1, n + 1))
    Q[1:, 1:] = -L
    A = np.zeros((n + 1, n + 1, n + 1))
    for i in range(n + 1):
        A[i, i, i] = 1.0
    b = np.ones(n + 1)
    best = min(itertools.product([-1, 1], repeat=n), key=lambda z: -np.array(z) @ L @ np.array(z))
    x = torch.tensor([[1.0, *best]], dtype=torch.float64)
    Qt, At, bt = torch.tensor(Q)[None], torch.tensor(A)[None], torch.tensor(b)
    cert = certify(Qt, At, bt, x)
    assert not cert.certified.any()
    verify_certificate(Qt, At, bt, x, cert)
    assert not cert.verified.any() and torch.isinf(cert.proven_gap).all()
    ok, *_ = verify_point(Q, ExactConstraints(A, b), cert.multipliers[0].numpy(), [1, *best], 1)
    assert not ok


def test_bad_constraints_raise():
    A = np.zeros((1, 3, 3))
    A[0, 1, 1] = 1
    with pytest.raises(ValueError, match="homogenizing"):
        ExactConstraints(A, np.ones(1))


def test_update_with_unverified_items_invalidates_them():
    inst = stereo_instance(3, 40, 0.5, seed=3)
    c = register(inst.src, inst.trg, inst.weights, inst.inv_cov, verify=True).certificate
    assert c.verified.all()
    other = c.select([0])
    other.verified = other.proven_gap = None  # e.g. a fresh float certificate for item 1
    c.update([1], other)
    assert c.verified.tolist() == [True, False, True] and torch.isnan(c.proven_gap[1])


def test_asymmetric_data_raise():
    A = np.zeros((1, 2, 2))
    A[0, 0, 0] = 1
    cons = ExactConstraints(A, np.ones(1))
    with pytest.raises(ValueError, match="exactly symmetric"):
        verify_point(np.array([[1.0, 0.5], [0.0, 1.0]]), cons, np.zeros(1), [1, 0], 1)
    B = A.copy()
    B[0, 0, 1] = 1.0
    with pytest.raises(ValueError, match="exactly symmetric"):
        ExactConstraints(B, np.ones(1))
