// Length-limited canonical Huffman codes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bitio.hpp"
#include "errors.hpp"

namespace fastcodec {

constexpr int kHuffmanMaxLen = 24;          // longest code length supported
constexpr int kHuffmanPrimaryBits = 11;     // bits of the primary decode table
constexpr size_t kHuffmanMaxSymbols = 65536;

// Optimal length-limited code lengths (package-merge). Symbols with frequency
// 0 get length 0 (no code); if exactly one symbol has nonzero frequency it
// gets length 1. Deterministic tie rule: see huffman.cpp. Throws
// ArgumentError if no frequency is nonzero, freqs.size() > 65536, max_len is
// outside 1..24, or 2^max_len < number of used symbols.
std::vector<uint8_t> huffman_code_lengths(const std::vector<uint32_t>& freqs, int max_len);

// Canonical codes from lengths (DEFLATE, RFC 1951 3.2.2): codes are assigned
// in order of (length, symbol index), starting at 0. Length-0 symbols get code
// 0. Throws FormatError if a length exceeds 24 or the Kraft sum exceeds 1.
std::vector<uint32_t> canonical_codes(const std::vector<uint8_t>& lengths);

class HuffmanCode {
public:
    HuffmanCode();  // empty code: every decode throws FormatError
    // Throws FormatError if a length exceeds 24 or the Kraft sum exceeds 1
    // (an incomplete code is allowed), ArgumentError if more than 65536
    // symbols.
    explicit HuffmanCode(const std::vector<uint8_t>& lengths);

    // Throws ArgumentError if sym is out of range or has no code.
    void encode(BitWriter& bw, uint32_t sym) const {
        const uint32_t e = sym < enc_.size() ? enc_[sym] : 0;
        if (FC_UNLIKELY((e & 0xff) == 0)) throw_no_code(sym);
        bw.put(e >> 8, int(e & 0xff));
    }

    // Table-driven decode; throws FormatError on a bit pattern that matches no
    // code.
    uint32_t decode(BitReader& br) const {
        const uint32_t e = primary_[br.peek(kHuffmanPrimaryBits)];
        if (FC_LIKELY(e & 0xff)) {
            br.skip_fast(int(e & 0xff));
            return e >> 8;
        }
        return decode_slow(br);
    }
    // Decodes a symbol that is not in the primary table (code longer than 11
    // bits) by a canonical walk over lengths 12..24; throws FormatError if no
    // code matches.
    uint32_t decode_slow(BitReader& br) const;

    size_t size() const { return lengths_.size(); }
    int length(uint32_t sym) const { return sym < lengths_.size() ? lengths_[sym] : 0; }
    uint32_t code(uint32_t sym) const { return sym < enc_.size() ? enc_[sym] >> 8 : 0; }
    int max_length() const { return max_len_; }
    const std::vector<uint8_t>& lengths() const { return lengths_; }
    // (code << 8) | length per symbol (length 0: no code).
    const std::vector<uint32_t>& encode_table() const { return enc_; }
    // 2^11 entries indexed by the next 11 bits: (symbol << 8) | length for
    // codes of length <= 11, 0 otherwise.
    const std::vector<uint32_t>& primary_table() const { return primary_; }

private:
    [[noreturn]] void throw_no_code(uint32_t sym) const;

    std::vector<uint8_t> lengths_;
    std::vector<uint32_t> enc_;
    std::vector<uint32_t> primary_;
    std::vector<uint32_t> sorted_;  // symbols by (length, index)
    uint32_t first_[kHuffmanMaxLen + 1] = {};   // first canonical code per length
    uint32_t count_[kHuffmanMaxLen + 1] = {};   // number of codes per length
    uint32_t offset_[kHuffmanMaxLen + 1] = {};  // index into sorted_ per length
    int max_len_ = 0;
};

}  // namespace fastcodec
