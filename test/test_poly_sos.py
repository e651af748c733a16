"""SOS programs: the Drake tutorial examples checked against independent references.

References: closed-form nonnegativity conditions for example 1 (univariate quartic / quadratic),
the p(1) >= 0 argument for example 2, the tutorial's own Gram matrix and decomposition for example 3,
dense grids for nonnegativity at the optimum and perturbations showing the optimum is tight.
"""
from fractions import Fraction

import numpy as np
import pytest
import sympy
from scipy.optimize import brentq

from sdpr_loc.poly import Indeterminate, Polynomial, Program, sos_decomposition

GRID = np.linspace(-6, 6, 120001)


def example1(solver="clarabel"):
    prog = Program()
    a = prog.new_continuous_variables(2)
    x = prog.new_indeterminates(1)
    p1 = x[0] ** 4 + a[0] * x[0] + 2 + a[1]
    p2 = (a[0] - a[1] + 1) * x[0] ** 2 + a[1] * x[0] + 1
    prog.add_sos_constraint(p1)
    prog.add_sos_constraint(p2)
    prog.add_linear_cost(-a[0] - a[1])
    return prog, a, x, p1, p2, prog.solve(solver=solver)


def test_drake_example1_against_closed_form():
    prog, a, x, p1, p2, res = example1()
    assert res.status == "optimal"
    # Independent reference: x^4 + a0 x + c >= 0 iff c >= 3 (|a0|/4)^(4/3); c2 x^2 + a1 x + 1 >= 0 iff
    # a1^2 <= 4 c2. Along a1 = -2 + 2 sqrt(a0 + 2) (p2's boundary) the cost falls with a0 until p1's
    # boundary a1 = 3 (a0/4)^(4/3) - 2 is met.
    a0 = brentq(lambda t: 2 * np.sqrt(t + 2) - 3 * (t / 4) ** (4 / 3), 0.1, 50)
    a1 = -2 + 2 * np.sqrt(a0 + 2)
    assert res.optimal_cost == pytest.approx(-(a0 + a1), abs=1e-6)
    np.testing.assert_allclose(res.value(a), [a0, a1], atol=1e-5)
    # nonnegativity at the optimum on a dense grid, and both constraints active (the bound is tight)
    v1 = res.value(p1).evaluate(GRID[:, None])
    v2 = res.value(p2).evaluate(GRID[:, None])
    assert v1.min() > -1e-6 and v2.min() > -1e-6
    assert v1.min() < 1e-4 and v2.min() < 1e-4
    # a better cost is infeasible: move both coefficients up by 1e-3 and p1 or p2 turns negative
    bumped = {a[0]: res.value(a[0]) + 1e-3, a[1]: res.value(a[1]) + 1e-3}
    worst = min(q.substitute(bumped).evaluate(GRID[:, None]).min() for q in (p1, p2))
    assert worst < -1e-5
    assert "x0^4" in str(res.value(p1))


def test_drake_example1_with_scs_agrees():
    *_, res_c = example1("clarabel")
    *_, res_s = example1("scs")
    assert res_s.status in ("optimal", "optimal_inaccurate")
    assert res_s.optimal_cost == pytest.approx(res_c.optimal_cost, abs=1e-3)


def test_drake_example2_interval_certificate():
    prog = Program()
    x = prog.new_indeterminates(1)[0]
    a, b, c = prog.new_continuous_variables(3, ["a", "b", "c"])
    p = x ** 4 + a * x ** 3 + b * x ** 2 + c * x + 1
    t, t_gram = prog.new_sos_polynomial([x], 2)
    s_gram = prog.add_sos_constraint(p - x * (1 - x) * t)
    prog.add_linear_cost(a + b + c)
    res = prog.solve()
    assert res.status == "optimal"
    # p(1) = 2 + a + b + c >= 0 bounds the cost below by -2; (1-x)(1-x^3) = x^4 - x^3 - x + 1 attains it.
    assert res.optimal_cost == pytest.approx(-2.0, abs=1e-6)
    pv = res.value(p)
    grid = np.linspace(0, 1, 20001)[:, None]
    assert pv.evaluate(grid).min() > -1e-7
    assert pv.evaluate([1.0]) == pytest.approx(0.0, abs=1e-6)
    # tight: lowering c by 1e-3 makes p(1) < 0
    lowered = p.substitute({a: res.value(a), b: res.value(b), c: res.value(c) - 1e-3})
    assert lowered.evaluate([1.0]) < -5e-4
    # the certificate itself: p = s + x(1-x) t with both Gram matrices PSD
    assert np.linalg.eigvalsh(res.gram(t_gram)).min() > -1e-7
    assert np.linalg.eigvalsh(res.gram(s_gram)).min() > -1e-7
    recon = res.value(s_gram.polynomial()) + x * (1 - x) * res.value(t)
    assert max(abs(float(v)) for _, v in (recon - pv).terms()) < 1e-7


def gram_example():
    x1, x2 = Indeterminate("x1"), Indeterminate("x2")
    return x1, x2, 2 * x1 ** 4 + 5 * x2 ** 4 - x1 ** 2 * x2 ** 2 + 2 * x1 ** 3 * x2 + 2 * x1 + 2


def test_drake_example3_gram_and_decomposition():
    x1, x2, p = gram_example()
    prog = Program()
    gram = prog.add_sos_constraint(p)
    res = prog.solve()
    assert res.status == "optimal"
    assert [str(m) for m in gram.basis] == ["1", "x1", "x2", "x1^2", "x1*x2", "x2^2"]  # the tutorial's z
    Q = res.gram(gram)
    assert np.allclose(Q, Q.T) and np.linalg.eigvalsh(Q).min() > -1e-8
    assert max(abs(float(v)) for _, v in (res.value(gram.polynomial()) - p).terms()) < 1e-7
    for method in ("ldl", "eig"):
        dec = res.decompose(gram, method=method)
        assert (dec.weights > 0).all() and dec.residual < 1e-7
        err = dec.polynomial() - p
        assert max(abs(float(v)) for _, v in err.terms()) < 1e-7
        assert str(dec).count(")^2") == len(dec)
    # the tutorial's Gram matrix is one of the feasible ones: it reproduces p exactly
    Qt = np.array([[6, 3, 0, -2, 0, -2], [3, 4, 0, 0, 0, 0], [0, 0, 4, 0, 0, 0],
                   [-2, 0, 0, 6, 3, -4], [0, 0, 0, 3, 5, 0], [-2, 0, 0, -4, 0, 15]], dtype=object) * Fraction(1, 3)
    z = [m.to_polynomial() for m in gram.basis]
    zQz = sum((Qt[i, j] * z[i] * z[j] for i in range(6) for j in range(6)), Polynomial(0))
    assert zQz == p
    dec = sos_decomposition(Qt.astype(float), gram.basis)
    assert max(abs(float(v)) for _, v in (dec.polynomial() - p).terms()) < 1e-12


def test_tutorial_polynomial_typo():
    """The tutorial prints p with -2 x1^2 x2^2, but its Gram matrix and its decomposition both give
    -x1^2 x2^2 (the issue's version). Both versions are SOS; we test the issue's p above and check here
    that the printed decomposition is exactly the issue's p and that the -2 variant is SOS too."""
    x1, x2, p = gram_example()
    F = Fraction
    dec = (F(4, 3) * x2 ** 2 + F(1349, 705) * x2 ** 4 + F(1, 12) * (4 * x1 + 3) ** 2
           + F(1, 15) * (3 * x1 ** 2 + 5 * x1 * x2) ** 2 + F(1, 315) * (-21 * x1 ** 2 + 20 * x2 ** 2 + 10) ** 2
           + F(1, 59220) * (328 * x2 ** 2 - 235) ** 2)
    assert dec == p
    prog = Program()
    prog.add_sos_constraint(p - x1 ** 2 * x2 ** 2)
    assert prog.solve().status == "optimal"


def test_lower_bound_by_sos_matches_grid_minimum():
    """max g s.t. p - g SOS is the global minimum for univariate p (nonnegative = SOS)."""
    prog = Program()
    x = prog.new_indeterminates(1, "x")[0]
    g = prog.new_continuous_variables(1, "g")[0]
    p = x ** 6 - 3 * x ** 4 + x ** 3 + 2 * x - 1
    prog.add_sos_constraint(p - g)
    prog.add_linear_cost(-g)
    res = prog.solve()
    ref = p.evaluate(GRID[:, None]).min()
    assert res.value(g) == pytest.approx(ref, abs=1e-6)


def test_program_features_free_polynomials_equalities_linear_constraints():
    prog = Program()
    x = prog.new_indeterminates(1)[0]
    a = prog.new_continuous_variables(2)
    q = prog.new_free_polynomial([x], 2, name="q")
    # q(x) = x^2 + a0 x + a1 must hold coefficient-wise; q SOS; a0 >= 1 and a0 + a1 <= 3; min a1
    prog.add_equality_between_polynomials(q, x ** 2 + a[0] * x + a[1])
    prog.add_sos_constraint(q)
    prog.add_linear_constraint(a[0] >= 1)
    prog.add_linear_constraint([a[0] + a[1] <= 3])
    prog.add_linear_cost(a[1])
    res = prog.solve()
    # SOS <=> a1 >= a0^2 / 4; with a0 >= 1 the minimum of a1 is 1/4 at a0 = 1
    assert res.status == "optimal"
    assert res.value(a[1]) == pytest.approx(0.25, abs=1e-6)
    assert res.value(a[0]) == pytest.approx(1.0, abs=1e-5)
    qv = res.value(q)  # a float-coefficient polynomial equal to x^2 + a0 x + a1
    assert qv.coefficient(x ** 2) == pytest.approx(1.0, abs=1e-7)
    assert qv.coefficient(x) == pytest.approx(res.value(a[0]), abs=1e-7)
    assert prog.num_vars == 2 + 3 + 3


def test_sympy_input_infeasible_and_unbounded():
    prog = Program()
    x = prog.new_indeterminates(1, "t")[0]
    T = sympy.Symbol("t0")
    prog.add_sos_constraint(T ** 2 - 1)  # never SOS (negative at 0)
    assert prog.solve().status == "infeasible"
    prog = Program()
    x = prog.new_indeterminates(1)[0]
    a = prog.new_continuous_variables(1)[0]
    prog.add_sos_constraint(x ** 2 + a)
    prog.add_linear_cost(a)
    res = prog.solve()
    assert res.status == "optimal" and res.value(a) == pytest.approx(0.0, abs=1e-7)
    prog = Program()
    a = prog.new_continuous_variables(1)[0]
    prog.add_linear_cost(a)
    res = prog.solve()
    assert res.status == "unbounded" and res.optimal_cost == -np.inf
    with pytest.raises(ValueError, match="no solution"):
        res.value(a)
