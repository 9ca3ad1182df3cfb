// Fuzz target: the lossless / near-lossless stripe decoder (cpp/pixels.cpp) on arbitrary bytes.
// Byte 0 chooses the channels (bit 0: 1 or 3), max_error (m = byte 0 >> 1: m mod 33), the
// file's copies flag (whether m / 33 is odd: the stripe starts with a mode bit) and 16-bit
// samples (m / 33 = 2), bytes 1-2 the width and bytes 3-4 the rows (1..64 each; bit 7 of byte 1:
// contexts 2, flag bit 2); the rest is the stripe.
// Contract: decoding returns or throws FormatError (never crashes, hangs or reads out of
// bounds); whatever decodes re-encodes to a stripe that decodes to pixels within max_error of
// it (the same pixels when lossless).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "errors.hpp"
#include "pixels.hpp"

using namespace fastcodec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 5) return 0;
    const int channels = (data[0] & 1) ? 3 : 1;
    const int near = (data[0] >> 1) % (kPixelMaxError + 1);
    const bool mode_bit = ((data[0] >> 1) / (kPixelMaxError + 1)) & 1;
    const bool deep = (data[0] >> 1) / (kPixelMaxError + 1) == 2;
    const bool ctx2 = data[1] & 0x80;
    const int width = 1 + ((data[1] | data[2] << 8) % 64);
    const int rows = 1 + ((data[3] | data[4] << 8) % 64);
    const size_t n = size_t(width) * size_t(rows) * size_t(channels);
    if (deep) {
        std::vector<uint16_t> px(n);
        try {
            pixel_decode_stripe16(data + 5, size - 5, width, rows, channels, near, px.data(),
                                  ptrdiff_t(width) * channels, ctx2);
        } catch (const FormatError&) {
            return 0;
        }
        std::vector<uint16_t> recon(n), back(n);
        const std::vector<uint8_t> again = pixel_encode_stripe16(px.data(), ptrdiff_t(width) * channels, channels, 1,
                                                                 width, rows, channels, near, recon.data(), nullptr,
                                                                 ctx2);
        pixel_decode_stripe16(again.data(), again.size(), width, rows, channels, near, back.data(),
                              ptrdiff_t(width) * channels, ctx2);
        for (size_t i = 0; i < n; ++i)
            if (back[i] != recon[i] || std::abs(int(back[i]) - int(px[i])) > near) std::abort();
        return 0;
    }
    std::vector<uint8_t> px(n);
    try {
        pixel_decode_stripe(data + 5, size - 5, width, rows, channels, near, px.data(),
                            ptrdiff_t(width) * channels, mode_bit, ctx2);
    } catch (const FormatError&) {
        return 0;
    }
    std::vector<uint8_t> recon(n), back(n);
    bool copies = false;
    const std::vector<uint8_t> again =
        pixel_encode_stripe(px.data(), ptrdiff_t(width) * channels, channels, 1, width, rows, channels, near,
                            recon.data(), nullptr, mode_bit, &copies, ctx2);
    pixel_decode_stripe(again.data(), again.size(), width, rows, channels, near, back.data(),
                        ptrdiff_t(width) * channels, copies, ctx2);
    for (size_t i = 0; i < n; ++i)
        if (back[i] != recon[i] || std::abs(int(back[i]) - int(px[i])) > near) std::abort();
    return 0;
}
