"""Polynomials over named indeterminates with coefficients affine in decision variables.

Two kinds of symbols, as in Drake's MathematicalProgram: *indeterminates* (x: the polynomial must hold
for all of them) and *decision variables* (a: what the optimiser chooses). A polynomial is a sparse
dictionary  monomial -> affine coefficient, where a monomial is a sorted tuple of (indeterminate id,
exponent) pairs and an affine coefficient is a dictionary  variable id -> number  (key ``CONST`` for the
constant part). Coefficients stay exact (int / Fraction) until a float enters, so the exact certificate
can work on the very polynomial the user wrote. Operators (+, -, *, ** with integer powers, / by a
number) on indeterminates, variables, monomials, polynomials and numbers build polynomials.
"""
from __future__ import annotations

import bisect
import itertools
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

CONST = -1  # key of the constant part in an affine coefficient dictionary

_ind_counter = itertools.count()
_var_next = [0]
_IND_NAMES: dict[int, str] = {}
_VAR_NAMES: dict[int, str] = {}
_BLOCK_STARTS: list[int] = []  # bulk-allocated variables (Gram entries): names computed on demand
_BLOCKS: list[tuple[int, int, Callable[[int], str]]] = []


def allocate_variables(n: int, names: Sequence[str] | Callable[[int], str]) -> int:
    """Reserve ``n`` consecutive decision-variable ids; returns the first one.

    ``names`` is a list of names or a function offset -> name (cheap for large Gram blocks).
    """
    start = _var_next[0]
    _var_next[0] += n
    if callable(names):
        _BLOCK_STARTS.append(start)
        _BLOCKS.append((start, start + n, names))
    else:
        for i, nm in enumerate(names):
            _VAR_NAMES[start + i] = nm
    return start


def variable_name(uid: int) -> str:
    if uid in _VAR_NAMES:
        return _VAR_NAMES[uid]
    i = bisect.bisect_right(_BLOCK_STARTS, uid) - 1
    if i >= 0:
        start, stop, namer = _BLOCKS[i]
        if uid < stop:
            return namer(uid - start)
    return f"v{uid}"


def indeterminate_name(uid: int) -> str:
    return _IND_NAMES.get(uid, f"x{uid}")


# ----------------------------------------------------------------------------------------- numbers

def as_number(v, what: str = "coefficient"):
    """int / Fraction stay exact, floats stay floats; numpy and sympy numbers are converted."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, Fraction)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{what} must be finite, got {v}")
        return v
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return as_number(float(v), what)
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return as_number(v.item(), what)
    if getattr(v, "is_Number", False):  # sympy
        if v.is_Rational:
            return Fraction(int(v.p), int(v.q))
        if v.is_Float:
            return as_number(float(v), what)
    if isinstance(v, numbers.Rational):
        return Fraction(int(v.numerator), int(v.denominator))
    if isinstance(v, numbers.Real):
        return as_number(float(v), what)
    raise ValueError(f"{what} must be a real number, got {type(v).__name__}: {v!r}")


def is_number(v) -> bool:
    if isinstance(v, (bool, int, float, Fraction, np.integer, np.floating)):
        return True
    if getattr(v, "is_Number", False):
        return True
    return isinstance(v, numbers.Real) and not isinstance(v, _Arith)


def _div_number(c, d):
    """c / d keeping exactness when both are exact."""
    if isinstance(c, (int, Fraction)) and isinstance(d, (int, Fraction)):
        return Fraction(c) / d
    return c / d


# ----------------------------------------------------------------------------- affine coefficients

def _c_add(a: dict, b: dict, sign=1) -> dict:
    out = dict(a)
    for k, v in b.items():
        s = out.get(k, 0) + (v if sign == 1 else -v)
        if s == 0:
            out.pop(k, None)
        else:
            out[k] = s
    return out


def _c_scale(a: dict, s) -> dict:
    if s == 0:
        return {}
    return {k: v * s for k, v in a.items()}


def _c_is_const(a: dict) -> bool:
    return not a or (len(a) == 1 and CONST in a)


def _c_mul(a: dict, b: dict) -> dict:
    if _c_is_const(a):
        return _c_scale(b, a.get(CONST, 0))
    if _c_is_const(b):
        return _c_scale(a, b.get(CONST, 0))
    names = sorted({variable_name(k) for k in a if k != CONST} | {variable_name(k) for k in b if k != CONST})
    raise ValueError("product of two expressions that both depend on decision variables "
                     f"({', '.join(names[:6])}) is not affine in the decision variables")


def _c_str(a: dict) -> str:
    parts = []
    for k in sorted(a, key=lambda u: (u != CONST, u)):
        v = a[k]
        if k == CONST:
            parts.append(_num_str(v))
        else:
            parts.append(variable_name(k) if v == 1 else "-" + variable_name(k) if v == -1
                         else f"{_num_str(v)}*{variable_name(k)}")
    s = " + ".join(parts).replace("+ -", "- ")
    return s


def _num_str(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# ------------------------------------------------------------------------------------ monomials

def _mono_mul(a: tuple, b: tuple) -> tuple:
    if not a:
        return b
    if not b:
        return a
    d = dict(a)
    for u, e in b:
        d[u] = d.get(u, 0) + e
    return tuple(sorted(d.items()))


def _mono_pow(a: tuple, n: int) -> tuple:
    return tuple((u, e * n) for u, e in a) if n else ()


def _mono_degree(a: tuple) -> int:
    return sum(e for _, e in a)


def _mono_str(a: tuple) -> str:
    if not a:
        return "1"
    return "*".join(indeterminate_name(u) + (f"^{e}" if e != 1 else "") for u, e in a)


class _Arith:
    """Operators shared by every symbolic object: they all convert to Polynomial."""

    __slots__ = ()
    __array_priority__ = 100  # numpy defers to our reflected operators

    def to_polynomial(self) -> "Polynomial":
        raise NotImplementedError

    def __add__(self, o):
        return self.to_polynomial().__add__(o)

    def __radd__(self, o):
        return self.to_polynomial().__radd__(o)

    def __sub__(self, o):
        return self.to_polynomial().__sub__(o)

    def __rsub__(self, o):
        return self.to_polynomial().__rsub__(o)

    def __mul__(self, o):
        return self.to_polynomial().__mul__(o)

    def __rmul__(self, o):
        return self.to_polynomial().__rmul__(o)

    def __truediv__(self, o):
        return self.to_polynomial().__truediv__(o)

    def __pow__(self, n):
        return self.to_polynomial().__pow__(n)

    def __neg__(self):
        return -self.to_polynomial()

    def __pos__(self):
        return self.to_polynomial()

    def __ge__(self, o):
        return Comparison.make(self, o, ">=")

    def __le__(self, o):
        return Comparison.make(self, o, "<=")


class Indeterminate(_Arith):
    """A symbol the polynomial identities must hold for (x in p(x) >= 0 for all x)."""

    __slots__ = ("uid",)

    def __init__(self, name: str = "x", *, _uid: int | None = None):
        if _uid is None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"indeterminate name must be a non-empty string, got {name!r}")
            _uid = next(_ind_counter)
            _IND_NAMES[_uid] = name
        self.uid = _uid

    @property
    def name(self) -> str:
        return indeterminate_name(self.uid)

    def to_polynomial(self) -> "Polynomial":
        return Polynomial._raw({((self.uid, 1),): {CONST: 1}})

    def __hash__(self):
        return hash(("ind", self.uid))

    def __eq__(self, o):
        return isinstance(o, Indeterminate) and o.uid == self.uid

    def __repr__(self):
        return self.name


class Variable(_Arith):
    """A scalar decision variable; polynomial coefficients are affine in these."""

    __slots__ = ("uid",)

    def __init__(self, name: str = "a", *, _uid: int | None = None):
        if _uid is None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"variable name must be a non-empty string, got {name!r}")
            _uid = allocate_variables(1, [name])
        self.uid = _uid

    @property
    def name(self) -> str:
        return variable_name(self.uid)

    def to_polynomial(self) -> "Polynomial":
        return Polynomial._raw({(): {self.uid: 1}})

    def __hash__(self):
        return hash(("var", self.uid))

    def __eq__(self, o):
        return isinstance(o, Variable) and o.uid == self.uid

    def __repr__(self):
        return self.name


class Monomial(_Arith):
    """x^alpha; ``powers`` is a sorted tuple of (indeterminate id, exponent > 0) pairs."""

    __slots__ = ("powers",)

    def __init__(self, powers: Mapping[Indeterminate, int] | Iterable | None = None):
        if powers is None:
            self.powers = ()
            return
        if isinstance(powers, Monomial):
            self.powers = powers.powers
            return
        items = powers.items() if isinstance(powers, Mapping) else powers
        d: dict[int, int] = {}
        for k, e in items:
            uid = k.uid if isinstance(k, Indeterminate) else k
            if not isinstance(uid, (int, np.integer)) or isinstance(uid, bool):
                raise ValueError(f"monomial keys must be Indeterminates, got {type(k).__name__}")
            if not isinstance(e, (int, np.integer)) or isinstance(e, bool) or e < 0:
                raise ValueError(f"monomial exponents must be integers >= 0, got {e!r}")
            if e:
                d[int(uid)] = d.get(int(uid), 0) + int(e)
        self.powers = tuple(sorted(d.items()))

    @classmethod
    def _wrap(cls, powers: tuple) -> "Monomial":
        m = cls.__new__(cls)
        m.powers = powers
        return m

    @property
    def degree(self) -> int:
        return _mono_degree(self.powers)

    def exponents(self, indeterminates: Sequence[Indeterminate]) -> tuple[int, ...]:
        d = dict(self.powers)
        extra = set(d) - {x.uid for x in indeterminates}
        if extra:
            raise ValueError(f"monomial {self} has indeterminates {sorted(indeterminate_name(u) for u in extra)} "
                             "outside the given list")
        return tuple(d.get(x.uid, 0) for x in indeterminates)

    def to_polynomial(self) -> "Polynomial":
        return Polynomial._raw({self.powers: {CONST: 1}})

    def __hash__(self):
        return hash(("mono", self.powers))

    def __eq__(self, o):
        return isinstance(o, Monomial) and o.powers == self.powers

    def __str__(self):
        return _mono_str(self.powers)

    __repr__ = __str__


# --------------------------------------------------------------------------------- polynomial

class Polynomial(_Arith):
    """Sparse polynomial in indeterminates; coefficients affine in decision variables.

    Build with operators, ``Polynomial(number | symbol)``, ``from_dict``, ``from_arrays`` or
    ``from_sympy``. Polynomials compare structurally (``p == q``); they are not hashable.
    """

    __slots__ = ("_t",)

    def __init__(self, value=0):
        self._t = dict((Polynomial.from_dict(value) if isinstance(value, Mapping) else as_polynomial(value))._t)

    @classmethod
    def _raw(cls, t: dict) -> "Polynomial":
        p = cls.__new__(cls)
        p._t = t
        return p

    # ---- constructors
    @classmethod
    def from_dict(cls, terms: Mapping) -> "Polynomial":
        """{Monomial | {Indeterminate: exponent} | Indeterminate: coefficient (number or affine expr)}."""
        out: dict = {}
        for m, c in terms.items():
            if isinstance(m, Indeterminate):
                m = Monomial({m: 1})
            mono = m.powers if isinstance(m, Monomial) else Monomial(m).powers
            coef = _affine_of(c)
            out[mono] = _c_add(out.get(mono, {}), coef)
        return cls._raw(_clean(out))

    @classmethod
    def from_arrays(cls, exponents, coefficients, indeterminates: Sequence[Indeterminate]) -> "Polynomial":
        """Vectorised constructor: ``exponents (t, n)`` integers, ``coefficients (t,)`` numbers."""
        E = np.asarray(exponents)
        c = list(coefficients)
        xs = list(indeterminates)
        if E.ndim != 2 or E.shape != (len(c), len(xs)):
            raise ValueError(f"exponents must have shape (t={len(c)}, n={len(xs)}), got {E.shape}")
        if E.size and (not np.issubdtype(E.dtype, np.integer) or E.min() < 0):
            raise ValueError("exponents must be non-negative integers")
        for x in xs:
            if not isinstance(x, Indeterminate):
                raise ValueError(f"indeterminates must be Indeterminate, got {type(x).__name__}")
        uids = [x.uid for x in xs]
        if len(set(uids)) != len(uids):
            raise ValueError("indeterminates must be distinct")
        order = np.argsort(uids)
        su = [uids[i] for i in order]
        Es = E[:, order] if E.size else E
        out: dict = {}
        for row, ci in zip(Es.tolist(), c):
            ci = as_number(ci)
            if ci == 0:
                continue
            mono = tuple((u, e) for u, e in zip(su, row) if e)
            s = out.get(mono, {}).get(CONST, 0) + ci
            if s == 0:
                out.pop(mono, None)
            else:
                out[mono] = {CONST: s}
        return cls._raw(out)

    @classmethod
    def from_sympy(cls, expr, symbols: Mapping) -> "Polynomial":
        """Convert a sympy expression; ``symbols`` maps sympy Symbols (or their names) to our symbols."""
        import sympy

        expr = sympy.sympify(expr)
        table = {}
        for k, v in symbols.items():
            name = k if isinstance(k, str) else getattr(k, "name", None)
            if name is None:
                raise ValueError(f"symbols keys must be sympy Symbols or names, got {k!r}")
            if not isinstance(v, (Indeterminate, Variable)):
                raise ValueError(f"symbol {name} must map to an Indeterminate or Variable, got {type(v).__name__}")
            table[name] = v
        free = sorted(expr.free_symbols, key=lambda s: s.name)
        missing = [s.name for s in free if s.name not in table]
        if missing:
            raise ValueError(f"sympy expression uses symbols {missing} that are not mapped to "
                             "indeterminates or decision variables")
        if not free:
            return cls._raw(_clean({(): {CONST: as_number(expr)}}))
        try:
            P = sympy.Poly(sympy.expand(expr), *free)
        except sympy.PolynomialError as exc:
            raise ValueError(f"sympy expression is not a polynomial: {exc}") from None
        out = Polynomial(0)
        targets = [table[s.name] for s in free]
        for exps, coeff in P.terms():
            term = Polynomial(as_number(coeff))
            for t, e in zip(targets, exps):
                if e:
                    term = term * t.to_polynomial() ** int(e)
            out = out + term
        return out

    # ---- inspection
    def is_zero(self) -> bool:
        return not self._t

    def degree(self) -> int:
        """Total degree in the indeterminates (0 for constants and for the zero polynomial)."""
        return max((_mono_degree(m) for m in self._t), default=0)

    def monomials(self) -> list[Monomial]:
        return [Monomial._wrap(m) for m in _sorted_monos(self._t)]

    def indeterminates(self) -> list[Indeterminate]:
        return [Indeterminate(_uid=u) for u in sorted({u for m in self._t for u, _ in m})]

    def decision_variables(self) -> list[Variable]:
        return [Variable(_uid=u) for u in sorted({k for c in self._t.values() for k in c if k != CONST})]

    def has_decision_variables(self) -> bool:
        return any(not _c_is_const(c) for c in self._t.values())

    def coefficient(self, monomial):
        """Coefficient of a monomial: a number, or an affine Polynomial in the decision variables."""
        m = _as_monomial(monomial)
        c = self._t.get(m.powers, {})
        return c.get(CONST, 0) if _c_is_const(c) else Polynomial._raw({(): dict(c)})

    def terms(self) -> list[tuple[Monomial, object]]:
        return [(Monomial._wrap(m), self.coefficient(Monomial._wrap(m))) for m in _sorted_monos(self._t)]

    def to_arrays(self, indeterminates: Sequence[Indeterminate] | None = None):
        """(exponents (t, n) int64, coefficients (t,) float64, indeterminates) for numeric work."""
        self._require_numeric("to_arrays")
        xs = list(indeterminates) if indeterminates is not None else self.indeterminates()
        monos = list(self._t)
        E = np.array([Monomial._wrap(m).exponents(xs) for m in monos], dtype=np.int64).reshape(len(monos), len(xs))
        c = np.array([float(self._t[m].get(CONST, 0)) for m in monos], dtype=np.float64)
        return E, c, xs

    def evaluate(self, points, indeterminates: Sequence[Indeterminate] | None = None):
        """p at ``points (N, n)`` (or one point ``(n,)``); columns follow ``indeterminates``."""
        E, c, xs = self.to_arrays(indeterminates)
        X = np.asarray(points, dtype=np.float64)
        single = X.ndim <= 1
        X = np.atleast_2d(X.reshape(1, -1) if single else X)
        if X.shape[1] != len(xs):
            raise ValueError(f"points must have {len(xs)} columns ({[x.name for x in xs]}), got {X.shape[1]}")
        vals = (X[:, None, :] ** E[None]).prod(-1) @ c if len(c) else np.zeros(X.shape[0])
        return float(vals[0]) if single else vals

    def substitute(self, values: Mapping) -> "Polynomial":
        """Replace indeterminates and/or decision variables by numbers (exactness kept when exact)."""
        ind, var = {}, {}
        for k, v in values.items():
            if isinstance(k, Indeterminate):
                ind[k.uid] = as_number(v, f"value of {k.name}")
            elif isinstance(k, Variable):
                var[k.uid] = as_number(v, f"value of {k.name}")
            else:
                raise ValueError(f"substitute keys must be Indeterminates or Variables, got {type(k).__name__}")
        out: dict = {}
        for m, c in self._t.items():
            if var:
                nc = {}
                for k, v in c.items():
                    if k in var:
                        nc[CONST] = nc.get(CONST, 0) + v * var[k]
                    else:
                        nc[k] = nc.get(k, 0) + v
                c = {k: v for k, v in nc.items() if v != 0}
            if ind:
                factor, keep = 1, []
                for u, e in m:
                    if u in ind:
                        factor = factor * ind[u] ** e
                    else:
                        keep.append((u, e))
                m, c = tuple(keep), _c_scale(c, factor)
            if c:
                out[m] = _c_add(out.get(m, {}), c)
        return Polynomial._raw(_clean(out))

    def substitute_decisions(self, uids: np.ndarray, values: np.ndarray) -> "Polynomial":
        """Fast path used by solver results: variables ``uids`` take float ``values``."""
        table = dict(zip(uids.tolist(), values.tolist()))
        out: dict = {}
        for m, c in self._t.items():
            s = 0.0
            nc = {}
            for k, v in c.items():
                if k == CONST:
                    s += float(v)
                elif k in table:
                    s += float(v) * table[k]
                else:
                    nc[k] = v
            if s != 0.0:
                nc[CONST] = s
            if nc:
                out[m] = nc
        return Polynomial._raw(out)

    def differentiate(self, x: Indeterminate) -> "Polynomial":
        if not isinstance(x, Indeterminate):
            raise ValueError(f"can only differentiate with respect to an Indeterminate, got {type(x).__name__}")
        out: dict = {}
        for m, c in self._t.items():
            d = dict(m)
            e = d.get(x.uid, 0)
            if e:
                if e == 1:
                    del d[x.uid]
                else:
                    d[x.uid] = e - 1
                nm = tuple(sorted(d.items()))
                out[nm] = _c_add(out.get(nm, {}), _c_scale(c, e))
        return Polynomial._raw(_clean(out))

    def to_sympy(self):
        import sympy

        def num(v):
            return sympy.Rational(v.numerator, v.denominator) if isinstance(v, (int, Fraction)) else sympy.Float(v)

        expr = sympy.Integer(0)
        for m, c in self._t.items():
            coef = sum((num(v) * (sympy.Integer(1) if k == CONST else sympy.Symbol(variable_name(k)))
                        for k, v in c.items()), sympy.Integer(0))
            mono = sympy.Integer(1)
            for u, e in m:
                mono *= sympy.Symbol(indeterminate_name(u)) ** e
            expr += coef * mono
        return expr

    def _require_numeric(self, what: str):
        if self.has_decision_variables():
            names = [v.name for v in self.decision_variables()][:6]
            raise ValueError(f"{what} needs numeric coefficients, but the polynomial depends on decision "
                             f"variables {names}; substitute their values first")

    # ---- arithmetic
    def to_polynomial(self) -> "Polynomial":
        return self

    def __add__(self, o):
        o = _maybe_poly(o)
        if o is NotImplemented:
            return o
        out = dict(self._t)
        for m, c in o._t.items():
            s = _c_add(out.get(m, {}), c)
            if s:
                out[m] = s
            else:
                out.pop(m, None)
        return Polynomial._raw(out)

    __radd__ = __add__

    def __neg__(self):
        return Polynomial._raw({m: _c_scale(c, -1) for m, c in self._t.items()})

    def __sub__(self, o):
        o = _maybe_poly(o)
        if o is NotImplemented:
            return o
        return self + (-o)

    def __rsub__(self, o):
        o = _maybe_poly(o)
        if o is NotImplemented:
            return o
        return o + (-self)

    def __mul__(self, o):
        o = _maybe_poly(o)
        if o is NotImplemented:
            return o
        out: dict = {}
        for m1, c1 in self._t.items():
            for m2, c2 in o._t.items():
                m = _mono_mul(m1, m2)
                s = _c_add(out.get(m, {}), _c_mul(c1, c2))
                if s:
                    out[m] = s
                else:
                    out.pop(m, None)
        return Polynomial._raw(out)

    __rmul__ = __mul__

    def __truediv__(self, o):
        if not is_number(o):
            return NotImplemented if not isinstance(o, _Arith) else _raise(
                ValueError("can only divide a polynomial by a number"))
        d = as_number(o, "divisor")
        if d == 0:
            raise ValueError("division of a polynomial by zero")
        return Polynomial._raw({m: {k: _div_number(v, d) for k, v in c.items()} for m, c in self._t.items()})

    def __pow__(self, n):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"polynomial powers must be integers >= 0, got {n!r}")
        n = int(n)
        if len(self._t) == 1:  # monomial fast path
            (m, c), = self._t.items()
            if _c_is_const(c):
                return Polynomial._raw({_mono_pow(m, n): {CONST: c.get(CONST, 0) ** n}} if n else {(): {CONST: 1}})
        result, base = Polynomial(1), self
        while n:
            if n & 1:
                result = result * base
            n >>= 1
            if n:
                base = base * base
        return result

    def __eq__(self, o):
        o = _maybe_poly(o)
        if o is NotImplemented:
            return False
        return (self - o).is_zero()

    def __ne__(self, o):
        return not self.__eq__(o)

    __hash__ = None

    def __str__(self):
        if not self._t:
            return "0"
        parts = []
        for m in _sorted_monos(self._t):
            c = self._t[m]
            ms = _mono_str(m)
            if _c_is_const(c):
                v = c.get(CONST, 0)
                if m == ():
                    parts.append(_num_str(v))
                elif v == 1:
                    parts.append(ms)
                elif v == -1:
                    parts.append("-" + ms)
                else:
                    parts.append(f"{_num_str(v)}*{ms}")
            else:
                cs = _c_str(c)
                parts.append(cs if m == () else (f"({cs})*{ms}" if len(c) > 1 else f"{cs}*{ms}"))
        return " + ".join(parts).replace("+ -", "- ")

    def __repr__(self):
        return f"Polynomial({self})"


def _raise(exc):
    raise exc


def _clean(t: dict) -> dict:
    out = {}
    for m, c in t.items():
        c = {k: v for k, v in c.items() if v != 0}
        if c:
            out[m] = c
    return out


def _sorted_monos(t: dict) -> list:
    return sorted(t, key=lambda m: (-_mono_degree(m), tuple(-e for _, e in m), m))


def _affine_of(c) -> dict:
    if is_number(c):
        v = as_number(c)
        return {CONST: v} if v != 0 else {}
    p = as_polynomial(c)
    if any(m != () for m in p._t):
        raise ValueError(f"coefficient {p} depends on indeterminates; coefficients must be affine in "
                         "decision variables only")
    return dict(p._t.get((), {}))


def _maybe_poly(o):
    if isinstance(o, _Arith):
        return o.to_polynomial()
    if is_number(o):
        v = as_number(o)
        return Polynomial._raw({(): {CONST: v}} if v != 0 else {})
    return NotImplemented


def _as_monomial(m) -> Monomial:
    if isinstance(m, Monomial):
        return m
    if isinstance(m, Indeterminate):
        return Monomial({m: 1})
    if isinstance(m, Polynomial) and len(m._t) == 1:
        (mono, c), = m._t.items()
        if c == {CONST: 1}:
            return Monomial._wrap(mono)
    if isinstance(m, Mapping):
        return Monomial(m)
    if isinstance(m, (int, np.integer)) and m == 1:
        return Monomial()
    raise ValueError(f"expected a monomial (Monomial, Indeterminate, product of indeterminates), got {m!r}")


def as_monomial(m) -> Monomial:
    """Monomial from a Monomial, an Indeterminate, a power product like x*y**2, a dict, or 1."""
    return _as_monomial(m)


def as_polynomial(obj, symbols: Mapping | None = None) -> Polynomial:
    """Polynomial from a number, symbol, monomial, polynomial, or sympy expression (needs ``symbols``)."""
    if isinstance(obj, Polynomial):
        return obj
    if isinstance(obj, _Arith):
        return obj.to_polynomial()
    if is_number(obj):
        return _maybe_poly(obj)
    if hasattr(obj, "free_symbols") and hasattr(obj, "subs"):  # sympy expression
        if symbols is None:
            raise ValueError("a sympy expression needs a mapping from its symbols to indeterminates / variables")
        return Polynomial.from_sympy(obj, symbols)
    raise ValueError(f"cannot convert {type(obj).__name__} to a polynomial: {obj!r}")


@dataclass
class Comparison:
    """``lb <= expr <= ub`` built by ``expr >= v`` / ``expr <= v``; for ``Program.add_linear_constraint``."""

    expr: Polynomial
    lb: float
    ub: float

    @staticmethod
    def make(lhs, rhs, op: str) -> "Comparison":
        r = _maybe_poly(rhs)
        if r is NotImplemented:
            raise ValueError(f"cannot compare an expression with {type(rhs).__name__}")
        e = as_polynomial(lhs) - r
        return Comparison(e, 0.0, math.inf) if op == ">=" else Comparison(e, -math.inf, 0.0)

    def __bool__(self):
        raise ValueError("a Comparison is a constraint for Program.add_linear_constraint, not a truth value")


# ---------------------------------------------------------------------------- monomial bases

def monomials_up_to(indeterminates: Sequence[Indeterminate], degree: int, min_degree: int = 0) -> list[Monomial]:
    """All monomials with min_degree <= total degree <= degree, graded (low degree first)."""
    E = exponents_up_to(len(indeterminates), degree, min_degree)
    uids = [x.uid for x in indeterminates]
    return [Monomial(zip(uids, row)) for row in E.tolist()]


def exponents_up_to(n: int, degree: int, min_degree: int = 0) -> np.ndarray:
    """Exponent rows (t, n) of all monomials of degree in [min_degree, degree], graded order."""
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 0:
        raise ValueError(f"degree must be an integer >= 0, got {degree!r}")
    rows = []
    for d in range(int(min_degree), int(degree) + 1):
        if n == 0:
            rows += [[]] if d == 0 else []
            continue
        block = []
        for c in itertools.combinations(range(d + n - 1), n - 1):  # stars and bars
            prev, row = -1, []
            for b in c:
                row.append(b - prev - 1)
                prev = b
            row.append(d + n - 2 - prev)
            block.append(row)
        rows += sorted(block, reverse=True)  # graded lex: x0^d, x0^(d-1) x1, ...
    return np.array(rows, dtype=np.int64).reshape(len(rows), n)
