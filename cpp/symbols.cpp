#include "symbols.hpp"

#include <cstring>
#include <string>

namespace fastcodec {

namespace {

constexpr uint64_t kEscFlag = uint64_t(1) << 16;

// Counts bits instead of writing them (for code_length_bits).
struct BitCounter {
    uint64_t bits = 0;
    void put(uint64_t, int n) { bits += uint64_t(n); }
    void put_eg0(uint32_t v) { bits += uint64_t(eg0_length(v)); }
};

[[noreturn]] void throw_value_range(int32_t v) {
    throw ArgumentError("symbol coder: value " + std::to_string(v) +
                        " out of range; values must satisfy |v| < 2^24");
}

}  // namespace

size_t SymbolCoder::alphabet_size(const SymbolTableSpec& spec) {
    if (spec.mode != kDirect && spec.mode != kZeroRun && spec.mode != kPairs)
        throw ArgumentError("SymbolTableSpec: mode must be 0 (direct), 1 (zero-run) or 2 (pairs), got " +
                            std::to_string(spec.mode));
    if (spec.vmin > 0 || spec.vmax < 0 || spec.vmin < -kMaxLiteral || spec.vmax > kMaxLiteral)
        throw ArgumentError("SymbolTableSpec: need -4096 <= vmin <= 0 <= vmax <= 4096, got vmin=" +
                            std::to_string(spec.vmin) + ", vmax=" + std::to_string(spec.vmax));
    const size_t nvals = size_t(int64_t(spec.vmax) - int64_t(spec.vmin) + 1);
    if (spec.mode == kDirect) return nvals + 1;
    if (spec.mode == kPairs) {
        const size_t a = (nvals + 1) * (nvals + 1);
        if (a > kHuffmanMaxSymbols)
            throw ArgumentError("SymbolTableSpec: pair-mode alphabet (vmax-vmin+2)^2 = " + std::to_string(a) +
                                " exceeds 65536");
        return a;
    }
    if (spec.nruns < 1 || spec.nruns > kMaxRunClasses)
        throw ArgumentError("SymbolTableSpec: nruns must be in 1..48, got " +
                            std::to_string(spec.nruns));
    const size_t a = size_t(spec.nruns) * nvals;
    if (a > kHuffmanMaxSymbols)
        throw ArgumentError("SymbolTableSpec: run-mode alphabet nruns*(vmax-vmin+1) = " +
                            std::to_string(a) + " exceeds 65536");
    return a;
}

uint32_t SymbolCoder::run_class_base(int k) {
    if (k < 0 || k >= kMaxRunClasses)
        throw ArgumentError("run_class_base: class " + std::to_string(k) + " outside 0..47");
    return run_class_base_unchecked(k);
}

int SymbolCoder::run_class_extra_bits(int k) {
    if (k < 0 || k >= kMaxRunClasses)
        throw ArgumentError("run_class_extra_bits: class " + std::to_string(k) +
                            " outside 0..47");
    return run_class_extra_bits_unchecked(k);
}

int SymbolCoder::run_class_of(uint64_t run, int nruns) {
    if (nruns < 1 || nruns > kMaxRunClasses)
        throw ArgumentError("run_class_of: nruns must be in 1..48, got " + std::to_string(nruns));
    const int k = natural_run_class(run);
    return k < nruns - 1 ? k : nruns - 1;
}

SymbolCoder::SymbolCoder(const SymbolTableSpec& spec, int max_len) {
    const size_t asz = alphabet_size(spec);  // validates
    if (spec.freqs.size() != asz)
        throw ArgumentError("SymbolTableSpec: freqs has " + std::to_string(spec.freqs.size()) +
                            " entries, the alphabet needs exactly " + std::to_string(asz));
    mode_ = spec.mode;
    vmin_ = spec.vmin;
    vmax_ = spec.vmax;
    nruns_ = mode_ == kZeroRun ? spec.nruns : 0;
    range_ = uint32_t(vmax_ - vmin_);
    nt_ = range_ + 1;
    std::vector<uint32_t> f(spec.freqs);
    for (uint32_t& x : f)
        if (x == 0) x = 1;
    code_ = HuffmanCode(huffman_code_lengths(f, max_len));

    for (int k = 0; k < nruns_; ++k) {
        cls_base_[k] = run_class_base(k);
        cls_extra_[k] = uint8_t(run_class_extra_bits(k));
        // A trailing run (no value after it) may carry any terminal, the decoder ignores it:
        // take the one with the shortest code for this class (lowest index on ties).
        uint32_t best = 0;
        for (uint32_t t = 1; t < nt_; ++t)
            if (code_.length(uint32_t(k) * nt_ + t) < code_.length(uint32_t(k) * nt_ + best)) best = t;
        trail_t_[k] = best;
    }
    sym_info_.resize(asz);
    for (size_t s = 0; s < asz; ++s) {
        uint64_t info;
        if (mode_ == kDirect) {
            if (s <= range_)
                info = uint64_t(uint32_t(vmin_ + int32_t(s))) << 32;
            else
                info = kEscFlag;
        } else {
            const uint32_t k = uint32_t(s / nt_), t = uint32_t(s % nt_);
            info = uint64_t(k) << 8;
            if (t == nt_ - 1) {
                info |= kEscFlag;
            } else {
                const int32_t v = int32_t(t) < -vmin_ ? vmin_ + int32_t(t) : vmin_ + int32_t(t) + 1;
                info |= uint64_t(uint32_t(v)) << 32;
            }
        }
        sym_info_[s] = info;
    }
    const std::vector<uint32_t>& prim = code_.primary_table();
    dec_.assign(prim.size(), 0);
    for (size_t i = 0; i < prim.size(); ++i) {
        const uint32_t p = prim[i];
        if (p & 0xff) dec_[i] = sym_info_[p >> 8] | (p & 0xff);
    }
}

uint64_t SymbolCoder::max_run_length() const {
    if (mode_ != kZeroRun) return 0;
    return uint64_t(cls_base_[nruns_ - 1]) + kMaxEg0Value;
}

template <class Sink>
void SymbolCoder::put_escape(Sink& sink, int32_t v) const {
    if (v > vmax_) {
        sink.put(0, 1);
        sink.put_eg0(uint32_t(int64_t(v) - vmax_ - 1));
    } else {
        sink.put(1, 1);
        sink.put_eg0(uint32_t(int64_t(vmin_) - v - 1));
    }
}

template <class Sink>
void SymbolCoder::encode_impl(Sink& sink, const int32_t* values, size_t n) const {
    const uint32_t* enc = code_.encode_table().data();
    if (mode_ == kPairs) {
        const uint32_t m = range_ + 2;  // values + ESC per component
        auto index = [&](int32_t v) -> uint32_t {
            const uint32_t s = uint32_t(v) - uint32_t(vmin_);
            if (FC_LIKELY(s <= range_)) return s;
            if (v >= kValueLimit || v <= -kValueLimit) throw_value_range(v);
            return m - 1;
        };
        for (size_t i = 0; i < n; i += 2) {
            const int32_t a = values[i];
            const bool last = i + 1 == n;  // odd count: the second component is a 0 filler
            const int32_t b = last ? 0 : values[i + 1];
            const uint32_t ia = index(a), ib = index(b);
            const uint32_t e = enc[ia * m + ib];
            sink.put(e >> 8, int(e & 0xff));
            if (ia == m - 1) put_escape(sink, a);
            if (ib == m - 1) put_escape(sink, b);
        }
        return;
    }
    if (mode_ == kDirect) {
        const uint32_t esc = enc[range_ + 1];
        for (size_t i = 0; i < n; ++i) {
            const int32_t v = values[i];
            const uint32_t s = uint32_t(v) - uint32_t(vmin_);
            if (FC_LIKELY(s <= range_)) {
                const uint32_t e = enc[s];
                sink.put(e >> 8, int(e & 0xff));
            } else {
                if (v >= kValueLimit || v <= -kValueLimit) throw_value_range(v);
                sink.put(esc >> 8, int(esc & 0xff));
                put_escape(sink, v);
            }
        }
        return;
    }
    const int last = nruns_ - 1;
    const uint64_t max_run = max_run_length();
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && values[j] == 0) ++j;
        const uint64_t run = j - i;
        const bool trailing = j == n;  // then run >= 1
        int k = natural_run_class(run);
        if (k > last) k = last;
        uint32_t t = trail_t_[k];
        int32_t v = 0;
        if (!trailing) {
            v = values[j];
            const uint32_t s = uint32_t(v) - uint32_t(vmin_);
            if (FC_LIKELY(s <= range_)) {
                t = v < 0 ? s : s - 1;
            } else {
                if (v >= kValueLimit || v <= -kValueLimit) throw_value_range(v);
                t = nt_ - 1;
            }
        }
        const uint32_t e = enc[uint32_t(k) * nt_ + t];
        sink.put(e >> 8, int(e & 0xff));
        const uint64_t off = run - cls_base_[k];
        if (k == last) {
            if (FC_UNLIKELY(run > max_run))
                throw ArgumentError("symbol coder: run of " + std::to_string(run) +
                                    " zeros exceeds the table's maximum run length " +
                                    std::to_string(max_run));
            sink.put_eg0(uint32_t(off));
        } else {
            sink.put(off, cls_extra_[k]);
        }
        if (!trailing && t == nt_ - 1) put_escape(sink, v);
        i = j + 1;
    }
}

void SymbolCoder::encode(BitWriter& bw, const int32_t* values, size_t n) const {
    encode_impl(bw, values, n);
}

double SymbolCoder::code_length_bits(const int32_t* values, size_t n) const {
    BitCounter c;
    encode_impl(c, values, n);
    return double(c.bits);
}

int32_t SymbolCoder::read_escape(BitReader& br) const {
    const uint32_t neg = br.get(1);
    const uint32_t x = br.get_eg0();  // <= 2^25 - 2
    const int64_t v = neg ? int64_t(vmin_) - 1 - int64_t(x) : int64_t(vmax_) + 1 + int64_t(x);
    if (v >= kValueLimit || v <= -kValueLimit) throw FormatError("escaped value out of range");
    return int32_t(v);
}

void SymbolCoder::decode(BitReader& br, int32_t* out, size_t n) const {
    if (mode_ == kDirect)
        decode_direct(br, out, n);
    else if (mode_ == kPairs)
        decode_pairs(br, out, n);
    else
        decode_run(br, out, n);
}

void SymbolCoder::decode_pairs(BitReader& br, int32_t* out, size_t n) const {
    const uint32_t m = range_ + 2;
    for (size_t i = 0; i < n; i += 2) {
        br.refill();
        const uint32_t sym = code_.decode(br);
        const uint32_t ia = sym / m, ib = sym % m;
        out[i] = ia == m - 1 ? read_escape(br) : vmin_ + int32_t(ia);
        const int32_t b = ib == m - 1 ? read_escape(br) : vmin_ + int32_t(ib);
        if (i + 1 < n) out[i + 1] = b;
    }
}

void SymbolCoder::decode_direct(BitReader& br, int32_t* out, size_t n) const {
    const uint64_t* dec = dec_.data();
    for (size_t i = 0; i < n; ++i) {
        br.refill();  // >= 56 bits: enough for any code
        const uint64_t e = next_info(br, dec);
        int32_t v = int32_t(uint32_t(e >> 32));
        if (FC_UNLIKELY(e & kEscFlag)) v = read_escape(br);
        out[i] = v;
    }
}

void SymbolCoder::decode_run(BitReader& br, int32_t* out, size_t n) const {
    const uint64_t* dec = dec_.data();
    const int last = nruns_ - 1;
    size_t pos = 0;
    while (pos < n) {
        br.refill();  // >= 56 bits: a code (<= 24) plus raw extra bits (<= 22)
        const uint64_t e = next_info(br, dec);
        const int k = int((e >> 8) & 0xff);
        uint64_t run = cls_base_[k];
        if (k == last) {
            run += br.get_eg0();
        } else {
            const int x = cls_extra_[k];
            run += br.peek_fast(x);
            br.skip_fast(x);
        }
        const size_t left = n - pos;
        if (FC_UNLIKELY(run > left)) throw FormatError("run exceeds stream length");
        if (run <= 16 && left >= 16) {
            // constant-size store; zeros past the run are overwritten later
            std::memset(out + pos, 0, 16 * sizeof(int32_t));
        } else {
            std::memset(out + pos, 0, size_t(run) * sizeof(int32_t));
        }
        pos += size_t(run);
        if (pos == n) break;  // trailing zeros: the terminal is ignored
        int32_t v = int32_t(uint32_t(e >> 32));
        if (FC_UNLIKELY(e & kEscFlag)) v = read_escape(br);
        out[pos++] = v;
    }
}

}  // namespace fastcodec
