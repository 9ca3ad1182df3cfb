// Latent quantisation and the grouped (per scale bin / per channel) symbol coding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "symbols.hpp"

namespace fastcodec {

// Scale bins are uniform in the log domain: bin(s) = clamp(floor((s - log_min) * inv_step + 0.5), 0, nbins-1)
// where s = ln(sigma) comes straight from the hyper-decoder. Non-finite s maps to bin 0.
struct ScaleGrid {
    float log_min = 0.f;
    float inv_step = 1.f;
    int nbins = 1;
    int index(float s) const;
};

// r = round_half_away(y * gain[c] - mu). Arrays are C x HW, contiguous.
void quantize_latent(const float* y, const float* gain, const float* mu, size_t channels, size_t plane,
                     int32_t* r);

void scale_bins(const float* log_sigma, size_t n, const ScaleGrid& grid, uint8_t* bins);

// y_hat = (r + mu) * igain[c]
void dequantize_latent(const int32_t* r, const float* mu, const float* igain, size_t channels,
                       size_t plane, float* out);

// Codes the values of group 0 (in index order), then group 1, ... into one bit stream, each
// group with its own coder. group[i] < coders.size(). Returns the stream (byte padded).
std::vector<uint8_t> encode_grouped(const int32_t* values, const uint8_t* group, size_t n,
                                    const std::vector<SymbolCoder>& coders);

// Exact size in bits that encode_grouped would produce, before byte padding.
uint64_t grouped_code_length(const int32_t* values, const uint8_t* group, size_t n,
                             const std::vector<SymbolCoder>& coders);

// Inverse of encode_grouped. Throws FormatError when the stream is truncated or malformed, or
// when it has more than 7 bits (the byte padding) left over.
void decode_grouped(const uint8_t* data, size_t size, const uint8_t* group, size_t n,
                    const std::vector<SymbolCoder>& coders, int32_t* out);

}  // namespace fastcodec
