// Deterministic scale branch of the hyper-decoder (the convolutions: conv.hpp).
//
// The decoder must pick the same coding table (scale bin) for every latent element as the
// encoder did, on any machine: a one-ulp difference in a predicted scale can move an element to
// another bin and derail the rest of the stream. onnxruntime's kernels differ in summation order
// across CPUs, instruction sets, thread counts and versions, so the scales that select tables are
// computed here instead, with the fixed order of IEEE-754 float32 operations that conv.hpp
// specifies, in its unfused form (a separately rounded multiply and add: the format was defined
// that way), then a clamp and binning of log(sigma) by multiply, add and floor (no
// transcendental functions). IEEE-754 guarantees identical results for this sequence on every
// conforming machine.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "conv.hpp"
#include "latent.hpp"

namespace fastcodec {

class HyperScale {
public:
    // layers: the scale branch of the hyper-synthesis (last layer's outputs are ln(sigma)),
    // clamped to [log_lo, log_hi] before binning.
    HyperScale(std::vector<ConvLayer> layers, float log_lo, float log_hi);

    // z: integer hyper-latent, C x h x w. Writes the scale bin of every latent element
    // (Cout_last x (h*S) x (w*S), S = product of shuffle factors) to bins.
    void bins(const int32_t* z, int channels, int h, int w, const ScaleGrid& grid, uint8_t* bins,
              int threads = 1) const;

    // Same, but returns the clamped ln(sigma) values (for tests and diagnostics).
    std::vector<float> log_scales(const int32_t* z, int channels, int h, int w, int threads = 1) const;

    int in_channels() const { return layers_.front().cin; }
    int out_channels() const { return layers_.back().cout / (layers_.back().shuffle * layers_.back().shuffle); }
    int upscale() const;

private:
    std::vector<ConvLayer> layers_;
    // each layer's weights regrouped once for the blocked kernels: [oc block][ic][tap][8 outputs]
    std::vector<std::vector<float>> packed_;
    float log_lo_, log_hi_;
};

}  // namespace fastcodec
