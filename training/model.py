"""Mean-scale hyperprior with gain units (one model for all rates).

Architecture (Minnen et al. 2018 without the autoregressive context model,
variable rate by gain units as in Cui et al. 2021):

  g_a : x -> y            4 x (conv5x5 stride 2), simplified GDN between
  gain: y_g = y * g(q)    per-channel gain, q continuous between trained levels
  h_a : y_g -> z          conv3x3, conv5x5/2, conv5x5/2 with ReLU
  h_s : z_hat -> mu,sigma sub-pixel (conv3x3 + PixelShuffle) x2, conv3x3
  quant: r = round(y_g - mu), y_hat_g = r + mu
  g_s : y_hat_g * ig(q) -> x_hat   sub-pixel upsampling, simplified IGDN

Sub-pixel convolutions replace transposed convolutions because onnxruntime's
ConvTranspose is markedly slower on CPU and needs more memory.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SCALE_MIN = 0.11
SCALE_MAX = 64.0
# Rate-distortion trade-offs of the trained gain levels (loss = lambda*255^2*MSE + bpp).
# rate-distortion trade-offs of the gain levels (quality 1 ... 100 spans them log-linearly).
# Weights trained before __lambdas__ was stored used LAMBDAS_V1; load_weights() maps their
# per-level gains onto LAMBDAS (copying shared levels, extrapolating new ones in log lambda).
# Session 6 added a 13th level (lambda 0.75) so that quality 100 reaches the 2 bpp end of the
# wanted range on Kodak (hp2's top level, lambda 0.30, stopped at 1.81 bpp).
LAMBDAS = [0.0004, 0.0008, 0.0016, 0.0028, 0.0050, 0.0088, 0.0156, 0.0276, 0.0488, 0.0864, 0.16, 0.30, 0.75]
LAMBDAS_V1 = [0.0016, 0.0028, 0.0050, 0.0088, 0.0156, 0.0276, 0.0488, 0.0864]
LAMBDAS_V2 = LAMBDAS[:12]  # hp2
KNOWN_LADDERS = {len(LAMBDAS_V1): LAMBDAS_V1, len(LAMBDAS_V2): LAMBDAS_V2, len(LAMBDAS): LAMBDAS}


def bf16_fast(device_type: str = "cpu") -> bool:
    """Whether bfloat16 autocast pays on this device. GPUs: yes. CPUs: only with native bf16
    instructions (AVX512_BF16 or AMX). Without them PyTorch emulates bf16 and is far slower than
    fp32: measured 2026-11-28 on an AMD EPYC (Zen 3, AVX2 only), the full model's forward at
    batch 4 x 256^2 took 116 s in bf16 against 0.96 s in fp32 (0.8 vs 1.8 s per step the other
    way round on the AVX-512 machines of the earlier sessions)."""
    if device_type != "cpu":
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: str, device_type: str = "cpu"):
    """--precision auto|bf16|fp32 -> the autocast dtype, or None for plain fp32."""
    if precision == "auto":
        precision = "bf16" if bf16_fast(device_type) else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def autocast(dtype, device_type: str = "cpu"):
    """The autocast context for autocast_dtype()'s answer (None: autocast off, plain fp32)."""
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def load_weights(path):
    """A weights npz (models/<name>.weights.npz or train.py --weights-out): float32 state dict,
    total training steps and architecture (files written before the key existed hold 'hp')."""
    import numpy as np

    with np.load(path) as w:
        sd = {k: torch.from_numpy(w[k].astype(np.float32)) for k in w.files if not k.startswith("__")}
        steps = int(w["__total_steps__"]) if "__total_steps__" in w.files else 0
        arch = str(w["__arch__"]) if "__arch__" in w.files else "hp"
        lambdas = [float(v) for v in w["__lambdas__"]] if "__lambdas__" in w.files else LAMBDAS_V1
    for key in ("log_gain", "log_igain"):
        if key in sd:
            sd[key] = remap_levels(sd[key], lambdas, LAMBDAS)
    return sd, steps, arch


def dims_of(sd):
    """(N, M) of a state dict: the analysis's channels and latent channels."""
    w = sd["g_a.6.weight"]
    return int(w.shape[1]), int(w.shape[0])


def remap_levels(table, src, dst):
    """Per-level log gains (levels, M) trained for lambdas src, mapped onto lambdas dst: piecewise
    linear in log lambda through the trained levels, extended linearly beyond the end ones."""
    if len(src) != table.shape[0]:
        raise ValueError(f"{table.shape[0]} gain levels but {len(src)} lambdas")
    if list(src) == list(dst):
        return table
    xs = [math.log(v) for v in src]
    rows = []
    for lam in dst:
        x = math.log(lam)
        k = min(max(sum(1 for v in xs if v <= x) - 1, 0), len(xs) - 2)
        t = (x - xs[k]) / (xs[k + 1] - xs[k])
        rows.append((1 - t) * table[k] + t * table[k + 1])
    return torch.stack(rows)


class LowerBound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return torch.clamp(x, min=bound)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (g < 0)
        return g * pass_through.to(g.dtype), None


class GDN(nn.Module):
    """Simplified (I)GDN of Johnston et al. 2019: y = x / (beta + gamma * |x|)."""

    def __init__(self, ch: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(ch))
        self.gamma = nn.Parameter(0.1 * torch.eye(ch).view(ch, ch, 1, 1))

    def effective(self):
        if not self.training:  # inference/export: a plain clamp (no custom autograd function)
            return torch.clamp(self.beta, min=1e-3), torch.clamp(self.gamma, min=0.0)
        beta = LowerBound.apply(self.beta, 1e-3)
        gamma = LowerBound.apply(self.gamma, 0.0)
        return beta, gamma

    def forward(self, x):
        beta, gamma = self.effective()
        norm = F.conv2d(torch.abs(x), gamma.to(x.dtype), beta.to(x.dtype))
        return x * norm if self.inverse else x / norm


def conv(cin, cout, k=5, s=2):
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)


class SubPixelUp(nn.Sequential):
    def __init__(self, cin, cout, k=3, r=2):
        super().__init__(nn.Conv2d(cin, cout * r * r, k, padding=k // 2), nn.PixelShuffle(r))


class Analysis(nn.Sequential):
    def __init__(self, N, M, arch="hp"):
        if arch == "lite":  # fewer channels and a 3x3 kernel at the two highest resolutions
            n1 = N * 2 // 3
            super().__init__(conv(3, n1), GDN(n1), conv(n1, N, 3), GDN(N), conv(N, N), GDN(N), conv(N, M))
        else:
            super().__init__(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))


class Synthesis(nn.Sequential):
    def __init__(self, N, M, arch="hp"):
        # channels at 1/4 and 1/2 resolution
        n2, n1 = (N * 2 // 3, N // 2) if arch == "lite" else (N, N)
        super().__init__(
            SubPixelUp(M, N), GDN(N, True), SubPixelUp(N, n2), GDN(n2, True),
            SubPixelUp(n2, n1), GDN(n1, True), SubPixelUp(n1, 3),
        )


ARCHS = {
    # network time at 768x512 on 2 cores (onnxruntime, analysis / synthesis): hp 103 / 165 ms,
    # lite 54 / 75 ms (measured with untrained weights; the entropy model is the same)
    "hp": "4 x conv5x5/2 (N channels), sub-pixel synthesis with N channels throughout",
    "lite": "analysis: 2N/3 channels at 1/2 resolution and a 3x3 kernel into 1/4; synthesis: "
            "2N/3 channels at 1/4 and N/2 at 1/2 resolution",
}


class HyperAnalysis(nn.Sequential):
    def __init__(self, N, M):
        super().__init__(conv(M, N, 3, 1), nn.ReLU(), conv(N, N), nn.ReLU(), conv(N, N))


class HyperSynthesis(nn.Sequential):
    def __init__(self, N, M):
        super().__init__(
            SubPixelUp(N, N), nn.ReLU(), SubPixelUp(N, N * 3 // 2), nn.ReLU(),
            nn.Conv2d(N * 3 // 2, 2 * M, 3, padding=1),
        )


class FactorizedPrior(nn.Module):
    """Per-channel learned CDF (Balle et al. 2018, appendix 6.1) for the hyper-latent z."""

    def __init__(self, ch: int, filters=(3, 3, 3), init_scale=10.0):
        super().__init__()
        filters = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1 / (len(filters) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) - 1):
            init = math.log(math.expm1(1 / scale / filters[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((ch, filters[i + 1], filters[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(ch, filters[i + 1], 1) - 0.5))
            if i < len(filters) - 2:
                self.factors.append(nn.Parameter(torch.zeros(ch, filters[i + 1], 1)))

    def logits_cdf(self, x):
        # x: (C, 1, K)
        for i in range(len(self.matrices)):
            x = torch.matmul(F.softplus(self.matrices[i]), x) + self.biases[i]
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z):
        # z: (B, C, H, W) -> probability mass of the unit bin around each value
        B, C, H, W = z.shape
        v = z.permute(1, 0, 2, 3).reshape(C, 1, -1)
        lo = self.logits_cdf(v - 0.5)
        hi = self.logits_cdf(v + 0.5)
        sign = -torch.sign(lo + hi).detach()
        p = torch.abs(torch.sigmoid(sign * hi) - torch.sigmoid(sign * lo))
        return p.reshape(C, B, H, W).permute(1, 0, 2, 3)

    @torch.no_grad()
    def pmf_table(self, lo: int, hi: int):
        """Probability of each integer in [lo, hi] per channel: (C, hi-lo+1), float64."""
        C = self.matrices[0].shape[0]
        v = torch.arange(lo, hi + 1, dtype=torch.float32).view(1, 1, -1).repeat(C, 1, 1)
        lower = self.logits_cdf(v - 0.5)
        upper = self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper)
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.squeeze(1).double()


def image_bits(lik_y, lik_z):
    """Bits per image, -sum log2 of the likelihoods (fp32), lower-bounded with gradient
    pass-through: an element stuck below the bound still learns."""
    return -(torch.log2(LowerBound.apply(lik_y.float(), 1e-9)).sum((1, 2, 3))
             + torch.log2(LowerBound.apply(lik_z.float(), 1e-9)).sum((1, 2, 3)))


def gaussian_likelihood(r, scale):
    """P(round(x) = r) for x ~ N(0, scale), r is the (noisy or rounded) residual y - mu."""
    scale = torch.clamp(scale, min=SCALE_MIN)
    r = torch.abs(r)
    upper = torch.special.ndtr((0.5 - r) / scale)
    lower = torch.special.ndtr((-0.5 - r) / scale)
    return upper - lower


class HyperpriorCodec(nn.Module):
    def __init__(self, N=128, M=192, levels=len(LAMBDAS), arch="hp"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
        self.N, self.M, self.arch = N, M, arch
        self.g_a = Analysis(N, M, arch)
        self.g_s = Synthesis(N, M, arch)
        self.h_a = HyperAnalysis(N, M)
        self.h_s = HyperSynthesis(N, M)
        self.prior = FactorizedPrior(N)
        # log-domain gains per level, so the interpolation for continuous quality is exponential
        self.log_gain = nn.Parameter(torch.zeros(levels, M))
        self.log_igain = nn.Parameter(torch.zeros(levels, M))
        with torch.no_grad():
            g = torch.tensor([math.log(l / LAMBDAS[len(LAMBDAS) // 2]) / 4 for l in LAMBDAS])
            self.log_gain.copy_(g.view(-1, 1).expand(-1, M))
            self.log_igain.copy_(-g.view(-1, 1).expand(-1, M))

    def gains(self, level: torch.Tensor):
        """level: (B,) float in [0, levels-1]; returns gain and inverse gain (B, M, 1, 1)."""
        lo = torch.clamp(level.floor().long(), 0, self.log_gain.shape[0] - 2)
        t = (level - lo.float()).view(-1, 1)
        g = (1 - t) * self.log_gain[lo] + t * self.log_gain[lo + 1]
        ig = (1 - t) * self.log_igain[lo] + t * self.log_igain[lo + 1]
        return torch.exp(g)[..., None, None], torch.exp(ig)[..., None, None]

    def hyper_params(self, z_hat):
        mu, log_sigma = self.hyper_log_params(z_hat)
        return mu, torch.exp(log_sigma)

    def hyper_log_params(self, z_hat):
        p = self.h_s(z_hat).float()
        mu, s = p.chunk(2, dim=1)
        # scale parameterised in log domain for a well-conditioned output range
        return mu, torch.clamp(s, math.log(SCALE_MIN), math.log(SCALE_MAX))

    def forward(self, x, level):
        return self.code(self.g_a(x).float(), level)

    def code_hard(self, y, level):
        """The codec's own quantisation of the latents y (B, M, h, w) at the given levels: the
        hyper-latent and the residuals round(y * gain - mu) rounded (no noise, no straight-through
        estimator). Returns the synthesis input (y_hat * inverse gain) and the bits per image by
        the model's own likelihoods."""
        r, mu, log_sigma, igain, z_hat = self.quantise(y, level)
        return (r + mu) * igain, image_bits(gaussian_likelihood(r, torch.exp(log_sigma)),
                                            self.prior.likelihood(z_hat))

    def quantise(self, y, level):
        """The hard quantisation of code_hard, in parts: the integer residuals r, the means and
        ln scales of the gained latents, the inverse gain, and the rounded hyper-latent."""
        gain, igain = self.gains(level)
        y = y * gain
        z_hat = torch.round(self.h_a(y).float())
        mu, log_sigma = self.hyper_log_params(z_hat)
        return torch.round(y - mu), mu, log_sigma, igain, z_hat

    def code(self, y, level):
        """Everything after the analysis transform: the latents y (B, M, h, w) at the given
        levels through the hyperprior and the synthesis; returns x_hat and the likelihoods."""
        gain, igain = self.gains(level)
        y = y * gain
        z = self.h_a(y).float()
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        z_hat = torch.round(z) - z.detach() + z  # STE into the hyper-synthesis
        mu, sigma = self.hyper_params(z_hat)
        # rate with additive noise, synthesis input with straight-through rounding (mixed quantisation)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        # y + (rounding offset): equal to round(y - mu) + mu, but stays within 0.5 of y even when mu
        # is so large that float32 loses integer precision (which once let a diverging hyperprior
        # feed garbage to the synthesis); gradients as a straight-through estimator to y only
        y_ste = y + (torch.round(y - mu) - (y - mu)).detach()
        lik_y = gaussian_likelihood(y_noisy - mu, sigma)
        with torch.autocast(y.device.type, enabled=False):  # the z likelihoods stay in fp32
            lik_z = self.prior.likelihood(z_noisy.float())
        x_hat = self.g_s(y_ste * igain).float()
        return x_hat, lik_y, lik_z


def widen_latent(sd, M_new, seed=0):
    """hp2's state dict widened from M to M_new latent channels; returns (state dict, masks of the
    new elements per tensor). At the start the codec computes what hp2 computes: the new latents
    are tiny, so they round to zero, and the new synthesis columns then see zeros."""
    g = torch.Generator().manual_seed(seed)
    M = sd["g_a.6.weight"].shape[0]
    k = M_new - M
    out, masks = dict(sd), {}

    def grow(name, dim, new):
        old = sd[name]
        out[name] = torch.cat([old, new.to(old.dtype)], dim)
        mask = torch.zeros_like(out[name])
        idx = [slice(None)] * old.dim()
        idx[dim] = slice(old.shape[dim], None)
        mask[tuple(idx)] = 1
        masks[name] = mask

    w = sd["g_a.6.weight"]
    grow("g_a.6.weight", 0, 0.01 * w.std() * torch.randn((k,) + w.shape[1:], generator=g))
    grow("g_a.6.bias", 0, torch.zeros(k))
    w = sd["h_a.0.weight"]
    grow("h_a.0.weight", 1, torch.zeros(w.shape[0], k, *w.shape[2:]))
    # g_s's first sub-pixel conv: (4N, M, 3, 3) -> (4N, M_new, 3, 3); small, so gradients reach
    # the new latents through the straight-through rounding
    w = sd["g_s.0.0.weight"]
    grow("g_s.0.0.weight", 1, 0.1 * w.std() * torch.randn(w.shape[0], k, *w.shape[2:], generator=g))
    # h_s's last conv outputs [mu (M), log sigma (M)]: insert k zero-mean rows after each half
    w, b = sd["h_s.4.weight"], sd["h_s.4.bias"]
    zw = torch.zeros(k, *w.shape[1:])
    out["h_s.4.weight"] = torch.cat([w[:M], zw, w[M:], zw])
    out["h_s.4.bias"] = torch.cat([b[:M], torch.zeros(k), b[M:], torch.full((k,), math.log(0.15))])
    rows = torch.zeros(2 * M_new)
    rows[M:M_new] = 1
    rows[M_new + M:] = 1
    masks["h_s.4.weight"] = rows.view(-1, 1, 1, 1).expand_as(out["h_s.4.weight"]).clone()
    masks["h_s.4.bias"] = rows
    for key in ("log_gain", "log_igain"):
        t = sd[key]
        grow(key, 1, t.mean(1, keepdim=True).expand(-1, k))
    return out, masks


def widen_transforms(sd, N_new, seed=0):
    """The analysis and synthesis of a state dict widened from N to N_new hidden channels (the
    hyper-transforms keep theirs); returns (state dict of g_a.* and g_s.* only, masks of the new
    elements). Function-preserving: every new hidden channel gets random incoming weights of the
    old ones' scale and its own (I)GDN term (beta 1, gamma 0.1 on the diagonal, no cross terms),
    but zero outgoing weights, so the transforms compute what they computed; the outgoing weights
    then learn first (their gradient sees the new channels' activations)."""
    g = torch.Generator().manual_seed(seed)
    out, masks = {}, {}

    def put(name, new, mask):
        out[name], masks[name] = new, mask

    def grow_rows(name, k, shuffle=1):
        # output channels: a PixelShuffle(r) layer (shuffle = r * r) groups them by r * r
        w, b = out.get(name + ".weight", sd[name + ".weight"]), sd[name + ".bias"]
        neww = sd[name + ".weight"].std() * torch.randn((k * shuffle,) + w.shape[1:], generator=g)
        W = torch.cat([w, neww.to(w.dtype)], 0)
        m = torch.zeros_like(W)
        if name + ".weight" in masks:  # its new input columns, grown before
            m[:w.shape[0]] = masks[name + ".weight"]
        m[w.shape[0]:] = 1
        put(name + ".weight", W, m)
        B = torch.cat([b, torch.zeros(k * shuffle)])
        mb = torch.zeros_like(B)
        mb[b.shape[0]:] = 1
        put(name + ".bias", B, mb)

    def grow_cols(name, k):
        w = out.get(name + ".weight", sd[name + ".weight"])
        W = torch.cat([w, torch.zeros(w.shape[0], k, *w.shape[2:])], 1)
        m = torch.zeros_like(W)
        m[:, w.shape[1]:] = 1
        old = masks.get(name + ".weight")
        if old is not None:
            m[:, :w.shape[1]] = old
        put(name + ".weight", W, m)
        if name + ".bias" not in out:
            out[name + ".bias"] = sd[name + ".bias"]

    def grow_gdn(name, k):
        beta, gamma = sd[name + ".beta"], sd[name + ".gamma"]
        n = beta.shape[0]
        B = torch.cat([beta, torch.ones(k)])
        G = torch.zeros(n + k, n + k, 1, 1)
        G[:n, :n] = gamma
        G[n:, n:, 0, 0] = 0.1 * torch.eye(k)
        mb, mg = torch.zeros_like(B), torch.ones_like(G)
        mb[n:] = 1
        mg[:n, :n] = 0
        put(name + ".beta", B, mb)
        put(name + ".gamma", G, mg)

    N = sd["g_a.0.weight"].shape[0]
    k = N_new - N
    if k <= 0:
        raise ValueError(f"N_new must exceed the current {N} channels, got {N_new}")
    for conv_, gdn, nxt in (("g_a.0", "g_a.1", "g_a.2"), ("g_a.2", "g_a.3", "g_a.4"), ("g_a.4", "g_a.5", "g_a.6")):
        grow_rows(conv_, k)
        grow_gdn(gdn, k)
        grow_cols(nxt, k)
    for conv_, gdn, nxt in (("g_s.0.0", "g_s.1", "g_s.2.0"), ("g_s.2.0", "g_s.3", "g_s.4.0"),
                            ("g_s.4.0", "g_s.5", "g_s.6.0")):
        grow_rows(conv_, k, shuffle=4)
        grow_gdn(gdn, k)
        grow_cols(nxt, k)
    return out, masks
