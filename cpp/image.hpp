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

}  // namespace fastcodec
