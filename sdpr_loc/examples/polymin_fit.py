"""Paper example 1: move a polynomial's GLOBAL minimiser to a target by learning its coefficients.

Two learners start from the same degree-6 polynomial and the same loss,
0.5 (x* - 1.7)^2 + 0.5 (p(x*) - 7.3)^2, with Adam (lr 1e-2):
  * SDPR: x* from PolyMinLayer (certified global minimiser), gradients by the KKT backward;
  * local: x* from gradient descent on p started at x0 = +2, gradients by the implicit function theorem.
The local learner moves a local minimum; the polynomial's true global minimum can stay elsewhere.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sdpr_loc.argtypes import positive
from sdpr_loc.certify import PolyMinLayer
from sdpr_loc.files import writable_folder
from sdpr_loc.examples import save_figure

C0 = [10.0, 2.6334, -4.3443, 0.0, 0.8055, -0.1334, 0.0389]
TARGET = (1.7, 7.3)


def p_eval(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (c * x.unsqueeze(-1) ** torch.arange(c.shape[-1], dtype=c.dtype)).sum(-1)


def true_global_min(c: np.ndarray) -> float:
    """Independent reference: best real root of p' (numpy)."""
    p = np.polynomial.Polynomial(c)
    r = p.deriv().roots()
    r = r[np.abs(r.imag) < 1e-7].real
    return float(r[np.argmin(p(r))])


class LocalArgmin(torch.autograd.Function):
    """x* by gradient descent on p (warm-started); dx*/dc = -(d p'/dc) / p''(x*)."""

    @staticmethod
    def forward(ctx, c, x0):
        x = x0.clone()
        dc = c[1:] * torch.arange(1, len(c), dtype=c.dtype)
        ddc = dc[1:] * torch.arange(1, len(dc), dtype=c.dtype)
        for _ in range(2000):
            g = p_eval(dc, x)
            x = x - 0.01 * g
            if abs(float(g)) < 1e-12:
                break
        for _ in range(3):  # Newton polish, still the same local minimum
            x = x - p_eval(dc, x) / p_eval(ddc, x)
        ctx.save_for_backward(c, x)
        return x

    @staticmethod
    def backward(ctx, gx):
        c, x = ctx.saved_tensors
        k = torch.arange(len(c), dtype=c.dtype)
        dpdc = k * x ** (k - 1).clamp_min(0) * (k > 0)
        dc = c[1:] * torch.arange(1, len(c), dtype=c.dtype)
        ddc = dc[1:] * torch.arange(1, len(dc), dtype=c.dtype)
        return -gx * dpdc / p_eval(ddc, x), None


def loss_fn(c, x):
    return 0.5 * (x - TARGET[0]) ** 2 + 0.5 * (p_eval(c, x) - TARGET[1]) ** 2


def run_fit(steps: int = 2000, lr: float = 1e-2, log_every: int = 250, quiet: bool = False) -> dict:
    layer = PolyMinLayer(6)
    c_sdp = torch.tensor(C0, dtype=torch.float64, requires_grad=True)
    c_loc = torch.tensor(C0, dtype=torch.float64, requires_grad=True)
    opt_sdp = torch.optim.Adam([c_sdp], lr=lr)
    opt_loc = torch.optim.Adam([c_loc], lr=lr)
    x_loc = torch.tensor(2.0, dtype=torch.float64)
    hist = {k: [] for k in ("loss_sdp", "loss_loc", "loss_loc_true", "x_sdp", "x_loc", "x_loc_global",
                            "certified")}
    rows = []
    for it in range(steps + 1):
        x_s, cert = layer(c_sdp.unsqueeze(0))
        l_s = loss_fn(c_sdp, x_s[0])
        x_l = LocalArgmin.apply(c_loc, x_loc)
        x_loc = x_l.detach()
        l_l = loss_fn(c_loc, x_l)
        hist["loss_sdp"].append(float(l_s.detach())); hist["loss_loc"].append(float(l_l.detach()))
        hist["x_sdp"].append(float(x_s[0].detach())); hist["x_loc"].append(float(x_l.detach()))
        hist["x_loc_global"].append(true_global_min(c_loc.detach().numpy()))
        xg = torch.tensor(hist["x_loc_global"][-1], dtype=torch.float64)
        hist["loss_loc_true"].append(float(loss_fn(c_loc.detach(), xg)))
        hist["certified"].append(bool(cert.certified[0]))
        if it % log_every == 0 or it == steps:
            rows.append((it, float(l_s), float(x_s[0]), bool(cert.certified[0]), float(l_l), float(x_l),
                         hist["x_loc_global"][-1]))
        if it == steps:
            break
        opt_sdp.zero_grad(); l_s.backward(); opt_sdp.step()
        opt_loc.zero_grad(); l_l.backward(); opt_loc.step()
    hist["c_sdp"], hist["c_loc"] = c_sdp.detach().numpy(), c_loc.detach().numpy()
    hist["rows"] = rows
    if not quiet:
        print(f"{'step':>5} | {'SDPR loss':>10} {'x*':>8} {'cert':>5} | {'local loss':>10} {'x_local':>8} "
              f"{'true argmin of local p':>22}")
        for r in rows:
            print(f"{r[0]:5d} | {r[1]:10.4f} {r[2]:8.4f} {str(r[3]):>5} | {r[4]:10.4f} {r[5]:8.4f} {r[6]:22.4f}")
    return hist


def plot(hist: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(-3, 4, 600)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for c, name, style in ((np.array(C0), "initial", "k:"), (hist["c_sdp"], "SDPR (certified global)", "C0-"),
                           (hist["c_loc"], "local baseline", "C3--")):
        ax[0].plot(xs, np.polynomial.Polynomial(c)(xs), style, label=name)
    ax[0].plot(*TARGET, "g*", ms=14, label="target (1.7, 7.3)")
    xg = hist["x_loc_global"][-1]
    ax[0].plot(xg, np.polynomial.Polynomial(hist["c_loc"])(xg), "C3v", ms=9, label="local p: true global min")
    ax[0].set_ylim(-5, 30); ax[0].set_xlabel("x"); ax[0].set_ylabel("p(x)"); ax[0].legend(fontsize=8)
    ax[0].set_title("learned polynomials")
    ax[1].semilogy(hist["loss_sdp"], label="SDPR (at its certified global x*)")
    ax[1].semilogy(hist["loss_loc"], label="local (at the local solver's x)", alpha=0.6)
    ax[1].semilogy(hist["loss_loc_true"], "C3--", label="local (at its p's true global x*)")
    ax[1].set_xlabel("Adam step"); ax[1].set_ylabel("loss"); ax[1].legend(fontsize=8)
    ax[1].set_title("training loss")
    return save_figure(fig, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=positive(int), default=3000, help="Adam steps (default 3000)")
    parser.add_argument("--out", type=Path, default=Path("out/polymin_fit.png"), help="PNG plot path")


def run(args: argparse.Namespace) -> int:
    writable_folder(args.out.parent)    # an unusable --out fails before the fit
    hist = run_fit(args.steps)
    x_s, x_l, x_g = hist["x_sdp"][-1], hist["x_loc"][-1], hist["x_loc_global"][-1]
    p_l = np.polynomial.Polynomial(hist["c_loc"])
    print(f"\nSDPR: x* = {x_s:.4f} (global, certified {all(hist['certified'])}), "
          f"p(x*) = {float(np.polynomial.Polynomial(hist['c_sdp'])(x_s)):.4f}; target {TARGET}")
    print(f"local: stopped at x = {x_l:.4f}, p = {p_l(x_l):.4f}; but that polynomial's global minimiser is "
          f"x = {x_g:.4f} with p = {p_l(x_g):.4f} " + ("(a different minimum)" if abs(x_g - x_l) > 1e-3 else ""))
    print(f"plot: {plot(hist, args.out)}")
    return 0
