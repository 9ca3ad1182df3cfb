#include "image.hpp"

#include <algorithm>
#include <cmath>

#include "errors.hpp"

namespace fastcodec {

void pixels_to_tensor(const uint8_t* src, size_t h, size_t w, ptrdiff_t row_stride,
                      ptrdiff_t col_stride, ptrdiff_t ch_stride, float* dst, size_t ph, size_t pw) {
    if (h == 0 || w == 0) throw ArgumentError("image must have at least one pixel");
    if (ph < h || pw < w) throw ArgumentError("padded size must not be smaller than the image");
    const float inv = 1.0f / 255.0f;
    const size_t plane = ph * pw;
    for (size_t y = 0; y < ph; ++y) {
        const uint8_t* row = src + static_cast<ptrdiff_t>(std::min(y, h - 1)) * row_stride;
        for (int c = 0; c < 3; ++c) {
            float* out = dst + c * plane + y * pw;
            const uint8_t* p = row + c * ch_stride;
            if (col_stride == 3 && ch_stride == 1) {
                for (size_t x = 0; x < w; ++x) out[x] = p[3 * x] * inv;
            } else {
                for (size_t x = 0; x < w; ++x) out[x] = p[static_cast<ptrdiff_t>(x) * col_stride] * inv;
            }
            const float last = out[w - 1];
            for (size_t x = w; x < pw; ++x) out[x] = last;
        }
    }
}

void tensor_to_pixels(const float* src, size_t ph, size_t pw, uint8_t* dst, size_t h, size_t w) {
    if (h > ph || w > pw) throw ArgumentError("crop size exceeds the tensor size");
    const size_t plane = ph * pw;
    for (size_t y = 0; y < h; ++y) {
        uint8_t* out = dst + y * w * 3;
        for (int c = 0; c < 3; ++c) {
            const float* in = src + c * plane + y * pw;
            for (size_t x = 0; x < w; ++x) {
                float v = in[x] * 255.0f;
                // NaN fails both comparisons and is mapped to 0 below
                v = v > 0.0f ? (v < 255.0f ? v : 255.0f) : 0.0f;
                out[3 * x + c] = static_cast<uint8_t>(v + 0.5f);
            }
        }
    }
}

}  // namespace fastcodec
