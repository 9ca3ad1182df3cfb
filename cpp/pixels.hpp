// Pixel coding: lossless and near-lossless images (format version 3, docs/format.md "Pixel
// coding").
//
// Each stripe of rows is coded on its own: the green plane, then red - green and blue - green
// (contexts 2: blue - (red + green) / 2; one plane for grayscale), predicted pixel by pixel from
// already coded neighbours (eleven simple predictors, the median edge detector of LOCO-I /
// JPEG-LS among them, weighted by their errors at the neighbours), the prediction error quantised
// with step 2 * max_error + 1 (max_error 0: lossless), and the quantised errors coded with
// canonical Huffman tables chosen per context (local activity, or with contexts 2 the weighted
// prediction's expected error, and for the colour differences the size of the green (blue with
// contexts 2: red) error at the same pixel), in direct or zero-run mode, the tables written at
// the start of the stripe. Every reconstructed value is within max_error of the original.
// Lossless stripes may also copy runs of earlier pixels (LZ77 in two dimensions). 16-bit samples
// are coded the same way, at their scale, each table sending its values' noisy low bits raw.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "errors.hpp"

namespace fastcodec {

constexpr int kPixelMaxError = 32;          // max_error is 0 .. 32
constexpr int kPixelActivityClasses = 8;    // activity classes before a plane's shift
constexpr int kPixelMaxCodeLength = 16;     // longest Huffman code in a pixel table
constexpr int kPixelMaxQuantised = 510;     // |quantised error| bound of a valid stream
constexpr int kPixelMaxQuantised16 = 131070;  // ... of a valid 16-bit stream

struct PixelStripeStats {
    uint64_t header_bits = 0;  // plane configurations and tables
    uint64_t data_bits = 0;    // the coded samples (and copies)
    uint64_t plain_bits = 0;   // what the stripe takes without copies
};

// Codes `rows` x `width` pixels of `channels` (1 or 3) uint8 components; component c of pixel
// (y, x) is at px[y * row_stride + x * col_stride + c * ch_stride] (strides in bytes, any sign).
// If recon is not null it receives the decoded pixels (rows * width * channels, packed), which
// equal px when max_error is 0 and are within max_error of it otherwise. Throws ArgumentError for
// dimensions or max_error out of range.
//
// With allow_matches (and max_error 0) the encoder also tries copies of earlier pixels of the
// stripe (screenshots, text, charts: format version 3 with flag bit 0). It uses them only when
// they make the stripe smaller, and then the stream starts with the mode bit 1 and
// *used_matches is set; otherwise the stream is the plain one, without a mode bit, which a file
// with flag bit 0 needs prefixed by a 0 bit (the stream's exact length in bits is
// stats->header_bits + stats->data_bits).
std::vector<uint8_t> pixel_encode_stripe(const uint8_t* px, ptrdiff_t row_stride, ptrdiff_t col_stride,
                                         ptrdiff_t ch_stride, int width, int rows, int channels,
                                         int max_error, uint8_t* recon = nullptr,
                                         PixelStripeStats* stats = nullptr, bool allow_matches = false,
                                         bool* used_matches = nullptr, bool contexts2 = false);

// contexts2 (format version 3, flag bit 2; fastcodec 0.16): the activity classes are 16 classes of
// the weighted prediction's expected error, blue is coded as a difference from the mean of red
// and green, and its contexts split by red's error class (docs/format.md "Contexts 2").
//
// The same for 16-bit samples (0..65535; format version 3 with flag bit 1: the stream starts
// with the sample scale, and each table has raw low bits), strides in elements. No copies.
std::vector<uint8_t> pixel_encode_stripe16(const uint16_t* px, ptrdiff_t row_stride, ptrdiff_t col_stride,
                                           ptrdiff_t ch_stride, int width, int rows, int channels, int max_error,
                                           uint16_t* recon = nullptr, PixelStripeStats* stats = nullptr,
                                           bool contexts2 = false);

// Decodes a stripe into out (rows x width x channels, row stride out_row_stride bytes, pixels
// packed within a row). mode_bit: the file's flag bit 0 (each stripe starts with a bit that
// says whether it has copies). Throws FormatError for any stream that is not a valid stripe of
// these dimensions (never reads outside [data, data + size)), ArgumentError for bad arguments.
void pixel_decode_stripe(const uint8_t* data, size_t size, int width, int rows, int channels,
                         int max_error, uint8_t* out, ptrdiff_t out_row_stride, bool mode_bit = false,
                         bool contexts2 = false);

// ... and a 16-bit stripe (flag bit 1; out_row_stride in elements).
void pixel_decode_stripe16(const uint8_t* data, size_t size, int width, int rows, int channels, int max_error,
                           uint16_t* out, ptrdiff_t out_row_stride, bool contexts2 = false);

}  // namespace fastcodec
