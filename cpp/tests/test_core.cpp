// Unit tests of the pixel/tensor conversion and latent quantisation (no Python).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "bitio.hpp"
#include "errors.hpp"
#include "hyper.hpp"
#include "image.hpp"
#include "latent.hpp"
#include "net.hpp"
#include "pixels.hpp"
#include "qconv.hpp"
#include "qnet.hpp"

using namespace fastcodec;

static int passed = 0, failed = 0;
#define CHECK(c)                                                        \
    do {                                                                \
        if (c) {                                                        \
            ++passed;                                                   \
        } else {                                                        \
            ++failed;                                                   \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);    \
        }                                                               \
    } while (0)

static void test_pixels_to_tensor_padding_and_strides() {
    // 2x3 RGB image, value = 10*y + x + 100*c
    const size_t h = 2, w = 3;
    std::vector<uint8_t> img(h * w * 3);
    for (size_t y = 0; y < h; ++y)
        for (size_t x = 0; x < w; ++x)
            for (size_t c = 0; c < 3; ++c) img[(y * w + x) * 3 + c] = uint8_t(10 * y + x + 100 * c);
    const size_t ph = 4, pw = 5;
    std::vector<float> t(3 * ph * pw, -1.f);
    pixels_to_tensor(img.data(), h, w, w * 3, 3, 1, t.data(), ph, pw);
    auto at = [&](size_t c, size_t y, size_t x) { return t[c * ph * pw + y * pw + x] * 255.f; };
    CHECK(std::fabs(at(0, 1, 2) - 12) < 1e-3);
    CHECK(std::fabs(at(2, 0, 1) - 201) < 1e-3);
    CHECK(std::fabs(at(1, 3, 4) - at(1, 1, 2)) < 1e-6);  // edge replication in both directions
    CHECK(std::fabs(at(0, 3, 0) - 10) < 1e-3);
    // the same image in planar layout (strides: row w, col 1, channel h*w) gives the same tensor
    std::vector<uint8_t> planar(h * w * 3);
    for (size_t y = 0; y < h; ++y)
        for (size_t x = 0; x < w; ++x)
            for (size_t c = 0; c < 3; ++c) planar[c * h * w + y * w + x] = img[(y * w + x) * 3 + c];
    std::vector<float> t2(3 * ph * pw);
    pixels_to_tensor(planar.data(), h, w, w, 1, h * w, t2.data(), ph, pw);
    CHECK(t == t2);
    bool threw = false;
    try {
        pixels_to_tensor(img.data(), h, w, w * 3, 3, 1, t.data(), 1, pw);
    } catch (const ArgumentError&) {
        threw = true;
    }
    CHECK(threw);
}

static void test_tensor_to_pixels_rounding() {
    const size_t ph = 1, pw = 6;
    std::vector<float> t(3 * pw, 0.f);
    const float vals[6] = {-0.5f, 0.5f / 255.f, 1.49f / 255.f, 254.5f / 255.f, 7.f,
                           std::numeric_limits<float>::quiet_NaN()};
    for (size_t x = 0; x < pw; ++x) t[x] = vals[x];
    std::vector<uint8_t> px(pw * 3);
    tensor_to_pixels(t.data(), ph, pw, px.data(), 1, pw);
    CHECK(px[0] == 0);
    CHECK(px[3] == 1);    // 0.5 rounds up
    CHECK(px[6] == 1);
    CHECK(px[9] == 255);  // 254.5 rounds up
    CHECK(px[12] == 255);
    CHECK(px[15] == 0);   // NaN -> 0
}

static void test_scale_grid_and_quantisation() {
    ScaleGrid g;
    g.log_min = std::log(0.11f);
    g.inv_step = 10.f;
    g.nbins = 64;
    CHECK(g.index(-100.f) == 0);
    CHECK(g.index(g.log_min) == 0);
    CHECK(g.index(g.log_min + 0.049f) == 0);
    CHECK(g.index(g.log_min + 0.051f) == 1);
    CHECK(g.index(100.f) == 63);
    CHECK(g.index(std::numeric_limits<float>::quiet_NaN()) == 0);
    CHECK(g.index(std::numeric_limits<float>::infinity()) == 0);

    const size_t C = 2, plane = 3;
    const float y[6] = {1.2f, -1.2f, 0.49f, 2.5f, -2.5f, 100.f};
    const float gain[2] = {1.f, 2.f};
    const float mu[6] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.5f};
    int32_t r[6];
    quantize_latent(y, gain, mu, C, plane, r);
    CHECK(r[0] == 1 && r[1] == -1 && r[2] == 0);
    CHECK(r[3] == 5 && r[4] == -5 && r[5] == 200);  // half away from zero; 200 - 0.5 -> 199.5 -> 200
    const float ig[2] = {1.f, 0.5f};
    float out[6];
    dequantize_latent(r, mu, ig, C, plane, out);
    CHECK(out[0] == 1.f && out[3] == 2.5f && out[5] == 100.25f);
}

static void test_grouped_roundtrip() {
    std::vector<SymbolCoder> coders;
    SymbolTableSpec a;
    a.mode = 1;
    a.vmin = -2;
    a.vmax = 2;
    a.nruns = 10;
    a.freqs.assign(10 * 5, 3);
    coders.emplace_back(a);
    SymbolTableSpec b;
    b.mode = 0;
    b.vmin = -20;
    b.vmax = 20;
    b.freqs.assign(42, 1);
    coders.emplace_back(b);
    std::mt19937 rng(5);
    const size_t n = 5000;
    std::vector<int32_t> v(n);
    std::vector<uint8_t> grp(n);
    for (size_t i = 0; i < n; ++i) {
        grp[i] = rng() % 2;
        v[i] = grp[i] ? int32_t(rng() % 61) - 30 : ((rng() % 4) ? 0 : int32_t(rng() % 7) - 3);
    }
    auto bytes = encode_grouped(v.data(), grp.data(), n, coders);
    CHECK(grouped_code_length(v.data(), grp.data(), n, coders) <= bytes.size() * 8);
    std::vector<int32_t> out(n);
    decode_grouped(bytes.data(), bytes.size(), grp.data(), n, coders, out.data());
    CHECK(out == v);
    bool threw = false;
    try {
        decode_grouped(bytes.data(), bytes.size() / 2, grp.data(), n, coders, out.data());
    } catch (const FormatError&) {
        threw = true;
    }
    CHECK(threw);
}

// Scalar reference convolution (zero padding, stride 1): bias, then for ic = 0.., taps row-major
// either one fused multiply-add or a separate multiply and add (this file is built with
// -ffp-contract=off too); absolute: of |x|.
static std::vector<float> reference_conv(const ConvLayer& L, const std::vector<float>& in, int h, int w, bool fused,
                                         bool absolute) {
    const int k = L.k, pad = k / 2;
    std::vector<float> out(size_t(L.cout) * h * w);
    for (int o = 0; o < L.cout; ++o)
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) {
                float acc = L.bias[o];
                for (int i = 0; i < L.cin; ++i)
                    for (int t = 0; t < k * k; ++t) {
                        const int yy = y + t / k - pad, xx = x + t % k - pad;
                        float v = (yy < 0 || yy >= h || xx < 0 || xx >= w) ? 0.f : in[(size_t(i) * h + yy) * w + xx];
                        if (absolute) v = std::fabs(v);
                        const float wv = L.weight[(size_t(o) * L.cin + i) * k * k + t];
                        if (fused) {
                            acc = std::fma(wv, v, acc);
                        } else {
                            const float p = wv * v;
                            acc = acc + p;
                        }
                    }
                out[(size_t(o) * h + y) * w + x] = acc;
            }
    return out;
}

// A layer's conv output (cout x h x w) through its PixelShuffle and ReLU.
static std::vector<float> shuffle_relu(const std::vector<float>& pre, const ConvLayer& L, int h, int w) {
    const int r = L.shuffle, oc = L.cout / (r * r);
    std::vector<float> next(pre.size());
    for (int c = 0; c < oc; ++c)
        for (int i = 0; i < r; ++i)
            for (int j = 0; j < r; ++j)
                for (int y = 0; y < h; ++y)
                    for (int x = 0; x < w; ++x) {
                        float v = pre[(size_t(c * r * r + i * r + j) * h + y) * w + x];
                        if (L.relu) v = v > 0.f ? v : 0.f;
                        next[(size_t(c) * h * r + size_t(y) * r + i) * w * r + size_t(x) * r + j] = v;
                    }
    return next;
}

// Scalar reference of the scale branch: reference_conv with separate multiply and add, then
// PixelShuffle and ReLU; the library's blocked, chunked, vectorised and threaded kernels must give
// exactly these bits.
static std::vector<float> reference_scales(const std::vector<ConvLayer>& layers, const std::vector<int32_t>& z,
                                           int h, int w, float lo, float hi) {
    std::vector<float> cur(z.begin(), z.end());
    for (const ConvLayer& L : layers) {
        cur = shuffle_relu(reference_conv(L, cur, h, w, false, false), L, h, w);
        h *= L.shuffle;
        w *= L.shuffle;
    }
    for (float& v : cur) v = v > lo ? (v < hi ? v : hi) : lo;
    return cur;
}

static void test_hyper_scale_matches_scalar_reference() {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> wd(-0.3f, 0.3f);
    auto layer = [&](int cin, int cout, int shuffle, bool relu) {
        ConvLayer L;
        L.cin = cin, L.cout = cout, L.shuffle = shuffle, L.relu = relu;
        for (int i = 0; i < cout * cin * 9; ++i) L.weight.push_back(wd(rng));
        for (int i = 0; i < cout; ++i) L.bias.push_back(wd(rng));
        return L;
    };
    // 13 output channels: a partial block of 8; planes from 1 element to several 512-element chunks
    const std::vector<ConvLayer> layers = {layer(5, 12, 2, true), layer(3, 13, 1, false)};
    const HyperScale hs(layers, -2.f, 2.5f);
    const int sizes[][2] = {{1, 1}, {2, 3}, {5, 17}, {11, 23}, {19, 40}};
    for (const auto& sz : sizes) {
        const int h = sz[0], w = sz[1];
        std::vector<int32_t> z(size_t(5) * h * w);
        for (auto& v : z) v = int32_t(rng() % 9) - 4;
        const std::vector<float> ref = reference_scales(layers, z, h, w, -2.f, 2.5f);
        for (int threads : {1, 2, 3, 8}) {
            const std::vector<float> got = hs.log_scales(z.data(), 5, h, w, threads);
            bool same = got.size() == ref.size();
            for (size_t i = 0; same && i < ref.size(); ++i) same = std::memcmp(&got[i], &ref[i], sizeof(float)) == 0;
            CHECK(same);
        }
    }
}

// Scalar reference of a Net of convolutions (fused multiply-adds in the documented order: bias,
// then input channel 0.., taps row-major), pixel shuffles, ReLUs and simplified IGDNs.
static std::vector<float> reference_net(const std::vector<NetOp>& ops, std::vector<float> cur, int c, int h, int w) {
    for (const NetOp& op : ops) {
        const ConvLayer& L = op.layer;
        if (op.kind == NetOp::igdn) {
            const std::vector<float> norm = reference_conv(L, cur, h, w, true, true);
            for (size_t i = 0; i < cur.size(); ++i) cur[i] = cur[i] * norm[i];
            continue;
        }
        cur = shuffle_relu(reference_conv(L, cur, h, w, true, false), L, h, w);
        c = L.cout / (L.shuffle * L.shuffle);
        h *= L.shuffle;
        w *= L.shuffle;
    }
    (void)c;
    return cur;
}

static void test_net_matches_scalar_fma_reference() {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> wd(-0.3f, 0.3f);
    auto op = [&](NetOp::Kind kind, int cin, int cout, int k, int shuffle, bool relu) {
        NetOp o;
        o.kind = kind;
        o.layer.cin = cin, o.layer.cout = cout, o.layer.k = k, o.layer.shuffle = shuffle, o.layer.relu = relu;
        for (int i = 0; i < cout * cin * k * k; ++i) o.layer.weight.push_back(kind == NetOp::igdn ? std::fabs(wd(rng)) : wd(rng));
        for (int i = 0; i < cout; ++i) o.layer.bias.push_back(kind == NetOp::igdn ? 1.f : wd(rng));
        return o;
    };
    // 20 output channels: a partial block; 1x1 and 3x3; an IGDN between; 37 input channels: more
    // than one block of input channels, with a partial block of outputs (the partial sums of the
    // missing outputs must not be read: AddressSanitizer checks)
    const std::vector<NetOp> ops = {op(NetOp::conv, 7, 20, 3, 2, false), op(NetOp::igdn, 5, 5, 1, 1, false),
                                    op(NetOp::conv, 5, 37, 1, 1, true), op(NetOp::conv, 37, 12, 3, 1, false),
                                    op(NetOp::conv, 12, 3, 3, 1, false)};
    const Net net(ops, 7);
    const int sizes[][2] = {{1, 1}, {3, 5}, {9, 31}, {17, 40}};
    for (const auto& sz : sizes) {
        const int h = sz[0], w = sz[1];
        std::vector<float> x(size_t(7) * h * w);
        for (auto& v : x) v = wd(rng) * 4.f;
        const std::vector<float> ref = reference_net(ops, x, 7, h, w);
        for (int threads : {1, 2, 3}) {
            const Tensor got = net.run(x.data(), h, w, 0.f, threads);
            bool same = got.v.size() == ref.size() && got.c == 3 && got.h == 2 * h && got.w == 2 * w;
            for (size_t i = 0; same && i < ref.size(); ++i) same = std::memcmp(&got.v[i], &ref[i], sizeof(float)) == 0;
            CHECK(same);
        }
    }
    // known answer: fma(1 + 2^-12, 1 + 2^-12, -1) = 2^-11 + 2^-24 (a multiply, then an add: 2^-11)
    NetOp one;
    one.kind = NetOp::conv;
    one.layer.cin = one.layer.cout = 1;
    one.layer.k = 1;
    one.layer.weight = {1.f + 0x1p-12f};
    one.layer.bias = {-1.f};
    const Net n1({one}, 1);
    const std::vector<float> xs(40, 1.f + 0x1p-12f);
    const Tensor t = n1.run(xs.data(), 2, 20, 0.f, 1);
    bool exact = true;
    for (float v : t.v) exact = exact && v == 0x1p-11f + 0x1p-24f;
    CHECK(exact);
    // the gain interpolation: exact where it must be, and log-linear
    CHECK(det_interp(2.f, 8.f, 0.5) == 4.f);
    CHECK(det_interp(0.37f, 5.5f, 0.0) == 0.37f);
    CHECK(det_interp(0.37f, 5.5f, 1.0) == 5.5f);
    CHECK(std::fabs(det_interp(1.f, 10.f, 0.25) - std::pow(10.f, 0.25f)) < 1e-6f);
    bool threw = false;
    try {
        NetOp bad = one;
        bad.layer.cin = 2;
        const Net nb({bad}, 1);
    } catch (const ArgumentError&) {
        threw = true;
    }
    CHECK(threw);
}

// The int8 convolution against a direct scalar computation of its definition (qconv.hpp): every
// shape path of the kernels (16, 32, 48 and 64 output channels, 1x1 and 3x3, the shuffle, raw
// sums), widths that leave partial pixel blocks, 1-3 threads. Under AddressSanitizer this also
// checks that the kernels stay inside the slack they are given.
// Runs L (on in, or on the wide form's in + in_lo) and compares with the reference int32 sums: the
// raw output itself, or each sum requantised and placed as the layer's shuffle puts it.
static bool qconv_output_matches(const QConvLayer& L, const QConvPacked& P, const std::vector<uint8_t>& in,
                                 const uint8_t* in_lo, int h, int w, const std::vector<int32_t>& sums, int threads) {
    if (L.raw) {
        std::vector<int32_t> out(sums.size(), 7);
        qconv_nhwc(L, P, in.data(), h, w, reinterpret_cast<uint8_t*>(out.data()), threads, in_lo);
        return out == sums;
    }
    const int r = L.shuffle, C4 = L.cout / (r * r), oh = h * r, ow = w * r;
    std::vector<uint8_t> out((size_t(oh) + 2) * (ow + 2) * C4, 0);
    qconv_nhwc(L, P, in.data(), h, w, out.data(), threads, in_lo);
    bool same = true;
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int o = 0; o < L.cout; ++o) {
                const float v = float(sums[(size_t(y) * w + x) * L.cout + o]) * L.scale[o];
                long q = std::lrint(double(v)) + L.out_zp;  // v is a float: exact in double
                q = q < 0 ? 0 : (q > 255 ? 255 : q);
                const int s = o / C4, ch = o % C4;
                const int oy = r == 2 ? 2 * y + s / 2 : y, ox = r == 2 ? 2 * x + s % 2 : x;
                same = same && out[((size_t(oy) + 1) * (ow + 2) + ox + 1) * C4 + ch] == uint8_t(q);
            }
    return same;
}

// The wide form: q = 256 * hi + lo (12-bit inputs as two byte tensors), sums exact in int32.
static void test_qconv_wide_matches_scalar_reference() {
    std::mt19937 rng(9);
    std::uniform_int_distribution<int> wd(-64, 64), hd(0, 15), ld(0, 255), bd(-30000, 30000);
    struct Case { int cin, cout, shuffle; bool raw; };
    const Case cases[] = {{8, 16, 1, true}, {16, 64, 2, false}, {12, 48, 1, false}};
    for (const Case& c : cases) {
        QConvLayer L;
        L.cin = c.cin, L.cout = c.cout, L.k = 3, L.shuffle = c.shuffle, L.raw = c.raw;
        L.in_zp = 0, L.out_zp = ld(rng);
        for (int i = 0; i < c.cout * c.cin * 9; ++i) L.weight.push_back(int8_t(wd(rng)));
        for (int i = 0; i < c.cout; ++i) L.bias.push_back(bd(rng)), L.scale.push_back(std::ldexp(1.f + ld(rng) / 256.f, -18));
        check_qconv_wide(L);
        const QConvPacked P = pack_qconv(L);
        for (int w : {1, 7, 10}) {
            const int h = 2, r = c.shuffle, C4 = c.cout / (r * r);
            const size_t n = (size_t(h) + 2) * (w + 2) * c.cin + qconv_slack(c.cin);
            std::vector<uint8_t> hi(n, 8), lo(n, 3);  // the border: q = 8 * 256 + 3, the same in the reference
            for (int y = 0; y < h; ++y)
                for (int x = 0; x < w; ++x)
                    for (int i = 0; i < c.cin; ++i) {
                        const size_t at = ((size_t(y) + 1) * (w + 2) + x + 1) * c.cin + i;
                        hi[at] = uint8_t(hd(rng)), lo[at] = uint8_t(ld(rng));
                    }
            std::vector<int32_t> sums(size_t(h) * w * c.cout);
            for (int y = 0; y < h; ++y)
                for (int x = 0; x < w; ++x)
                    for (int o = 0; o < c.cout; ++o) {
                        int64_t acc = L.bias[o];
                        for (int i = 0; i < c.cin; ++i)
                            for (int t = 0; t < 9; ++t) {
                                const size_t at = ((size_t(y) + t / 3) * (w + 2) + x + t % 3) * c.cin + i;
                                acc += int64_t(256 * hi[at] + lo[at]) * L.weight[(size_t(o) * c.cin + i) * 9 + t];
                            }
                        sums[(size_t(y) * w + x) * c.cout + o] = int32_t(acc);
                    }
            for (int threads : {1, 2}) CHECK(qconv_output_matches(L, P, hi, lo.data(), h, w, sums, threads));
        }
    }
}

static void test_qconv_matches_scalar_reference() {
    std::mt19937 rng(5);
    std::uniform_int_distribution<int> wd(-64, 64), xd(0, 255), bd(-30000, 30000);
    struct Case { int cin, cout, k, shuffle; bool raw; };
    const Case cases[] = {{8, 16, 3, 1, false}, {12, 32, 1, 1, false}, {4, 64, 3, 2, false},
                          {16, 48, 3, 1, false}, {8, 128, 3, 2, false}, {20, 48, 3, 1, true}};
    for (const Case& c : cases) {
        QConvLayer L;
        L.cin = c.cin, L.cout = c.cout, L.k = c.k, L.shuffle = c.shuffle, L.raw = c.raw;
        L.in_zp = xd(rng), L.out_zp = xd(rng);
        const int nt = c.k * c.k;
        for (int i = 0; i < c.cout * c.cin * nt; ++i) L.weight.push_back(int8_t(wd(rng)));
        for (int i = 0; i < c.cout; ++i) L.bias.push_back(bd(rng)), L.scale.push_back(std::ldexp(1.f + xd(rng) / 256.f, -12));
        const QConvPacked P = pack_qconv(L);
        for (int w : {1, 5, 9, 17}) {
            const int h = 3, r = c.shuffle, C4 = c.cout / (r * r);
            std::vector<uint8_t> in((size_t(h) + 2) * (w + 2) * c.cin + qconv_slack(c.cin), uint8_t(L.in_zp));
            for (int y = 0; y < h; ++y)
                for (int x = 0; x < w; ++x)
                    for (int i = 0; i < c.cin; ++i) in[((size_t(y) + 1) * (w + 2) + x + 1) * c.cin + i] = uint8_t(xd(rng));
            // the reference: sums of (x - in_zp) * w with the padding at in_zp, then requantised
            std::vector<int32_t> sums(size_t(h) * w * c.cout);
            for (int y = 0; y < h; ++y)
                for (int x = 0; x < w; ++x)
                    for (int o = 0; o < c.cout; ++o) {
                        int64_t acc = L.bias[o];
                        for (int i = 0; i < c.cin; ++i)
                            for (int t = 0; t < nt; ++t) {
                                const int yy = c.k == 3 ? y + t / 3 : y + 1, xx = c.k == 3 ? x + t % 3 : x + 1;
                                acc += int64_t(int(in[(size_t(yy) * (w + 2) + xx) * c.cin + i]) - L.in_zp) *
                                       L.weight[(size_t(o) * c.cin + i) * nt + t];
                            }
                        sums[(size_t(y) * w + x) * c.cout + o] = int32_t(acc);
                    }
            for (int threads : {1, 2, 3}) CHECK(qconv_output_matches(L, P, in, nullptr, h, w, sums, threads));
        }
    }
    // weights beyond [-64, 64] would saturate the AVX2 kernel's int16 pairs: refused
    QConvLayer bad;
    bad.cin = 4, bad.cout = 16, bad.k = 1;
    bad.weight.assign(64, 65);
    bad.bias.assign(16, 0);
    bad.scale.assign(16, 1.f);
    bool threw = false;
    try {
        pack_qconv(bad);
    } catch (const ArgumentError&) {
        threw = true;
    }
    CHECK(threw);
    // the wide form takes no input zero point (it belongs in the bias)
    bad.weight.assign(64, 1);
    bad.in_zp = 3;
    threw = false;
    try {
        check_qconv_wide(bad);
    } catch (const ArgumentError&) {
        threw = true;
    }
    CHECK(threw);
    std::printf("int8 kernel: %s\n", qconv_kernel_name());
}

// The int8 post-filter: with zero weights its output is round_half_even(P + add[k]) (a known
// answer that checks the pixel rounding, the residual's CRD placement and half-to-even), and a
// random filter gives the same bytes on 1, 2 and 3 threads.
static QFilterSpec filter_spec(std::mt19937& rng, bool zero) {
    std::uniform_int_distribution<int> wd(-64, 64), bd(-3000, 3000);
    auto layer = [&](int cin, int cout, int k, int shuffle, int in_zp, int out_zp, bool raw) {
        QConvLayer L;
        L.cin = cin, L.cout = cout, L.k = k, L.shuffle = shuffle, L.in_zp = in_zp, L.out_zp = out_zp, L.raw = raw;
        for (int i = 0; i < cout * cin * k * k; ++i) L.weight.push_back(int8_t(zero ? 0 : wd(rng)));
        for (int i = 0; i < cout; ++i) L.bias.push_back(zero ? 0 : bd(rng)), L.scale.push_back(std::ldexp(1.f, -11));
        return L;
    };
    const int C = 16, C2 = 16;
    QFilterSpec S;
    S.inc = layer(16, C, 3, 1, 0, 0, false);
    S.down = layer(4 * C, C2, 1, 1, 0, 0, false);
    S.mids.push_back(layer(C2, C2, 3, 1, 0, 0, false));
    S.up = layer(C2, 4 * C, 1, 2, 0, 128, false);
    for (int i = 0; i < 65536; ++i) S.add_table.push_back(uint8_t(std::min(255, (i >> 8) / 2 + (i & 255) / 2)));
    S.dec = layer(C, C, 3, 1, 100, 0, false);
    S.out = layer(C, 12, 3, 1, 0, 0, true);
    for (int k = 0; k < 12; ++k) {
        S.mult.push_back(zero ? 0.f : 1e-4f);
        S.add.push_back(k < 4 ? 0.6f : (k < 8 ? -0.6f : 0.5f));
    }
    return S;
}

static void test_qfilter() {
    std::mt19937 rng(9);
    const int h = 8, w = 12;
    std::vector<float> x(3 * h * w);
    std::vector<int> P(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        P[i] = int(rng() % 256);
        x[i] = float(P[i]) / 255.f;
    }
    const QFilter zero(filter_spec(rng, true));
    const Tensor t = zero.run(x.data(), h, w, 0.5f, 2);
    bool ok = t.c == 3 && t.h == h && t.w == w;
    for (size_t i = 0; ok && i < x.size(); ++i) {
        const int c = int(i / (h * w)), p = P[i];
        const int want = c == 0 ? std::min(p + 1, 255) : (c == 1 ? std::max(p - 1, 0) : p + (p & 1));
        ok = std::lrint(t.v[i] * 255.f) == std::min(want, 255);
    }
    CHECK(ok);
    const QFilter rnd(filter_spec(rng, false));
    const Tensor a = rnd.run(x.data(), h, w, 0.37f, 1);
    CHECK(rnd.run(x.data(), h, w, 0.37f, 2).v == a.v);
    CHECK(rnd.run(x.data(), h, w, 0.37f, 3).v == a.v);
    CHECK(rnd.run(x.data(), h, w, 0.9f, 1).v != a.v);  // the quality plane reaches the output
    bool threw = false;
    try {
        rnd.run(x.data(), 6, 12, 0.5f, 1);  // not a multiple of 4
    } catch (const ArgumentError&) {
        threw = true;
    }
    CHECK(threw);
    QFilterSpec bad = filter_spec(rng, false);
    bad.add_table.resize(100);
    threw = false;
    try {
        QFilter f(std::move(bad));
    } catch (const ArgumentError&) {
        threw = true;
    }
    CHECK(threw);
}

// PNG row filters (ISO/IEC 15948 section 9): rows filtered here with each type, by the
// standard's definitions, come back exactly; a filter type above 4 is rejected.
static void test_png_unfilter() {
    std::mt19937 rng(3);
    const size_t rows = 7, bpp = 6, row_bytes = 5 * bpp;
    std::vector<uint8_t> img(rows * row_bytes), filtered(rows * (row_bytes + 1)), out(rows * row_bytes);
    for (uint8_t& v : img) v = uint8_t(rng());
    for (size_t y = 0; y < rows; ++y) {
        const int type = int(y % 5);
        filtered[y * (row_bytes + 1)] = uint8_t(type);
        for (size_t i = 0; i < row_bytes; ++i) {
            const int a = i >= bpp ? img[y * row_bytes + i - bpp] : 0;
            const int b = y ? img[(y - 1) * row_bytes + i] : 0;
            const int c = (y && i >= bpp) ? img[(y - 1) * row_bytes + i - bpp] : 0;
            const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
            const int pred[5] = {0, a, b, (a + b) / 2, pa <= pb && pa <= pc ? a : pb <= pc ? b : c};
            filtered[y * (row_bytes + 1) + 1 + i] = uint8_t(img[y * row_bytes + i] - pred[type]);
        }
    }
    png_unfilter(filtered.data(), filtered.size(), rows, row_bytes, int(bpp), out.data());
    CHECK(out == img);
    filtered[2 * (row_bytes + 1)] = 5;
    bool threw = false;
    try {
        png_unfilter(filtered.data(), filtered.size(), rows, row_bytes, int(bpp), out.data());
    } catch (const FormatError&) {
        threw = true;
    }
    CHECK(threw);
    threw = false;
    try {
        png_unfilter(filtered.data(), filtered.size() - 1, rows, row_bytes, int(bpp), out.data());
    } catch (const ArgumentError&) {
        threw = true;
    }
    CHECK(threw);
}

// Pixel coding (docs/format.md "Pixel coding"): known-answer stripes with literal bytes (any
// change to them is a format change), and the max_error bound on random images.
static void test_pixel_stripes() {
    const uint8_t gray[6] = {10, 12, 11, 9, 200, 13};
    const std::vector<uint8_t> gray_bytes = {236, 255, 255, 255, 255, 255, 254, 82, 74, 79, 202,
                                             79,  255, 255, 255, 255, 150, 67,  128, 141, 192, 69};
    // 1 activity class ('11'), one table ('1'), direct ('0'), literals -48..48 ('1100'), ...
    CHECK(pixel_encode_stripe(gray, 3, 1, 1, 3, 2, 1, 0) == gray_bytes);
    uint8_t out[6] = {};
    pixel_decode_stripe(gray_bytes.data(), gray_bytes.size(), 3, 2, 1, 0, out, 3);
    CHECK(std::memcmp(out, gray, 6) == 0);
    const uint8_t rgb[6] = {255, 0, 128, 250, 3, 120};
    const std::vector<uint8_t> rgb_bytes = {32,  113, 95,  255, 255, 255, 253, 175, 255, 255, 255, 255,
                                            216, 167, 255, 253, 175, 255, 255, 237, 3,   24,  47,  64};
    uint8_t recon[6] = {};
    CHECK(pixel_encode_stripe(rgb, 6, 3, 1, 2, 1, 3, 1, recon) == rgb_bytes);
    const uint8_t expect[6] = {255, 0, 129, 249, 3, 121};  // within 1 of rgb
    CHECK(std::memcmp(recon, expect, 6) == 0);
    pixel_decode_stripe(rgb_bytes.data(), rgb_bytes.size(), 2, 1, 3, 1, out, 6);
    CHECK(std::memcmp(out, expect, 6) == 0);
    // a byte less is truncated, a byte more is too many bits left over
    for (size_t n : {rgb_bytes.size() - 1, rgb_bytes.size() + 1}) {
        std::vector<uint8_t> b(rgb_bytes);
        b.resize(n, 0);
        bool threw = false;
        try {
            pixel_decode_stripe(b.data(), b.size(), 2, 1, 3, 1, out, 6);
        } catch (const FormatError&) {
            threw = true;
        }
        CHECK(threw);
    }
    // random images: round trip within max_error (exact when 0), strided input
    std::mt19937 rng(7);
    for (int trial = 0; trial < 40; ++trial) {
        const int w = 1 + int(rng() % 37), h = 1 + int(rng() % 23), c = (trial & 1) ? 3 : 1;
        const int near = trial % 5 == 0 ? 0 : int(rng() % 9);
        std::vector<uint8_t> img(size_t(w * h * c) * 2);  // every other byte: a strided view
        for (size_t i = 0; i < img.size(); ++i)
            img[i] = uint8_t((trial % 3 == 0) ? rng() : (i / 7 + (rng() % 5)) * 3);
        std::vector<uint8_t> rec(size_t(w * h * c)), dec(size_t(w * h * c));
        const std::vector<uint8_t> bytes =
            pixel_encode_stripe(img.data(), 2 * w * c, 2 * c, 2, w, h, c, near, rec.data());
        pixel_decode_stripe(bytes.data(), bytes.size(), w, h, c, near, dec.data(), ptrdiff_t(w) * c);
        CHECK(rec == dec);
        int worst = 0;
        for (size_t i = 0; i < dec.size(); ++i) worst = std::max(worst, std::abs(int(dec[i]) - int(img[2 * i])));
        CHECK(worst <= near);
    }
}

// 16-bit stripes (docs/format.md "16-bit samples"): known-answer stripes with literal bytes, round
// trips within max_error over the whole 16-bit range, and invalid streams.
static bool rejects16(const std::vector<uint8_t>& b, int w, int rows, int c, int near) {
    std::vector<uint16_t> out(size_t(w * rows * c));
    try {
        pixel_decode_stripe16(b.data(), b.size(), w, rows, c, near, out.data(), ptrdiff_t(w) * c);
    } catch (const FormatError&) {
        return true;
    }
    return false;
}

static void test_pixel_stripes16() {
    const uint16_t gray[6] = {1000, 1012, 1011, 990, 60000, 1013};
    const std::vector<uint8_t> gray_bytes = {142, 61, 203, 38, 241, 244, 96, 12, 191,
                                             253, 127, 209, 46, 98, 204, 168, 128};
    // sample scale 8 ('1000': 60000 has 16 bits), 1 activity class ('11'), one table ('1'),
    // direct ('0'), literals -3..3 ('0011'), 13 raw low bits ('1101'), ...
    CHECK(pixel_encode_stripe16(gray, 3, 1, 1, 3, 2, 1, 0) == gray_bytes);
    uint16_t out[6] = {};
    pixel_decode_stripe16(gray_bytes.data(), gray_bytes.size(), 3, 2, 1, 0, out, 3);
    CHECK(std::memcmp(out, gray, sizeof gray) == 0);
    const uint16_t rgb[6] = {65535, 0, 40000, 1000, 300, 2000};
    const std::vector<uint8_t> rgb_bytes = {130, 4, 113, 14, 238, 33, 205, 192, 153,
                                            155, 208, 39, 157, 171, 60, 133, 0};
    uint16_t recon[6] = {};
    CHECK(pixel_encode_stripe16(rgb, 6, 3, 1, 2, 1, 3, 2, recon) == rgb_bytes);
    const uint16_t expect[6] = {65535, 0, 40000, 1000, 300, 2001};  // within 2 of rgb
    CHECK(std::memcmp(recon, expect, sizeof expect) == 0);
    pixel_decode_stripe16(rgb_bytes.data(), rgb_bytes.size(), 2, 1, 3, 2, out, 6);
    CHECK(std::memcmp(out, expect, sizeof expect) == 0);
    // truncated, too long, and a sample scale above 8 (the first four bits)
    CHECK(rejects16(std::vector<uint8_t>(rgb_bytes.begin(), rgb_bytes.end() - 1), 2, 1, 3, 2));
    std::vector<uint8_t> longer(rgb_bytes);
    longer.push_back(0);
    CHECK(rejects16(longer, 2, 1, 3, 2));
    std::vector<uint8_t> scale9(gray_bytes);
    scale9[0] = uint8_t((scale9[0] & 0x0f) | 0x90);
    CHECK(rejects16(scale9, 3, 2, 1, 0));
    // random images: round trip within max_error (exact when 0), strided input, every range of values
    std::mt19937 rng(11);
    for (int trial = 0; trial < 60; ++trial) {
        const int w = 1 + int(rng() % 41), h = 1 + int(rng() % 29), c = (trial & 1) ? 3 : 1;
        const int near = trial % 4 == 0 ? 0 : int(rng() % 33);
        const int bits = 1 + int(rng() % 16);
        std::vector<uint16_t> img(size_t(w * h * c) * 2);  // every other element: a strided view
        for (size_t i = 0; i < img.size(); ++i) {
            const uint32_t smooth = uint32_t(i / 5) * 37u + rng() % 9u;
            img[i] = uint16_t((trial % 3 == 0 ? rng() : smooth) & ((1u << bits) - 1));
        }
        std::vector<uint16_t> rec(size_t(w * h * c)), dec(size_t(w * h * c));
        PixelStripeStats st;
        const std::vector<uint8_t> bytes =
            pixel_encode_stripe16(img.data(), 2 * w * c, 2 * c, 2, w, h, c, near, rec.data(), &st);
        CHECK((st.header_bits + st.data_bits + 7) / 8 == bytes.size());
        pixel_decode_stripe16(bytes.data(), bytes.size(), w, h, c, near, dec.data(), ptrdiff_t(w) * c);
        CHECK(rec == dec);
        int worst = 0;
        for (size_t i = 0; i < dec.size(); ++i) worst = std::max(worst, std::abs(int(dec[i]) - int(img[2 * i])));
        CHECK(worst <= near);
    }
}

// Contexts 2 (docs/format.md "Contexts 2"): round trips of 8- and 16-bit stripes within max_error,
// with copies where lossless; the same stripe read with the other contexts is not the image.
static void test_pixel_contexts2() {
    std::mt19937 rng(23);
    for (int trial = 0; trial < 60; ++trial) {
        const int w = 1 + int(rng() % 45), h = 1 + int(rng() % 27), c = (trial % 3) ? 3 : 1;
        const int near = trial % 4 == 0 ? 0 : int(rng() % 33);
        const bool deep = trial % 5 == 1;
        const size_t n = size_t(w * h * c);
        if (deep) {
            std::vector<uint16_t> img(n), rec(n), dec(n);
            for (size_t i = 0; i < n; ++i) img[i] = uint16_t((i / 3) * 611u + rng() % 700u);
            const std::vector<uint8_t> b = pixel_encode_stripe16(img.data(), w * c, c, 1, w, h, c, near, rec.data(),
                                                                 nullptr, true);
            pixel_decode_stripe16(b.data(), b.size(), w, h, c, near, dec.data(), ptrdiff_t(w) * c, true);
            CHECK(rec == dec);
            int worst = 0;
            for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(int(dec[i]) - int(img[i])));
            CHECK(worst <= near);
            continue;
        }
        std::vector<uint8_t> img(n), rec(n), dec(n);
        for (size_t i = 0; i < n; ++i)  // repeating rows (copies pay) with noise, or plain noise
            img[i] = uint8_t(trial % 2 ? ((i % (size_t(w) * c)) * 29 + (rng() % 3)) : rng());
        bool used = false;
        const std::vector<uint8_t> b = pixel_encode_stripe(img.data(), w * c, c, 1, w, h, c, near, rec.data(), nullptr,
                                                           near == 0, &used, true);
        pixel_decode_stripe(b.data(), b.size(), w, h, c, near, dec.data(), ptrdiff_t(w) * c, near == 0 && used, true);
        CHECK(rec == dec);
        int worst = 0;
        for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(int(dec[i]) - int(img[i])));
        CHECK(worst <= near);
    }
    // known answers (literal bytes; any change is a format change): 2 activity classes of 16
    // ('11'), two tables ('010'), ...
    const uint8_t gray[6] = {10, 12, 11, 9, 200, 13};
    const std::vector<uint8_t> gray_bytes = {209, 59,  82,  146, 86,  127, 255, 255, 255, 255, 255, 255,
                                             255, 255, 255, 255, 255, 222, 52,  32,  35,  64,  34,  128};
    CHECK(pixel_encode_stripe(gray, 3, 1, 1, 3, 2, 1, 0, nullptr, nullptr, false, nullptr, true) == gray_bytes);
    uint8_t small[6] = {};
    pixel_decode_stripe(gray_bytes.data(), gray_bytes.size(), 3, 2, 1, 0, small, 3, false, true);
    CHECK(std::memcmp(small, gray, 6) == 0);
    const uint8_t rgb[6] = {255, 0, 128, 250, 3, 120};
    const std::vector<uint8_t> rgb_bytes = {32,  124, 151, 255, 255, 255, 255, 255, 255, 255,
                                            255, 255, 96,  177, 3,   128, 98,  171, 208};
    uint8_t recon[6] = {};
    CHECK(pixel_encode_stripe(rgb, 6, 3, 1, 2, 1, 3, 1, recon, nullptr, false, nullptr, true) == rgb_bytes);
    const uint8_t expect[6] = {255, 0, 127, 249, 3, 120};  // within 1 of rgb; blue from red and green's mean
    CHECK(std::memcmp(recon, expect, 6) == 0);
    pixel_decode_stripe(rgb_bytes.data(), rgb_bytes.size(), 2, 1, 3, 1, small, 6, false, true);
    CHECK(std::memcmp(small, expect, 6) == 0);
    // a smooth colour image: contexts 2 codes it smaller; read with the other contexts, its bytes
    // are not the image (or not a valid stripe)
    const int w = 64, h = 32;
    std::vector<uint8_t> img(size_t(w * h * 3));
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int k = 0; k < 3; ++k)
                img[size_t((y * w + x) * 3 + k)] = uint8_t((x * (3 + k) + y * (5 - k)) / 2 + int(rng() % 4));
    const std::vector<uint8_t> one = pixel_encode_stripe(img.data(), w * 3, 3, 1, w, h, 3, 0);
    const std::vector<uint8_t> two = pixel_encode_stripe(img.data(), w * 3, 3, 1, w, h, 3, 0, nullptr, nullptr,
                                                         false, nullptr, true);
    CHECK(two.size() < one.size());
    std::vector<uint8_t> out(img.size());
    bool differs = true;
    try {
        pixel_decode_stripe(two.data(), two.size(), w, h, 3, 0, out.data(), w * 3, false, false);
        differs = out != img;
    } catch (const FormatError&) {
    }
    CHECK(differs);
}

// Copies of earlier pixels (docs/format.md "Copies"): a known-answer stripe with literal bytes,
// round trips of repeating images, and hand-made streams whose tokens break the rules.
static bool rejects(const std::vector<uint8_t>& b, int w, int rows, int c) {
    std::vector<uint8_t> out(size_t(w * rows * c));
    try {
        pixel_decode_stripe(b.data(), b.size(), w, rows, c, 0, out.data(), ptrdiff_t(w) * c, true);
    } catch (const FormatError&) {
        return true;
    }
    return false;
}

static void test_pixel_copies() {
    uint8_t gray[32];  // two rows of 16: a pattern of five values, repeated
    for (int i = 0; i < 32; ++i) gray[i] = uint8_t((i % 5) * 50 + 7);
    bool used = false;
    PixelStripeStats st;
    const std::vector<uint8_t> bytes = pixel_encode_stripe(gray, 16, 1, 1, 16, 2, 1, 0, nullptr, &st, true, &used);
    CHECK(used);
    CHECK(st.header_bits + st.data_bits < st.plain_bits);
    const std::vector<uint8_t> kat = {137, 236, 159, 251, 19,  255, 255, 239, 171, 255, 255, 255,
                                      148, 159, 41,  63,  255, 251, 35,  112, 46,  4,   168};
    CHECK(bytes == kat);
    uint8_t out[32] = {};
    pixel_decode_stripe(bytes.data(), bytes.size(), 16, 2, 1, 0, out, 16, true);
    CHECK(std::memcmp(out, gray, 32) == 0);
    // without copies allowed (or near-lossless) the stream is the plain one, without a mode bit
    const std::vector<uint8_t> plain = pixel_encode_stripe(gray, 16, 1, 1, 16, 2, 1, 0);
    used = true;
    CHECK(pixel_encode_stripe(gray, 16, 1, 1, 16, 2, 1, 0, nullptr, nullptr, true, nullptr).size() < plain.size());
    pixel_encode_stripe(gray, 16, 1, 1, 16, 2, 1, 2, nullptr, nullptr, true, &used);
    CHECK(!used);
    // random tiles repeated across an RGB image: copies at many distances, overlapping ones too
    std::mt19937 rng(11);
    for (int trial = 0; trial < 20; ++trial) {
        const int w = 8 + int(rng() % 60), h = 2 + int(rng() % 20), tw = 1 + int(rng() % 9);
        std::vector<uint8_t> img(size_t(w * h * 3)), dec(img.size());
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x)
                for (int c = 0; c < 3; ++c)
                    img[size_t((y * w + x) * 3 + c)] =
                        (x / tw + y) % 3 == 0 ? uint8_t(rng()) : uint8_t((x % tw) * 31 + c * 70 + (y % 2) * 9);
        const std::vector<uint8_t> b =
            pixel_encode_stripe(img.data(), w * 3, 3, 1, w, h, 3, 0, nullptr, nullptr, true, &used);
        pixel_decode_stripe(b.data(), b.size(), w, h, 3, 0, dec.data(), ptrdiff_t(w) * 3, used);
        CHECK(dec == img);
    }
    // Hand-made 4x1 gray stripes: token tables of one class each (LIT: the open class 0,
    // eg0(lit); LEN: eg0(len - 1); DIST: 00 = the previous distance, 01 = up, 10 = eg0(d - 1)),
    // then one plane, one direct table of the literals -0..0 and ESC.
    auto stream = [](int lit, int len, int dist_sym, int dist, int classes) {
        BitWriter bw;
        bw.put(1, 1);  // copies
        bw.put(uint32_t(classes - 1), 6);
        bw.put_eg0(2);  // length 1 (zigzag +1)
        bw.put(0, 6);
        bw.put_eg0(2);
        bw.put(0, 6);
        // 18 distance symbols: the cache's 16 entries, one row up, class 0; lengths 2 for
        // entry 0 (the previous distance), one row up and class 0 (codes 00, 01, 10)
        bw.put_eg0(4);
        bw.put_eg0(3);
        for (int s = 2; s < 16; ++s) bw.put_eg0(0);
        bw.put_eg0(4);
        bw.put_eg0(0);
        bw.put(3, 2);       // one activity class
        bw.put_eg0(0);      // one table
        bw.put(0, 1);       // direct
        bw.put(0, 4);       // v = 0
        bw.put_eg0(2);      // value 0: length 1
        bw.put_eg0(0);      // ESC: length 1
        bw.put(0, 1);       // LIT symbol
        bw.put_eg0(uint32_t(lit));
        if (lit < 4) {
            bw.put(0, 1);  // LEN symbol
            bw.put_eg0(uint32_t(len - 1));
            bw.put(uint32_t(dist_sym), 2);
            if (dist_sym == 2) bw.put_eg0(uint32_t(dist - 1));
        }
        for (int i = 0; i < lit; ++i) bw.put(0, 1);  // literal 0: the predicted value
        return bw.finish();
    };
    uint8_t px[4];
    CHECK(!rejects(stream(1, 3, 0, 1, 1), 4, 1, 1));  // one literal, three copies from 1 back
    pixel_decode_stripe(stream(1, 3, 0, 1, 1).data(), stream(1, 3, 0, 1, 1).size(), 4, 1, 1, 0, px, 4, true);
    CHECK(px[0] == 0 && px[1] == 0 && px[2] == 0 && px[3] == 0);
    CHECK(!rejects(stream(4, 0, 0, 0, 1), 4, 1, 1));  // all literals, no copy
    CHECK(rejects(stream(5, 0, 0, 0, 1), 4, 1, 1));   // literals past the end
    CHECK(rejects(stream(1, 4, 0, 1, 1), 4, 1, 1));   // a copy past the end
    CHECK(rejects(stream(0, 2, 0, 1, 1), 4, 1, 1));   // a copy from before the start
    CHECK(rejects(stream(1, 1, 2, 2, 1), 4, 1, 1));   // two back from pixel 1
    CHECK(rejects(stream(1, 1, 1, 0, 1), 4, 1, 1));   // one row up in the first row
    CHECK(rejects(stream(1, 3, 0, 1, 49), 4, 1, 1));  // 49 classes
    CHECK(!rejects(stream(1, 3, 0, 1, 1), 4, 1, 1));
}

int main() {
    test_net_matches_scalar_fma_reference();
    test_qconv_matches_scalar_reference();
    test_qconv_wide_matches_scalar_reference();
    test_qfilter();
    test_hyper_scale_matches_scalar_reference();
    test_pixels_to_tensor_padding_and_strides();
    test_tensor_to_pixels_rounding();
    test_scale_grid_and_quantisation();
    test_grouped_roundtrip();
    test_png_unfilter();
    test_pixel_stripes();
    test_pixel_stripes16();
    test_pixel_contexts2();
    test_pixel_copies();
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
