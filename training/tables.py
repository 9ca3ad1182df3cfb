"""Static Huffman coding tables derived from the model's distributions (built once per model).

Latent residuals r = round(y - mu) are coded per scale bin b with the discretised Gaussian
N(0, sigma_b); hyper-latent symbols per channel with the factorised prior's pmf. For each
distribution we choose the coding mode (direct symbols, or zero runs joined with the next
nonzero value) and the number of run classes that minimise the expected code length.
The run classes mirror docs/format.md (and SymbolCoder::run_class_base in the C++ core).
"""
from __future__ import annotations

import math

import numpy as np

FREQ_SCALE = 1 << 28
MAX_LEN = 24
MAX_ALPHABET = 8192


def run_class_base(k):
    if k < 4:
        return k
    j = k - 4
    o = j // 2 + 2
    return (1 << o) + (j % 2) * (1 << (o - 1))


def run_class_extra_bits(k):
    return 0 if k < 4 else (k - 4) // 2 + 1


def _freqs(p):
    return np.maximum(1, np.rint(np.asarray(p, np.float64) * FREQ_SCALE)).astype(np.uint32)


def _eg0_expected_bits_geometric(p0, start):
    """E[eg0 length of (run - start)] for run >= start, run ~ geometric with P(run = r) ~ p0^r."""
    if p0 <= 0:
        return 1.0
    total = 0.0
    lp = math.log(p0)
    for j in range(0, 45):
        a, b = (1 << j) - 1, (1 << (j + 1)) - 1  # v in [a, b)
        mass = math.exp(lp * a) - math.exp(lp * b)
        total += mass * (2 * j + 1)
        if math.exp(lp * b) < 1e-12:
            break
    return total


ESC_BITS = 2.5  # expected escape payload: sign bit + a short exp-golomb code (escapes are rare)


def design(pmf, vmin, huffman_lengths, entropy_only=False):
    """pmf: probabilities of the integers vmin .. vmin+len(pmf)-1, the mode at 0 (vmin <= 0).

    Returns dict(mode, vmin, vmax, nruns, freqs, bits_per_symbol, entropy).
    """
    pmf = np.asarray(pmf, np.float64)
    pmf = pmf / pmf.sum()
    vmax = vmin + len(pmf) - 1
    # trim the tails to probability < 1e-9 each side (escapes code the rest)
    keep = np.nonzero(pmf > 1e-9)[0]
    lo_i, hi_i = min(keep[0], -vmin), max(keep[-1], -vmin)
    lo_i = min(lo_i, -vmin - 1) if -vmin - 1 >= 0 else lo_i
    hi_i = max(hi_i, -vmin + 1) if -vmin + 1 < len(pmf) else hi_i
    tail = pmf[:lo_i].sum() + pmf[hi_i + 1:].sum()
    p = pmf[lo_i:hi_i + 1]
    vmin, vmax = vmin + lo_i, vmin + hi_i
    p_esc = max(tail, 1e-12)
    ent = float(-(pmf[pmf > 0] * np.log2(pmf[pmf > 0])).sum())
    best = None
    # direct mode
    fr = _freqs(np.append(p, p_esc))
    L = np.asarray(huffman_lengths(fr.tolist(), MAX_LEN), np.float64)
    bits = float((p * L[:-1]).sum() + p_esc * (L[-1] + ESC_BITS))
    best = dict(mode=0, vmin=vmin, vmax=vmax, nruns=0, freqs=fr, bits_per_symbol=bits)
    # pair mode: two values per symbol (for the middle of the scale range)
    m = len(p) + 1
    if m * m <= MAX_ALPHABET:
        q = np.append(p, p_esc)
        joint = np.outer(q, q).ravel()
        fr = _freqs(joint)
        L = np.asarray(huffman_lengths(fr.tolist(), MAX_LEN), np.float64)
        bits = float((joint * L).sum() + 2 * p_esc * ESC_BITS) / 2
        if bits < best["bits_per_symbol"]:
            best = dict(mode=2, vmin=vmin, vmax=vmax, nruns=0, freqs=fr, bits_per_symbol=bits)
    # zero-run mode
    p0 = float(p[-vmin])
    if 0.2 < p0 < 1.0:
        term = np.append(np.delete(p, -vmin), p_esc)
        nt = len(term)
        for nruns in range(1, 49):
            if nruns * nt > MAX_ALPHABET:
                break
            cls = []
            for k in range(nruns):
                base = run_class_base(k)
                if k == nruns - 1:
                    cls.append(p0 ** base)  # open-ended (terminals normalised below)
                else:
                    w = 1 << run_class_extra_bits(k)
                    cls.append(p0 ** base * (1 - p0 ** w))
            cls = np.asarray(cls)  # P(class) for the run of one phrase
            joint = (cls[:, None] * term[None, :] / term.sum()).ravel()
            fr = _freqs(joint)
            L = np.asarray(huffman_lengths(fr.tolist(), MAX_LEN), np.float64)
            phrase = float((joint * L).sum())
            for k in range(nruns - 1):
                phrase += cls[k] * run_class_extra_bits(k)
            base = run_class_base(nruns - 1)
            phrase += cls[-1] * _eg0_expected_bits_geometric(p0, base)
            phrase += p_esc / term.sum() * ESC_BITS
            per_sym = phrase * (1 - p0)
            if per_sym < best["bits_per_symbol"]:
                best = dict(mode=1, vmin=vmin, vmax=vmax, nruns=nruns, freqs=fr, bits_per_symbol=per_sym)
            if cls[-1] < 1e-9:
                break
    best["entropy"] = ent
    return best


def gaussian_pmf(sigma, vmax):
    v = np.arange(-vmax, vmax + 1, dtype=np.float64)
    erf = np.vectorize(math.erf)
    cdf = lambda t: 0.5 * (1 + erf(t / (sigma * math.sqrt(2))))  # noqa: E731
    return cdf(v + 0.5) - cdf(v - 0.5)


def pack(designs, prefix):
    out = {}
    out[f"{prefix}_mode"] = np.array([d["mode"] for d in designs], np.int32)
    out[f"{prefix}_vmin"] = np.array([d["vmin"] for d in designs], np.int32)
    out[f"{prefix}_vmax"] = np.array([d["vmax"] for d in designs], np.int32)
    out[f"{prefix}_nruns"] = np.array([d["nruns"] for d in designs], np.int32)
    out[f"{prefix}_freqs"] = np.concatenate([d["freqs"] for d in designs]).astype(np.uint32)
    out[f"{prefix}_freqs_off"] = np.cumsum([0] + [len(d["freqs"]) for d in designs]).astype(np.int64)
    out[f"{prefix}_bits"] = np.array([d["bits_per_symbol"] for d in designs], np.float64)
    out[f"{prefix}_entropy"] = np.array([d["entropy"] for d in designs], np.float64)
    return out


def pack_pmfs(pmfs, prefix):
    """pmfs: list of (vmin, probabilities of vmin, vmin+1, ...), stored for information-content
    measurement (sum of -log2 p under the distributions the coder uses)."""
    return {f"{prefix}_pmf": np.concatenate([np.asarray(p, np.float64) / np.sum(p) for _, p in pmfs]),
            f"{prefix}_pmf_off": np.cumsum([0] + [len(p) for _, p in pmfs]).astype(np.int64),
            f"{prefix}_pmf_vmin": np.array([v for v, _ in pmfs], np.int64)}
