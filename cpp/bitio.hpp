// MSB-first bit writer / reader with Exp-Golomb order-0 codes.
//
// Bit order: within the stream, bits are written most significant first, and
// the first bit of the stream is the most significant bit of byte 0. The last
// byte is padded with zero bits.
//
// BitReader reads past the end of its buffer as zero bits (so hot decoding
// loops need no bounds checks) but never touches memory outside
// [data, data + size); overrun() reports whether more bits were consumed than
// the buffer holds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "errors.hpp"

#if defined(__GNUC__) || defined(__clang__)
#define FC_LIKELY(x) __builtin_expect(!!(x), 1)
#define FC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define FC_LIKELY(x) (x)
#define FC_UNLIKELY(x) (x)
#endif

namespace fastcodec {

namespace bitio_detail {

// Number of leading zero bits of x (64 for x == 0).
inline int clz64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return x ? __builtin_clzll(x) : 64;
#else
    int n = 0;
    if (!x) return 64;
    while (!(x & (uint64_t(1) << 63))) { x <<= 1; ++n; }
    return n;
#endif
}

inline uint64_t load_be64(const uint8_t* p) {
    // Compilers turn this into a single load + byte swap.
    return (uint64_t(p[0]) << 56) | (uint64_t(p[1]) << 48) | (uint64_t(p[2]) << 40) |
           (uint64_t(p[3]) << 32) | (uint64_t(p[4]) << 24) | (uint64_t(p[5]) << 16) |
           (uint64_t(p[6]) << 8) | uint64_t(p[7]);
}

inline void store_be32(uint8_t* p, uint32_t v) {
    p[0] = uint8_t(v >> 24);
    p[1] = uint8_t(v >> 16);
    p[2] = uint8_t(v >> 8);
    p[3] = uint8_t(v);
}

}  // namespace bitio_detail

// Largest value get_eg0() accepts: a prefix of at most 24 zero bits.
constexpr uint32_t kMaxEg0Value = (uint32_t(1) << 25) - 2;

// Number of bits put_eg0(v) writes.
inline int eg0_length(uint32_t v) {
    const int k = 63 - bitio_detail::clz64(uint64_t(v) + 1);
    return 2 * k + 1;
}

class BitWriter {
public:
    BitWriter() : buf_(256) {}
    explicit BitWriter(size_t reserve_bytes) : buf_(reserve_bytes < 16 ? 16 : reserve_bytes) {}

    // Writes the n low bits of `bits`, most significant first. 0 <= n <= 32.
    void put(uint64_t bits, int n) {
        acc_ = (acc_ << n) | (bits & ((uint64_t(1) << n) - 1));
        nbits_ += n;
        if (nbits_ >= 32) flush32();
    }

    // Exp-Golomb order 0: k zero bits, then the (k+1)-bit value v+1, where
    // k = floor(log2(v+1)). Any uint32 can be written; get_eg0() accepts only
    // v <= kMaxEg0Value (k <= 24).
    void put_eg0(uint32_t v) {
        const uint64_t x = uint64_t(v) + 1;
        const int k = 63 - bitio_detail::clz64(x);
        if (k <= 15) {
            put(x, 2 * k + 1);  // the k leading zeros come from x's high bits
        } else {
            put(0, k);
            put(x >> 16, k - 15);
            put(x & 0xffff, 16);
        }
    }

    // Number of bits written so far.
    uint64_t bits_written() const { return uint64_t(pos_) * 8 + uint64_t(nbits_); }

    // Pads the last byte with zero bits and returns the bytes. The writer is
    // left empty and can be reused.
    std::vector<uint8_t> finish() {
        if (pos_ + 8 > buf_.size()) buf_.resize(pos_ + 8);
        while (nbits_ >= 8) {
            nbits_ -= 8;
            buf_[pos_++] = uint8_t(acc_ >> nbits_);
        }
        if (nbits_ > 0) buf_[pos_++] = uint8_t(acc_ << (8 - nbits_));
        buf_.resize(pos_);
        std::vector<uint8_t> out;
        out.swap(buf_);
        buf_.assign(256, 0);
        pos_ = 0;
        nbits_ = 0;
        acc_ = 0;
        return out;
    }

private:
    void flush32() {
        nbits_ -= 32;
        if (FC_UNLIKELY(pos_ + 4 > buf_.size())) buf_.resize(buf_.size() * 2);
        bitio_detail::store_be32(buf_.data() + pos_, uint32_t(acc_ >> nbits_));
        pos_ += 4;
    }

    std::vector<uint8_t> buf_;
    size_t pos_ = 0;
    uint64_t acc_ = 0;  // the low nbits_ bits are pending (higher bits: stale)
    int nbits_ = 0;     // always < 32 between calls
};

class BitReader {
public:
    BitReader(const uint8_t* data, size_t size) : data_(data), size_(size) { refill(); }

    // Reads n bits (0 <= n <= 32), most significant first.
    uint32_t get(int n) {
        if (cnt_ < n) refill();
        const uint32_t v = peek_fast(n);
        skip_fast(n);
        return v;
    }
    // Returns the next n bits (0 <= n <= 32) without consuming them.
    uint32_t peek(int n) {
        if (cnt_ < n) refill();
        return peek_fast(n);
    }
    // Consumes n bits (0 <= n <= 32).
    void skip(int n) {
        if (cnt_ < n) refill();
        skip_fast(n);
    }

    // Exp-Golomb order 0; throws FormatError if the prefix exceeds 24 zeros.
    uint32_t get_eg0() {
        if (cnt_ < 49) refill();
        const int k = bitio_detail::clz64(buf_);
        if (FC_UNLIKELY(k > 24)) throw FormatError("exp-golomb code too long");
        skip_fast(k);
        const uint32_t x = peek_fast(k + 1);
        skip_fast(k + 1);
        return x - 1;
    }

    // --- Hot-path interface for table decoders -------------------------------
    // After refill() at least 56 bits are buffered; peek_fast/skip_fast do no
    // checks and must not use more bits than are buffered (available()).
    void refill() {
        if (FC_LIKELY(pos_ + 8 <= size_)) {
            buf_ |= bitio_detail::load_be64(data_ + pos_) >> cnt_;
            pos_ += size_t(63 - cnt_) >> 3;
            cnt_ |= 56;
        } else {
            refill_slow();
        }
    }
    uint32_t peek_fast(int n) const { return uint32_t((buf_ >> 1) >> (63 - n)); }
    void skip_fast(int n) {
        buf_ <<= n;
        cnt_ -= n;
    }
    int available() const { return cnt_; }

    // --- Status --------------------------------------------------------------
    // Bits consumed so far (including zero bits read past the end).
    size_t bits_consumed() const { return pos_ * 8 - size_t(cnt_); }
    // True if more bits were consumed than the buffer holds.
    bool overrun() const { return bits_consumed() > size_ * 8; }
    // Convenience for callers after decoding: throws FormatError on overrun.
    void throw_if_overrun() const {
        if (overrun()) throw FormatError("truncated stream");
    }

private:
    void refill_slow() {
        // Byte-wise near the end; bytes past the end read as zero.
        while (cnt_ <= 55) {
            const uint64_t b = pos_ < size_ ? data_[pos_] : 0;
            buf_ |= b << (56 - cnt_);
            ++pos_;
            cnt_ += 8;
        }
    }

    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;    // bytes (virtually) loaded into buf_, may exceed size_
    uint64_t buf_ = 0;  // next bits, left-aligned; bits below cnt_ are zero or
                        // the true following stream bits
    int cnt_ = 0;       // valid bits in buf_, 0..63
};

}  // namespace fastcodec
