#include "qconv.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "conv.hpp"
#include "errors.hpp"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FASTCODEC_X86_QKERNELS 1
#endif

namespace fastcodec {

namespace {

constexpr int kBlock = 16;  // output channels per packed block

// The geometry every kernel shares: the channels, the padded row lengths, and the byte offsets of
// the kernel taps from an output pixel's top-left input neighbour.
struct QGeometry {
    int C, G, NT, nb, C4;
    size_t ws, ows, tap[9];
    QGeometry(const QConvLayer& L, int w) {
        C = L.cin;
        G = C / 4;
        NT = L.k * L.k;
        nb = L.cout / kBlock;
        C4 = L.shuffle == 2 ? L.cout / 4 : L.cout;
        ws = size_t(w) + 2;
        ows = L.shuffle == 2 ? 2 * size_t(w) + 2 : ws;
        if (L.k == 1) {
            tap[0] = (ws + 1) * size_t(C);
        } else {
            for (int t = 0; t < 9; ++t) tap[t] = (size_t(t / 3) * ws + size_t(t % 3)) * size_t(C);
        }
    }
    // where output channels [n0, n0 + 16) of pixel (y, x) go
    uint8_t* dst(uint8_t* out, int shuffle, int y, int x, int n0) const {
        if (shuffle == 2) {
            const int s = n0 / C4, c0 = n0 % C4;
            return out + ((size_t(2 * y + s / 2) + 1) * ows + size_t(2 * x + s % 2) + 1) * size_t(C4) + size_t(c0);
        }
        return out + ((size_t(y) + 1) * ows + size_t(x) + 1) * size_t(C4) + size_t(n0);
    }
};

// The requantisation of one sum (round to nearest even: the caller set that rounding mode).
inline uint8_t requant(int32_t acc, float scale, int zp) {
    float v = float(acc) * scale;
    const float lo = float(-zp - 1), hi = float(256 - zp);
    v = v < lo ? lo : (v > hi ? hi : v);
    const int q = int(std::nearbyint(v)) + zp;
    return uint8_t(q < 0 ? 0 : (q > 255 ? 255 : q));
}

// where the int32 sums of output channels [n0, n0 + 16) of pixel (y, x) go (a raw layer)
inline int32_t* raw_dst(uint8_t* out, const QConvLayer& L, int w, int y, int x, int n0) {
    return reinterpret_cast<int32_t*>(out) + (size_t(y) * size_t(w) + size_t(x)) * size_t(L.cout) + size_t(n0);
}

[[maybe_unused]] inline int32_t load32(const uint8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// The portable kernel: one output row and block of 16 channels at a time, the row's sums in
// memory and each (tap, channel group)'s weights reused across the row; the 16-channel inner
// loops are plain int32 arithmetic that compilers vectorise (NEON, SSE2).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
void qconv_generic(const QConvLayer& L, const QConvPacked& P, const uint8_t* in, const uint8_t* in_lo, int w,
                   uint8_t* out, int y0, int y1) {
    const QGeometry g(L, w);
    std::vector<int32_t> rowacc(size_t(w) * kBlock);
    for (int y = y0; y < y1; ++y)
        for (int b = 0; b < g.nb; ++b) {
            int32_t* acc = rowacc.data();
            std::fill(rowacc.begin(), rowacc.end(), 0);
            const int16_t* wp = P.wg.data() + size_t(b) * g.NT * g.G * 64;
            for (int part = 0; part < (in_lo ? 2 : 1); ++part) {
            const uint8_t* src = part ? in_lo : in;
            if (part)
                for (int32_t& v : rowacc) v *= 256;  // the high part's sums, exact (check_qconv_wide)
            for (int t = 0; t < g.NT; ++t)
                for (int gi = 0; gi < g.G; ++gi) {
                    const int16_t* w0 = wp + (size_t(t) * g.G + gi) * 64;
                    const int16_t *w1 = w0 + 16, *w2 = w0 + 32, *w3 = w0 + 48;
                    const uint8_t* a = src + size_t(y) * g.ws * size_t(g.C) + g.tap[t] + size_t(gi) * 4;
                    for (int x = 0; x < w; ++x, a += g.C) {
                        // each pair of products lies within +-2 * 255 * 64 = 32640: exact in 16 bits,
                        // which lets the compiler use 16-bit vector multiplies
                        const int16_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
                        int32_t* ax = acc + size_t(x) * kBlock;
                        for (int o = 0; o < kBlock; ++o) {
                            const int16_t p = int16_t(a0 * w0[o] + a1 * w1[o]);
                            const int16_t q = int16_t(a2 * w2[o] + a3 * w3[o]);
                            ax[o] += int32_t(p) + int32_t(q);
                        }
                    }
                }
            }
            for (int x = 0; x < w; ++x)
                for (int o = 0; o < kBlock; ++o) acc[size_t(x) * kBlock + o] += P.bias[size_t(b) * kBlock + o];
            for (int x = 0; x < w; ++x) {
                const int32_t* ax = acc + size_t(x) * kBlock;
                if (L.raw) {
                    std::memcpy(raw_dst(out, L, w, y, x, b * kBlock), ax, kBlock * sizeof(int32_t));
                    continue;
                }
                uint8_t* d = g.dst(out, L.shuffle, y, x, b * kBlock);
                for (int o = 0; o < kBlock; ++o) d[o] = requant(ax[o], L.scale[size_t(b) * kBlock + o], L.out_zp);
            }
        }
}

#ifdef FASTCODEC_X86_QKERNELS

// requant() of 16 sums at once (the same rounding: cvtps rounds to nearest even in the mode the
// callers set; the sums are integers, so no NaN reaches the clamps), stored as 16 bytes.
__attribute__((target("avx2"))) inline void store_block_avx2(const int32_t* acc, const float* scale, __m256 lo,
                                                             __m256 hi, __m256i zp, uint8_t* d) {
    __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(acc))),
                              _mm256_loadu_ps(scale));
    __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(acc + 8))),
                              _mm256_loadu_ps(scale + 8));
    v0 = _mm256_min_ps(_mm256_max_ps(v0, lo), hi);
    v1 = _mm256_min_ps(_mm256_max_ps(v1, lo), hi);
    const __m256i q0 = _mm256_add_epi32(_mm256_cvtps_epi32(v0), zp), q1 = _mm256_add_epi32(_mm256_cvtps_epi32(v1), zp);
    // int16 [q0 0-3, q1 0-3 | q0 4-7, q1 4-7] -> [q0 0-7 | q1 0-7] -> bytes (saturated to 0..255)
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
    const __m256i b = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm256_castsi256_si128(b));
}

// AVX2: 4 pixels x 16 channels in 8 registers. Each step multiplies the 4 bytes of one pixel's
// input-channel group (broadcast) with 16 channels' 4 weights: vpmaddubsw (pairs, int16, exact:
// see the header) and vpmaddwd with ones (pairs of pairs, int32), then adds.
template <int NT>
__attribute__((target("avx2"))) void qconv_avx2(const QConvLayer& L, const QConvPacked& P, const uint8_t* in,
                                                const uint8_t* in_lo, int w, uint8_t* out, int y0, int y1) {
    constexpr int PX = 4;
    const QGeometry g(L, w);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256 lo = _mm256_set1_ps(float(-L.out_zp - 1)), hi = _mm256_set1_ps(float(256 - L.out_zp));
    const __m256i zpv = _mm256_set1_epi32(L.out_zp);
    alignas(32) int32_t tmp[PX][kBlock];
    for (int y = y0; y < y1; ++y)
        for (int x0 = 0; x0 < w; x0 += PX) {
            const size_t off = (size_t(y) * g.ws + size_t(x0)) * size_t(g.C);
            for (int b = 0; b < g.nb; ++b) {
                const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&P.bias[size_t(b) * kBlock]));
                const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&P.bias[size_t(b) * kBlock + 8]));
                const __m256i z = _mm256_setzero_si256();
                __m256i a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z;
                for (int part = 0; part < (in_lo ? 2 : 1); ++part) {
                const uint8_t* base = (part ? in_lo : in) + off;
                const int8_t* wp = P.w.data() + size_t(b) * NT * g.G * 64;
                if (part) {  // the high part's sums times 256, exact (check_qconv_wide)
                    a00 = _mm256_slli_epi32(a00, 8), a01 = _mm256_slli_epi32(a01, 8);
                    a10 = _mm256_slli_epi32(a10, 8), a11 = _mm256_slli_epi32(a11, 8);
                    a20 = _mm256_slli_epi32(a20, 8), a21 = _mm256_slli_epi32(a21, 8);
                    a30 = _mm256_slli_epi32(a30, 8), a31 = _mm256_slli_epi32(a31, 8);
                }
                for (int t = 0; t < NT; ++t) {
                    const uint8_t* ip = base + g.tap[t];
                    for (int gi = 0; gi < g.G; ++gi, wp += 64, ip += 4) {
                        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp));
                        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 32));
#define FC_Q2(p)                                                                                 \
    {                                                                                            \
        const __m256i x = _mm256_set1_epi32(load32(ip + size_t(p) * g.C));                       \
        a##p##0 = _mm256_add_epi32(a##p##0, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones)); \
        a##p##1 = _mm256_add_epi32(a##p##1, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones)); \
    }
                        FC_Q2(0) FC_Q2(1) FC_Q2(2) FC_Q2(3)
#undef FC_Q2
                    }
                }
                }
#define FC_ST2(p)                                                                                    \
    _mm256_store_si256(reinterpret_cast<__m256i*>(&tmp[p][0]), _mm256_add_epi32(a##p##0, b0));       \
    _mm256_store_si256(reinterpret_cast<__m256i*>(&tmp[p][8]), _mm256_add_epi32(a##p##1, b1));
                FC_ST2(0) FC_ST2(1) FC_ST2(2) FC_ST2(3)
#undef FC_ST2
                const int np = std::min(PX, w - x0);
                for (int p = 0; p < np; ++p) {
                    if (L.raw) {
                        std::memcpy(raw_dst(out, L, w, y, x0 + p, b * kBlock), tmp[p], sizeof(tmp[p]));
                        continue;
                    }
                    store_block_avx2(tmp[p], &L.scale[size_t(b) * kBlock], lo, hi, zpv,
                                     g.dst(out, L.shuffle, y, x0 + p, b * kBlock));
                }
            }
        }
}

// AVX-512 VNNI: 8 pixels x J blocks of 16 channels (J <= 3) in up to 24 registers; vpdpbusd adds
// the four uint8 x int8 products of each 32-bit lane to it in one instruction (exact in int32).
#define FC_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
// GCC 12 warns about the deliberately undefined upper lanes inside its own AVX-512 conversion
// intrinsics (a known false positive)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

FC_VNNI_TARGET inline void store_block(__m512i acc, const float* scale, __m512 lo, __m512 hi, __m512i zp,
                                       uint8_t* d) {
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_loadu_ps(scale));
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);  // round to nearest even
    q = _mm512_max_epi32(q, _mm512_setzero_si512());
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm512_cvtusepi32_epi8(q));  // saturates at 255
}

template <int NT, int J>
FC_VNNI_TARGET void qconv_vnni_blocks(const QConvLayer& L, const QConvPacked& P, const QGeometry& g,
                                      const uint8_t* in, const uint8_t* in_lo, int w, uint8_t* out, int y, int x0,
                                      int b) {
    constexpr int PX = 8;
    const size_t off = (size_t(y) * g.ws + size_t(x0)) * size_t(g.C);
    const size_t bstride = size_t(NT) * g.G * 64;
    const __m512i z = _mm512_setzero_si512();
    __m512i a00 = z, a01 = z, a02 = z, a10 = z, a11 = z, a12 = z, a20 = z, a21 = z, a22 = z, a30 = z, a31 = z,
            a32 = z, a40 = z, a41 = z, a42 = z, a50 = z, a51 = z, a52 = z, a60 = z, a61 = z, a62 = z, a70 = z,
            a71 = z, a72 = z;
    for (int part = 0; part < (in_lo ? 2 : 1); ++part) {
    const uint8_t* base = (part ? in_lo : in) + off;
    const int8_t* wp = P.w.data() + size_t(b) * bstride;
    if (part) {  // the high part's sums times 256, exact (check_qconv_wide)
#define FC_SH(p)                                              \
    a##p##0 = _mm512_slli_epi32(a##p##0, 8);                  \
    if (J > 1) a##p##1 = _mm512_slli_epi32(a##p##1, 8);       \
    if (J > 2) a##p##2 = _mm512_slli_epi32(a##p##2, 8);
        FC_SH(0) FC_SH(1) FC_SH(2) FC_SH(3) FC_SH(4) FC_SH(5) FC_SH(6) FC_SH(7)
#undef FC_SH
    }
    for (int t = 0; t < NT; ++t) {
        const uint8_t* ip = base + g.tap[t];
        for (int gi = 0; gi < g.G; ++gi, wp += 64, ip += 4) {
            const __m512i w0 = _mm512_loadu_si512(wp);
            const __m512i w1 = J > 1 ? _mm512_loadu_si512(wp + bstride) : z;
            const __m512i w2 = J > 2 ? _mm512_loadu_si512(wp + 2 * bstride) : z;
#define FC_QV(p)                                                               \
    {                                                                          \
        const __m512i x = _mm512_set1_epi32(load32(ip + size_t(p) * g.C));     \
        a##p##0 = _mm512_dpbusd_epi32(a##p##0, x, w0);                         \
        if (J > 1) a##p##1 = _mm512_dpbusd_epi32(a##p##1, x, w1);              \
        if (J > 2) a##p##2 = _mm512_dpbusd_epi32(a##p##2, x, w2);              \
    }
            FC_QV(0) FC_QV(1) FC_QV(2) FC_QV(3) FC_QV(4) FC_QV(5) FC_QV(6) FC_QV(7)
#undef FC_QV
        }
    }
    }
    const __m512 lo = _mm512_set1_ps(float(-L.out_zp - 1)), hi = _mm512_set1_ps(float(256 - L.out_zp));
    const __m512i zp = _mm512_set1_epi32(L.out_zp);
    const int np = std::min(PX, w - x0);
    const __m512i bias[3] = {_mm512_loadu_si512(&P.bias[size_t(b) * kBlock]),
                             J > 1 ? _mm512_loadu_si512(&P.bias[size_t(b + 1) * kBlock]) : z,
                             J > 2 ? _mm512_loadu_si512(&P.bias[size_t(b + 2) * kBlock]) : z};
#define FC_QR(p)                                                                                           \
    if (p < np) {                                                                                          \
        _mm512_storeu_si512(raw_dst(out, L, w, y, x0 + p, b * kBlock), _mm512_add_epi32(a##p##0, bias[0])); \
        if (J > 1)                                                                                         \
            _mm512_storeu_si512(raw_dst(out, L, w, y, x0 + p, (b + 1) * kBlock),                          \
                                _mm512_add_epi32(a##p##1, bias[1]));                                       \
        if (J > 2)                                                                                         \
            _mm512_storeu_si512(raw_dst(out, L, w, y, x0 + p, (b + 2) * kBlock),                          \
                                _mm512_add_epi32(a##p##2, bias[2]));                                       \
    }
    if (L.raw) {
        FC_QR(0) FC_QR(1) FC_QR(2) FC_QR(3) FC_QR(4) FC_QR(5) FC_QR(6) FC_QR(7)
        return;
    }
#undef FC_QR
#define FC_QS(p)                                                                                           \
    if (p < np) {                                                                                          \
        store_block(_mm512_add_epi32(a##p##0, bias[0]), &L.scale[size_t(b) * kBlock], lo, hi, zp,          \
                    g.dst(out, L.shuffle, y, x0 + p, b * kBlock));                                         \
        if (J > 1)                                                                                         \
            store_block(_mm512_add_epi32(a##p##1, bias[1]), &L.scale[size_t(b + 1) * kBlock], lo, hi, zp,  \
                        g.dst(out, L.shuffle, y, x0 + p, (b + 1) * kBlock));                               \
        if (J > 2)                                                                                         \
            store_block(_mm512_add_epi32(a##p##2, bias[2]), &L.scale[size_t(b + 2) * kBlock], lo, hi, zp,  \
                        g.dst(out, L.shuffle, y, x0 + p, (b + 2) * kBlock));                               \
    }
    FC_QS(0) FC_QS(1) FC_QS(2) FC_QS(3) FC_QS(4) FC_QS(5) FC_QS(6) FC_QS(7)
#undef FC_QS
}

template <int NT>
void qconv_vnni(const QConvLayer& L, const QConvPacked& P, const uint8_t* in, const uint8_t* in_lo, int w,
                uint8_t* out, int y0, int y1) {
    const QGeometry g(L, w);
    for (int y = y0; y < y1; ++y)
        for (int x0 = 0; x0 < w; x0 += 8) {
            int b = 0;
            for (; b + 3 <= g.nb; b += 3) qconv_vnni_blocks<NT, 3>(L, P, g, in, in_lo, w, out, y, x0, b);
            if (g.nb - b == 2) qconv_vnni_blocks<NT, 2>(L, P, g, in, in_lo, w, out, y, x0, b);
            if (g.nb - b == 1) qconv_vnni_blocks<NT, 1>(L, P, g, in, in_lo, w, out, y, x0, b);
        }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif

enum class QKernel { generic, avx2, vnni };

QKernel best_qkernel() {
#ifdef FASTCODEC_X86_QKERNELS
    const std::string want = requested_kernel();
    if (want == "generic") return QKernel::generic;
    if (want != "avx2" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        return QKernel::vnni;
    if (__builtin_cpu_supports("avx2")) return QKernel::avx2;
#endif
    return QKernel::generic;
}

const QKernel kQKernel = best_qkernel();

}  // namespace

const char* qconv_kernel_name() {
    switch (kQKernel) {
        case QKernel::vnni: return "avx512vnni";
        case QKernel::avx2: return "avx2";
        default: return "generic";
    }
}

void check_qconv(const QConvLayer& L) {
    const int nt = L.k * L.k;
    if (L.k != 1 && L.k != 3) throw ArgumentError("int8 convolution kernels must be 1x1 or 3x3");
    if (L.cin <= 0 || L.cin % 4) throw ArgumentError("int8 convolutions need a positive multiple of 4 input channels");
    if (L.shuffle != 1 && L.shuffle != 2) throw ArgumentError("int8 convolutions shuffle by 1 or 2");
    if (L.cout <= 0 || L.cout % (L.shuffle == 2 ? 4 * kBlock : kBlock))
        throw ArgumentError("int8 convolutions need a multiple of 16 output channels (after the shuffle)");
    if (int64_t(L.cin) * nt > 32768) throw ArgumentError("int8 convolution too large for 32-bit sums");
    if (L.raw && L.shuffle != 1) throw ArgumentError("raw int8 convolutions do not shuffle");
    if (L.weight.size() != size_t(L.cout) * L.cin * nt || L.bias.size() != size_t(L.cout) ||
        (!L.raw && L.scale.size() != size_t(L.cout)))
        throw ArgumentError("int8 convolution: weight/bias/scale sizes do not match the layer shape");
    for (int8_t v : L.weight)
        if (v < -64 || v > 64) throw ArgumentError("int8 convolution weights must lie in [-64, 64]");
    for (int32_t v : L.bias)
        if (v < -(1 << 30) || v > (1 << 30)) throw ArgumentError("int8 convolution biases must lie in [-2^30, 2^30]");
    if (!L.raw)
        for (float s : L.scale)
            if (!(s > 0.f) || !std::isfinite(s)) throw ArgumentError("int8 convolution scales must be finite and > 0");
    if (L.in_zp < 0 || L.in_zp > 255 || L.out_zp < 0 || L.out_zp > 255)
        throw ArgumentError("int8 convolution zero points must lie in 0..255");
}

QConvPacked pack_qconv(const QConvLayer& L) {
    check_qconv(L);
    const int nt = L.k * L.k, G = L.cin / 4, nb = L.cout / kBlock;
    QConvPacked P;
    P.w.resize(size_t(nb) * nt * G * 64);
    P.wg.resize(P.w.size());
    P.bias.resize(size_t(L.cout));
    for (int oc = 0; oc < L.cout; ++oc) {
        const int b = oc / kBlock, o = oc % kBlock;
        int64_t sum = 0;
        for (int ic = 0; ic < L.cin; ++ic)
            for (int t = 0; t < nt; ++t) {
                const int8_t v = L.weight[(size_t(oc) * L.cin + ic) * nt + t];
                sum += v;
                P.w[((size_t(b) * nt + t) * G + ic / 4) * 64 + size_t(o) * 4 + ic % 4] = v;
                P.wg[((size_t(b) * nt + t) * G + ic / 4) * 64 + size_t(ic % 4) * 16 + size_t(o)] = v;
            }
        P.bias[size_t(oc)] = int32_t(int64_t(L.bias[size_t(oc)]) - int64_t(L.in_zp) * sum);
    }
    return P;
}

void qconv_nhwc(const QConvLayer& L, const QConvPacked& P, const uint8_t* in, int h, int w, uint8_t* out,
                int threads, const uint8_t* in_lo) {
    FlushDenormals fd;  // also sets round-to-nearest-even for the calling thread
    if (in_lo && L.in_zp != 0) throw ArgumentError("wide int8 convolutions take zero point 0 (the bias holds it)");
    parallel_for(h, threads, [&](int y0, int y1) {
        switch (kQKernel) {
#ifdef FASTCODEC_X86_QKERNELS
            case QKernel::vnni:
                return L.k == 1 ? qconv_vnni<1>(L, P, in, in_lo, w, out, y0, y1)
                                : qconv_vnni<9>(L, P, in, in_lo, w, out, y0, y1);
            case QKernel::avx2:
                return L.k == 1 ? qconv_avx2<1>(L, P, in, in_lo, w, out, y0, y1)
                                : qconv_avx2<9>(L, P, in, in_lo, w, out, y0, y1);
#endif
            default: return qconv_generic(L, P, in, in_lo, w, out, y0, y1);
        }
    });
}

void check_qconv_wide(const QConvLayer& L) {
    check_qconv(L);
    if (L.in_zp != 0) throw ArgumentError("wide int8 convolutions take zero point 0 (the bias holds it)");
    const int nt = L.k * L.k;
    for (int oc = 0; oc < L.cout; ++oc) {
        int64_t sum_abs = 0;
        for (size_t i = 0; i < size_t(L.cin) * nt; ++i) sum_abs += std::abs(int(L.weight[size_t(oc) * L.cin * nt + i]));
        // |256 * sum(hi * w) + sum(lo * w) + bias| <= sum_abs * (15 * 256 + 255) + |bias|
        if (sum_abs * 4095 + std::abs(int64_t(L.bias[size_t(oc)])) >= (int64_t(1) << 31))
            throw ArgumentError("wide int8 convolution: its sums could overflow 32 bits");
    }
}

}  // namespace fastcodec
