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
trained for. refine() keeps the hyper-latent z, and with it the means and the coding tables,
as the analysis gave it; refine_joint() (effort 3 since 0.17) moves z as well, and with it
the means and scales, adding the bits of z to the loss. Either way the symbols are coded
exactly like ordinary ones: files are ordinary files, and every decoder reads them.

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
# Since 0.17 effort 3 refines the hyper-latent too (refine_joint), at its own learning rate, in
# 60 steps. Same four photos, same measure, with the post-filter, real files (2026-12-08):
# effort 3 latents only (40 steps) -5.89 %, with the hyper-latent 40 steps -6.78 %, 60 steps
# -7.55 % (its lr 0.02) / about -7.8 % (0.05), 100 steps about -8.3 % (0.02); effort 2 latents
# only -4.29 %, with the hyper-latent -4.56 % (0.02) / about -4.8 % (0.05). On Kodak (every
# other image, benchmarks/rd.py) effort 3 went from -9.8 % (0.16) to -11.3 % against effort 1,
# while effort 2 with the hyper-latent gave -6.77 % against -6.79 % without: in 12 steps z
# barely moves, so effort 2 keeps the hyper-latent (and its cost) as it was.
EFFORT_STEPS = {1: 0, 2: 12, 3: 60}
LEARNING_RATE = {2: 0.01, 3: 0.005}
JOINT = {2: False, 3: True}  # efforts that refine the hyper-latent too (see refine_joint)
Z_LEARNING_RATE = 0.05
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
    dscale = np.float32(lam * 255.0 ** 2 * 2.0 / 3.0)  # d/dx of lam*255^2*MSE per pixel, in bits
    for it in range(steps):
        tau = max(_TAU_START * math.exp(-_TAU_DECAY * it / steps), _TAU_END)
        fl, pc, dpc = _soft_round(u - mu, tau, rng.gumbel(size=(2,) + u.shape).astype(np.float32))
        rq = fl + pc
        grad, _ = run_vjp(np.ascontiguousarray((rq + mu) * ig, dtype=np.float32), target, mask)
        g_r = dscale * grad * ig + _rate_grad(rq, sigma)
        _adam_step(u, (g_r * dpc).astype(np.float32), m1, m2, lr, it)
    return u


def _adam_step(x: np.ndarray, g: np.ndarray, m1: np.ndarray, m2: np.ndarray, lr: float, it: int):
    """One Adam step (beta 0.9, 0.999) on x at step it (from 0), in place, as are its moments."""
    b1, b2 = 0.9, 0.999
    m1 *= b1
    m1 += (1 - b1) * g
    m2 *= b2
    m2 += (1 - b2) * g * g
    mh = m1 / (1 - b1 ** (it + 1))
    vh = m2 / (1 - b2 ** (it + 1))
    x -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)


# -- the hyper-latent too (refine_joint, effort 3 since 0.17) ---------------------------------------
#
# Refining the latents alone leaves the hyper-latent z where the hyper-analysis put it, and with
# it the means and scales the latents are coded with. refine_joint moves z as well, by the same
# annealing: z is softly rounded like the latents (to integers, it has no mean), the hyper-
# synthesis h_s turns it into the means and log-scales (forward and gradient in numpy below; it
# runs at 1/16 and 1/64 of the image's resolution, so plain matrix products do: about 10 % of a
# step's time), and the rate of z is read from the coding tables of its channels. Measured in
# PyTorch first on four training photos (training/zrefine_probe.py, no post-filter, q25/q55;
# change of lambda*255^2*MSE + bpp): 40 steps of the latents alone -3.91 %, with z -4.86 %;
# 100 steps about -4.1 % / -5.7 % (seven of the eight points): z keeps gaining where the latents
# alone have levelled off.


def _im2col(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (9C, H*W): the 3x3 neighbourhoods (zero border) as columns."""
    c, h, w = x.shape
    xp = np.zeros((c, h + 2, w + 2), x.dtype)
    xp[:, 1:-1, 1:-1] = x
    cols = np.empty((c, 3, 3, h, w), x.dtype)
    for i in range(3):
        for j in range(3):
            cols[:, i, j] = xp[:, i:i + h, j:j + w]
    return cols.reshape(c * 9, h * w)


def _col2im(cols: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
    """The adjoint of _im2col: (9C, H*W) -> (C, H, W), each column added back where it came from."""
    cols = cols.reshape(c, 3, 3, h, w)
    xp = np.zeros((c, h + 2, w + 2), cols.dtype)
    for i in range(3):
        for j in range(3):
            xp[:, i:i + h, j:j + w] += cols[:, i, j]
    return xp[:, 1:-1, 1:-1]


def _shuffle(x: np.ndarray, r: int) -> np.ndarray:
    """DepthToSpace, CRD order: (C r^2, H, W) -> (C, rH, rW)."""
    c, h, w = x.shape
    return x.reshape(c // (r * r), r, r, h, w).transpose(0, 3, 1, 4, 2).reshape(c // (r * r), h * r, w * r)


def _unshuffle(x: np.ndarray, r: int) -> np.ndarray:
    """The inverse (and adjoint) of _shuffle."""
    c, h, w = x.shape
    return x.reshape(c, h // r, r, w // r, r).transpose(0, 2, 4, 1, 3).reshape(c * r * r, h // r, w // r)


class HyperSynthesis:
    """The hyper-synthesis in numpy: the hyper-latent (N, zh, zw) to the means and log-scales
    (M, 4 zh, 4 zw) of the gained latents, and its vector-Jacobian product.

    trunk: [(weight (O, C, 3, 3), bias, pixel-shuffle factor)], each followed by a ReLU;
    mean, scale: the last convolution's two heads (weight, bias); log_lo, log_hi: the range the
    log-scales are clamped to (that of the coding tables)."""

    def __init__(self, trunk, mean, scale, log_lo: float, log_hi: float, dtype=np.float32):
        self.dtype = dtype
        self.trunk = [(np.ascontiguousarray(w.reshape(w.shape[0], -1), dtype), b.astype(dtype), r)
                      for w, b, r in trunk]
        w = np.concatenate([mean[0], scale[0]])
        self.head = (np.ascontiguousarray(w.reshape(w.shape[0], -1), dtype),
                     np.concatenate([mean[1], scale[1]]).astype(dtype))
        self.latents = mean[0].shape[0]
        self.log_lo, self.log_hi = float(log_lo), float(log_hi)

    def forward(self, z: np.ndarray):
        """(mu, s, cache): means and clamped log-scales, (M, H, W) each, and what vjp needs."""
        cache = []
        x = z.astype(self.dtype)
        for w, b, r in self.trunk:
            c, h, wd = x.shape
            cols = _im2col(x)
            pre = _shuffle((w @ cols + b[:, None]).reshape(-1, h, wd), r)
            cache.append((cols.shape, c, h, wd, r, pre > 0))
            x = np.maximum(pre, 0)
        c, h, wd = x.shape
        w, b = self.head
        out = (w @ _im2col(x) + b[:, None]).reshape(-1, h, wd)
        cache.append((c, h, wd))
        m = self.latents
        s_raw = out[m:]
        s = np.clip(s_raw, self.log_lo, self.log_hi)
        return out[:m], s, (cache, (s_raw >= self.log_lo) & (s_raw <= self.log_hi))

    def vjp(self, cache, g_mu: np.ndarray, g_s: np.ndarray) -> np.ndarray:
        """The gradient with respect to z of <g_mu, mu> + <g_s, s>."""
        layers, inside = cache
        c, h, wd = layers[-1]
        g = np.concatenate([g_mu, np.where(inside, g_s, 0)]).astype(self.dtype).reshape(2 * self.latents, -1)
        x = _col2im(self.head[0].T @ g, c, h, wd)
        for (w, _, _), (_, c, h, wd, r, active) in zip(reversed(self.trunk), reversed(layers[:-1])):
            g = _unshuffle(np.where(active, x, 0), r).reshape(w.shape[0], -1)
            x = _col2im(w.T @ g, c, h, wd)
        return x


class HyperRate:
    """Bits of each hyper-latent value by the coding tables' distributions (the pmfs the tables
    were designed from), per channel, linear between integers; values outside a table cost 40
    bits and one more per step further out, so the gradient points back in."""

    OUTSIDE = 40.0

    def __init__(self, pmf, pmf_off, pmf_vmin, z_offset, z_group):
        rows = []
        for c in range(len(z_offset)):
            g = int(z_group[c])
            p = np.asarray(pmf[pmf_off[g]:pmf_off[g + 1]], np.float64)
            # symbol s = z - z_offset[c] sits at index s - pmf_vmin[g]
            rows.append((int(z_offset[c]) + int(pmf_vmin[g]), -np.log2(np.maximum(p, 1e-12))))
        n = max(len(b) for _, b in rows)
        self.lo = np.array([lo for lo, _ in rows], np.int64)
        self.bits = np.full((len(rows), n + 2), self.OUTSIDE)
        for c, (_, b) in enumerate(rows):
            self.bits[c, 1:1 + len(b)] = np.minimum(b, self.OUTSIDE)
        self.n = n

    def __call__(self, fl: np.ndarray, p: np.ndarray):
        """(bits, d bits / d p) of the soft values fl + p (fl integer-valued, (N, h, w), p in [0, 1])."""
        idx = fl.astype(np.int64) - self.lo[:, None, None] + 1  # 1 + index into the table
        below = np.clip(-idx, 0, None)
        above = np.clip(idx - self.n, 0, None)
        i0 = np.clip(idx, 0, self.n + 1)
        i1 = np.clip(idx + 1, 0, self.n + 1)
        rows = np.arange(len(self.lo))[:, None, None]
        b0 = self.bits[rows, i0] + below + above
        b1 = self.bits[rows, i1] + np.clip(-(idx + 1), 0, None) + np.clip(idx + 1 - self.n, 0, None)
        return float(((1 - p) * b0 + p * b1).sum()), (b1 - b0).astype(np.float32)


def _rate_grad_log_scale(r: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """d/d(ln s) of -log2 P(r) (the bin mass of _rate_grad's Gaussian)."""
    ar = np.abs(r)
    hi = (0.5 - ar) / sigma
    lo = (-0.5 - ar) / sigma
    p = np.maximum(_ndtr(hi) - _ndtr(lo), 1e-30)
    c = 1.0 / math.sqrt(2 * math.pi)
    dp = (lo * np.exp(-0.5 * lo * lo) - hi * np.exp(-0.5 * hi * hi)) * c  # dP / d ln s
    g = -dp / (p * _LN2)
    # far in the tail -log P ~ hi^2 / 2: its slope in ln s is -hi^2
    return np.where(hi < -6.0, -hi * hi / _LN2, g)


def _soft_round(d: np.ndarray, tau: float, gum: np.ndarray):
    """SGA's soft rounding of d at temperature tau with Gumbel noise gum (2, *d.shape): (floor,
    weight of rounding up, d weight / d d). The logits of rounding down and up, plus the noise,
    go through a two-way softmax; the derivative runs through the soft weight only (the floor
    is piecewise constant)."""
    fl = np.floor(d)
    a = d - fl  # in [0, 1)
    ac = np.minimum(a, 1 - _EPS)
    bc = np.minimum(1 - a, 1 - _EPS)
    logit = (np.arctanh(ac) - np.arctanh(bc)) / tau
    pc = 1.0 / (1.0 + np.exp(-np.clip(logit + gum[1] - gum[0], -60.0, 60.0)))
    dlogit = (np.where(a < 1 - _EPS, 1.0 / (1.0 - ac * ac), 0.0)
              + np.where(1 - a < 1 - _EPS, 1.0 / (1.0 - bc * bc), 0.0)) / tau
    return fl, pc, pc * (1.0 - pc) * dlogit


def refine_joint(run_vjp, y_g: np.ndarray, z: np.ndarray, hyper: HyperSynthesis, zrate: HyperRate,
                 igain: np.ndarray, target: np.ndarray, mask: np.ndarray, lam: float, steps: int,
                 lr: float, zlr: float, seed: int = 0, free: np.ndarray | None = None,
                 offset: tuple = (0, 0)):
    """Refines the gained latents y_g (1, M, h, w) and the hyper-latent z (1, N, zh, zw, before
    rounding) together; returns (latents, hyper-latent), both continuous: the file codes
    rint(hyper-latent) and round(latents - mu) with mu from it.

    In tiles, z is the hyper-latent under the tile's window and a margin (the hyper-synthesis's
    reach), free marks the elements this tile may move (the others stay), and y_g's latents start
    ``offset`` (rows, columns) latents into the hyper-synthesis's output."""
    rng = np.random.default_rng(seed)
    ig = igain.reshape(1, -1, 1, 1).astype(np.float32)
    u = y_g.astype(np.float32, copy=True)
    v = z.astype(np.float32, copy=True)
    adam = [[np.zeros_like(u), np.zeros_like(u)], [np.zeros_like(v), np.zeros_like(v)]]
    dscale = np.float32(lam * 255.0 ** 2 * 2.0 / 3.0)
    hy, wy = u.shape[2:]
    oy, ox = offset
    win = (slice(None), slice(oy, oy + hy), slice(ox, ox + wy))
    full = (hyper.latents,) + tuple(4 * n for n in v.shape[2:])
    if oy + hy > full[1] or ox + wy > full[2]:
        raise ValueError("the latents reach past the hyper-latent's window")
    keep = np.ones(v.shape, np.float32) if free is None else free.astype(np.float32)
    for it in range(steps):
        tau = max(_TAU_START * math.exp(-_TAU_DECAY * it / steps), _TAU_END)
        zf, zp, zd = _soft_round(v[0], tau, rng.gumbel(size=(2,) + v.shape[1:]).astype(np.float32))
        mu_full, s_full, cache = hyper.forward(zf + zp)
        mu, s = mu_full[win][None], s_full[win][None]
        sigma = np.exp(s)
        fl, pc, dpc = _soft_round(u - mu, tau, rng.gumbel(size=(2,) + u.shape).astype(np.float32))
        rq = fl + pc
        grad, _ = run_vjp(np.ascontiguousarray((rq + mu) * ig, dtype=np.float32), target, mask)
        g_d = dscale * grad * ig  # d distortion / d y_hat
        g_r = g_d + _rate_grad(rq, sigma)  # d loss / d rq
        g_u = (g_r * dpc).astype(np.float32)
        g_mu = np.zeros(full, np.float32)
        g_s = np.zeros(full, np.float32)
        g_mu[win] = (g_d - g_u)[0]  # y_hat = rq + mu, and rq depends on u - mu
        g_s[win] = _rate_grad_log_scale(rq, sigma)[0]
        g_z = hyper.vjp(cache, g_mu, g_s)
        _, g_zr = zrate(zf, zp)
        g_v = ((g_z + g_zr) * zd)[None].astype(np.float32) * keep
        _adam_step(u, g_u, *adam[0], lr, it)
        _adam_step(v, g_v, *adam[1], zlr, it)
    return u, v
