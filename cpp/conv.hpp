// Deterministic float32 convolutions, shared by the hyper-decoder's scale branch (hyper.hpp) and
// the exact decoder (net.hpp).
//
// Every output element is computed by the same sequence of IEEE-754 operations on every machine:
//
//   * it starts from its bias and adds w * x for input channel 0, 1, ..., and within a channel
//     for the kernel taps (ky, kx) in row-major order; taps outside the input read 0 (zero
//     padding);
//   * multiplication and addition are separate, correctly rounded operations, or for layers
//     marked `fused` one fused multiply-add (rounded once); the core is built with
//     -ffp-contract=off and without -ffast-math, so the compiler neither contracts nor
//     reassociates anything;
//     the kernels are vectorised only across independent output elements, which keeps each
//     element's operation sequence unchanged, so the AVX-512, AVX2 and generic kernels give the
//     same bits;
//   * subnormal inputs and results are flushed to zero and every operation rounds to nearest even
//     (FTZ/DAZ and the rounding mode set for the duration of a call on x86 and AArch64, see
//     FlushDenormals), so the caller's floating-point mode does not matter.
//
// IEEE-754 guarantees identical results for this sequence on every conforming machine.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace fastcodec {

struct ConvLayer {
    int cin = 0, cout = 0;
    int k = 3;                    // kernel size: 3 (padding 1) or 1; stride 1
    std::vector<float> weight;    // cout x cin x k x k
    std::vector<float> bias;      // cout
    int shuffle = 1;              // PixelShuffle factor applied after the conv (1 = none)
    bool relu = false;            // ReLU after the (shuffled) output
    // false: w * x and the sum are two correctly rounded operations (the scale branch, whose
    // format was defined that way); true: one fused multiply-add, fma(w, x, sum), rounded once
    // (IEEE-754 defines it too, so it is just as reproducible; x86 with FMA3 and AArch64 run it
    // in one instruction, twice the throughput of a multiply and an add on Intel cores)
    bool fused = false;
};

// Sets flush-to-zero / denormals-are-zero and round-to-nearest-even for the lifetime of the
// object, restoring the caller's mode afterwards.
class FlushDenormals {
public:
    FlushDenormals();
    ~FlushDenormals();
    FlushDenormals(const FlushDenormals&) = delete;
    FlushDenormals& operator=(const FlushDenormals&) = delete;

private:
    uint64_t saved_ = 0;
};

// Extra zero floats after the last padded input plane: the vector kernels read a few elements
// past the end of a plane's last row.
constexpr size_t kConvSlack = 2 * 16 + 4;

// A layer's weights in the order the blocked kernels read them: [oc block of 8][ic][tap][8].
std::vector<float> pack_conv_weights(const ConvLayer& L);

// One convolution over zero-bordered planes. in_pad: L.cin planes of (h+2) x (w+2) floats (the
// image in the interior, zeros around it), followed by kConvSlack zero floats. out: L.cout planes
// of h x (w+2) floats, out_stride floats apart (0: h*(w+2)); element (y, x) of a plane lands at
// y*(w+2) + x (the last two columns of each row are scratch). packed: pack_conv_weights(L). Runs
// on up to `threads` threads.
void conv_padded(const ConvLayer& L, const float* packed, const float* in_pad, int h, int w, float* out,
                 int threads, size_t out_stride = 0);

// The kernel the environment asks for: FASTCODEC_CONV_KERNEL=generic|avx2 selects a slower one
// than the CPU allows (tests compare them; FASTCODEC_GENERIC_KERNELS=1, the older switch, means
// generic); "" when unset. Read by the float (conv.cpp) and integer (qconv.cpp) kernels.
std::string requested_kernel();

// f(a, b) over [0, n) split into up to `threads` contiguous ranges, each on its own thread
// (with denormals flushed); the calling thread waits.
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

}  // namespace fastcodec
