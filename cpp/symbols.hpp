// Symbol-stream coder: one Huffman table per latent scale bin, in direct mode
// (one symbol per value) or zero-run mode (one symbol per "run of zeros +
// nonzero terminal" phrase), with Exp-Golomb escapes for out-of-range values.
//
// Bit layout of one coded item (see docs/format.md):
//   Huffman symbol,
//   then (run mode) the run's extra bits: e raw bits MSB-first, or eg0 for the
//     table's last (open-ended) run class,
//   then, if the symbol's terminal/value is ESC, the escape: one sign bit
//     (0: value > vmax, 1: value < vmin) and put_eg0(excess - 1).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bitio.hpp"
#include "errors.hpp"
#include "huffman.hpp"

namespace fastcodec {

struct SymbolTableSpec {
    int mode = 0;                 // 0 = direct, 1 = zero-run, 2 = pairs of values
    int32_t vmin = 0, vmax = 0;   // literal range, vmin <= 0 <= vmax, each |.| <= 4096
    int nruns = 1;                // run mode only: number of run classes, 1..48
    std::vector<uint32_t> freqs;  // one per alphabet symbol
};

// Run-class arithmetic (see SymbolCoder::run_class_base), unchecked and inline for hot loops:
// the class of a run before a table's open last class caps it, a class's base (k in 0..47) and
// its extra bits. SymbolCoder's checked functions and the pixel coder's tokens use them.
inline int natural_run_class(uint64_t run) {
    if (run < 4) return int(run);
    const int o = 63 - bitio_detail::clz64(run);  // >= 2
    return 4 + 2 * (o - 2) + int((run >> (o - 1)) & 1);
}
inline uint32_t run_class_base_unchecked(int k) {
    if (k < 4) return uint32_t(k);
    const int j = k - 4, o = j / 2 + 2;
    return (uint32_t(1) << o) + uint32_t(j % 2) * (uint32_t(1) << (o - 1));
}
inline int run_class_extra_bits_unchecked(int k) { return k < 4 ? 0 : (k - 4) / 2 + 1; }

class SymbolCoder {
public:
    static constexpr int kDirect = 0;
    static constexpr int kZeroRun = 1;
    static constexpr int kPairs = 2;   // two values per Huffman symbol
    static constexpr int32_t kMaxLiteral = 4096;     // bound on |vmin|, |vmax|
    static constexpr int kMaxRunClasses = 48;
    static constexpr int32_t kValueLimit = 1 << 24;  // values must satisfy |v| < 2^24

    // Validates the spec (ArgumentError stating the valid range) and builds the
    // Huffman code from huffman_code_lengths(freqs with 0 -> 1, max_len).
    explicit SymbolCoder(const SymbolTableSpec& spec, int max_len = 24);

    // Codes exactly n values. Throws ArgumentError if a value has |v| >= 2^24
    // or (run mode) a run of zeros exceeds max_run_length().
    void encode(BitWriter& bw, const int32_t* values, size_t n) const;
    // Decodes exactly n values into out[0..n). Throws FormatError on invalid
    // codes, a run past n, an over-long or out-of-range escape. Reads past the
    // end of the data as zeros: check br.overrun() / br.throw_if_overrun()
    // afterwards.
    void decode(BitReader& br, int32_t* out, size_t n) const;
    // Exact number of bits encode() would write for these values.
    double code_length_bits(const int32_t* values, size_t n) const;

    // Alphabet size of a spec: direct (vmax-vmin+1)+1, run nruns*(vmax-vmin+1).
    // Throws ArgumentError if the spec is invalid.
    static size_t alphabet_size(const SymbolTableSpec& spec);

    // Run classes (fixed): class k < 4 is run k; for k >= 4, j = k-4,
    // o = j/2+2, h = j%2: base = 2^o + h*2^(o-1), e = o-1 extra bits. The last
    // class of a table (k = nruns-1) covers all runs >= its base and codes
    // run - base with eg0. Valid k: 0..47 (ArgumentError otherwise).
    static uint32_t run_class_base(int k);
    static int run_class_extra_bits(int k);
    // Class of a run for a table with nruns classes (1..48).
    static int run_class_of(uint64_t run, int nruns);

    int mode() const { return mode_; }
    int32_t vmin() const { return vmin_; }
    int32_t vmax() const { return vmax_; }
    int nruns() const { return nruns_; }
    size_t alphabet_size() const { return code_.size(); }
    // Longest run of zeros encode() accepts (run mode):
    // run_class_base(nruns-1) + kMaxEg0Value.
    uint64_t max_run_length() const;
    const HuffmanCode& code() const { return code_; }

private:
    template <class Sink>
    void encode_impl(Sink& sink, const int32_t* values, size_t n) const;
    template <class Sink>
    void put_escape(Sink& sink, int32_t v) const;
    int32_t read_escape(BitReader& br) const;
    // Decodes one Huffman symbol (after br.refill()) and returns its sym_info_ entry: the fused
    // primary table for codes of up to 11 bits, the canonical walk for longer ones.
    uint64_t next_info(BitReader& br, const uint64_t* dec) const {
        const uint64_t e = dec[br.peek_fast(kHuffmanPrimaryBits)];
        const int len = int(e & 0xff);
        if (FC_LIKELY(len != 0)) {
            br.skip_fast(len);
            return e;
        }
        return sym_info_[code_.decode_slow(br)];
    }
    void decode_direct(BitReader& br, int32_t* out, size_t n) const;
    void decode_run(BitReader& br, int32_t* out, size_t n) const;
    void decode_pairs(BitReader& br, int32_t* out, size_t n) const;

    int mode_;
    int32_t vmin_, vmax_;
    int nruns_;
    uint32_t nt_;     // run mode: terminals per class (nonzero values + ESC)
    uint32_t range_;  // vmax - vmin
    HuffmanCode code_;
    // Per symbol: bits 8..15 run class, bit 16 ESC, bits 32..63 value
    // (direct: the literal; run: the terminal value). The fused primary table
    // holds the same with the code length in bits 0..7 (0: use decode_slow).
    std::vector<uint64_t> sym_info_;
    std::vector<uint64_t> dec_;
    uint32_t cls_base_[kMaxRunClasses] = {};
    uint8_t cls_extra_[kMaxRunClasses] = {};
    uint32_t trail_t_[kMaxRunClasses] = {};  // terminal written after a trailing run
};

}  // namespace fastcodec
