// Microbenchmark of the symbol-stream coder: encode / decode speed in
// M symbols/s (every value counts as a symbol, including each zero of a run)
// for tables built like the model's: quantized Gaussians of scale sigma, run
// mode for small sigma, direct mode for larger sigma.
//
//   g++ -O2 -std=c++17 -Icpp cpp/bench/bench_entropy.cpp cpp/huffman.cpp
//       cpp/symbols.cpp -o /tmp/bench_entropy && /tmp/bench_entropy [n_values]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "bitio.hpp"
#include "symbols.hpp"

using namespace fastcodec;

namespace {

double gauss_mass(double lo, double hi, double sigma) {
    const double s = sigma * std::sqrt(2.0);
    return 0.5 * (std::erf(hi / s) - std::erf(lo / s));
}

struct Table {
    const char* name;
    SymbolTableSpec spec;
    double sigma;
};

// Table for a quantized N(0, sigma^2). Run mode: phrase (run r, terminal t)
// has probability p0^r * p(t), summed over the runs of each class.
Table make_table(const char* name, int mode, double sigma) {
    Table t;
    t.name = name;
    t.sigma = sigma;
    SymbolTableSpec& s = t.spec;
    s.mode = mode;
    const int r = std::min(4096, std::max(1, int(std::ceil(6.0 * sigma))));
    s.vmin = -r;
    s.vmax = r;
    std::vector<double> p;  // per literal in [vmin, vmax]
    for (int v = -r; v <= r; ++v) p.push_back(gauss_mass(v - 0.5, v + 0.5, sigma));
    const double tail = std::max(1e-12, 2.0 * gauss_mass(r + 0.5, 1e9, sigma));
    const double scale = double(1u << 30);
    auto q = [&](double x) { return uint32_t(std::min(4e9, std::max(0.0, x * scale))); };
    if (mode == 0) {
        for (double x : p) s.freqs.push_back(q(x));
        s.freqs.push_back(q(tail));
        s.nruns = 0;
        return t;
    }
    if (mode == 2) {  // pairs: joint probability of two independent values (ESC last)
        std::vector<double> a(p);
        a.push_back(tail);
        for (double x : a)
            for (double y : a) s.freqs.push_back(q(x * y));
        s.nruns = 0;
        return t;
    }
    const double p0 = p[size_t(r)];
    const double mean_run = p0 / std::max(1e-9, 1.0 - p0);
    // enough classes to cover ~8x the mean run, at least 4
    int nruns = SymbolCoder::run_class_of(uint64_t(8.0 * mean_run) + 4, 48) + 1;
    nruns = std::max(4, std::min(48, nruns));
    s.nruns = nruns;
    std::vector<double> term;  // nonzero literals then ESC
    for (int v = -r; v <= r; ++v)
        if (v != 0) term.push_back(p[size_t(v + r)]);
    term.push_back(tail);
    for (int k = 0; k < nruns; ++k) {
        const double base = SymbolCoder::run_class_base(k);
        const double width = std::exp2(SymbolCoder::run_class_extra_bits(k));
        // sum_{run in class} p0^run
        double cm = std::pow(p0, base) *
                    (k == nruns - 1 ? 1.0 / (1.0 - p0) : (1.0 - std::pow(p0, width)) / (1.0 - p0));
        for (double x : term) s.freqs.push_back(q(cm * x));
    }
    return t;
}

std::vector<int32_t> sample(double sigma, size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> g(0.0, sigma);
    std::vector<int32_t> v(n);
    for (auto& x : v) x = int32_t(std::lround(g(rng)));
    return v;
}

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct Result {
    double enc_s, dec_s, bits;
    bool ok;
};

Result run(const SymbolCoder& sc, const std::vector<int32_t>& v, int reps) {
    Result r{1e30, 1e30, 0, true};
    std::vector<uint8_t> bytes;
    for (int i = 0; i < reps; ++i) {
        BitWriter bw(v.size() / 2 + 64);
        const double t0 = now();
        sc.encode(bw, v.data(), v.size());
        bytes = bw.finish();
        r.enc_s = std::min(r.enc_s, now() - t0);
    }
    std::vector<int32_t> out(v.size());
    for (int i = 0; i < reps; ++i) {
        const double t0 = now();
        BitReader br(bytes.data(), bytes.size());
        sc.decode(br, out.data(), out.size());
        br.throw_if_overrun();
        r.dec_s = std::min(r.dec_s, now() - t0);
    }
    r.ok = out == v;
    r.bits = sc.code_length_bits(v.data(), v.size());
    return r;
}

double entropy_bits(const std::vector<int32_t>& v) {
    std::vector<int32_t> s(v);
    std::sort(s.begin(), s.end());
    double h = 0;
    for (size_t i = 0; i < s.size();) {
        size_t j = i;
        while (j < s.size() && s[j] == s[i]) ++j;
        const double p = double(j - i) / double(s.size());
        h -= double(j - i) * std::log2(p);
        i = j;
    }
    return h;
}

}  // namespace

int main(int argc, char** argv) {
    const size_t n = argc > 1 ? size_t(std::atoll(argv[1])) : size_t(4) << 20;
    const int reps = 5;
    std::vector<Table> tables = {
        make_table("run   sigma=0.11", 1, 0.11), make_table("run   sigma=0.15", 1, 0.15),
        make_table("run   sigma=0.25", 1, 0.25), make_table("run   sigma=0.40", 1, 0.40),
        make_table("direct sigma=0.6", 0, 0.6),  make_table("direct sigma=1.5", 0, 1.5),
        make_table("direct sigma=4", 0, 4.0),    make_table("direct sigma=16", 0, 16.0),
        make_table("pairs sigma=0.9", 2, 0.9),   make_table("pairs sigma=2.5", 2, 2.5),
        make_table("direct sigma=200", 0, 200.0),
    };
    std::printf("%zu values per table, best of %d\n", n, reps);
    std::printf("%-18s %6s %10s %10s %10s %10s\n", "table", "nruns", "bits/val", "H/val",
                "enc M/s", "dec M/s");
    bool all_ok = true;
    double mix_enc = 0, mix_dec = 0, mix_n = 0;
    // a latent-like mix: share of values per table (sums to 1)
    const std::vector<double> share = {0.30, 0.15, 0.12, 0.10, 0.08, 0.06, 0.04, 0.02, 0.07, 0.05, 0.01};
    if (share.size() != tables.size()) {
        std::fprintf(stderr, "share/table count mismatch\n");
        return 1;
    }
    for (size_t i = 0; i < tables.size(); ++i) {
        const SymbolCoder sc(tables[i].spec);
        const std::vector<int32_t> v = sample(tables[i].sigma, n, 100 + i);
        const Result r = run(sc, v, reps);
        all_ok = all_ok && r.ok;
        std::printf("%-18s %6d %10.4f %10.4f %10.1f %10.1f%s\n", tables[i].name, sc.nruns(),
                    r.bits / double(n), entropy_bits(v) / double(n), double(n) / r.enc_s * 1e-6,
                    double(n) / r.dec_s * 1e-6, r.ok ? "" : "  MISMATCH");
        mix_enc += share[i] * r.enc_s / double(n);
        mix_dec += share[i] * r.dec_s / double(n);
        mix_n += share[i];
    }
    std::printf("%-18s %6s %10s %10s %10.1f %10.1f\n", "latent mix", "", "", "",
                mix_n / mix_enc * 1e-6, mix_n / mix_dec * 1e-6);
    return all_ok ? 0 : 1;
}
