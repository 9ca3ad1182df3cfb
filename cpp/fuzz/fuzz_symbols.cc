// Fuzz target: the grouped Huffman / zero-run symbol decoder on arbitrary bytes.
// The first bytes choose the coding tables and the symbol counts; the rest is the stream.
// Contract: decoding returns or throws FormatError (never crashes, hangs or reads out of
// bounds); whatever decodes re-encodes to a stream that decodes to the same values.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "errors.hpp"
#include "latent.hpp"

using namespace fastcodec;

namespace {
struct Reader {
    const uint8_t* p;
    size_t n;
    uint32_t byte() {
        if (!n) return 0;
        --n;
        return *p++;
    }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Reader rd{data, size};
    const int ncoders = 1 + int(rd.byte() % 3);
    std::vector<SymbolCoder> coders;
    for (int c = 0; c < ncoders; ++c) {
        SymbolTableSpec s;
        s.mode = int(rd.byte() % 3);
        s.vmin = -int32_t(rd.byte() % 9);
        s.vmax = int32_t(rd.byte() % 9);
        s.nruns = 1 + int(rd.byte() % 48);
        const uint32_t seed = rd.byte() * 2654435761u;
        const size_t nv = size_t(s.vmax - s.vmin) + 1;
        size_t asz = s.mode == 0 ? nv + 1 : s.mode == 2 ? (nv + 1) * (nv + 1) : size_t(s.nruns) * nv;
        s.freqs.resize(asz);
        for (size_t i = 0; i < asz; ++i) s.freqs[i] = 1 + ((seed ^ uint32_t(i * 40503u)) % (1u << (i % 20)));
        try {
            coders.emplace_back(s);
        } catch (const ArgumentError&) {
            return 0;  // spec rejected: fine
        }
    }
    const size_t n = (rd.byte() << 8 | rd.byte()) % 5000;
    std::vector<uint8_t> groups(n);
    for (size_t i = 0; i < n; ++i) groups[i] = uint8_t((i * 7 + (i >> 3)) % ncoders);
    std::vector<int32_t> out(n);
    try {
        decode_grouped(rd.p, rd.n, groups.data(), n, coders, out.data());
    } catch (const FormatError&) {
        return 0;
    }
    // decodable: must re-encode and decode to the same values
    std::vector<uint8_t> again = encode_grouped(out.data(), groups.data(), n, coders);
    std::vector<int32_t> back(n);
    decode_grouped(again.data(), again.size(), groups.data(), n, coders, back.data());
    if (back != out) __builtin_trap();
    return 0;
}
