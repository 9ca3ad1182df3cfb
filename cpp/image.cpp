#include "image.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

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

void png_unfilter(const uint8_t* src, size_t size, size_t rows, size_t row_bytes, int bpp, uint8_t* dst) {
    if (bpp < 1 || bpp > 8 || row_bytes == 0 || row_bytes % size_t(bpp))
        throw ArgumentError("png_unfilter: bytes per pixel must be 1..8 and divide the row's bytes");
    if (rows == 0 || size / rows != row_bytes + 1 || size % rows)
        throw ArgumentError("png_unfilter: the data must be rows x (1 + row bytes) bytes");
    const size_t b = size_t(bpp);
    for (size_t y = 0; y < rows; ++y) {
        const uint8_t* in = src + y * (row_bytes + 1);
        const int type = in[0];
        ++in;
        uint8_t* out = dst + y * row_bytes;
        const uint8_t* up = y ? out - row_bytes : nullptr;  // the row above, unfiltered (none: zeros)
        switch (type) {
            case 0:
                std::copy(in, in + row_bytes, out);
                break;
            case 1:  // Sub: + the byte bpp to the left
                for (size_t i = 0; i < row_bytes; ++i) out[i] = uint8_t(in[i] + (i >= b ? out[i - b] : 0));
                break;
            case 2:  // Up
                for (size_t i = 0; i < row_bytes; ++i) out[i] = uint8_t(in[i] + (up ? up[i] : 0));
                break;
            case 3:  // Average of left and up
                for (size_t i = 0; i < row_bytes; ++i) {
                    const int a = i >= b ? out[i - b] : 0, u = up ? up[i] : 0;
                    out[i] = uint8_t(in[i] + ((a + u) >> 1));
                }
                break;
            case 4:  // Paeth
                for (size_t i = 0; i < row_bytes; ++i) {
                    const int a = i >= b ? out[i - b] : 0, u = up ? up[i] : 0, c = (i >= b && up) ? up[i - b] : 0;
                    const int p = a + u - c, pa = std::abs(p - a), pb = std::abs(p - u), pc = std::abs(p - c);
                    out[i] = uint8_t(in[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? u : c));
                }
                break;
            default:
                throw FormatError("PNG: row " + std::to_string(y) + " has filter type " + std::to_string(type) +
                                  " (0..4 allowed)");
        }
    }
}

}  // namespace fastcodec
