"""Positivstellensatz helpers: bounds on intervals and boxes against calculus / dense grids."""
import numpy as np
import pytest

from sdpr_loc.poly import Program, add_nonnegative_on_box, add_nonnegative_on_interval, add_nonnegative_on_set


def interval_min(p, x, lo, hi):
    """Exact-enough univariate minimum: endpoints and real roots of p'."""
    E, c, _ = p.to_arrays([x])
    coeffs = np.zeros(E.max() + 1)
    coeffs[E[:, 0]] = c
    dp = np.polynomial.Polynomial(coeffs).deriv()
    cand = [lo, hi] + [r.real for r in dp.roots() if abs(r.imag) < 1e-9 and lo <= r.real <= hi]
    return min(p.evaluate([t], [x]) for t in cand)


@pytest.mark.parametrize("make, lo, hi", [
    (lambda x: x ** 4 - 3 * x ** 2 + x, -1.0, 1.0),        # even degree: s + (x-a)(b-x) t
    (lambda x: x ** 3 - 2 * x + 1, -1.0, 2.0),             # odd degree: (x-a) s + (b-x) t
    (lambda x: -x ** 5 + 2 * x ** 2 - x, -0.5, 1.5),
])
def test_interval_bound_is_the_minimum(make, lo, hi):
    prog = Program()
    x = prog.new_indeterminates(1)[0]
    g = prog.new_continuous_variables(1, "g")[0]
    p = make(x)
    cert = add_nonnegative_on_interval(prog, p - g, x, lo, hi)
    prog.add_linear_cost(-g)
    res = prog.solve()
    assert res.status == "optimal"
    assert res.value(g) == pytest.approx(interval_min(p, x, lo, hi), abs=1e-6)
    assert len(cert.multipliers) >= 1


def test_box_bound_matches_grid():
    prog = Program()
    x, y = prog.new_indeterminates(2, ["x", "y"])
    g = prog.new_continuous_variables(1, "g")[0]
    f = x ** 2 - y ** 2 + x * y + x / 2
    cert = add_nonnegative_on_box(prog, f - g, [x, y], [-1, -1], [1, 1], degree=4)
    prog.add_linear_cost(-g)
    res = prog.solve()
    X, Y = np.meshgrid(np.linspace(-1, 1, 801), np.linspace(-1, 1, 801))
    ref = f.evaluate(np.c_[X.ravel(), Y.ravel()], [x, y]).min()  # -1.5625 at (-0.75, 1), on the grid
    assert res.value(g) == pytest.approx(ref, abs=1e-6)
    assert len(cert.multipliers) == 2 and all(np.linalg.eigvalsh(res.gram(gr)).min() > -1e-7
                                              for _, _, gr in cert.multipliers)


def test_set_with_equality_multiplier():
    """min x on the circle x^2 + y^2 = 1 intersected with y >= 0.5: x = -sqrt(3)/2."""
    prog = Program()
    x, y = prog.new_indeterminates(2, ["x", "y"])
    g = prog.new_continuous_variables(1, "g")[0]
    cert = add_nonnegative_on_set(prog, x - g, [y - 0.5], [x ** 2 + y ** 2 - 1], degree=2)
    prog.add_linear_cost(-g)
    res = prog.solve()
    assert res.value(g) == pytest.approx(-np.sqrt(3) / 2, abs=1e-6)
    assert len(cert.equality_multipliers) == 1


def test_psatz_bad_input():
    prog = Program()
    x, y = prog.new_indeterminates(2)
    with pytest.raises(ValueError, match="univariate"):
        add_nonnegative_on_interval(prog, x * y, x, 0, 1)
    with pytest.raises(ValueError, match="lower < upper"):
        add_nonnegative_on_interval(prog, x, x, 1, 0)
    with pytest.raises(ValueError, match="degenerate box"):
        add_nonnegative_on_box(prog, x, [x], [1], [1])
    with pytest.raises(ValueError, match="below the degree"):
        add_nonnegative_on_set(prog, x, [1 - x ** 4], degree=2)
