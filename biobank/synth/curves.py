"""Parametric flow-volume model, integrated to a 100 Hz volume-time series (field-3066 style).

A blow has three phases (time measured from the start of the blow):

1. optional hesitation (slow start fault): flow ramps linearly from 0 to ``f0`` over ``t_h``, exhaling
   ``v_h``;
2. rise to PEF over ``t_r`` (0.06-0.13 s in good blows): ``F = f0 + (PEF - f0) * sin^2(pi*tau / (2 t_r))``;
3. the descending limb, written as flow against the post-PEF volume fraction
   ``x = (V - V_pef) / (FVC - V_pef)``::

       F(x) = PEF * g(x),  g(x) = knee(x) * (1 - x)**k * late(x)
       knee(x) = (1 - d) + d * exp(-x / knee_scale)          emphysema 'angle of collapse' (d from e)
       late(x) = 1 / (1 + c * s(x)**2),  s = clip((x - late_start) / (1 - late_start), 0, 1)
                                                             asthma low-volume concavity (c from h)

   and integrated as ``t(x) = t_h + t_r + (FVC - V_pef) / PEF * integral_0^x dx' / g(x')``.

Because ``g -> 0`` at ``x = 1`` the volume only approaches FVC; the series stops at the forced
expiratory time, as a real manoeuvre does. ``k`` (global concavity) is solved per person so the curve
has the target FEV1/FVC (:func:`solve_limb_exponent`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biobank.synth.config import CurveConfig
from signals.ukb3066 import SAMPLE_RATE_HZ

DT_S = 1.0 / SAMPLE_RATE_HZ


def knee_depth(emphysema: np.ndarray, cfg: CurveConfig) -> np.ndarray:
    """Fraction of PEF lost in the collapse right after the peak: saturating in the emphysema latent."""
    return cfg.knee_max * np.tanh(cfg.knee_per_emphysema * np.asarray(emphysema) / cfg.knee_max)


def late_concavity(hyperreactivity: np.ndarray, cfg: CurveConfig) -> np.ndarray:
    """Strength of the low-volume flow reduction, monotone in the hyper-reactivity latent."""
    return cfg.late_per_hr * np.logaddexp(0.0, np.asarray(hyperreactivity))


def limb_shape(x: np.ndarray, k: np.ndarray, d: np.ndarray, c: np.ndarray, cfg: CurveConfig) -> np.ndarray:
    """``g(x)`` = flow / PEF on the descending limb; ``x`` (n, G) or (G,), parameters (n, 1)."""
    knee = (1.0 - d) + d * np.exp(-x / cfg.knee_scale)
    s = np.clip((x - cfg.late_start) / (1.0 - cfg.late_start), 0.0, 1.0)
    return knee * (1.0 - x) ** k / (1.0 + c * s * s)


def _cumtrapz(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid along the last axis, starting at 0 (same length as ``y``)."""
    steps = 0.5 * (y[..., 1:] + y[..., :-1]) * np.diff(x, axis=-1)
    return np.concatenate([np.zeros(y.shape[:-1] + (1,)), np.cumsum(steps, axis=-1)], axis=-1)


def limb_grid(cfg: CurveConfig) -> np.ndarray:
    """Volume-fraction grid, dense near FVC where the flow vanishes and time stretches."""
    u = np.linspace(0.0, 1.0, cfg.grid_points)
    return (1.0 - (1.0 - u) ** 3) * (1.0 - 1e-6)


def solve_limb_exponent(ratio: np.ndarray, fvc: np.ndarray, pef: np.ndarray, rise: np.ndarray,
                        d: np.ndarray, c: np.ndarray, cfg: CurveConfig, iters: int = 32
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Find ``k`` so the nominal blow has ``FEV1/FVC = ratio`` (vectorised bisection on ln k).

    FEV1 is the volume 1 s after the back-extrapolated time zero, which for the sin^2 rise is
    ``t_r / 2``; so we need ``(FVC - V_pef)/PEF * I_k(x*) = 1 - t_r/2`` with
    ``x* = (ratio*FVC - V_pef) / (FVC - V_pef)`` and ``I_k(x) = integral_0^x dx'/g``, which increases
    with ``k``.

    Returns:
        ``(k, solved)``: ``solved`` is False where the target is outside what ``k_bounds`` can reach
        (k is then the nearest bound; the realised ratio differs from the target).
    """
    v_pef = pef * rise / 2.0
    dv = fvc - v_pef
    x_star = np.clip((ratio * fvc - v_pef) / dv, 1e-3, 1.0 - 1e-4)
    target = (1.0 - rise / 2.0) * pef / dv
    s = 1.0 - (1.0 - np.linspace(0.0, 1.0, 160)) ** 2
    xs = x_star[:, None] * s[None, :]

    def integral(k: np.ndarray) -> np.ndarray:
        g = limb_shape(xs, k[:, None], d[:, None], c[:, None], cfg)
        return _cumtrapz(1.0 / g, xs)[:, -1]

    lo = np.full(ratio.shape, np.log(cfg.k_bounds[0]))
    hi = np.full(ratio.shape, np.log(cfg.k_bounds[1]))
    f_lo, f_hi = integral(np.exp(lo)), integral(np.exp(hi))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = integral(np.exp(mid)) > target
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    k = np.exp(0.5 * (lo + hi))
    solved = (f_lo <= target) & (target <= f_hi)
    return k, solved


@dataclass(frozen=True)
class BlowParams:
    """Per-blow parameters (all arrays of length n_blows)."""

    fvc_l: np.ndarray
    pef_l_s: np.ndarray
    rise_s: np.ndarray
    k: np.ndarray
    knee: np.ndarray
    late: np.ndarray
    hesitation_s: np.ndarray  # 0 for a good start
    hesitation_l: np.ndarray  # volume exhaled during the hesitation (0 for a good start)
    fet_s: np.ndarray  # forced expiratory time: where the series stops
    lead_in: np.ndarray  # zero samples before the blow starts (int)
    cough_s: np.ndarray  # time of the cough, NaN for none
    cough_ml: np.ndarray  # size of the volume dip
    cough_width_s: np.ndarray  # Gaussian width of the dip


def synthesize_volumes(p: BlowParams, rng: np.random.Generator, cfg: CurveConfig) -> list[np.ndarray]:
    """Integer-mL cumulative volume series (index 0 = time 0 = 0 mL), one per blow.

    The series is non-decreasing (``np.maximum.accumulate`` after sensor noise) except where a cough
    dip was deliberately added.
    """
    x = limb_grid(cfg)
    f0 = np.where(p.hesitation_s > 0, 2.0 * p.hesitation_l / np.maximum(p.hesitation_s, 1e-9), 0.0)
    v_pef = p.hesitation_l + f0 * p.rise_s + (p.pef_l_s - f0) * p.rise_s / 2.0
    dv = p.fvc_l - v_pef
    g = limb_shape(x[None, :], p.k[:, None], p.knee[:, None], p.late[:, None], cfg)
    t_limb = _cumtrapz(1.0 / g, np.broadcast_to(x, g.shape)) * (dv / p.pef_l_s)[:, None]
    out = []
    for i in range(len(p.fvc_l)):
        n_samples = int(round(p.fet_s[i] / DT_S)) + int(p.lead_in[i]) + 1
        t = np.arange(n_samples) * DT_S - p.lead_in[i] * DT_S
        v = _phase_volume(t, i, p, f0, v_pef, dv, x, t_limb[i])
        v_ml = v * 1000.0 + cfg.noise_ml * rng.standard_normal(n_samples)
        v_ml = np.maximum.accumulate(np.maximum(v_ml, 0.0))
        v_ml[t <= 0] = 0.0
        if np.isfinite(p.cough_s[i]):
            v_ml = v_ml - p.cough_ml[i] * np.exp(-(((t - p.cough_s[i]) / p.cough_width_s[i]) ** 2))
        out.append(np.rint(np.maximum(v_ml, 0.0)).astype(np.int32))
    return out


def _phase_volume(t: np.ndarray, i: int, p: BlowParams, f0: np.ndarray, v_pef: np.ndarray,
                  dv: np.ndarray, x: np.ndarray, t_limb: np.ndarray) -> np.ndarray:
    """Volume (L) at times ``t`` for blow ``i`` across the hesitation, rise and limb phases."""
    th, tr, pef = p.hesitation_s[i], p.rise_s[i], p.pef_l_s[i]
    tc = np.clip(t, 0.0, None)
    hes = np.where(th > 0, f0[i] * np.minimum(tc, th) ** 2 / (2.0 * max(th, 1e-9)), 0.0)
    tau = np.clip(tc - th, 0.0, tr)
    rise = f0[i] * tau + (pef - f0[i]) * (tau / 2.0 - tr / (2.0 * np.pi) * np.sin(np.pi * tau / tr))
    limb = v_pef[i] + dv[i] * np.interp(tc - th - tr, t_limb, x, left=0.0, right=x[-1])
    return np.where(tc < th, hes, np.where(tc < th + tr, p.hesitation_l[i] + rise, limb))
