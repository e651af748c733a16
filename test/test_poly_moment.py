"""Moment relaxations: global minimisers of standard test problems, rank failure, QCQP hand-off.

References: dense grids plus local refinement (scipy), closed forms (circle, trust-region secular
equation), and the certify layer's own SDP.
"""
import numpy as np
import pytest
import torch
from scipy.optimize import brentq, minimize

from sdpr_loc.certify import SDPRLayer
from sdpr_loc.poly import Indeterminate, MomentProblem, Polynomial, qcqp_from_polynomials


@pytest.fixture
def xy():
    return Indeterminate("x"), Indeterminate("y")


def grid_minima(f, xs, box, n=601, g=(), keep=1e-2):
    """Dense grid over a box (feasible points only), then local refinement of the best cells."""
    axes = [np.linspace(lo, hi, n) for lo, hi in box]
    P = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(xs))
    ok = np.ones(len(P), dtype=bool)
    for gi in g:
        ok &= gi.evaluate(P, xs) >= 0
    P = P[ok]
    v = f.evaluate(P, xs)
    cand = P[v <= v.min() + keep]
    cons = [{"type": "ineq", "fun": (lambda z, gi=gi: gi.evaluate(z, xs))} for gi in g]
    refined = []
    for c in cand[np.argsort(f.evaluate(cand, xs))[:200]]:
        r = minimize(lambda z: f.evaluate(z, xs), c, constraints=cons, method="SLSQP" if g else "BFGS",
                     options=dict(maxiter=200))
        refined.append(r.x)
    refined = np.array(refined)
    vals = f.evaluate(refined, xs)
    best = vals.min()
    pts = refined[vals <= best + 1e-7]
    uniq = []
    for p in pts:
        if all(np.abs(p - q).max() > 1e-3 for q in uniq):
            uniq.append(p)
    return best, np.array(uniq)


def same_points(A, B, tol):
    return len(A) == len(B) and all(np.abs(B - a).max(1).min() < tol for a in A)


def test_six_hump_camel(xy):
    x, y = xy
    f = 4 * x ** 2 - Polynomial(21) / 10 * x ** 4 + x ** 6 / 3 + x * y - 4 * y ** 2 + 4 * y ** 4
    res = MomentProblem(f).solve(3)
    assert res.certified and res.flat, res.reason
    ref, pts = grid_minima(f, [x, y], [(-2, 2), (-1.2, 1.2)], n=401)
    assert res.lower_bound == pytest.approx(ref, abs=1e-6)
    assert res.lower_bound == pytest.approx(-1.0316284535, abs=1e-6)  # published value
    assert same_points(res.minimizers, pts, 1e-4)


def test_motzkin_on_disk_and_rank_failure_unconstrained(xy):
    x, y = xy
    motzkin = x ** 4 * y ** 2 + x ** 2 * y ** 4 - 3 * x ** 2 * y ** 2 + 1
    res = MomentProblem(motzkin, [4 - x ** 2 - y ** 2]).solve(3)
    assert res.certified, res.reason
    assert res.lower_bound == pytest.approx(0.0, abs=1e-6)
    ref, pts = grid_minima(motzkin, [x, y], [(-2, 2), (-2, 2)], n=201, g=[4 - x ** 2 - y ** 2])
    assert ref == pytest.approx(0.0, abs=1e-9)
    assert len(res.minimizers) == 4 and same_points(res.minimizers, pts, 1e-4)
    # without the disk the SOS side is infeasible for every bound (Motzkin is not SOS): no flat
    # extension, no certificate, and the "bound" is far below the true minimum 0
    bad = MomentProblem(motzkin).solve(3)
    assert not bad.flat and not bad.certified and "rank condition fails" in bad.reason
    assert len(bad.minimizers) == 0 and bad.lower_bound < -1.0


def test_constrained_gloptipoly_example_three_minimisers(xy):
    """min -(x-1)^2 - (x-y)^2 - (y-3)^2 on three slabs: minimum -2 at (1,2), (2,2), (2,3)."""
    x, y = xy
    f = -(x - 1) ** 2 - (x - y) ** 2 - (y - 3) ** 2
    g = [1 - (x - 1) ** 2, 1 - (x - y) ** 2, 1 - (y - 3) ** 2]
    low = MomentProblem(f, g).solve(1)  # order 1: loose bound, rank condition fails
    assert not low.flat and not low.certified and low.lower_bound < -2.5
    res = MomentProblem(f, g).solve(2)
    assert res.certified, res.reason
    ref, pts = grid_minima(f, [x, y], [(0, 2), (2, 4)], n=201, g=g)
    assert res.lower_bound == pytest.approx(ref, abs=1e-5)
    assert same_points(res.minimizers, pts, 1e-4) and len(pts) == 3


def test_equality_constrained_and_moment_accessor(xy):
    x, y = xy
    res = MomentProblem(x + y, equalities=[x ** 2 + y ** 2 - 1]).solve(1)
    assert res.certified and res.lower_bound == pytest.approx(-np.sqrt(2), abs=1e-7)
    np.testing.assert_allclose(res.minimizers, [[-np.sqrt(0.5), -np.sqrt(0.5)]], atol=1e-6)
    assert res.moment(x) == pytest.approx(-np.sqrt(0.5), abs=1e-6)
    assert res.moment(x ** 2) + res.moment(y ** 2) == pytest.approx(1.0, abs=1e-7)


def test_bad_input(xy):
    x, y = xy
    with pytest.raises(ValueError, match="order must be an integer >= 2"):
        MomentProblem(x ** 4 + y).solve(1)
    with pytest.raises(ValueError, match="quadratic"):
        qcqp_from_polynomials(x ** 3, [])
    with pytest.raises(ValueError, match="equality constraints only"):
        MomentProblem(x ** 2, [1 - x]).to_qcqp()
    from sdpr_loc.poly import Variable
    with pytest.raises(ValueError, match="numeric coefficients"):
        MomentProblem(Variable("c") * x)


def test_qcqp_handoff_circle_to_sdpr_layer(xy):
    x, y = xy
    f = 3 * x ** 2 + 2 * x * y + y ** 2 - 4 * x + y + 1
    h = x ** 2 + y ** 2 - 1
    prob = MomentProblem(f, equalities=[h])
    qcqp, Q = prob.to_qcqp()
    assert Q.shape == (3, 3) and qcqp.m == 2
    z = torch.tensor([0.6, -0.8], dtype=torch.float64)
    xh = torch.cat([torch.ones(1, dtype=torch.float64), z])
    assert float(xh @ Q @ xh) == pytest.approx(f.evaluate(z.numpy(), [x, y]), abs=1e-12)
    assert float(qcqp.violation(xh[None])) < 1e-12
    xs, cert = SDPRLayer(qcqp)(Q[None])
    assert bool(cert.certified[0]), cert.reason
    t = np.linspace(0, 2 * np.pi, 400001)
    vals = f.evaluate(np.c_[np.cos(t), np.sin(t)], [x, y])
    ref = np.array([np.cos(t[vals.argmin()]), np.sin(t[vals.argmin()])])
    np.testing.assert_allclose(xs[0, 1:].numpy(), ref, atol=1e-4)
    mom = prob.solve(1)
    assert mom.certified and mom.lower_bound == pytest.approx(vals.min(), abs=1e-7)  # solver tolerance
    np.testing.assert_allclose(mom.minimizers[0], xs[0, 1:].numpy(), atol=1e-6)


def test_qcqp_handoff_sphere_trust_region():
    """min z^T P z + q^T z on the unit sphere in R^3: closed form from the secular equation."""
    rng = np.random.default_rng(2)
    A = rng.standard_normal((3, 3))
    P = (A + A.T) / 2
    q = rng.standard_normal(3)
    z = [Indeterminate(f"z{i}") for i in range(3)]
    f = sum((float(P[i, j]) * z[i] * z[j] for i in range(3) for j in range(3)), Polynomial(0))
    f = f + sum((float(q[i]) * z[i] for i in range(3)), Polynomial(0))
    h = z[0] ** 2 + z[1] ** 2 + z[2] ** 2 - 1
    qcqp, Q = qcqp_from_polynomials(f, [h], z)
    xs, cert = SDPRLayer(qcqp)(Q)
    assert bool(cert.certified[0]), cert.reason
    # stationarity (P - mu I) z = -q/2 with |z| = 1 and mu < lambda_min(P) (global minimiser)
    lmin = np.linalg.eigvalsh(P)[0]

    def zmu(mu):
        return np.linalg.solve(P - mu * np.eye(3), -q / 2)

    mu = brentq(lambda m: np.linalg.norm(zmu(m)) - 1, lmin - 1e3, lmin - 1e-12)
    np.testing.assert_allclose(xs[0, 1:].numpy(), zmu(mu), atol=1e-5)
    mom = MomentProblem(f, equalities=[h], indeterminates=z).solve(1)
    assert mom.lower_bound == pytest.approx(f.evaluate(zmu(mu), z), abs=1e-7)
