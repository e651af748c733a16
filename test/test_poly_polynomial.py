"""Polynomial algebra, conversions and Newton-polytope bases (sdpr_loc.poly.polynomial / newton)."""
from fractions import Fraction

import numpy as np
import pytest
import sympy
from scipy.optimize import linprog

from sdpr_loc.poly import (Indeterminate, Monomial, Polynomial, Program, Variable, monomials_up_to, newton_half_basis,
                           sos_basis)
from sdpr_loc.poly.newton import _inside_hull
from sdpr_loc.poly.polynomial import exponents_up_to


@pytest.fixture
def xy():
    return Indeterminate("x"), Indeterminate("y")


def test_arithmetic_is_exact_and_matches_sympy(xy):
    x, y = xy
    p = (x + 2 * y - Fraction(1, 3)) ** 3 - x * y / 7 + 0.5 * x
    X, Y = sympy.symbols("x y")
    ref = sympy.expand((X + 2 * Y - sympy.Rational(1, 3)) ** 3 - X * Y / 7 + sympy.Rational(1, 2) * X)
    diff = sympy.Poly(sympy.expand(p.to_sympy() - ref), X, Y)
    assert max(abs(float(c)) for c in diff.coeffs()) < 1e-15  # 0.5 is a float: x coefficient is float
    assert p.coefficient(x ** 3) == 1 and isinstance(p.coefficient(y ** 3), int)
    assert p.coefficient(x * y) == Fraction(-29, 7)  # -4 - 1/7 exactly: no float crept in
    assert p.coefficient(Monomial()) == Fraction(-1, 27)
    assert (x + 1) ** 2 == x ** 2 + 2 * x + 1
    assert (x - x).is_zero() and p.degree() == 3


def test_evaluate_and_substitute_agree_with_sympy(xy):
    x, y = xy
    p = 3 * x ** 4 * y - 2 * x * y ** 2 + y - 5
    pts = np.random.default_rng(0).standard_normal((50, 2))
    f = sympy.lambdify(sympy.symbols("x y"), p.to_sympy())
    np.testing.assert_allclose(p.evaluate(pts, [x, y]), f(pts[:, 0], pts[:, 1]), rtol=1e-12)
    q = p.substitute({x: Fraction(1, 2)})
    assert q == Fraction(3, 16) * y - y ** 2 + y - 5
    assert p.differentiate(x) == 12 * x ** 3 * y - 2 * y ** 2


def test_sympy_input_and_round_trip(xy):
    x, y = xy
    a = Variable("a_sym")
    X, Y, A = sympy.symbols("x y a_sym")
    expr = (X - Y) ** 2 + A * X + sympy.Rational(3, 4)
    p = Polynomial.from_sympy(expr, {X: x, Y: y, "a_sym": a})
    assert p == (x - y) ** 2 + a * x + Fraction(3, 4)
    assert sympy.expand(p.to_sympy() - expr) == 0
    with pytest.raises(ValueError, match="not mapped"):
        Polynomial.from_sympy(expr, {X: x})
    with pytest.raises(ValueError, match="not a polynomial"):
        Polynomial.from_sympy(sympy.sin(X), {X: x})


def test_affine_coefficients_and_errors(xy):
    x, _ = xy
    a, b = Variable("a"), Variable("b")
    p = (a - 2 * b + 1) * x ** 2 + b
    assert set(v.name for v in p.decision_variables()) == {"a", "b"}
    assert str(p.coefficient(x ** 2)) == "1 + a - 2*b"
    assert str(p) == "(1 + a - 2*b)*x^2 + b"
    with pytest.raises(ValueError, match="not affine"):
        (a * x) * (b * x)
    with pytest.raises(ValueError, match="integers >= 0"):
        x ** -1
    with pytest.raises(ValueError, match="integers >= 0"):
        x ** 1.5
    with pytest.raises(ValueError, match="divide a polynomial by a number"):
        x / x
    with pytest.raises(ValueError, match="finite"):
        x + float("nan")
    with pytest.raises(ValueError, match="numeric coefficients"):
        p.evaluate([1.0])


def test_from_arrays_matches_operator_construction(xy):
    x, y = xy
    E = np.array([[2, 0], [1, 1], [0, 0], [1, 1]])
    p = Polynomial.from_arrays(E, [1, -3, 2, 1], [x, y])
    assert p == x ** 2 - 2 * x * y + 2
    q = Polynomial.from_arrays(E[:, ::-1], [1, -3, 2, 1], [y, x])  # column order does not matter
    assert p == q
    with pytest.raises(ValueError, match="shape"):
        Polynomial.from_arrays(E, [1, 2], [x, y])


def test_monomial_enumeration_counts():
    from math import comb
    for n, d in [(1, 5), (2, 4), (3, 3), (4, 2)]:
        E = exponents_up_to(n, d)
        assert len(E) == comb(n + d, d) and len(np.unique(E, axis=0)) == len(E)
        assert (np.diff(E.sum(1)) >= 0).all()  # graded
    x, y = Indeterminate("u"), Indeterminate("v")
    assert [str(m) for m in monomials_up_to([x, y], 2)] == ["1", "u", "v", "u^2", "u*v", "v^2"]


def _in_hull_lp(S, c):
    A = np.vstack([S.T, np.ones((1, len(S)))])
    return linprog(np.zeros(len(S)), A_eq=A, b_eq=np.r_[c, 1.0], bounds=(0, None), method="highs").status == 0


def test_hull_membership_matches_linear_programming():
    rng = np.random.default_rng(3)
    for dim, npts in [(2, 6), (3, 9), (3, 4), (2, 3)]:
        S = rng.integers(0, 6, (npts, dim))
        C = rng.integers(0, 6, (40, dim))
        fast = _inside_hull(S, C)
        ref = np.array([_in_hull_lp(S.astype(float), c.astype(float)) for c in C])
        np.testing.assert_array_equal(fast, ref)
    # degenerate support (on a line in 3-D) goes through the affine-hull projection
    S = np.array([[0, 0, 0], [2, 2, 2], [4, 4, 4]])
    np.testing.assert_array_equal(_inside_hull(S, np.array([[2, 2, 2], [1, 1, 2], [6, 6, 6]])), [True, False, False])


def test_newton_basis_examples(xy):
    x, y = xy
    motzkin = x ** 4 * y ** 2 + x ** 2 * y ** 4 - 3 * x ** 2 * y ** 2 + 1
    basis, _ = sos_basis(motzkin)
    assert {str(m) for m in basis} == {"1", "x*y", "x^2*y", "x*y^2"}
    # pruning: (1,1) and (1,2) lie in half the polytope but their Gram diagonals are forced to zero
    S = np.array([[2, 0], [0, 4], [3, 4]])
    assert newton_half_basis(S, prune=False).tolist() == [[1, 0], [1, 1], [0, 2], [1, 2]]
    assert newton_half_basis(S).tolist() == [[1, 0], [0, 2]]
    # odd-degree-only support has no half-integer points: no basis
    assert len(newton_half_basis(np.array([[3]]))) == 0


def test_newton_basis_contains_every_square_support():
    """Reznick: the monomials of any q_i in p = sum q_i^2 lie in the (pruned) half Newton polytope."""
    rng = np.random.default_rng(7)
    x, y, z = Indeterminate("x"), Indeterminate("y"), Indeterminate("z")
    xs = [x, y, z]
    for _ in range(5):
        p, used = Polynomial(0), set()
        for _ in range(3):
            E = rng.integers(0, 3, (3, 3))
            q = Polynomial.from_arrays(E, rng.integers(1, 5, 3).tolist(), xs)
            used |= {m.powers for m in q.monomials()}
            p = p + q * q
        basis, _ = sos_basis(p)
        assert used <= {m.powers for m in basis}
        assert len(basis) <= len(exponents_up_to(3, p.degree() // 2))


def test_program_symbols_and_bad_input():
    prog = Program()
    a = prog.new_continuous_variables(2)
    x = prog.new_indeterminates(1)
    other = Program().new_continuous_variables(1, "b")
    with pytest.raises(ValueError, match="do not belong to this program"):
        prog.add_linear_cost(other[0])
    with pytest.raises(ValueError, match="depends on indeterminates"):
        prog.add_linear_cost(a[0] * x[0])
    with pytest.raises(ValueError, match="even degree"):
        prog.new_sos_polynomial(x, 3)
    with pytest.raises(ValueError, match="positive integer"):
        prog.new_continuous_variables(0)
    with pytest.raises(ValueError, match="lb <= ub"):
        prog.add_linear_constraint(a[0], 2, 1)
    with pytest.raises(ValueError, match="Indeterminates"):
        prog.new_free_polynomial([a[0]], 2)
