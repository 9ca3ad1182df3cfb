#include "hyper.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>

#include "errors.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <xmmintrin.h>
#endif

namespace fastcodec {

namespace {

// Sets flush-to-zero / denormals-are-zero for the lifetime of the object, restoring the
// caller's mode afterwards.
class FlushDenormals {
public:
    FlushDenormals() {
#if defined(__x86_64__) || defined(_M_X64)
        saved_ = _mm_getcsr();
        _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
#elif defined(__aarch64__)
        uint64_t fpcr;
        __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
        saved_ = fpcr;
        fpcr |= (1ull << 24);  // FZ
        __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
#endif
    }
    ~FlushDenormals() {
#if defined(__x86_64__) || defined(_M_X64)
        _mm_setcsr(static_cast<unsigned>(saved_));
#elif defined(__aarch64__)
        uint64_t v = saved_;
        __asm__ __volatile__("msr fpcr, %0" : : "r"(v));
#endif
    }

private:
    uint64_t saved_ = 0;
};

// One 3x3 conv (stride 1, zero padding), every output channel. The input planes are
// given zero-bordered, (h+2) x (w+2), followed by kConvSlack zero floats; output plane oc is
// written with row stride w+2 (the last two columns of each row are scratch). Each output
// element is the bias followed by one multiply and one add per (input channel, tap), in the order
// ic = 0.., k = 0..8: separate multiply and add (no contraction, -ffp-contract=off), so the
// value is the same at any vector width, and on every machine.
//
// Blocking: kOcBlock output channels x kLanes consecutive elements are accumulated in registers
// while the input is streamed once per (ic, tap): about 8x fewer loads and stores than one pass
// over the plane per tap, and the per-element order above is unchanged. The plane is walked in
// chunks of kChunk elements, each through every output block, so that a chunk's input rows stay
// in the core's cache; one block at a time over the whole plane streamed all the input planes
// once per block (large images: 0.2 s of the 4 MP encode, twice the Kodak rate per element).
// Threads take contiguous runs of kStep elements.
constexpr int kOcBlock = 8;
constexpr size_t kChunk = 512, kStep = 32;

// Geometry of zero-bordered planes: row stride w+2, input planes (h+2) x (w+2), output planes
// h x (w+2), and the offsets of the nine 3x3 taps from an output element's top-left neighbour.
struct PaddedPlanes {
    size_t ws, in_plane, plane, tap[9];
    PaddedPlanes(int h, int w) : ws(size_t(w) + 2), in_plane((size_t(h) + 2) * ws), plane(size_t(h) * ws) {
        for (int k = 0; k < 9; ++k) tap[k] = size_t(k / 3) * ws + size_t(k % 3);
    }
};
constexpr size_t kLanes = 16;
constexpr size_t kConvSlack = 2 * kLanes + 4;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// Vector width is chosen at load time; the results are bit-identical for every clone (see above).
#define FASTCODEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTCODEC_CLONES
#endif

// Computes every output channel for the plane elements [p0, p1) (p0 a multiple of kStep).
FASTCODEC_CLONES
void conv3x3(const ConvLayer& L, const float* in_pad, int h, int w, float* out, size_t p0, size_t p1) {
    const PaddedPlanes g(h, w);
    const size_t in_plane = g.in_plane, plane = g.plane;
    const size_t* tap = g.tap;
    const int cin = L.cin, oc1 = L.cout;
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
                for (int k = 0; k < 9; ++k) {
                    // reads stay inside the padded input: i0 + kLanes - 1 + tap[8] < in_plane + kConvSlack
                    float xv[kLanes];
                    for (size_t j = 0; j < kLanes; ++j) xv[j] = x[tap[k] + j];
                    for (int o = 0; o < kOcBlock; ++o) {
                        const float wv = o < nb ? L.weight[(size_t(ob + o) * cin + ic) * 9 + k] : 0.f;
                        for (size_t j = 0; j < kLanes; ++j) {
                            const float p = wv * xv[j];
                            acc[o][j] = acc[o][j] + p;
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
#define FASTCODEC_AVX512_KERNEL 1
// The same convolution with AVX-512 intrinsics: 8 output channels x 32 consecutive elements
// (two vectors) live in 16 registers, and every element still gets the bias followed by one
// _mm512_mul_ps and one _mm512_add_ps per (input channel, tap) in the order ic = 0.., k = 0..8:
// exactly the operations of conv3x3 above, so the results are bit-identical to it (the golden
// symbol hashes check this). The generic code leaves the accumulators in memory (about 20 % of
// the core's multiply/add throughput); this kernel is about 3x faster.
__attribute__((target("avx512f")))
// packed: L's weights as pack_weights() lays them out.
void conv3x3_avx512(const ConvLayer& L, const float* packed, const float* in_pad, int h, int w, float* out,
                    size_t p0, size_t p1) {
    constexpr int kB = kOcBlock;
    static_assert(kChunk % 32 == 0 && kStep % 32 == 0, "whole 32-element steps");
    const PaddedPlanes g(h, w);
    const size_t in_plane = g.in_plane, plane = g.plane;
    const size_t* tap = g.tap;
    const int cin = L.cin, cout = L.cout;
    const int blocks = (cout + kB - 1) / kB;
    for (size_t c0 = p0; c0 < p1; c0 += kChunk) {
        const size_t c1 = std::min(c0 + kChunk, p1);
        for (int bi = 0; bi < blocks; ++bi) {
            const int ob = bi * kB, nb = std::min(kB, cout - ob);
            const float* wblk = packed + size_t(bi) * cin * 9 * kB;
            for (size_t i0 = c0; i0 < c1; i0 += 32) {
                __m512 a[kB], b[kB];
                for (int o = 0; o < kB; ++o) a[o] = b[o] = _mm512_set1_ps(o < nb ? L.bias[ob + o] : 0.f);
                for (int ic = 0; ic < cin; ++ic) {
                    // reads stay inside the padded input: i0 + 31 + tap[8] < in_plane + kConvSlack
                    const float* x = in_pad + size_t(ic) * in_plane + i0;
                    const float* wp = wblk + size_t(ic) * 9 * kB;
                    for (int k = 0; k < 9; ++k) {
                        const __m512 x0 = _mm512_loadu_ps(x + tap[k]);
                        const __m512 x1 = _mm512_loadu_ps(x + tap[k] + 16);
#pragma GCC unroll 8
                        for (int o = 0; o < kB; ++o) {
                            const __m512 wv = _mm512_set1_ps(wp[k * kB + o]);
                            a[o] = _mm512_add_ps(a[o], _mm512_mul_ps(wv, x0));
                            b[o] = _mm512_add_ps(b[o], _mm512_mul_ps(wv, x1));
                        }
                    }
                }
                const size_t m = std::min<size_t>(32, c1 - i0);
                const __mmask16 m0 = m >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << m) - 1);
                const __mmask16 m1 = m >= 32 ? __mmask16(0xFFFF) : m > 16 ? __mmask16((1u << (m - 16)) - 1) : __mmask16(0);
                for (int o = 0; o < nb; ++o) {
                    float* dst = out + size_t(ob + o) * plane + i0;
                    _mm512_mask_storeu_ps(dst, m0, a[o]);
                    _mm512_mask_storeu_ps(dst + 16, m1, b[o]);
                }
            }
        }
    }
}
#endif

// conv3x3 for the plane elements [p0, p1) with the fastest kernel this CPU runs; all give the
// same bits. FASTCODEC_GENERIC_KERNELS=1 in the environment selects the generic code (tests
// compare the two).
void conv3x3_best(const ConvLayer& L, const float* packed, const float* in_pad, int h, int w, float* out,
                  size_t p0, size_t p1) {
#ifdef FASTCODEC_AVX512_KERNEL
    static const bool avx512 = __builtin_cpu_supports("avx512f") && !std::getenv("FASTCODEC_GENERIC_KERNELS");
    if (avx512) return conv3x3_avx512(L, packed, in_pad, h, w, out, p0, p1);
#else
    (void)packed;
#endif
    conv3x3(L, in_pad, h, w, out, p0, p1);
}

// A layer's weights as [oc block][ic][tap][kOcBlock outputs], zero for the missing output
// channels of the last block: the order in which the blocked kernel reads them. Built once per
// model (HyperScale's constructor), not per call and thread.
std::vector<float> pack_weights(const ConvLayer& L) {
    const int cin = L.cin, cout = L.cout, blocks = (cout + kOcBlock - 1) / kOcBlock;
    std::vector<float> packed(size_t(blocks) * cin * 9 * kOcBlock);
    for (int bi = 0; bi < blocks; ++bi)
        for (int ic = 0; ic < cin; ++ic)
            for (int k = 0; k < 9; ++k)
                for (int o = 0; o < kOcBlock; ++o) {
                    const int oc = bi * kOcBlock + o;
                    packed[((size_t(bi) * cin + ic) * 9 + k) * kOcBlock + o] =
                        oc < cout ? L.weight[(size_t(oc) * cin + ic) * 9 + k] : 0.f;
                }
    return packed;
}

template <typename F>
void parallel_for(int n, int threads, F f) {
    threads = std::max(1, std::min(threads, n));
    if (threads == 1) {
        f(0, n);
        return;
    }
    std::vector<std::thread> ts;
    const int chunk = (n + threads - 1) / threads;
    for (int t = 0; t < threads; ++t) {
        const int a = t * chunk, b = std::min(n, a + chunk);
        if (a < b) ts.emplace_back([&f, a, b] {
            FlushDenormals fd;
            f(a, b);
        });
    }
    for (auto& t : ts) t.join();
}

}  // namespace

HyperScale::HyperScale(std::vector<ConvLayer> layers, float log_lo, float log_hi)
    : layers_(std::move(layers)), log_lo_(log_lo), log_hi_(log_hi) {
    if (layers_.empty()) throw ArgumentError("HyperScale needs at least one layer");
    int c = layers_.front().cin;
    for (const ConvLayer& L : layers_) {
        if (L.cin != c || L.cin <= 0 || L.cout <= 0 || L.shuffle < 1 || L.cout % (L.shuffle * L.shuffle))
            throw ArgumentError("HyperScale: inconsistent layer shapes");
        if (L.weight.size() != size_t(L.cout) * L.cin * 9 || L.bias.size() != size_t(L.cout))
            throw ArgumentError("HyperScale: weight/bias sizes do not match the layer shape");
        c = L.cout / (L.shuffle * L.shuffle);
    }
    if (!(log_lo <= log_hi)) throw ArgumentError("HyperScale: log_lo must not exceed log_hi");
    for (const ConvLayer& L : layers_) packed_.push_back(pack_weights(L));
}

int HyperScale::upscale() const {
    int s = 1;
    for (const ConvLayer& L : layers_) s *= L.shuffle;
    return s;
}

std::vector<float> HyperScale::log_scales(const int32_t* z, int channels, int h, int w, int threads) const {
    if (channels != in_channels())
        throw ArgumentError("hyper-latent has " + std::to_string(channels) + " channels, the model expects " +
                            std::to_string(in_channels()));
    if (h <= 0 || w <= 0) throw ArgumentError("hyper-latent must not be empty");
    FlushDenormals fd;
    // z values are integers; beyond +-2^20 they are meaningless (and only come from damaged
    // files), so they are clamped to keep every intermediate finite
    std::vector<float> cur(size_t(channels) * h * w);
    for (size_t i = 0; i < cur.size(); ++i)
        cur[i] = static_cast<float>(std::max<int32_t>(-(1 << 20), std::min<int32_t>(1 << 20, z[i])));
    int ch = h, cw = w;
    std::vector<float> pad, pre, next;
    for (size_t li = 0; li < layers_.size(); ++li) {
        const ConvLayer& L = layers_[li];
        const size_t ws = size_t(cw) + 2;
        pad.assign(size_t(L.cin) * (ch + 2) * ws + kConvSlack, 0.f);
        for (int c = 0; c < L.cin; ++c)
            for (int y = 0; y < ch; ++y)
                std::copy(cur.begin() + (size_t(c) * ch + y) * cw, cur.begin() + (size_t(c) * ch + y + 1) * cw,
                          pad.begin() + (size_t(c) * (ch + 2) + y + 1) * ws + 1);
        pre.assign(size_t(L.cout) * ch * ws, 0.f);
        // threads split the plane in runs of kStep elements
        const size_t plane = size_t(ch) * ws;
        const int steps = int((plane + kStep - 1) / kStep);
        parallel_for(steps, threads, [&](int a, int b) {
            conv3x3_best(L, packed_[li].data(), pad.data(), ch, cw, pre.data(), size_t(a) * kStep,
                         std::min(plane, size_t(b) * kStep));
        });
        const int r = L.shuffle;
        const int oc = L.cout / (r * r), oh = ch * r, ow = cw * r;
        next.resize(size_t(oc) * oh * ow);
        for (int c = 0; c < oc; ++c)
            for (int i = 0; i < r; ++i)
                for (int j = 0; j < r; ++j) {
                    const float* src = pre.data() + size_t(c * r * r + i * r + j) * ch * ws;
                    for (int y = 0; y < ch; ++y)
                        for (int x = 0; x < cw; ++x) {
                            float v = src[size_t(y) * ws + x];
                            if (L.relu) v = v > 0.f ? v : 0.f;  // also maps NaN to 0
                            next[(size_t(c) * oh + size_t(y) * r + i) * ow + size_t(x) * r + j] = v;
                        }
                }
        cur.swap(next);
        ch = oh;
        cw = ow;
    }
    for (float& v : cur) v = v > log_lo_ ? (v < log_hi_ ? v : log_hi_) : log_lo_;  // NaN -> log_lo
    return cur;
}

void HyperScale::bins(const int32_t* z, int channels, int h, int w, const ScaleGrid& grid, uint8_t* out,
                      int threads) const {
    const std::vector<float> s = log_scales(z, channels, h, w, threads);
    scale_bins(s.data(), s.size(), grid, out);
}

}  // namespace fastcodec
