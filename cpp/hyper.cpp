#include "hyper.hpp"

#include <algorithm>
#include <string>

#include "errors.hpp"

namespace fastcodec {

HyperScale::HyperScale(std::vector<ConvLayer> layers, float log_lo, float log_hi)
    : layers_(std::move(layers)), log_lo_(log_lo), log_hi_(log_hi) {
    if (layers_.empty()) throw ArgumentError("HyperScale needs at least one layer");
    int c = layers_.front().cin;
    for (const ConvLayer& L : layers_) {
        if (L.cin != c || L.cin <= 0 || L.cout <= 0 || L.shuffle < 1 || L.cout % (L.shuffle * L.shuffle))
            throw ArgumentError("HyperScale: inconsistent layer shapes");
        if (L.k != 3) throw ArgumentError("HyperScale: layers must be 3x3 convolutions");
        if (L.weight.size() != size_t(L.cout) * L.cin * 9 || L.bias.size() != size_t(L.cout))
            throw ArgumentError("HyperScale: weight/bias sizes do not match the layer shape");
        c = L.cout / (L.shuffle * L.shuffle);
    }
    if (!(log_lo <= log_hi)) throw ArgumentError("HyperScale: log_lo must not exceed log_hi");
    for (const ConvLayer& L : layers_) packed_.push_back(pack_conv_weights(L));
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
        conv_padded(L, packed_[li].data(), pad.data(), ch, cw, pre.data(), threads);
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
