// Unit tests of the pixel/tensor conversion and latent quantisation (no Python).
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "errors.hpp"
#include "image.hpp"
#include "latent.hpp"

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

int main() {
    test_pixels_to_tensor_padding_and_strides();
    test_tensor_to_pixels_rounding();
    test_scale_grid_and_quantisation();
    test_grouped_roundtrip();
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
