// Unit tests of the entropy-coding core: bit I/O, length-limited canonical
// Huffman, and the symbol-stream coder. Standalone: prints "N passed, N failed"
// last and exits non-zero on failure.
//
//   g++ -O2 -std=c++17 -Wall -Wextra -Werror -Icpp cpp/tests/test_entropy.cpp
//       cpp/huffman.cpp cpp/symbols.cpp -o /tmp/test_entropy && /tmp/test_entropy
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "bitio.hpp"
#include "errors.hpp"
#include "huffman.hpp"
#include "symbols.hpp"

using namespace fastcodec;

static int g_passed = 0, g_failed = 0;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) {                                                              \
            ++g_passed;                                                          \
        } else {                                                                 \
            ++g_failed;                                                          \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
        }                                                                        \
    } while (0)

#define CHECK_THROWS(expr, Type)                                                 \
    do {                                                                         \
        bool caught_ = false;                                                    \
        try {                                                                    \
            expr;                                                                \
        } catch (const Type&) {                                                  \
            caught_ = true;                                                      \
        } catch (const std::exception& e_) {                                     \
            std::printf("  (other exception: %s)\n", e_.what());                 \
        }                                                                        \
        if (caught_) {                                                           \
            ++g_passed;                                                          \
        } else {                                                                 \
            ++g_failed;                                                          \
            std::printf("FAIL %s:%d: %s does not throw %s\n", __FILE__, __LINE__, \
                        #expr, #Type);                                           \
        }                                                                        \
    } while (0)

using Bytes = std::vector<uint8_t>;

static uint64_t kraft_units(const std::vector<uint8_t>& lengths) {  // units of 2^-24
    uint64_t k = 0;
    for (uint8_t l : lengths)
        if (l) k += uint64_t(1) << (24 - l);
    return k;
}

static uint64_t cost(const std::vector<uint32_t>& f, const std::vector<uint8_t>& l) {
    uint64_t c = 0;
    for (size_t i = 0; i < f.size(); ++i) c += uint64_t(f[i]) * l[i];
    return c;
}

// Optimal length-limited cost by exhaustive search over nondecreasing lengths
// assigned to the weights sorted in decreasing order.
static uint64_t brute_force_cost(std::vector<uint32_t> f, int max_len) {
    std::vector<uint32_t> w;
    for (uint32_t x : f)
        if (x) w.push_back(x);
    std::sort(w.rbegin(), w.rend());
    if (w.size() == 1) return w[0];
    uint64_t best = UINT64_MAX;
    const uint64_t full = uint64_t(1) << max_len;
    std::function<void(size_t, int, uint64_t, uint64_t)> rec = [&](size_t i, int minl,
                                                                  uint64_t used, uint64_t c) {
        if (c >= best) return;
        if (i == w.size()) {
            best = c;
            return;
        }
        for (int l = minl; l <= max_len; ++l) {
            const uint64_t u = full >> l;
            // each later symbol needs at least one unit (length max_len)
            if (used + u + (w.size() - i - 1) > full) continue;
            rec(i + 1, l, used + u, c + uint64_t(w[i]) * uint64_t(l));
        }
    };
    rec(0, 1, 0, 0);
    return best;
}

static uint64_t huffman_cost(const std::vector<uint32_t>& f) {
    std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<uint64_t>> q;
    for (uint32_t x : f)
        if (x) q.push(x);
    if (q.size() == 1) return q.top();
    uint64_t c = 0;
    while (q.size() > 1) {
        uint64_t a = q.top();
        q.pop();
        uint64_t b = q.top();
        q.pop();
        c += a + b;
        q.push(a + b);
    }
    return c;
}

static Bytes encode_values(const SymbolCoder& sc, const std::vector<int32_t>& v) {
    BitWriter bw;
    sc.encode(bw, v.data(), v.size());
    return bw.finish();
}

static SymbolTableSpec make_spec(int mode, int32_t vmin, int32_t vmax, int nruns,
                                 std::vector<uint32_t> freqs) {
    SymbolTableSpec s;
    s.mode = mode;
    s.vmin = vmin;
    s.vmax = vmax;
    s.nruns = nruns;
    s.freqs = std::move(freqs);
    return s;
}

// ---------------------------------------------------------------------------

static void test_bitio() {
    {
        BitWriter bw;
        bw.put(0x5, 3);
        bw.put(0xABCD, 16);
        bw.put(0, 0);
        bw.put(0xFFFFFFFFFFull, 1);  // only the low bit: 1
        CHECK(bw.bits_written() == 20);
        CHECK((bw.finish() == Bytes{0xB5, 0x79, 0xB0}));
    }
    {
        BitWriter bw;
        bw.put(0xFF, 4);  // masked to 1111
        bw.put(0x12345678u, 32);
        Bytes b = bw.finish();
        CHECK((b == Bytes{0xF1, 0x23, 0x45, 0x67, 0x80}));
        BitReader br(b.data(), b.size());
        CHECK(br.get(4) == 0xF);
        CHECK(br.peek(8) == 0x12);
        CHECK(br.get(32) == 0x12345678u);
        CHECK(br.bits_consumed() == 36);
        CHECK(!br.overrun());
        CHECK(br.get(4) == 0);  // padding
        CHECK(!br.overrun());
        CHECK(br.get(1) == 0);  // past the end
        CHECK(br.overrun());
        CHECK_THROWS(br.throw_if_overrun(), FormatError);
    }
    {
        BitWriter bw;
        CHECK(bw.finish().empty());
        BitReader br(nullptr, 0);
        CHECK(br.get(32) == 0);
        CHECK(br.overrun());
        BitReader br2(nullptr, 0);
        CHECK(br2.get(0) == 0 && !br2.overrun());
    }
    // random widths round trip; reader on exact-size heap buffer
    std::mt19937_64 rng(1);
    for (int iter = 0; iter < 50; ++iter) {
        std::vector<std::pair<uint32_t, int>> items;
        BitWriter bw;
        uint64_t total = 0;
        const int cnt = int(rng() % 3000);
        for (int i = 0; i < cnt; ++i) {
            const int n = int(rng() % 33);
            const uint32_t v = n ? uint32_t(rng()) & uint32_t((uint64_t(1) << n) - 1) : 0;
            items.push_back({v, n});
            bw.put(v, n);
            total += uint64_t(n);
        }
        CHECK(bw.bits_written() == total);
        Bytes b = bw.finish();
        CHECK(b.size() == (total + 7) / 8);
        BitReader br(b.data(), b.size());
        bool ok = true;
        for (size_t i = 0; i < items.size(); ++i) {
            if (i % 3 == 0) {
                if (br.peek(items[i].second) != items[i].first) ok = false;
                br.skip(items[i].second);
            } else if (br.get(items[i].second) != items[i].first) {
                ok = false;
            }
        }
        CHECK(ok);
        CHECK(br.bits_consumed() == total && !br.overrun());
    }
}

static void test_eg0() {
    {
        BitWriter bw;
        for (uint32_t v : {0u, 1u, 2u, 3u}) bw.put_eg0(v);
        // 1 010 011 00100
        CHECK(bw.bits_written() == 12);
        Bytes b = bw.finish();
        CHECK((b == Bytes{0xA6, 0x40}));
        BitReader br(b.data(), b.size());
        CHECK(br.get_eg0() == 0 && br.get_eg0() == 1 && br.get_eg0() == 2 && br.get_eg0() == 3);
        CHECK(!br.overrun());
    }
    CHECK(eg0_length(0) == 1 && eg0_length(1) == 3 && eg0_length(6) == 5 && eg0_length(7) == 7);
    {
        std::vector<uint32_t> vals = {kMaxEg0Value, 65534, 65535, 65536, 1u << 20, 12345, 0, 7};
        std::mt19937 rng(2);
        for (int i = 0; i < 2000; ++i) vals.push_back(rng() % (kMaxEg0Value + 1) >> (rng() % 25));
        BitWriter bw;
        uint64_t expect = 0;
        for (uint32_t v : vals) {
            bw.put_eg0(v);
            expect += uint64_t(eg0_length(v));
        }
        CHECK(bw.bits_written() == expect);
        Bytes b = bw.finish();
        BitReader br(b.data(), b.size());
        bool ok = true;
        for (uint32_t v : vals) ok = ok && br.get_eg0() == v;
        CHECK(ok && !br.overrun());
    }
    {
        BitWriter bw;
        bw.put_eg0(kMaxEg0Value + 1);  // 25 zero prefix: writable, not readable
        bw.put_eg0(0xFFFFFFFFu);       // 65 bits
        CHECK(bw.bits_written() == 51 + 65);
        Bytes b = bw.finish();
        BitReader br(b.data(), b.size());
        CHECK_THROWS(br.get_eg0(), FormatError);
        Bytes zeros(16, 0);
        BitReader bz(zeros.data(), zeros.size());
        CHECK_THROWS(bz.get_eg0(), FormatError);
        BitReader be(nullptr, 0);
        CHECK_THROWS(be.get_eg0(), FormatError);
    }
}

static void test_huffman_known() {
    const std::vector<uint32_t> f = {5, 3, 1, 1};
    const std::vector<uint8_t> l = huffman_code_lengths(f, 24);
    CHECK((l == std::vector<uint8_t>{1, 2, 3, 3}));
    CHECK((canonical_codes(l) == std::vector<uint32_t>{0, 2, 6, 7}));  // 0 10 110 111
    HuffmanCode hc(l);
    BitWriter bw;
    for (uint32_t s : {0u, 1u, 2u, 3u, 0u}) hc.encode(bw, s);
    Bytes b = bw.finish();  // 0 10 110 111 0 -> 01011011 10
    CHECK((b == Bytes{0x5B, 0x80}));
    BitReader br(b.data(), b.size());
    bool ok = true;
    for (uint32_t s : {0u, 1u, 2u, 3u, 0u}) ok = ok && hc.decode(br) == s;
    CHECK(ok && br.bits_consumed() == 10);

    // RFC 1951 3.2.2 example: lengths (3,3,3,3,3,2,4,4)
    CHECK((canonical_codes({3, 3, 3, 3, 3, 2, 4, 4}) ==
           std::vector<uint32_t>{2, 3, 4, 5, 6, 0, 14, 15}));
    // zero-length symbols get no code and are skipped
    CHECK((canonical_codes({2, 0, 1, 2}) == std::vector<uint32_t>{2, 0, 0, 3}));

    // single used symbol -> length 1; zero frequencies -> length 0
    CHECK((huffman_code_lengths({0, 7, 0}, 24) == std::vector<uint8_t>{0, 1, 0}));
    CHECK((huffman_code_lengths({0, 7, 0, 1}, 1) == std::vector<uint8_t>{0, 1, 0, 1}));
    CHECK((huffman_code_lengths({1}, 1) == std::vector<uint8_t>{1}));

    // deterministic tie-breaking: lower index = lighter on equal weight, and a
    // leaf precedes a package of equal weight
    CHECK((huffman_code_lengths({1, 1, 1}, 24) == std::vector<uint8_t>{2, 2, 1}));
    CHECK((huffman_code_lengths({1, 1, 2, 2}, 24) == std::vector<uint8_t>{2, 2, 2, 2}));
    CHECK((huffman_code_lengths({2, 2, 1, 1}, 24) == std::vector<uint8_t>{2, 2, 2, 2}));
    CHECK((huffman_code_lengths({4, 1, 1, 1, 1}, 24) == std::vector<uint8_t>{1, 3, 3, 3, 3}));
    CHECK((huffman_code_lengths({1, 1, 1, 1, 1}, 24) == std::vector<uint8_t>{3, 3, 2, 2, 2}));
    CHECK((huffman_code_lengths({1, 1, 1, 1, 1}, 24) == huffman_code_lengths({1, 1, 1, 1, 1}, 3)));

    // argument errors
    CHECK_THROWS(huffman_code_lengths({0, 0, 0}, 24), ArgumentError);
    CHECK_THROWS(huffman_code_lengths({}, 24), ArgumentError);
    CHECK_THROWS(huffman_code_lengths({1, 1}, 0), ArgumentError);
    CHECK_THROWS(huffman_code_lengths({1, 1}, 25), ArgumentError);
    CHECK_THROWS(huffman_code_lengths({1, 1, 1, 1, 1}, 2), ArgumentError);
    CHECK_THROWS(huffman_code_lengths(std::vector<uint32_t>(65537, 1), 24), ArgumentError);
    CHECK((huffman_code_lengths({1, 1, 1, 1, 0}, 2) == std::vector<uint8_t>{2, 2, 2, 2, 0}));
    {
        const auto big = huffman_code_lengths(std::vector<uint32_t>(65536, 1), 16);
        CHECK(std::all_of(big.begin(), big.end(), [](uint8_t x) { return x == 16; }));
    }

    // HuffmanCode validation and errors
    CHECK_THROWS(HuffmanCode({1, 1, 1}), FormatError);
    CHECK_THROWS(HuffmanCode({25, 1}), FormatError);
    CHECK_THROWS(canonical_codes({1, 2, 2, 3}), FormatError);
    {
        HuffmanCode inc({1, 0, 0});  // incomplete: only "0" is a code
        BitWriter w;
        CHECK_THROWS(inc.encode(w, 1), ArgumentError);
        CHECK_THROWS(inc.encode(w, 3), ArgumentError);
        const Bytes one = {0x80};
        BitReader br1(one.data(), one.size());
        CHECK_THROWS(inc.decode(br1), FormatError);
        const Bytes zero = {0x7F};
        BitReader br0(zero.data(), zero.size());
        CHECK(inc.decode(br0) == 0 && br0.bits_consumed() == 1);
        HuffmanCode empty;
        BitReader bre(zero.data(), zero.size());
        CHECK_THROWS(empty.decode(bre), FormatError);
    }
}

static void test_package_merge() {
    // Fibonacci frequencies: unconstrained depth n-1, forced down by max_len
    std::vector<uint32_t> fib = {1, 1};
    while (fib.size() < 16) fib.push_back(fib[fib.size() - 1] + fib[fib.size() - 2]);
    {
        const auto l = huffman_code_lengths(fib, 24);
        CHECK(*std::max_element(l.begin(), l.end()) == 15);
        CHECK(kraft_units(l) == (1u << 24));
        CHECK(cost(fib, l) == huffman_cost(fib));
    }
    for (int ml : {4, 5, 6, 7, 10}) {
        const auto l = huffman_code_lengths(fib, ml);
        CHECK(*std::max_element(l.begin(), l.end()) == ml);
        CHECK(kraft_units(l) == (1u << 24));
        CHECK(cost(fib, l) == brute_force_cost(fib, ml));
    }
    // 26 Fibonacci weights: unconstrained would need 25 bits; limit to 24
    std::vector<uint32_t> fib26 = fib;
    while (fib26.size() < 26) fib26.push_back(fib26[fib26.size() - 1] + fib26[fib26.size() - 2]);
    {
        const auto l = huffman_code_lengths(fib26, 24);
        CHECK(*std::max_element(l.begin(), l.end()) == 24);
        CHECK(kraft_units(l) == (1u << 24));
        // long-code decoding (slow path) round trip
        HuffmanCode hc(l);
        std::mt19937 rng(3);
        std::vector<uint32_t> syms;
        BitWriter bw;
        for (int i = 0; i < 5000; ++i) {
            syms.push_back(rng() % 26);
            hc.encode(bw, syms.back());
        }
        Bytes b = bw.finish();
        BitReader br(b.data(), b.size());
        bool ok = true;
        for (uint32_t s : syms) ok = ok && hc.decode(br) == s;
        CHECK(ok && !br.overrun());
    }
    // random small alphabets vs brute force
    std::mt19937 rng(4);
    int bad = 0, checked = 0;
    for (int iter = 0; iter < 400; ++iter) {
        const size_t n = 2 + rng() % 8;
        std::vector<uint32_t> f(n);
        for (auto& x : f) x = (rng() % 4 == 0) ? 0 : 1 + rng() % (iter % 2 ? 1000 : 6);
        size_t used = 0;
        for (auto x : f) used += x != 0;
        if (used == 0) continue;
        int minl = 1;
        while ((size_t(1) << minl) < used) ++minl;
        const int ml = minl + int(rng() % 5);
        const auto l = huffman_code_lengths(f, ml);
        ++checked;
        bool ok = cost(f, l) == brute_force_cost(f, ml);
        for (size_t i = 0; i < n; ++i) ok = ok && ((f[i] == 0) == (l[i] == 0)) && l[i] <= ml;
        if (used >= 2) ok = ok && kraft_units(l) == (1u << 24);
        if (ml >= int(used)) ok = ok && cost(f, l) == huffman_cost(f);
        if (!ok) ++bad;
        // deterministic: same input, same output
        if (huffman_code_lengths(f, ml) != l) ++bad;
    }
    CHECK(checked > 300);
    CHECK(bad == 0);
    // large alphabets: limit respected, complete
    for (int iter = 0; iter < 5; ++iter) {
        std::vector<uint32_t> f(3000);
        for (auto& x : f) x = uint32_t(std::exp2(double(rng() % 30))) + (rng() & 7);
        const auto l = huffman_code_lengths(f, 14);
        CHECK(*std::max_element(l.begin(), l.end()) <= 14);
        CHECK(kraft_units(l) == (1u << 24));
        const auto l24 = huffman_code_lengths(f, 24);
        CHECK(cost(f, l24) == huffman_cost(f) || *std::max_element(l24.begin(), l24.end()) == 24);
        CHECK(cost(f, l24) <= cost(f, l));
    }
}

static void test_run_classes() {
    const uint32_t bases[] = {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48};
    const int extras[] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4};
    bool ok = true;
    for (int k = 0; k < 12; ++k)
        ok = ok && SymbolCoder::run_class_base(k) == bases[k] &&
             SymbolCoder::run_class_extra_bits(k) == extras[k];
    CHECK(ok);
    ok = true;
    for (int k = 3; k < 47; ++k)
        ok = ok && SymbolCoder::run_class_base(k + 1) ==
                       SymbolCoder::run_class_base(k) +
                           (1u << SymbolCoder::run_class_extra_bits(k));
    CHECK(ok);
    CHECK(SymbolCoder::run_class_base(47) == (1u << 23) + (1u << 22));
    CHECK(SymbolCoder::run_class_extra_bits(47) == 22);
    CHECK_THROWS(SymbolCoder::run_class_base(48), ArgumentError);
    CHECK_THROWS(SymbolCoder::run_class_base(-1), ArgumentError);
    CHECK_THROWS(SymbolCoder::run_class_of(3, 0), ArgumentError);
    CHECK_THROWS(SymbolCoder::run_class_of(3, 49), ArgumentError);
    CHECK(SymbolCoder::run_class_of(0, 48) == 0);
    CHECK(SymbolCoder::run_class_of(5, 48) == 4);
    CHECK(SymbolCoder::run_class_of(6, 48) == 5);
    CHECK(SymbolCoder::run_class_of(11, 48) == 6);
    CHECK(SymbolCoder::run_class_of(12, 48) == 7);
    CHECK(SymbolCoder::run_class_of(23, 48) == 8);
    CHECK(SymbolCoder::run_class_of(24, 48) == 9);
    CHECK(SymbolCoder::run_class_of(1000000000, 48) == 47);
    CHECK(SymbolCoder::run_class_of(0, 1) == 0);
    CHECK(SymbolCoder::run_class_of(1000, 1) == 0);
    CHECK(SymbolCoder::run_class_of(2, 3) == 2);
    CHECK(SymbolCoder::run_class_of(1, 3) == 1);
    CHECK(SymbolCoder::run_class_of(7, 6) == 5);
    CHECK(SymbolCoder::run_class_of(8, 6) == 5);
    ok = true;
    for (uint64_t r = 0; r < 5000; ++r) {
        const int k = SymbolCoder::run_class_of(r, 48);
        ok = ok && r >= SymbolCoder::run_class_base(k) &&
             r - SymbolCoder::run_class_base(k) < (1u << SymbolCoder::run_class_extra_bits(k));
    }
    CHECK(ok);
}

static void test_symbol_known() {
    // direct: values -1,0,1 + ESC; freqs {1,5,3,1} -> lengths {3,1,2,3}:
    // -1:110  0:0  1:10  ESC:111
    {
        SymbolCoder sc(make_spec(0, -1, 1, 0, {1, 5, 3, 1}));
        CHECK((sc.code().lengths() == std::vector<uint8_t>{3, 1, 2, 3}));
        const std::vector<int32_t> v = {0, 1, -1, 7, -2};
        // 0 | 10 | 110 | 111 0 00110 | 111 1 1
        const Bytes b = encode_values(sc, v);
        CHECK((b == Bytes{0x5B, 0x8D, 0xF0}));
        CHECK(sc.code_length_bits(v.data(), v.size()) == 20.0);
        std::vector<int32_t> out(v.size(), 99);
        BitReader br(b.data(), b.size());
        sc.decode(br, out.data(), out.size());
        CHECK(out == v);
        CHECK(br.bits_consumed() == 20);
    }
    // run mode, nruns 1 (class 0 open-ended, eg0), terminals {+1, ESC}:
    // lengths {1,1}: (run,+1) -> 0, (run,ESC) -> 1
    {
        SymbolCoder sc(make_spec(1, 0, 1, 1, {1, 1}));
        const std::vector<int32_t> v = {1, 0, 0, 1, 5, 0, 0};
        // [0 1] [0 011] [1 1 0 00100] [0 011]  (trailing run 2, terminal 0, no escape)
        const Bytes b = encode_values(sc, v);
        CHECK((b == Bytes{0x4F, 0x10, 0xC0}));
        CHECK(sc.code_length_bits(v.data(), v.size()) == 18.0);
        std::vector<int32_t> out(v.size(), 99);
        BitReader br(b.data(), b.size());
        sc.decode(br, out.data(), out.size());
        CHECK(out == v);
        CHECK(br.bits_consumed() == 18);
    }
    // run mode, nruns 8, terminals {+1, ESC}, 16 equal freqs -> every code is
    // the symbol index in 4 bits; symbol = class*2 + terminal
    {
        SymbolCoder sc(make_spec(1, 0, 1, 8, std::vector<uint32_t>(16, 1)));
        std::vector<int32_t> v = {0, 0, 0, 0, 0, 1, 1};
        for (int i = 0; i < 20; ++i) v.push_back(0);
        v.push_back(-3);
        v.insert(v.end(), {0, 0, 0});
        CHECK(v.size() == 31);
        // run 5 (+1): sym 8 = 1000, extra 1
        // run 0 (+1): sym 0 = 0000
        // run 20 ESC: class 7 (last, base 12): sym 15 = 1111, eg0(8) = 0001001,
        //             escape: 1 (below vmin), eg0(3-1) = 011
        // trailing run 3: class 3, terminal 0: sym 6 = 0110
        const Bytes b = encode_values(sc, v);
        CHECK((b == Bytes{0x88, 0x78, 0x9B, 0x60}));
        CHECK(sc.code_length_bits(v.data(), v.size()) == 28.0);
        std::vector<int32_t> out(v.size(), 99);
        BitReader br(b.data(), b.size());
        sc.decode(br, out.data(), out.size());
        CHECK(out == v);
        CHECK(br.bits_consumed() == 28 && !br.overrun());
    }
    // all-zero stream in run mode; n = 0 and n = 1
    {
        SymbolCoder sc(make_spec(1, -2, 2, 6, std::vector<uint32_t>(30, 1)));
        const std::vector<int32_t> none;
        CHECK(encode_values(sc, none).empty());
        CHECK(sc.code_length_bits(nullptr, 0) == 0.0);
        BitReader br(nullptr, 0);
        sc.decode(br, nullptr, 0);
        CHECK(br.bits_consumed() == 0 && !br.overrun());
        for (int32_t x : {0, 1, -2, 3, -1000000}) {
            const std::vector<int32_t> v = {x};
            const Bytes b = encode_values(sc, v);
            std::vector<int32_t> out(1, 99);
            BitReader r(b.data(), b.size());
            sc.decode(r, out.data(), 1);
            CHECK(out == v && !r.overrun());
        }
        SymbolCoder sd(make_spec(0, 0, 0, 0, {1, 1}));
        CHECK(encode_values(sd, none).empty());
        const std::vector<int32_t> v1 = {0};
        CHECK((encode_values(sd, v1) == Bytes{0x00}));
    }
}

static void test_symbol_errors() {
    CHECK_THROWS(SymbolCoder(make_spec(2, -1, 1, 1, {1, 1, 1, 1})), ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(0, 1, 1, 1, {1, 1})), ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(0, -1, -1, 1, {1, 1})), ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(0, -4097, 0, 1, std::vector<uint32_t>(4099, 1))),
                 ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(0, 0, 4097, 1, std::vector<uint32_t>(4099, 1))),
                 ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(0, -1, 1, 1, {1, 1, 1})), ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(1, -1, 1, 0, {})), ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(1, -1, 1, 49, std::vector<uint32_t>(49 * 3, 1))),
                 ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(1, -4096, 4096, 48, std::vector<uint32_t>(48 * 8193, 1))),
                 ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(0, -1, 1, 0, {1, 1, 1, 1}), 1), ArgumentError);
    CHECK_THROWS(SymbolCoder(make_spec(0, -1, 1, 0, {1, 1, 1, 1}), 25), ArgumentError);
    try {
        SymbolCoder(make_spec(1, -1, 1, 77, std::vector<uint32_t>(3, 1)));
        CHECK(false);
    } catch (const ArgumentError& e) {
        CHECK(std::string(e.what()).find("1..48") != std::string::npos);
    }
    // largest allowed tables
    SymbolCoder big(make_spec(0, -4096, 4096, 0, std::vector<uint32_t>(8194, 0)));
    CHECK(big.alphabet_size() == 8194);
    SymbolCoder bigrun(make_spec(1, -4096, 4095, 8, std::vector<uint32_t>(8 * 8192, 3)));
    CHECK(bigrun.alphabet_size() == 65536);
    CHECK(bigrun.max_run_length() == 12 + uint64_t(kMaxEg0Value));

    // value range on encode
    {
        SymbolCoder sd(make_spec(0, -1, 1, 0, {1, 1, 1, 1}));
        SymbolCoder sr(make_spec(1, -1, 1, 2, std::vector<uint32_t>(6, 1)));
        BitWriter bw;
        for (int32_t bad : {1 << 24, -(1 << 24), INT32_MIN, INT32_MAX}) {
            const std::vector<int32_t> v = {0, bad};
            CHECK_THROWS(sd.encode(bw, v.data(), v.size()), ArgumentError);
            CHECK_THROWS(sr.encode(bw, v.data(), v.size()), ArgumentError);
            CHECK_THROWS(sr.code_length_bits(v.data(), v.size()), ArgumentError);
        }
        const std::vector<int32_t> okv = {(1 << 24) - 1, -(1 << 24) + 1, 0, 0};
        for (const SymbolCoder* sc : {&sd, &sr}) {
            const Bytes b = encode_values(*sc, okv);
            std::vector<int32_t> out(okv.size());
            BitReader br(b.data(), b.size());
            sc->decode(br, out.data(), out.size());
            CHECK(out == okv && !br.overrun());
        }
    }
    // escaped value out of range on decode: direct, ESC = 11 (freqs equal)
    {
        SymbolCoder sd(make_spec(0, -1, 1, 0, {1, 1, 1, 1}));
        BitWriter bw;
        bw.put(3, 2);  // ESC
        bw.put(0, 1);
        bw.put_eg0((1u << 24) - 2);  // value = 1 + 1 + 2^24 - 2 = 2^24
        const Bytes b = bw.finish();
        std::vector<int32_t> out(1);
        BitReader br(b.data(), b.size());
        CHECK_THROWS(sd.decode(br, out.data(), 1), FormatError);
    }
    // run exceeding the stream length
    {
        SymbolCoder sr(make_spec(1, 0, 1, 1, {1, 1}));
        BitWriter bw;
        bw.put(0, 1);   // class 0, +1
        bw.put_eg0(5);  // run 5
        const Bytes b = bw.finish();
        std::vector<int32_t> out4(4);
        BitReader br4(b.data(), b.size());
        CHECK_THROWS(sr.decode(br4, out4.data(), 4), FormatError);
        std::vector<int32_t> out5(5, 9);
        BitReader br5(b.data(), b.size());
        sr.decode(br5, out5.data(), 5);  // run ends exactly at n: terminal ignored
        CHECK((out5 == std::vector<int32_t>(5, 0)) && !br5.overrun());
        std::vector<int32_t> out6(6, 9);
        BitReader br6(b.data(), b.size());
        sr.decode(br6, out6.data(), 6);
        CHECK((out6 == std::vector<int32_t>{0, 0, 0, 0, 0, 1}) && !br6.overrun());
        std::vector<int32_t> out7(7, 9);
        BitReader br7(b.data(), b.size());  // next phrase reads zeros: eg0 too long
        CHECK_THROWS(sr.decode(br7, out7.data(), 7), FormatError);
    }
}

// Random latent-like values: mostly small, some zeros runs, some escapes.
static std::vector<int32_t> random_values(std::mt19937_64& rng, size_t n, double p0,
                                          double scale, double p_esc, bool long_runs) {
    std::vector<int32_t> v;
    v.reserve(n);
    std::uniform_real_distribution<double> U(0.0, 1.0);
    while (v.size() < n) {
        const double u = U(rng);
        if (long_runs && u < 0.0005) {
            const size_t r = 65536 + size_t(rng() % 140000);
            for (size_t i = 0; i < r && v.size() < n; ++i) v.push_back(0);
            continue;
        }
        if (U(rng) < p0) {
            v.push_back(0);
        } else if (U(rng) < p_esc) {
            const int bits = int(rng() % 25);
            int32_t m = int32_t(rng() & ((uint64_t(1) << bits) - 1));
            if (m >= (1 << 24)) m = (1 << 24) - 1;
            v.push_back(rng() & 1 ? m : -m);
        } else {
            const int32_t m = int32_t(std::floor(-std::log(1.0 - U(rng)) * scale)) + 1;
            v.push_back(rng() & 1 ? m : -m);
        }
    }
    return v;
}

static SymbolTableSpec random_spec(std::mt19937_64& rng) {
    const int mode = int(rng() % 2);
    static const int32_t vmins[] = {0, 0, -1, -2, -3, -7, -30, -4096};
    static const int32_t vmaxs[] = {0, 1, 1, 2, 3, 9, 30, 4096};
    static const int nrs[] = {1, 2, 3, 4, 5, 6, 8, 12, 17, 24, 48};
    for (;;) {
        SymbolTableSpec s;
        s.mode = mode;
        s.vmin = vmins[rng() % 8];
        s.vmax = vmaxs[rng() % 8];
        s.nruns = nrs[rng() % 11];
        size_t a;
        try {
            a = SymbolCoder::alphabet_size(s);
        } catch (const ArgumentError&) {
            continue;
        }
        s.freqs.resize(a);
        const int shape = int(rng() % 3);
        for (size_t i = 0; i < a; ++i) {
            if (shape == 0)
                s.freqs[i] = uint32_t(rng() % 100);
            else if (shape == 1)
                s.freqs[i] = uint32_t(1000000 >> std::min<size_t>(i, 31));
            else
                s.freqs[i] = rng() % 5 == 0 ? uint32_t(rng() % 100000) : 0;
        }
        return s;
    }
}

static void test_round_trips() {
    std::mt19937_64 rng(12345);
    int failures = 0, count = 0, long_run_streams = 0;
    for (int iter = 0; iter < 300; ++iter) {
        const SymbolTableSpec spec = random_spec(rng);
        const size_t asz = spec.freqs.size();
        int minl = 1;
        while ((size_t(1) << minl) < asz) ++minl;
        const int max_len = iter % 3 == 0 ? 24 : minl + int(rng() % size_t(25 - minl));
        const SymbolCoder sc(spec, max_len);
        size_t n;
        switch (iter % 6) {
            case 0: n = 0; break;
            case 1: n = 1; break;
            case 2: n = 1 + rng() % 20; break;
            default: n = 1 + rng() % 30000; break;
        }
        const bool long_runs = iter % 10 == 3;
        if (long_runs) n = 300000 + rng() % 200000;
        const double p0 = spec.mode == 1 ? 0.5 + 0.5 * double(rng() % 1000) / 1000.0 : 0.3;
        const double scale = double(1 + rng() % 8);
        const double p_esc = iter % 4 == 0 ? 0.0 : 0.02;
        std::vector<int32_t> v = random_values(rng, n, p0, scale, p_esc, long_runs);
        if (iter % 5 == 0 && n > 10)
            for (size_t i = n - 1 - rng() % 10; i < n; ++i) v[i] = 0;  // trailing zeros
        if (long_runs && spec.mode == 1) ++long_run_streams;
        BitWriter bw;
        bw.put(0x5, 3);  // misalign the stream start
        sc.encode(bw, v.data(), n);
        const uint64_t bits = bw.bits_written() - 3;
        bw.put(0x2A, 6);  // trailer after the stream
        const Bytes b = bw.finish();
        const bool len_ok = sc.code_length_bits(v.data(), n) == double(bits);
        std::vector<int32_t> out(n + 1, 77);
        BitReader br(b.data(), b.size());
        br.skip(3);
        sc.decode(br, out.data(), n);
        const bool ok = std::equal(v.begin(), v.end(), out.begin()) && out[n] == 77 &&
                        br.bits_consumed() == bits + 3 && br.get(6) == 0x2A && !br.overrun();
        if (!ok || !len_ok) {
            ++failures;
            std::printf("  round trip failed: iter %d mode %d vmin %d vmax %d nruns %d n %zu\n",
                        iter, spec.mode, spec.vmin, spec.vmax, spec.nruns, n);
        }
        ++count;
    }
    CHECK(count == 300);
    CHECK(failures == 0);
    CHECK(long_run_streams > 0);

    // all-zero streams for every nruns, including runs > 2^16
    failures = 0;
    for (int nruns = 1; nruns <= 48; ++nruns) {
        SymbolCoder sc(make_spec(1, -1, 1, nruns, std::vector<uint32_t>(size_t(nruns) * 3, 1)));
        for (size_t n : {size_t(1), size_t(2), size_t(5), size_t(100), size_t(70000)}) {
            std::vector<int32_t> v(n, 0);
            if (n == 70000 && nruns % 2) v[n - 1] = -1;
            const Bytes b = encode_values(sc, v);
            std::vector<int32_t> out(n, 5);
            BitReader br(b.data(), b.size());
            sc.decode(br, out.data(), n);
            if (out != v || br.overrun()) ++failures;
        }
    }
    CHECK(failures == 0);
}

// Decoding must return or throw FormatError on any input, never crash.
static void test_robustness() {
    std::mt19937_64 rng(777);
    std::vector<SymbolCoder> coders;
    coders.emplace_back(make_spec(0, -2, 2, 0, {1, 10, 100, 10, 1, 1}));
    coders.emplace_back(make_spec(1, -2, 2, 6, std::vector<uint32_t>(30, 1)));
    coders.emplace_back(make_spec(1, 0, 1, 1, {1, 1}));
    coders.emplace_back(make_spec(1, -1, 1, 48, std::vector<uint32_t>(144, 1)));
    {
        std::vector<uint32_t> f(6 * 9);
        for (size_t i = 0; i < f.size(); ++i) f[i] = uint32_t(1u << (i % 25));
        coders.emplace_back(make_spec(1, -4, 4, 6, f), 24);  // long codes
    }
    {
        std::vector<uint32_t> f(8194);
        for (size_t i = 0; i < f.size(); ++i) f[i] = uint32_t(1000000.0 * std::exp(-std::abs(double(i) - 4096.0) / 3.0));
        coders.emplace_back(make_spec(0, -4096, 4096, 0, f), 24);
    }
    int other = 0, format_errors = 0, returned = 0;
    for (int iter = 0; iter < 4000; ++iter) {
        const SymbolCoder& sc = coders[size_t(iter) % coders.size()];
        Bytes data(rng() % 48);
        for (auto& x : data) x = uint8_t(rng());
        if (iter % 7 == 0)
            for (auto& x : data) x = iter % 2 ? 0xFF : 0x00;
        const size_t n = iter % 3 == 0 ? rng() % 10 : rng() % 100000;
        std::vector<int32_t> out(n);
        try {
            BitReader br(data.empty() ? nullptr : data.data(), data.size());
            sc.decode(br, out.data(), n);
            ++returned;
            for (int32_t x : out)
                if (x >= (1 << 24) || x <= -(1 << 24)) ++other;
        } catch (const FormatError&) {
            ++format_errors;
        } catch (...) {
            ++other;
        }
    }
    CHECK(other == 0);
    CHECK(format_errors > 0 && returned > 0);

    // truncation of valid streams is always detected (FormatError or overrun)
    int undetected = 0, corrupt_other = 0;
    for (int iter = 0; iter < 300; ++iter) {
        const SymbolCoder& sc = coders[size_t(iter) % coders.size()];
        const size_t n = 1 + rng() % 3000;
        const bool run = sc.mode() == 1;
        std::vector<int32_t> v = random_values(rng, n, run ? 0.8 : 0.2, 2.0, 0.02, false);
        const Bytes b = encode_values(sc, v);
        if (b.empty()) continue;
        const size_t cut = rng() % b.size();
        const Bytes t(b.begin(), b.begin() + long(cut));
        std::vector<int32_t> out(n);
        try {
            BitReader br(t.empty() ? nullptr : t.data(), t.size());
            sc.decode(br, out.data(), n);
            br.throw_if_overrun();
            ++undetected;
        } catch (const FormatError&) {
        } catch (...) {
            ++corrupt_other;
        }
        // random corruption: any outcome but a crash or a foreign exception
        Bytes c = b;
        for (int k = 0; k < 3; ++k) c[rng() % c.size()] ^= uint8_t(1u << (rng() % 8));
        try {
            BitReader br(c.data(), c.size());
            sc.decode(br, out.data(), n);
            br.throw_if_overrun();
        } catch (const FormatError&) {
        } catch (...) {
            ++corrupt_other;
        }
    }
    CHECK(undetected == 0);
    CHECK(corrupt_other == 0);
}

int main() {
    const std::pair<const char*, void (*)()> tests[] = {
        {"bitio", test_bitio},
        {"eg0", test_eg0},
        {"huffman_known", test_huffman_known},
        {"package_merge", test_package_merge},
        {"run_classes", test_run_classes},
        {"symbol_known", test_symbol_known},
        {"symbol_errors", test_symbol_errors},
        {"round_trips", test_round_trips},
        {"robustness", test_robustness},
    };
    for (const auto& t : tests) {
        const int before = g_failed;
        try {
            t.second();
        } catch (const std::exception& e) {
            ++g_failed;
            std::printf("FAIL %s: unexpected exception: %s\n", t.first, e.what());
        }
        std::printf("%-14s %s\n", t.first, g_failed == before ? "ok" : "FAILED");
    }
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
