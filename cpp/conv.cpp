#include "conv.hpp"

#include <cmath>
#include <cstdlib>
#include <string>

#include "errors.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <xmmintrin.h>
#endif

namespace fastcodec {

FlushDenormals::FlushDenormals() {
#if defined(__x86_64__) || defined(_M_X64)
    saved_ = _mm_getcsr();
    // FTZ (bit 15) | DAZ (bit 6), and rounding control (bits 13-14) to round to nearest even
    _mm_setcsr((static_cast<unsigned>(saved_) & ~0x6000u) | 0x8040u);
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    saved_ = fpcr;
    fpcr = (fpcr | (1ull << 24)) & ~(3ull << 22);  // FZ, and RMode (bits 22-23) to round to nearest
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
#endif
}

FlushDenormals::~FlushDenormals() {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_setcsr(static_cast<unsigned>(saved_));
#elif defined(__aarch64__)
    uint64_t v = saved_;
    __asm__ __volatile__("msr fpcr, %0" : : "r"(v));
#endif
}

namespace {

// Blocking: kOcBlock output channels x a vector or two of consecutive elements are accumulated in
// registers while the input is streamed once per (ic, tap): about 8x fewer loads and stores than
// one pass over the plane per tap, and the per-element order is unchanged. The plane is walked in
// chunks of kChunk elements, each through every output block, so that a chunk's input rows stay
// in the core's cache. Threads take contiguous runs of kStep elements.
constexpr int kOcBlock = 8;
constexpr size_t kChunk = 512, kStep = 32;
constexpr size_t kLanes = 16;  // generic kernel
[[maybe_unused]] constexpr int kIcBlock = 16;  // vector kernels: input channels whose weights stay in L1
static_assert(kConvSlack >= 2 * kLanes + 4, "slack covers a 32-element vector step past a row");

// Geometry of zero-bordered planes: row stride w+2, input planes (h+2) x (w+2), output planes
// h x (w+2), and the offsets of the kernel taps from an output element's top-left neighbour.
struct PaddedPlanes {
    size_t ws, in_plane, plane, tap[9];
    int ntaps;
    PaddedPlanes(int h, int w, int k) : ws(size_t(w) + 2), in_plane((size_t(h) + 2) * ws), plane(size_t(h) * ws) {
        ntaps = k * k;
        if (k == 1) {
            tap[0] = ws + 1;
        } else {
            for (int t = 0; t < 9; ++t) tap[t] = size_t(t / 3) * ws + size_t(t % 3);
        }
    }
};

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// Vector width is chosen at load time; the results are bit-identical for every clone (see above).
#define FASTCODEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTCODEC_CLONES
#endif

// Every output channel for the plane elements [p0, p1) (p0 a multiple of kStep): the reference
// kernel, portable C++ (accumulators in memory, about a fifth of the vector units' throughput).
FASTCODEC_CLONES
void conv_generic(const ConvLayer& L, const float* in_pad, int h, int w, float* out, size_t ostride, size_t p0,
                  size_t p1) {
    const PaddedPlanes g(h, w, L.k);
    const size_t in_plane = g.in_plane, plane = ostride;
    const size_t* tap = g.tap;
    const int cin = L.cin, oc1 = L.cout, nt = g.ntaps;
    for (size_t c0 = p0; c0 < p1; c0 += kChunk)
    for (int ob = 0; ob < oc1; ob += kOcBlock) {
        const int nb = std::min(kOcBlock, oc1 - ob);
        const size_t c1 = std::min(c0 + kChunk, p1);
        for (size_t i0 = c0; i0 < c1; i0 += kLanes) {
            float acc[kOcBlock][kLanes];
            for (int o = 0; o < kOcBlock; ++o)
                for (size_t j = 0; j < kLanes; ++j) acc[o][j] = o < nb ? L.bias[ob + o] : 0.f;
            for (int ic = 0; ic < cin; ++ic) {
                const float* x = in_pad + size_t(ic) * in_plane + i0;
                for (int k = 0; k < nt; ++k) {
                    // reads stay inside the padded input: i0 + kLanes - 1 + tap[last] < in_plane + kConvSlack
                    float xv[kLanes];
                    for (size_t j = 0; j < kLanes; ++j) xv[j] = x[tap[k] + j];
                    for (int o = 0; o < kOcBlock; ++o) {
                        const float wv = o < nb ? L.weight[(size_t(ob + o) * cin + ic) * nt + k] : 0.f;
                        if (L.fused) {
                            for (size_t j = 0; j < kLanes; ++j) acc[o][j] = std::fma(wv, xv[j], acc[o][j]);
                        } else {
                            for (size_t j = 0; j < kLanes; ++j) {
                                const float p = wv * xv[j];
                                acc[o][j] = acc[o][j] + p;
                            }
                        }
                    }
                }
            }
            const size_t m = std::min(kLanes, c1 - i0);
            for (int o = 0; o < nb; ++o) std::copy(acc[o], acc[o] + m, out + size_t(ob + o) * plane + i0);
        }
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define FASTCODEC_X86_KERNELS 1

// What the vector kernels share: the plane geometry, the NT tap offsets as constants of the
// loop, the number of output blocks and each block's biases (0 for missing channels).
template <int NT>
struct Blocking {
    size_t in_plane, plane, tap[NT];
    int blocks;
    Blocking(const ConvLayer& L, int h, int w, size_t ostride) {
        const PaddedPlanes g(h, w, L.k);
        in_plane = g.in_plane;
        plane = ostride;  // between output channels
        for (int k = 0; k < NT; ++k) tap[k] = g.tap[k];
        blocks = (L.cout + kOcBlock - 1) / kOcBlock;
    }
    void block_bias(const ConvLayer& L, int ob, float* bias) const {
        for (int o = 0; o < kOcBlock; ++o) bias[o] = ob + o < L.cout ? L.bias[ob + o] : 0.f;
    }
    // Asks for the input rows of the chunk that starts at element c1 (into L2), a line at a time:
    // the kernels stream cin planes x 3 rows at once, far more streams than the hardware
    // prefetchers follow, so without it a layer with few output blocks waits on memory (measured
    // on Zen 4: 96 -> 12 channels at 256 x 384, 59 ms without, 33 ms with, together with chunks of
    // 512 instead of 256 elements; 64 -> 64 at 128 x 192, 22 -> 18 ms). Prefetches do not fault,
    // so addresses past the buffer are harmless.
    void prefetch(const float* in_pad, int cin, size_t c1, int w) const {
        const size_t rows = NT == 9 ? 3 : 1, row0 = NT == 9 ? 0 : tap[0], ws = size_t(w) + 2;
        for (int ic = 0; ic < cin; ++ic)
            for (size_t r = 0; r < rows; ++r) {
                const char* p = reinterpret_cast<const char*>(in_pad + size_t(ic) * in_plane + row0 + r * ws + c1);
                for (size_t b = 0; b < (kChunk + 2) * sizeof(float); b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
            }
    }
};
// The accumulators are named variables, not an array: GCC otherwise writes an array of vectors
// back to the stack after every add (measured: 11 GMAC/s on one AVX2 core instead of about 30).
#define FC_REP8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

// The same convolution with AVX-512 intrinsics: 8 output channels x 32 consecutive elements
// (two vectors) live in 16 registers, and every element still gets the bias followed by one
// _mm512_mul_ps and one _mm512_add_ps (FUSED: one _mm512_fmadd_ps) per (input channel, tap) in
// the order ic = 0.., tap = 0..: exactly the operations of conv_generic, so the results are
// bit-identical to it (tests compare them). NT: taps per kernel (9 or 1), a constant so that the
// tap loop unrolls.
template <int NT, bool FUSED>
__attribute__((target("avx512f")))
void conv_avx512(const ConvLayer& L, const float* packed, const float* in_pad, int h, int w, float* out,
                 size_t ostride, size_t p0, size_t p1) {
    constexpr int kB = kOcBlock;
    static_assert(kChunk % 32 == 0 && kStep % 32 == 0, "whole 32-element steps");
    const Blocking<NT> g(L, h, w, ostride);
    const size_t in_plane = g.in_plane, plane = g.plane;
    const size_t* tap = g.tap;
    const int cin = L.cin;
    for (size_t c0 = p0; c0 < p1; c0 += kChunk) {
        const size_t c1 = std::min(c0 + kChunk, p1);
        if (c1 < p1) g.prefetch(in_pad, cin, c1, w);
        for (int bi = 0; bi < g.blocks; ++bi) {
            const int ob = bi * kB, nb = std::min(kB, L.cout - ob);
            const float* wblk = packed + size_t(bi) * cin * NT * kB;
            float bias[kB];
            g.block_bias(L, ob, bias);
            for (size_t i0 = c0; i0 < c1; i0 += 32) {
#define FC_INIT(o) __m512 a##o = _mm512_set1_ps(bias[o]), b##o = a##o;
                FC_REP8(FC_INIT)
#undef FC_INIT
                for (int ic = 0; ic < cin; ++ic) {
                    // reads stay inside the padded input: i0 + 31 + tap[last] < in_plane + kConvSlack
                    const float* x = in_pad + size_t(ic) * in_plane + i0;
                    const float* wp = wblk + size_t(ic) * NT * kB;
                    for (int k = 0; k < NT; ++k) {
                        const __m512 x0 = _mm512_loadu_ps(x + tap[k]);
                        const __m512 x1 = _mm512_loadu_ps(x + tap[k] + 16);
                        const float* wk = wp + k * kB;
#define FC_MAC(o)                                                \
    {                                                            \
        const __m512 wv = _mm512_set1_ps(wk[o]);                 \
        if (FUSED) {                                             \
            a##o = _mm512_fmadd_ps(wv, x0, a##o);                \
            b##o = _mm512_fmadd_ps(wv, x1, b##o);                \
        } else {                                                 \
            a##o = _mm512_add_ps(a##o, _mm512_mul_ps(wv, x0));   \
            b##o = _mm512_add_ps(b##o, _mm512_mul_ps(wv, x1));   \
        }                                                        \
    }
                        FC_REP8(FC_MAC)
#undef FC_MAC
                    }
                }
                const size_t m = std::min<size_t>(32, c1 - i0);
                const __mmask16 m0 = m >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << m) - 1);
                const __mmask16 m1 = m >= 32 ? __mmask16(0xFFFF) : m > 16 ? __mmask16((1u << (m - 16)) - 1) : __mmask16(0);
                float* dst = out + size_t(ob) * plane + i0;
#define FC_STORE(o)                                               \
    if (o < nb) {                                                 \
        _mm512_mask_storeu_ps(dst + o * plane, m0, a##o);         \
        _mm512_mask_storeu_ps(dst + o * plane + 16, m1, b##o);    \
    }
                FC_REP8(FC_STORE)
#undef FC_STORE
            }
        }
    }
}

// The same with AVX2: 8 output channels x 8 consecutive elements in 8 registers; per (input
// channel, tap) one load, eight broadcasts and eight _mm256_mul_ps + _mm256_add_ps (FUSED: eight
// _mm256_fmadd_ps, and 4 channels x 24 elements at a time, whose 12 accumulators cover the
// latency of the fused operation), in the same order as conv_generic, so again the same bits.
template <int NT, bool FUSED>
__attribute__((target("avx2,fma")))
void conv_avx2(const ConvLayer& L, const float* packed, const float* in_pad, int h, int w, float* out,
               size_t ostride, size_t p0, size_t p1) {
    constexpr int kB = kOcBlock;
    static_assert(kChunk % 8 == 0 && kStep % 8 == 0, "whole 8-element steps");
    const Blocking<NT> g(L, h, w, ostride);
    const size_t in_plane = g.in_plane, plane = g.plane;
    const size_t* tap = g.tap;
    const int cin = L.cin;
    for (size_t c0 = p0; c0 < p1; c0 += kChunk) {
        const size_t c1 = std::min(c0 + kChunk, p1);
        if (c1 < p1) g.prefetch(in_pad, cin, c1, w);
        for (int bi = 0; bi < g.blocks; ++bi) {
            const int ob = bi * kB, nb = std::min(kB, L.cout - ob);
            const float* wblk = packed + size_t(bi) * cin * NT * kB;
            float bias[kB];
            g.block_bias(L, ob, bias);
            // input channels in blocks of kIcBlock, whose weights stay in L1 while the chunk's
            // elements pass; between blocks the partial sums wait in `out` (an exact store and
            // load), so each element still sees ic = 0, 1, ... in order
            for (int ic0 = 0; ic0 < cin; ic0 += kIcBlock) {
                const int ic1 = std::min(cin, ic0 + kIcBlock);
                const bool last = ic1 == cin;
                size_t i0 = c0;
                if (FUSED) {
                    // 4 output channels x 24 elements (12 accumulators: enough independent fused
                    // multiply-adds in flight to cover their latency), each half of the block in turn
                    for (; i0 + 24 <= c1; i0 += 24)
                        for (int half = 0; half < 2 && half * 4 < nb; ++half) {
                            float* dst = out + size_t(ob + half * 4) * plane + i0;
                            const int nh = std::min(4, nb - half * 4);
#define FC_INIT(o)                                                                          \
    __m256 a##o##0, a##o##1, a##o##2;                                                       \
    if (ic0 == 0) {                                                                         \
        a##o##0 = a##o##1 = a##o##2 = _mm256_set1_ps(bias[half * 4 + o]);                  \
    } else {                                                                                \
        const float* src = dst + (o < nh ? o : 0) * plane;                                  \
        a##o##0 = _mm256_loadu_ps(src);                                                     \
        a##o##1 = _mm256_loadu_ps(src + 8);                                                 \
        a##o##2 = _mm256_loadu_ps(src + 16);                                                \
    }
                            FC_INIT(0) FC_INIT(1) FC_INIT(2) FC_INIT(3)
#undef FC_INIT
                            for (int ic = ic0; ic < ic1; ++ic) {
                                const float* x = in_pad + size_t(ic) * in_plane + i0;
                                const float* wp = wblk + size_t(ic) * NT * kB + half * 4;
                                for (int k = 0; k < NT; ++k) {
                                    const __m256 x0 = _mm256_loadu_ps(x + tap[k]);
                                    const __m256 x1 = _mm256_loadu_ps(x + tap[k] + 8);
                                    const __m256 x2 = _mm256_loadu_ps(x + tap[k] + 16);
                                    const float* wk = wp + k * kB;
#define FC_MAC(o)                                           \
    {                                                       \
        const __m256 wv = _mm256_broadcast_ss(wk + o);      \
        a##o##0 = _mm256_fmadd_ps(wv, x0, a##o##0);         \
        a##o##1 = _mm256_fmadd_ps(wv, x1, a##o##1);         \
        a##o##2 = _mm256_fmadd_ps(wv, x2, a##o##2);         \
    }
                                    FC_MAC(0) FC_MAC(1) FC_MAC(2) FC_MAC(3)
#undef FC_MAC
                                }
                            }
#define FC_STORE(o)                                         \
    if (o < nh) {                                           \
        _mm256_storeu_ps(dst + o * plane, a##o##0);         \
        _mm256_storeu_ps(dst + o * plane + 8, a##o##1);     \
        _mm256_storeu_ps(dst + o * plane + 16, a##o##2);    \
    }
                            FC_STORE(0) FC_STORE(1) FC_STORE(2) FC_STORE(3)
#undef FC_STORE
                        }
                }
                for (; i0 < c1; i0 += 8) {
                    const size_t m = std::min<size_t>(8, c1 - i0);
                    float* dst = out + size_t(ob) * plane + i0;
                    alignas(32) float tmp[8];
#define FC_INIT(o)                                                                     \
    __m256 a##o;                                                                       \
    if (ic0 == 0) {                                                                    \
        a##o = _mm256_set1_ps(bias[o]);                                                \
    } else if (m == 8) {                                                               \
        a##o = o < nb ? _mm256_loadu_ps(dst + o * plane) : _mm256_setzero_ps();        \
    } else {                                                                           \
        std::fill(tmp, tmp + 8, 0.f);                                                  \
        if (o < nb) std::copy(dst + o * plane, dst + o * plane + m, tmp);              \
        a##o = _mm256_load_ps(tmp);                                                    \
    }
                    FC_REP8(FC_INIT)
#undef FC_INIT
                    for (int ic = ic0; ic < ic1; ++ic) {
                        const float* x = in_pad + size_t(ic) * in_plane + i0;
                        const float* wp = wblk + size_t(ic) * NT * kB;
                        for (int k = 0; k < NT; ++k) {
                            const __m256 x0 = _mm256_loadu_ps(x + tap[k]);
                            const float* wk = wp + k * kB;
#define FC_MAC(o)                                                                           \
    if (FUSED) {                                                                            \
        a##o = _mm256_fmadd_ps(_mm256_broadcast_ss(wk + o), x0, a##o);                      \
    } else {                                                                                \
        a##o = _mm256_add_ps(a##o, _mm256_mul_ps(_mm256_broadcast_ss(wk + o), x0));         \
    }
                            FC_REP8(FC_MAC)
#undef FC_MAC
                        }
                    }
                    (void)last;
                    if (m == 8) {
#define FC_STORE(o) if (o < nb) _mm256_storeu_ps(dst + o * plane, a##o);
                        FC_REP8(FC_STORE)
#undef FC_STORE
                    } else {
#define FC_STORE(o)                                   \
    if (o < nb) {                                     \
        _mm256_store_ps(tmp, a##o);                   \
        std::copy(tmp, tmp + m, dst + o * plane);     \
    }
                        FC_REP8(FC_STORE)
#undef FC_STORE
                    }
                }
            }
        }
    }
}
#undef FC_REP8
#endif

enum class Kernel { generic, avx2, avx512 };

Kernel best_kernel() {
#ifdef FASTCODEC_X86_KERNELS
    const std::string want = requested_kernel();
    if (want == "generic") return Kernel::generic;
    if (want != "avx2" && __builtin_cpu_supports("avx512f")) return Kernel::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Kernel::avx2;
#endif
    return Kernel::generic;
}

}  // namespace

std::string requested_kernel() {
    const char* env = std::getenv("FASTCODEC_CONV_KERNEL");
    return env ? env : (std::getenv("FASTCODEC_GENERIC_KERNELS") ? "generic" : "");
}

std::vector<float> pack_conv_weights(const ConvLayer& L) {
    const int cin = L.cin, cout = L.cout, nt = L.k * L.k, blocks = (cout + kOcBlock - 1) / kOcBlock;
    std::vector<float> packed(size_t(blocks) * cin * nt * kOcBlock);
    for (int bi = 0; bi < blocks; ++bi)
        for (int ic = 0; ic < cin; ++ic)
            for (int k = 0; k < nt; ++k)
                for (int o = 0; o < kOcBlock; ++o) {
                    const int oc = bi * kOcBlock + o;
                    packed[((size_t(bi) * cin + ic) * nt + k) * kOcBlock + o] =
                        oc < cout ? L.weight[(size_t(oc) * cin + ic) * nt + k] : 0.f;
                }
    return packed;
}

void conv_padded(const ConvLayer& L, [[maybe_unused]] const float* packed, const float* in_pad, int h, int w, float* out,
                 int threads, size_t out_stride) {
    if (L.k != 1 && L.k != 3) throw ArgumentError("convolution kernels must be 1x1 or 3x3");
    static const Kernel kernel = best_kernel();
    FlushDenormals fd;  // the calling thread computes too when threads == 1
    const size_t plane = size_t(h) * (size_t(w) + 2);
    const size_t ostride = out_stride ? out_stride : plane;
    if (ostride < plane) throw ArgumentError("convolution output planes overlap");
    const int steps = int((plane + kStep - 1) / kStep);
    parallel_for(steps, threads, [&](int a, int b) {
        const size_t p0 = size_t(a) * kStep, p1 = std::min(plane, size_t(b) * kStep);
        switch (kernel) {
#ifdef FASTCODEC_X86_KERNELS
            case Kernel::avx512:
                if (L.fused)
                    return L.k == 1 ? conv_avx512<1, true>(L, packed, in_pad, h, w, out, ostride, p0, p1)
                                    : conv_avx512<9, true>(L, packed, in_pad, h, w, out, ostride, p0, p1);
                return L.k == 1 ? conv_avx512<1, false>(L, packed, in_pad, h, w, out, ostride, p0, p1)
                                : conv_avx512<9, false>(L, packed, in_pad, h, w, out, ostride, p0, p1);
            case Kernel::avx2:
                if (L.fused)
                    return L.k == 1 ? conv_avx2<1, true>(L, packed, in_pad, h, w, out, ostride, p0, p1)
                                    : conv_avx2<9, true>(L, packed, in_pad, h, w, out, ostride, p0, p1);
                return L.k == 1 ? conv_avx2<1, false>(L, packed, in_pad, h, w, out, ostride, p0, p1)
                                : conv_avx2<9, false>(L, packed, in_pad, h, w, out, ostride, p0, p1);
#endif
            default: return conv_generic(L, in_pad, h, w, out, ostride, p0, p1);
        }
    });
}

}  // namespace fastcodec
