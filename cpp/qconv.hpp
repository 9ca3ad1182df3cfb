// Integer convolutions for the int8 decoder (qnet.hpp): uint8 activations, int8 weights, int32
// sums, one float32 multiply to requantise.
//
// Every output element is an exact function of its inputs on every machine:
//
//   * acc = bias + sum over (input channel, tap) of (x - in_zp) * w, in 32-bit integers. Integer
//     addition is associative, so the order of the sum does not matter, and the sizes are checked
//     so that no partial sum can overflow (check_qconv);
//   * v = float32(acc) * scale[oc], one correctly rounded IEEE-754 conversion and one multiply
//     (round to nearest even: the kernels run with the rounding mode set to it, see FlushDenormals);
//   * q = clamp(round_half_even(v) + out_zp, 0, 255).
//
// The AVX-512 VNNI, AVX2 and portable kernels therefore give the same bytes (tests compare them).
// The AVX2 kernel multiplies pairs of uint8 x int8 into saturating int16 (vpmaddubsw): weights are
// limited to [-64, 64], so that a pair never exceeds 2 * 255 * 64 = 32640 and nothing saturates.
//
// Tensors are NHWC with a one-pixel border: (h + 2) x (w + 2) pixels of C bytes each, the values
// in the interior. The border must hold in_zp (zero padding in real terms); see kQConvSlack for the
// bytes after the last pixel.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fastcodec {

struct QConvLayer {
    int cin = 0, cout = 0;
    int k = 3;                     // kernel size: 3 (padding 1) or 1; stride 1
    std::vector<int8_t> weight;    // cout x cin x k x k, each in [-64, 64]
    std::vector<int32_t> bias;     // cout
    std::vector<float> scale;      // cout: the requantisation multiplier (finite, > 0)
    int in_zp = 0, out_zp = 0;     // zero points of the input and output, 0..255
    // 2: the output channels are in DCR order (channel s * C + c, s = 2i + j, with C = cout / 4)
    // and go to pixel (2y + i, 2x + j), channel c of an output twice the size (the pixel shuffle
    // of the NHWC int8 graphs); 1: no shuffle
    int shuffle = 1;
    // true: no requantisation; the int32 sums (bias included) go to an int32 output of h x w x cout
    // (no border, no shuffle); scale and out_zp are unused
    bool raw = false;
};

// Bytes the vector kernels may read past the last input pixel (the pixel block of the last row
// reaches past the row's end): callers allocate them (their values do not matter).
inline size_t qconv_slack(int cin) { return size_t(cin) * 18 + 64; }

// Throws ArgumentError unless the layer can run: cin a multiple of 4, output channels (after the
// shuffle) a multiple of 16, weights in [-64, 64], scales finite and positive, zero points in
// 0..255, and every partial sum within int32.
void check_qconv(const QConvLayer& L);

// Weights in the kernels' order ([oc block of 16][tap][ic / 4][16][4]) and the bias with the input
// zero point folded in (bias - in_zp * sum of the channel's weights: the same integer sum).
struct QConvPacked {
    std::vector<int8_t> w;
    std::vector<int32_t> bias;
    std::vector<int16_t> wg;  // the portable kernel's copy: [oc block][tap][ic / 4][byte 0..3][16]
};
QConvPacked pack_qconv(const QConvLayer& L);

// One convolution. in: (h + 2) x (w + 2) x cin bytes with in_zp on the border, then
// qconv_slack(cin) readable bytes. out: the output tensor, bordered the same way ((h + 2) x
// (w + 2) x cout, or (2h + 2) x (2w + 2) x cout / 4 with the shuffle); only its interior is
// written; for a raw layer, h x w x cout int32 sums (out must then be int32-aligned). Runs on up
// to `threads` threads.
//
// Wide form (in_lo given): the input is q = 256 * in + in_lo with in in 0..15 (12-bit values split
// into bytes, both tensors bordered alike), the sum is 256 * (sum over in) + (sum over in_lo) +
// bias, exact in int32 for layers that pass check_qconv_wide; in_zp must be 0 (the caller folds
// the 12-bit zero point into the bias).
void qconv_nhwc(const QConvLayer& L, const QConvPacked& P, const uint8_t* in, int h, int w, uint8_t* out,
                int threads, const uint8_t* in_lo = nullptr);

// Throws ArgumentError unless L can run in the wide form: check_qconv, in_zp 0, and for every
// output channel sum |w| * 4095 + |bias| < 2^31.
void check_qconv_wide(const QConvLayer& L);

// The kernel qconv_nhwc uses on this machine: "avx512vnni", "avx2" or "generic"
// (FASTCODEC_CONV_KERNEL=generic|avx2 selects a slower one, as for the float convolutions).
const char* qconv_kernel_name();

}  // namespace fastcodec
