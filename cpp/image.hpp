// Pixel <-> tensor conversion around the neural network.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fastcodec {

// uint8 pixels (H x W x C, C = 1, 3 or 4 is NOT handled here: exactly 3 channels,
// arbitrary byte strides) -> float32 NCHW tensor of shape (1, 3, ph, pw) with values
// in [0, 1]. Rows/columns beyond the image (ph >= h, pw >= w) replicate the last
// row/column (edge padding), which keeps the network's border behaviour smooth.
void pixels_to_tensor(const uint8_t* src, size_t h, size_t w, ptrdiff_t row_stride,
                      ptrdiff_t col_stride, ptrdiff_t ch_stride, float* dst, size_t ph, size_t pw);

// float32 NCHW tensor (1, 3, ph, pw) in [0, 1] -> uint8 H x W x 3 (contiguous), by
// rounding x*255 half away from zero after clamping to [0, 255]; crops to h x w.
// Non-finite values map to 0.
void tensor_to_pixels(const float* src, size_t ph, size_t pw, uint8_t* dst, size_t h, size_t w);

// PNG's row filters undone (ISO/IEC 15948, section 9: None, Sub, Up, Average, Paeth): src holds
// `rows` filtered rows of 1 + row_bytes bytes (the filter type first), bpp the bytes per complete
// pixel (1..8); dst receives rows x row_bytes bytes. For 16-bit PNGs that Pillow reads as 8 bits.
// Throws FormatError for a filter type above 4, ArgumentError for bad sizes.
void png_unfilter(const uint8_t* src, size_t size, size_t rows, size_t row_bytes, int bpp, uint8_t* dst);

}  // namespace fastcodec
