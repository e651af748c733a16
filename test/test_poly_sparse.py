"""Sparse relaxations: same bounds as the dense one where both run, known minima of chained
problems, the ordering of the patterns on a problem where they differ, clique bookkeeping."""

import math

import networkx as nx
import numpy as np
import pytest

from sdpr_loc.poly import Indeterminate, MomentProblem, Polynomial, Program
from sdpr_loc.poly.sparsity import chordal_cliques, interaction_graph, running_intersection


def xs(n, name="s"):
    return [Indeterminate(f"{name}{i}") for i in range(n)]


def rosenbrock(x):
    return 1 + sum((100 * (x[i] - x[i - 1] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(1, len(x))), Polynomial(0))


def broyden(x):
    n, f = len(x), Polynomial(0)
    for i in range(n):
        r = (3 - 2 * x[i]) * x[i] + 1 - (x[i - 1] if i else 0) - (2 * x[i + 1] if i < n - 1 else 0)
        f = f + r ** 2
    return f


def sos_bound(f, sparsity, **kw):
    prog = Program()
    t = prog.new_continuous_variables(1, "t")[0]
    grams = prog.add_sos_constraint(f - t, sparsity=sparsity, **kw)
    prog.add_linear_cost(-t)
    res = prog.solve(tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9)
    assert res.status in ("optimal", "optimal_inaccurate"), res.status
    return res.value(t), grams


@pytest.mark.parametrize("sparsity", ["correlative", "term", "combined"])
def test_sparse_equals_dense_on_small_problems(sparsity):
    f = broyden(xs(5))
    dense, _ = sos_bound(f, "dense")
    sparse, grams = sos_bound(f, sparsity)
    assert isinstance(grams, list) and max(g.size for g in grams) < 21  # really split
    assert sparse == pytest.approx(dense, abs=1e-6)
    assert dense == pytest.approx(0.0, abs=1e-6)  # known minimum


def test_known_minima_of_chained_problems():
    assert sos_bound(rosenbrock(xs(30)), "combined")[0] == pytest.approx(1.0, abs=1e-5)
    assert sos_bound(broyden(xs(30)), "combined")[0] == pytest.approx(0.0, abs=1e-5)
    x = xs(12)
    wood = 1 + sum((100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 + 90 * (x[i + 3] - x[i + 2] ** 2) ** 2
                    + (1 - x[i + 2]) ** 2 + 10 * (x[i + 1] + x[i + 3] - 2) ** 2
                    + Polynomial(1) / 10 * (x[i + 1] - x[i + 3]) ** 2 for i in range(0, 9, 2)), Polynomial(0))
    assert sos_bound(wood, "correlative")[0] == pytest.approx(1.0, abs=1e-5)
    y = xs(8, "cs")
    singular = sum(((y[i] + 10 * y[i + 1]) ** 2 + 5 * (y[i + 2] - y[i + 3]) ** 2 + (y[i + 1] - 2 * y[i + 2]) ** 4
                    + 10 * (y[i] - 10 * y[i + 3]) ** 4 for i in range(0, 5, 2)), Polynomial(0))
    assert sos_bound(singular, "combined")[0] == pytest.approx(0.0, abs=1e-4)  # singular minimum: ~1e-5 accuracy


def test_patterns_ordered_where_they_differ():
    """A chain of non-convex squares where correlative sparsity loses part of the bound: the dense bound
    4.87817 (= the minimum found by local search) is reached by term sparsity alone after two
    iterations, while combined sparsity stays at the correlative bound. With block closure the term
    blocks contain the combined ones, so term-alone is never weaker than combined; what combined buys
    is scale (blocks over clique monomials only)."""
    from scipy.optimize import minimize

    coef = [[-3, 0, 3, -3, -1], [-1, 3, -2, 0, -2], [-3, 2, -3, -2, 0]]
    x = xs(4, "q")
    f = sum(((x[i] ** 2 + c[0] * x[i] * x[i + 1] + c[1] * x[i + 1] + c[2]) ** 2
             + (x[i + 1] ** 2 + c[3] * x[i] + c[4]) ** 2 for i, c in enumerate(coef)), Polynomial(0))
    dense = sos_bound(f, "dense")[0]
    term1 = sos_bound(f, "term")[0]
    term2 = sos_bound(f, "term", term_steps=2)[0]
    comb = sos_bound(f, "combined", term_steps=2)[0]
    corr = sos_bound(f, "correlative")[0]
    local = min(minimize(lambda z: f.evaluate(z, x), z0).fun
                for z0 in np.random.default_rng(0).uniform(-3, 3, (30, 4)))
    assert dense == pytest.approx(local, abs=1e-5)  # the dense relaxation is exact here
    assert term2 == pytest.approx(dense, abs=1e-5)
    assert term1 < dense - 1e-3
    assert comb == pytest.approx(corr, abs=1e-6) and comb < term1 - 0.1


def test_cliques_chordal_and_running_intersection():
    n = 7
    cycle = np.zeros((n, n), dtype=np.int64)  # monomials x_i x_{i+1 mod n}: a cycle needs fill edges
    for i in range(n):
        cycle[i, i] = cycle[i, (i + 1) % n] = 1
    G = interaction_graph(n, cycle)
    cliques = chordal_cliques(G)
    assert running_intersection(cliques)
    H = nx.Graph()
    for c in cliques:
        H.add_edges_from((a, b) for a in c for b in c if a < b)
    assert nx.is_chordal(H) and all(H.has_edge(a, b) for a, b in G.edges)
    assert max(len(c) for c in cliques) < n  # not the trivial single clique
    assert not running_intersection([np.array([0, 1]), np.array([2, 3]), np.array([1, 2, 3])][::-1][1:] +
                                    [np.array([0, 3])])


def test_sparse_moment_relaxation_extracts_the_minimiser():
    x = xs(6, "m")
    f = rosenbrock(x)
    box = [4 - xi ** 2 for xi in x]
    dense = MomentProblem(f, inequalities=box, indeterminates=x).solve(2)
    sparse = MomentProblem(f, inequalities=box, indeterminates=x).solve(2, sparsity="correlative")
    assert sparse.lower_bound == pytest.approx(dense.lower_bound, abs=1e-4)
    assert sparse.lower_bound == pytest.approx(1.0, abs=1e-4)
    assert sparse.certified, sparse.reason
    # f is even in x0: the global minimisers are (+-1, 1, ..., 1); the glued clique atoms pick one
    assert np.allclose(np.abs(sparse.minimizers[0]), 1.0, atol=1e-4) and np.allclose(sparse.minimizers[0][1:], 1.0,
                                                                                     atol=1e-4)
    assert f.evaluate(sparse.minimizers[0], x) == pytest.approx(1.0, abs=1e-8)
    assert len(sparse.cliques) == 5 and max(sparse.block_sizes) == 6


def test_bad_sparsity_options_raise():
    x = xs(3, "b")
    with pytest.raises(ValueError, match="sparsity must be one of"):
        MomentProblem(rosenbrock(x)).solve(2, sparsity="chordal")
    with pytest.raises(ValueError, match="term-sparsity extension"):
        sos_bound(rosenbrock(x), "term", extension="maximal")
    with pytest.raises(ValueError, match="margin"):
        Program().add_sos_constraint(rosenbrock(x), margin=-1.0)


def test_sparse_moment_with_equalities_matches_dense_and_detects_infeasibility():
    x = xs(4, "e")
    f = sum(((x[k] - x[k + 1]) ** 2 for k in range(3)), Polynomial(0))
    eqs = [x[0] ** 2 + x[1] ** 2 - 1, x[3] - 2]  # the unit circle in (x0, x1), x3 pinned: chain pulled apart
    dense = MomentProblem(f, equalities=eqs, indeterminates=x).solve(2)
    sparse = MomentProblem(f, equalities=eqs, indeterminates=x).solve(2, sparsity="correlative")
    assert dense.certified and sparse.certified, (dense.reason, sparse.reason)
    assert sparse.lower_bound == pytest.approx(dense.lower_bound, abs=1e-5)
    assert np.allclose(sparse.minimizers[0], dense.minimizers[0], atol=1e-4)
    # the extracted point is feasible (checked by certified) and attains the bound: a global minimiser
    assert f.evaluate(sparse.minimizers[0], x) == pytest.approx(sparse.lower_bound, abs=1e-6)
    bad = MomentProblem(f, inequalities=[-x[0] ** 2 - 1], indeterminates=x).solve(2, sparsity="correlative")
    assert bad.status == "infeasible" and bad.lower_bound == math.inf


def test_two_dimensional_newton_hull_matches_delaunay():
    """The vectorised polygon test used for 2-D Newton polytopes agrees with scipy's Delaunay."""
    from scipy.spatial import Delaunay

    from sdpr_loc.poly.newton import _inside_polygon

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(-1, 8.0), np.arange(-1, 8.0)), -1).reshape(-1, 2)
    checked = 0
    for _ in range(30):  # qhull (Delaunay) costs milliseconds per call: the reference is the slow side
        P = rng.integers(0, 6, (int(rng.integers(3, 12)), 2)).astype(float)
        if np.linalg.matrix_rank(P - P.mean(0)) < 2:
            continue
        ref = Delaunay(P).find_simplex(grid, tol=1e-9) >= 0
        assert np.array_equal(_inside_polygon(P, grid, 1e-9), ref)
        checked += 1
    assert checked > 20
