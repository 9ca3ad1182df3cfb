#include "latent.hpp"

#include <cmath>
#include <string>

#include "bitio.hpp"
#include "errors.hpp"

namespace fastcodec {

int ScaleGrid::index(float s) const {
    if (!(s == s) || std::isinf(s)) return 0;
    const float t = (s - log_min) * inv_step + 0.5f;
    if (!(t >= 1.0f)) return 0;
    if (t >= static_cast<float>(nbins)) return nbins - 1;
    return static_cast<int>(t);  // t >= 1 here, so truncation is floor
}

static inline int32_t round_half_away(float v) {
    // |latents| are far below 2^24 for any sane network; clamp so that corrupt or extreme
    // activations cannot overflow the int conversion.
    if (!(v == v)) return 0;
    if (v > 8388607.f) v = 8388607.f;
    if (v < -8388607.f) v = -8388607.f;
    return static_cast<int32_t>(v < 0 ? v - 0.5f : v + 0.5f);
}

void quantize_latent(const float* y, const float* gain, const float* mu, size_t channels, size_t plane,
                     int32_t* r) {
    for (size_t c = 0; c < channels; ++c) {
        const float g = gain[c];
        const size_t o = c * plane;
        for (size_t i = 0; i < plane; ++i) r[o + i] = round_half_away(y[o + i] * g - mu[o + i]);
    }
}

void scale_bins(const float* log_sigma, size_t n, const ScaleGrid& grid, uint8_t* bins) {
    for (size_t i = 0; i < n; ++i) bins[i] = static_cast<uint8_t>(grid.index(log_sigma[i]));
}

void dequantize_latent(const int32_t* r, const float* mu, const float* igain, size_t channels,
                       size_t plane, float* out) {
    for (size_t c = 0; c < channels; ++c) {
        const float g = igain[c];
        const size_t o = c * plane;
        for (size_t i = 0; i < plane; ++i) out[o + i] = (static_cast<float>(r[o + i]) + mu[o + i]) * g;
    }
}

namespace {
// Stable counting sort of element indices by group: order[start[g] .. start[g+1]) are group g's.
void group_order(const uint8_t* group, size_t n, size_t ngroups, std::vector<size_t>& start,
                 std::vector<uint32_t>& order) {
    start.assign(ngroups + 1, 0);
    for (size_t i = 0; i < n; ++i) {
        if (group[i] >= ngroups)
            throw ArgumentError("group index " + std::to_string(group[i]) + " out of range (have " +
                                std::to_string(ngroups) + " coders)");
        ++start[group[i] + 1];
    }
    for (size_t g = 0; g < ngroups; ++g) start[g + 1] += start[g];
    std::vector<size_t> pos(start.begin(), start.end() - 1);
    order.resize(n);
    for (size_t i = 0; i < n; ++i) order[pos[group[i]]++] = static_cast<uint32_t>(i);
}
}  // namespace

std::vector<uint8_t> encode_grouped(const int32_t* values, const uint8_t* group, size_t n,
                                    const std::vector<SymbolCoder>& coders) {
    if (n > 0xFFFFFFFFu) throw ArgumentError("too many symbols in one stream (at most 2^32-1)");
    std::vector<size_t> start;
    std::vector<uint32_t> order;
    group_order(group, n, coders.size(), start, order);
    std::vector<int32_t> buf(n);
    for (size_t i = 0; i < n; ++i) buf[i] = values[order[i]];
    BitWriter bw;
    for (size_t g = 0; g < coders.size(); ++g)
        coders[g].encode(bw, buf.data() + start[g], start[g + 1] - start[g]);
    return bw.finish();
}

uint64_t grouped_code_length(const int32_t* values, const uint8_t* group, size_t n,
                             const std::vector<SymbolCoder>& coders) {
    std::vector<size_t> start;
    std::vector<uint32_t> order;
    group_order(group, n, coders.size(), start, order);
    std::vector<int32_t> buf(n);
    for (size_t i = 0; i < n; ++i) buf[i] = values[order[i]];
    double bits = 0;
    for (size_t g = 0; g < coders.size(); ++g)
        bits += coders[g].code_length_bits(buf.data() + start[g], start[g + 1] - start[g]);
    return static_cast<uint64_t>(bits + 0.5);
}

void decode_grouped(const uint8_t* data, size_t size, const uint8_t* group, size_t n,
                    const std::vector<SymbolCoder>& coders, int32_t* out) {
    std::vector<size_t> start;
    std::vector<uint32_t> order;
    group_order(group, n, coders.size(), start, order);
    std::vector<int32_t> buf(n);
    BitReader br(data, size);
    for (size_t g = 0; g < coders.size(); ++g) {
        coders[g].decode(br, buf.data() + start[g], start[g + 1] - start[g]);
        if (br.overrun()) throw FormatError("truncated entropy-coded stream");
    }
    if (br.bits_consumed() + 7 < size * 8)
        throw FormatError("entropy-coded stream has " + std::to_string(size * 8 - br.bits_consumed()) +
                          " unused bits (at most 7 allowed)");
    for (size_t i = 0; i < n; ++i) out[order[i]] = buf[i];
}

}  // namespace fastcodec
