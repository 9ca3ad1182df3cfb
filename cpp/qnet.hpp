// The exact int8 synthesis: the int8 decoder graphs (decoder_int8.onnx, written by
// training/qat_decoder.py) run with integer convolutions (qconv.hpp), 256- and 65536-entry tables
// and the deterministic float convolutions of conv.hpp, so that a file decodes to the same pixels,
// bit for bit, on every machine, thread count and build (docs/format.md, "Bit-exact decoding").
//
// The network is a head, a sequence of int8 operations and a tail:
//   head   float 3x3 convolution of the float input (C x h x w), fused multiply-adds as in Net;
//          each value v quantised to q = clamp(round_half_even(v / scale) + zp, 0, 255) (one
//          correctly rounded division); then the pixel shuffle of the int8 graphs (the channels in
//          DCR order: channel s * C + c goes to pixel (2y + s / 2, 2x + s % 2), channel c)
//   igdn   the simplified inverse GDN on uint8: a = abs_table[x]; n = gamma (a 1x1 int8
//          convolution) of a; x = mul_table[x * 256 + n]
//   qconv  an int8 convolution (qconv.hpp), with the same shuffle when it has one
//   wide   (the mixed decoder only) stages in float with 12-bit convolution inputs (QWide), run
//          first: the head's output then stays float (its scale and zero point are unused)
//   tail   a 3x3 convolution with int16 weights (|w| <= 8191): acc = sum of (x - in_zp) * w,
//          exact in integers; t = float32(acc) * mult[oc] + add[oc] (two roundings); q =
//          clamp(round_half_even(t) + out_zp, 0, 255), pixel-shuffled in CRD order (channel
//          4c + 2i + j to pixel (2y + i, 2x + j), channel c), and returned as out_dequant[q]. (The
//          graph's last convolution is float; its weights quantised per output channel to 14 bits
//          change the pixels far less than the 8-bit activations do, and the integer sum is exact.
//          It runs as two int8 convolutions of the same input, w = 128 * hi + lo with hi, lo in
//          [-64, 64], whose sums combine exactly.)
// The tables are computed by the caller (python/fastcodec/_bitexact.py) from the graph's scales
// and zero points with float32 operations that docs/format.md specifies.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "conv.hpp"
#include "net.hpp"
#include "qconv.hpp"

namespace fastcodec {

struct QHead {
    ConvLayer conv;  // 3x3, shuffle 2 (DCR) after quantisation
    float scale = 1.f;
    int zp = 0;
};

struct QOp {
    enum Kind { igdn, qconv };
    Kind kind = qconv;
    QConvLayer layer;                  // igdn: gamma (1x1, C -> C, no shuffle); qconv: the layer
    std::vector<uint8_t> abs_table;    // igdn: 256 entries
    std::vector<uint8_t> mul_table;    // igdn: 65536 entries, [x * 256 + n]
    // igdn, optional: the parameters the mul table was made from, mul_table[a * 256 + b] =
    // clamp(round_half_even(((a - za) * sa) * ((b - zb) * sb) / sc) + zc, 0, 255) in float32; the
    // constructor checks all 65536 entries and then computes them instead of looking them up
    bool has_mul_params = false;
    int za = 0, zb = 0, zc = 0;
    float sa = 1.f, sb = 1.f, sc = 1.f;
    // set by the constructor: abs_table[v] == |v - abs_zp| for every v, mul computed
    bool abs_arith = false, mul_arith = false;
    int abs_zp = 0;
};

// A wide stage of the mixed decoder (fastcodec 0.10): at high rates the 8-bit ranges of the
// first stages clip, so these stages keep their tensors in float and quantise only the next
// convolution's input, to 12 bits. On the float tensor x (C x H x W, zero padding):
//   norm = gdn(|x|)                a 1x1 C -> C convolution (weight gamma, bias beta) with fused
//                                  multiply-adds in conv.hpp's order, as the bit-exact decoder's igdn
//   m    = x * norm                one float32 multiply
//   q    = clamp(round_half_even(m / scale) + zp, 0, 4095)   (one correctly rounded division)
//   acc  = bias + sum of (q - zp) * w over input channels and taps, exact in 32-bit integers (run
//          as two int8 convolutions of q = 256 * hi + lo, hi = q >> 8, lo = q & 255)
//   then, with the output channels in DCR order and pixel-shuffled by 2 as the qconv ones:
//   float_out: v = float32(acc) * mult[oc] (the next stage's x, float); otherwise uint8:
//   clamp(round_half_even(float32(acc) * mult[oc]) + out_zp, 0, 255), the first int8 operation's input.
struct QWide {
    ConvLayer gdn;                // 1x1, C -> C
    float scale = 1.f;            // of the 12-bit q
    int zp = 0;                   // 0..4095
    QConvLayer conv;              // 3x3, C -> 4C', shuffle 2; conv.scale holds mult, conv.out_zp the uint8 zero point
    bool float_out = false;
};

struct QTail {
    int cin = 0, cout = 0;             // cout: a multiple of 4 (a 2x CRD shuffle follows)
    std::vector<int16_t> weight;       // cout x cin x 3 x 3, each in [-8191, 8191]
    std::vector<float> mult, add;      // cout each
    int in_zp = 0, out_zp = 0;
    std::vector<float> out_dequant;    // 256 entries
};

class QSynthesis : public PooledExecutor {
public:
    QSynthesis(QHead head, std::vector<QOp> ops, QTail tail, std::vector<QWide> wide = {});

    // Runs the network on y (in_channels x h x w floats).
    Tensor run(const float* y, int h, int w, int threads = 1) const;

    int in_channels() const { return head_.conv.cin; }
    // per igdn: (abs computed, product computed), the rest looked up in the tables
    std::vector<std::pair<bool, bool>> arithmetic() const {
        std::vector<std::pair<bool, bool>> v;
        for (const QOp& op : ops_)
            if (op.kind == QOp::igdn) v.emplace_back(op.abs_arith, op.mul_arith);
        return v;
    }
    void out_shape(int h, int w, int* c, int* oh, int* ow) const;

private:
    // the wide stages, from the head's float output (pre: 4C planes of h x (w + 2)) to the first
    // uint8 tensor (out: the QTensor of qnet.cpp)
    void run_wide(const float* pre, int h, int w, int threads, void* out) const;

    QHead head_;
    std::vector<QWide> wide_;
    std::vector<QConvLayer> wide_layers_;    // each wide conv as run: zero point folded into the bias, raw where a float output follows
    std::vector<QConvPacked> wide_packed_;
    std::vector<std::vector<float>> wide_gdn_packed_;
    std::vector<QOp> ops_;
    QTail tail_;
    std::vector<float> head_packed_;
    std::vector<QConvPacked> packed_;
    QConvLayer tail_layer_;            // the tail's weights as hi (channels 0..cout-1) and lo parts
    QConvPacked tail_packed_;
};

// The exact int8 post-filter (postfilter_int8.npz, written by training/qat_postfilter.py; the
// two-scale filter of training/postfilter.py in integers). Every tensor is uint8 NHWC; each
// convolution is a qconv (qconv.hpp) with int8 weights:
//   P    the input rounded to 8-bit pixels: clamp(round_half_even(x * 255), 0, 255)
//   h0   pixel unshuffle of P at half resolution (channel 4c + 2i + j = pixel (2y + i, 2x + j) of
//        colour c), the quality code as channel 12, zeros in 13..15 (16 channels, zero point 0)
//   a1   inc(h0)                       3x3, 16 -> C, output zero point 0 (the ReLU)
//   d    down(unshuffle(a1))           1x1, 4C -> C2 at quarter resolution, zero point 0
//   d    mid_k(d) for each block       3x3, C2 -> C2, zero point 0
//   u    up(d), shuffled (DCR)         1x1, C2 -> 4C, back at half resolution
//   s    add_table[a1 * 256 + u]       the skip sum, requantised by a 65,536-entry table
//   a2   dec(s)                        3x3, C -> C, input zero point s_zp, output zero point 0
//   r    out(a2) as int32 sums         3x3, C -> 12 (raw), channel 4c + 2i + j to pixel
//        (2y + i, 2x + j) of colour c: t = f32(acc) * mult[k] + add[k]
//   out  clamp(round_half_even(f32(P) + t), 0, 255), returned as out / 255 in float32
struct QFilterSpec {
    QConvLayer inc, down;
    std::vector<QConvLayer> mids;
    QConvLayer up;
    std::vector<uint8_t> add_table;  // 65536
    QConvLayer dec, out;             // out: raw, 12 output channels
    std::vector<float> mult, add;    // 12 each
};

class QFilter : public PooledExecutor {
public:
    explicit QFilter(QFilterSpec spec);

    // x: 3 x h x w floats (h, w multiples of 4), quality: the file's quality / 100 (its code is
    // clamp(round_half_even(quality * 255), 0, 255)).
    Tensor run(const float* x, int h, int w, float quality, int threads = 1) const;

    int in_channels() const { return 3; }
    void out_shape(int h, int w, int* c, int* oh, int* ow) const;

private:
    QFilterSpec s_;
    QConvLayer out16_;  // out with its output channels padded to 16
    QConvPacked inc_p_, down_p_, up_p_, dec_p_, out_p_;
    std::vector<QConvPacked> mids_p_;
};

}  // namespace fastcodec
