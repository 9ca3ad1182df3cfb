// Fuzz target: length-limited Huffman construction and table-driven decoding.
// Contract: construction from any frequencies either throws ArgumentError or yields lengths
// within the limit with Kraft sum <= 1; decoding arbitrary bits returns valid symbols or throws
// FormatError; encoding each symbol then decoding gives it back.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bitio.hpp"
#include "errors.hpp"
#include "huffman.hpp"

using namespace fastcodec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const int max_len = 1 + data[0] % 24;
    const size_t nsym = 1 + size_t(data[1]) * 3;
    std::vector<uint32_t> f(nsym);
    for (size_t i = 0; i < nsym; ++i) {
        const size_t k = 2 + i * 2;
        f[i] = k + 1 < size ? (uint32_t(data[k]) << (data[k + 1] % 24)) : uint32_t(i % 3);
    }
    std::vector<uint8_t> lengths;
    try {
        lengths = huffman_code_lengths(f, max_len);
    } catch (const ArgumentError&) {
        return 0;
    }
    double kraft = 0;
    for (size_t i = 0; i < nsym; ++i) {
        if (lengths[i] > max_len || (f[i] == 0) != (lengths[i] == 0)) __builtin_trap();
        if (lengths[i]) kraft += 1.0 / double(uint64_t(1) << lengths[i]);
    }
    if (kraft > 1.0 + 1e-12) __builtin_trap();
    HuffmanCode code(lengths);
    BitWriter bw;
    std::vector<uint32_t> syms;
    for (size_t i = 0; i < nsym; ++i)
        if (lengths[i]) {
            code.encode(bw, uint32_t(i));
            syms.push_back(uint32_t(i));
        }
    std::vector<uint8_t> bytes = bw.finish();
    BitReader br(bytes.data(), bytes.size());
    for (uint32_t s : syms)
        if (code.decode(br) != s) __builtin_trap();
    BitReader junk(data, size);
    try {
        for (int i = 0; i < 64; ++i)
            if (code.decode(junk) >= nsym) __builtin_trap();
    } catch (const FormatError&) {
    }
    return 0;
}
