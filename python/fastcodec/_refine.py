"""Encoder-side latent refinement (``effort`` 2 and 3): better symbols for the same decoder.

The analysis transform predicts latents in one pass; for any given image, latents that lower
lambda * distortion + rate further exist (the "amortisation gap" of learned codecs). This
module finds them by stochastic Gumbel annealing (SGA, Yang et al. 2020, "Improving Inference
for Neural Image Compression"): each latent is softly rounded to its lower or upper integer
(relative to the hyperprior's mean) with probabilities that harden over the steps, and Adam
follows the gradient of

    lambda * 255^2 * MSE(g_s(y_hat), x) + bits(y_hat)

where the bits are those of the Gaussian with the scale of each element's coding table (the
tables the file is actually coded with) and lambda is the trade-off the file's quality was
trained for. The hyper-latent z, and with it the means and the coding tables, stays as the
analysis gave it, so the refined symbols are coded exactly like ordinary ones: files are
ordinary files, and every decoder reads them.

The distortion gradient runs through the model's synthesis gradient graph (synthesis_vjp.onnx,
written by training/refine_graph.py); the soft rounding, the rate gradient and Adam are
elementwise numpy here. The noise comes from a fixed seed, so encoding stays deterministic.
"""
from __future__ import annotations

import math

import numpy as np

# Steps and Adam learning rate per effort level (effort 1 does not refine), checked on four
# training photos (never Kodak) at q25/q55, real files, mean change of lambda*255^2*MSE + bpp
# (2026-11-28): 12 steps at lr 0.01 -4.0 % (lr 0.02 -4.0 %, lr 0.005 -2.5 %); 40 steps at
# lr 0.005 -5.6 % (lr 0.01 -5.6 %). BD-rate on Kodak against effort 1 (benchmarks/rd.py):
# effort 2 -7.1 %, effort 3 -10.0 % (0.5, two-scale post-filter; 0.4: -6.3 %, -8.8 %).
EFFORT_STEPS = {1: 0, 2: 12, 3: 40}
LEARNING_RATE = {2: 0.01, 3: 0.005}
_TAU_START, _TAU_END, _TAU_DECAY = 0.5, 0.05, 6.0  # temperature 0.5 * exp(-6 t / steps), floored
_LN2 = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)
_EPS = 1e-5


def _ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26 for erfc, absolute error < 1.5e-7),
    written so that both tails keep their relative precision to within a few digits."""
    a = np.abs(x) * _SQRT_HALF
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    half_erfc = 0.5 * poly * np.exp(-a * a)  # = P(N > |x|)
    return np.where(x < 0, half_erfc, 1.0 - half_erfc)


def _rate_grad(r: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """d/dr of -log2 P(r), P(r) = Phi((0.5 - |r|)/s) - Phi((-0.5 - |r|)/s) (the bin of width 1
    around r of a zero-mean Gaussian of scale s)."""
    ar = np.abs(r)
    hi = (0.5 - ar) / sigma
    lo = (-0.5 - ar) / sigma
    p = np.maximum(_ndtr(hi) - _ndtr(lo), 1e-30)
    # dP/d|r| = (-phi(hi) + phi(lo)) / s
    dp = (np.exp(-0.5 * lo * lo) - np.exp(-0.5 * hi * hi)) / sigma * (1.0 / math.sqrt(2 * math.pi))
    g = -dp / (p * _LN2)
    # far in the tail (P below 1e-9) the ratio is 0/0 in floating point; there -log P grows like
    # hi^2 / 2, so its slope is -hi / s (the inverse Mills ratio, to within 1 / hi^2)
    tail = hi < -6.0
    g = np.where(tail, -hi / (sigma * _LN2), g)
    return np.sign(r) * g


def refine(run_vjp, y_g: np.ndarray, mu: np.ndarray, sigma: np.ndarray, igain: np.ndarray,
           target: np.ndarray, mask: np.ndarray, lam: float, steps: int, lr: float,
           seed: int = 0) -> np.ndarray:
    """Refined gained latents (same shape as y_g, float32): round(result - mu) are the symbols.

    run_vjp(y, x, m) -> (grad, sse): the synthesis gradient graph. y_g, mu, sigma: (1, M, h, w);
    igain: (M,); target (1, 3, 16h, 16w) in [0, 1]; mask (1, 1, 16h, 16w)."""
    if steps <= 0:
        return y_g
    rng = np.random.default_rng(seed)
    ig = igain.reshape(1, -1, 1, 1).astype(np.float32)
    sigma = sigma.astype(np.float32)
    u = y_g.astype(np.float32, copy=True)
    m1 = np.zeros_like(u)
    m2 = np.zeros_like(u)
    b1, b2 = 0.9, 0.999
    dscale = np.float32(lam * 255.0 ** 2 * 2.0 / 3.0)  # d/dx of lam*255^2*MSE per pixel, in bits
    for it in range(steps):
        tau = max(_TAU_START * math.exp(-_TAU_DECAY * it / steps), _TAU_END)
        d = u - mu
        fl = np.floor(d)
        a = d - fl  # in [0, 1)
        ac = np.minimum(a, 1 - _EPS)
        bc = np.minimum(1 - a, 1 - _EPS)
        # logits of rounding down / up, Gumbel noise, then a two-way softmax
        logit = (np.arctanh(ac) - np.arctanh(bc)) / tau
        gum = rng.gumbel(size=(2,) + u.shape).astype(np.float32)
        pc = 1.0 / (1.0 + np.exp(-np.clip(logit + gum[1] - gum[0], -60.0, 60.0)))
        rq = fl + pc
        grad, _ = run_vjp(np.ascontiguousarray((rq + mu) * ig, dtype=np.float32), target, mask)
        g_r = dscale * grad * ig + _rate_grad(rq, sigma)
        # d rq / d u: through the soft weight only (floor is piecewise constant)
        dlogit = (np.where(a < 1 - _EPS, 1.0 / (1.0 - ac * ac), 0.0)
                  + np.where(1 - a < 1 - _EPS, 1.0 / (1.0 - bc * bc), 0.0)) / tau
        g = (g_r * pc * (1.0 - pc) * dlogit).astype(np.float32)
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        mh = m1 / (1 - b1 ** (it + 1))
        vh = m2 / (1 - b2 ** (it + 1))
        u -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return u
