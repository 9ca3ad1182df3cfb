#include "huffman.hpp"

#include <algorithm>
#include <numeric>
#include <string>

namespace fastcodec {

// Package-merge (Larmore & Hirschberg), coin-collector formulation.
//
// Deterministic tie rule (part of the format: encoder and decoder build the
// same code from the same frequencies):
//  * the used symbols (freq > 0) are sorted by (frequency, symbol index)
//    ascending: on equal frequency the lower symbol index comes first, i.e.
//    is treated as the lighter item;
//  * level 0 is that sorted leaf list; level d (1..max_len-1) is the merge of
//    the sorted leaf list with the packages formed by pairing consecutive items
//    of level d-1 (items 0+1, 2+3, ...; an odd last item is dropped); a
//    package's weight is the sum of its two items;
//  * in the merge, when a leaf and a package have equal weight, the leaf comes
//    first;
//  * the first 2m-2 items of level max_len-1 are selected (m = used symbols);
//    a symbol's code length is the number of times its leaf occurs among the
//    selected items, expanding each selected package into its two items.
// The result is an optimal code (minimum sum freq*length) with all lengths
// <= max_len, and it is complete (Kraft sum == 1) when m >= 2.
std::vector<uint8_t> huffman_code_lengths(const std::vector<uint32_t>& freqs, int max_len) {
    if (freqs.size() > kHuffmanMaxSymbols)
        throw ArgumentError("huffman_code_lengths: alphabet has " + std::to_string(freqs.size()) +
                            " symbols; at most 65536 allowed");
    if (max_len < 1 || max_len > kHuffmanMaxLen)
        throw ArgumentError("huffman_code_lengths: max_len " + std::to_string(max_len) +
                            " outside the valid range 1..24");
    std::vector<uint32_t> syms;
    for (size_t i = 0; i < freqs.size(); ++i)
        if (freqs[i] != 0) syms.push_back(uint32_t(i));
    const size_t m = syms.size();
    if (m == 0) throw ArgumentError("huffman_code_lengths: no symbol has a nonzero frequency");
    if ((uint64_t(1) << max_len) < m)
        throw ArgumentError("huffman_code_lengths: max_len " + std::to_string(max_len) +
                            " too small for " + std::to_string(m) +
                            " used symbols (need 2^max_len >= used symbols)");
    std::vector<uint8_t> lengths(freqs.size(), 0);
    if (m == 1) {
        lengths[syms[0]] = 1;
        return lengths;
    }
    // stable sort keeps index order among equal frequencies
    std::stable_sort(syms.begin(), syms.end(),
                     [&](uint32_t a, uint32_t b) { return freqs[a] < freqs[b]; });

    // kinds[d][i]: >= 0 -> leaf (index into syms), -1 -> package of items
    // 2p, 2p+1 of level d-1 (p = number of packages before it in level d).
    std::vector<std::vector<int32_t>> kinds(static_cast<size_t>(max_len));
    std::vector<uint64_t> prev_w(m), cur_w;
    kinds[0].resize(m);
    for (size_t i = 0; i < m; ++i) {
        kinds[0][i] = int32_t(i);
        prev_w[i] = freqs[syms[i]];
    }
    for (int d = 1; d < max_len; ++d) {
        const size_t np = prev_w.size() / 2;
        std::vector<int32_t>& k = kinds[size_t(d)];
        k.clear();
        k.reserve(m + np);
        cur_w.clear();
        cur_w.reserve(m + np);
        size_t li = 0, pi = 0;
        while (li < m || pi < np) {
            const uint64_t pw = pi < np ? prev_w[2 * pi] + prev_w[2 * pi + 1] : 0;
            if (li < m && (pi >= np || uint64_t(freqs[syms[li]]) <= pw)) {
                k.push_back(int32_t(li));
                cur_w.push_back(freqs[syms[li]]);
                ++li;
            } else {
                k.push_back(-1);
                cur_w.push_back(pw);
                ++pi;
            }
        }
        prev_w.swap(cur_w);
    }
    size_t take = 2 * m - 2;
    for (int d = max_len - 1; d >= 0; --d) {
        const std::vector<int32_t>& k = kinds[size_t(d)];
        if (take > k.size())  // cannot happen when 2^max_len >= m
            throw ArgumentError("huffman_code_lengths: max_len too small");
        size_t packages = 0;
        for (size_t i = 0; i < take; ++i) {
            if (k[i] >= 0)
                ++lengths[syms[size_t(k[i])]];
            else
                ++packages;
        }
        take = 2 * packages;
    }
    return lengths;
}

static void validate_lengths(const std::vector<uint8_t>& lengths) {
    if (lengths.size() > kHuffmanMaxSymbols)
        throw ArgumentError("huffman code: " + std::to_string(lengths.size()) +
                            " symbols; at most 65536 allowed");
    uint64_t kraft = 0;  // in units of 2^-24
    for (uint8_t l : lengths) {
        if (l > kHuffmanMaxLen)
            throw FormatError("huffman code: code length " + std::to_string(l) +
                              " exceeds 24");
        if (l) kraft += uint64_t(1) << (kHuffmanMaxLen - l);
    }
    if (kraft > (uint64_t(1) << kHuffmanMaxLen))
        throw FormatError("huffman code: code lengths oversubscribed (Kraft sum > 1)");
}

std::vector<uint32_t> canonical_codes(const std::vector<uint8_t>& lengths) {
    validate_lengths(lengths);
    uint32_t count[kHuffmanMaxLen + 1] = {};
    for (uint8_t l : lengths) ++count[l];
    count[0] = 0;
    uint32_t next[kHuffmanMaxLen + 1] = {};
    uint32_t code = 0;
    for (int b = 1; b <= kHuffmanMaxLen; ++b) {
        code = (code + count[b - 1]) << 1;
        next[b] = code;
    }
    std::vector<uint32_t> codes(lengths.size(), 0);
    for (size_t s = 0; s < lengths.size(); ++s)
        if (lengths[s]) codes[s] = next[lengths[s]]++;
    return codes;
}

HuffmanCode::HuffmanCode() : primary_(size_t(1) << kHuffmanPrimaryBits, 0) {}

HuffmanCode::HuffmanCode(const std::vector<uint8_t>& lengths)
    : lengths_(lengths), primary_(size_t(1) << kHuffmanPrimaryBits, 0) {
    const std::vector<uint32_t> codes = canonical_codes(lengths);  // validates
    const size_t n = lengths.size();
    enc_.resize(n);
    for (size_t s = 0; s < n; ++s) {
        const int l = lengths[s];
        enc_[s] = (codes[s] << 8) | uint32_t(l);
        if (l > max_len_) max_len_ = l;
        ++count_[l];
    }
    count_[0] = 0;
    // canonical first code and sorted-symbol offsets per length
    uint32_t code = 0, off = 0;
    for (int b = 1; b <= kHuffmanMaxLen; ++b) {
        code = (code + count_[b - 1]) << 1;
        first_[b] = code;
        offset_[b] = off;
        off += count_[b];
    }
    sorted_.resize(off);
    {
        uint32_t fill[kHuffmanMaxLen + 1];
        std::copy(offset_, offset_ + kHuffmanMaxLen + 1, fill);
        for (size_t s = 0; s < n; ++s)
            if (lengths[s]) sorted_[fill[lengths[s]]++] = uint32_t(s);
    }
    // primary table: every 11-bit pattern starting with a code of length <= 11
    for (size_t s = 0; s < n; ++s) {
        const int l = lengths[s];
        if (l == 0 || l > kHuffmanPrimaryBits) continue;
        const uint32_t lo = codes[s] << (kHuffmanPrimaryBits - l);
        const uint32_t cnt = uint32_t(1) << (kHuffmanPrimaryBits - l);
        for (uint32_t i = 0; i < cnt; ++i) primary_[lo + i] = (uint32_t(s) << 8) | uint32_t(l);
    }
}

uint32_t HuffmanCode::decode_slow(BitReader& br) const {
    const uint32_t bits = br.peek(kHuffmanMaxLen);
    for (int l = kHuffmanPrimaryBits + 1; l <= max_len_; ++l) {
        const uint32_t c = bits >> (kHuffmanMaxLen - l);
        const uint32_t idx = c - first_[l];  // wraps if c < first_[l]
        if (idx < count_[l]) {
            br.skip_fast(l);
            return sorted_[offset_[l] + idx];
        }
    }
    throw FormatError("invalid huffman code");
}

void HuffmanCode::throw_no_code(uint32_t sym) const {
    if (sym >= enc_.size())
        throw ArgumentError("huffman encode: symbol " + std::to_string(sym) +
                            " out of range 0.." + std::to_string(enc_.size()) + "-1");
    throw ArgumentError("huffman encode: symbol " + std::to_string(sym) + " has no code");
}

}  // namespace fastcodec
