#include "pixels.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "bitio.hpp"
#include "huffman.hpp"
#include "symbols.hpp"

namespace fastcodec {

namespace {

// Literal ranges a table may use (4-bit index): values -v..v are literals, the rest escapes.
constexpr int kV[16] = {0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 27, 36, 48, 64, 113, 255};
constexpr int kMaxAlphabet = 4096;
constexpr int kMaxRuns = 32;  // run classes of a zero-run table: 1..32
constexpr int kGClasses = 3;  // green-error classes of a colour-difference context

inline int activity_class(int a) {
    return (a >= 1) + (a >= 3) + (a >= 6) + (a >= 10) + (a >= 16) + (a >= 26) + (a >= 42);
}

inline int zigzag(int d) { return d >= 0 ? 2 * d : -2 * d - 1; }
inline int unzigzag(uint32_t z) { return (z & 1) ? -int((z + 1) >> 1) : int(z >> 1); }

struct PlaneConfig {
    int shift = 0;  // activity classes 8 >> shift
    int g = 0;      // colour differences: contexts split by the green error's class
    int nctx() const { return (kPixelActivityClasses >> shift) * (g ? kGClasses : 1); }
    int ctx(int ca, int gc) const { return g ? (ca >> shift) * kGClasses + gc : ca >> shift; }
};

// The prediction of one sample and its contexts.
struct Predictor {
    int pred;  // corrected prediction
    int cls;   // coding class 0..7
    int q;     // bias context (0..728, sign-normalised)
    int sign;  // +1 or -1: the error is coded as sign * (value - pred)
};

// Adaptive bias correction per gradient context (as JPEG-LS, ITU-T T.87 A.6).
struct BiasState {
    int32_t B[729], C[729], N[729];
    int t1, t2, t3, near, lo, hi;
    BiasState(int near_, int lo_, int hi_) : near(near_), lo(lo_), hi(hi_) {
        t1 = 3 + 3 * near;
        t2 = 7 + 5 * near;
        t3 = 21 + 7 * near;
        for (int i = 0; i < 729; ++i) B[i] = 0, C[i] = 0, N[i] = 1;
    }
    int quant(int d) const {
        if (d <= -t3) return -4;
        if (d <= -t2) return -3;
        if (d <= -t1) return -2;
        if (d < -near) return -1;
        if (d <= near) return 0;
        if (d < t1) return 1;
        if (d < t2) return 2;
        if (d < t3) return 3;
        return 4;
    }
    void update(int q, int err) {  // err: the coded (quantised, sign-normalised) error
        B[q] += err * (2 * near + 1);
        if (N[q] == 64) {
            B[q] = B[q] >= 0 ? B[q] >> 1 : -((1 - B[q]) >> 1);
            N[q] >>= 1;
        }
        ++N[q];
        if (B[q] <= -N[q]) {
            B[q] += N[q];
            if (C[q] > -128) --C[q];
            if (B[q] <= -N[q]) B[q] = -N[q] + 1;
        } else if (B[q] > 0) {
            B[q] -= N[q];
            if (C[q] < 127) ++C[q];
            if (B[q] > 0) B[q] = 0;
        }
    }
};

inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
    const int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

constexpr int kSub = 11;  // sub-predictors of the weighted prediction

// Weight of a sub-predictor whose errors at the four neighbours sum to s (times 4):
// 2^36 / (1 + min(s / 4, 4095))^2, a table instead of a division per sub-predictor.
struct WeightTable {
    int64_t w[4096];
    WeightTable() {
        for (int64_t i = 0; i < 4096; ++i) w[i] = (int64_t(1) << 36) / ((1 + i) * (1 + i));
    }
};
const WeightTable kWeights;

// One plane's prediction state within a stripe: its last three reconstructed rows, each
// sub-predictor's error at the last two rows' positions, and the bias contexts.
class PlaneModel {
public:
    PlaneModel(int width, int near, int lo, int hi)
        : W_(size_t(width)), bias_(near, lo, hi), a_(3 * W_, 0), err_(size_t(kSub) * 2 * (W_ + 2), 0) {}

    // Prediction of sample (y, x); remembers the sub-predictions for commit().
    Predictor predict(int y, int x) {
        const int16_t* cur = row(y);
        const int16_t* prv = row(y + 2);  // y - 1
        const int16_t* pp = row(y + 1);   // y - 2
        const int width = int(W_);
        int L, U, UL, UR, LL, UU, UUR;
        if (y == 0) {
            if (x == 0) {
                L = U = UL = UR = LL = 0;
            } else {
                L = cur[x - 1];
                U = UL = UR = L;
                LL = x >= 2 ? cur[x - 2] : L;
            }
        } else {
            U = prv[x];
            UR = x + 1 < width ? prv[x + 1] : U;
            if (x == 0) {
                L = UL = LL = U;
            } else {
                L = cur[x - 1];
                UL = prv[x - 1];
                LL = x >= 2 ? cur[x - 2] : L;
            }
        }
        if (y >= 2) {
            UU = pp[x];
            UUR = x + 1 < width ? pp[x + 1] : UU;
        } else {
            UU = U;
            UUR = UR;
        }
        const int mx = std::max(L, U), mn = std::min(L, U);
        const int med = UL >= mx ? mn : (UL <= mn ? mx : L + U - UL);
        // sub-predictions, times 4
        sub_[0] = 4 * L;
        sub_[1] = 4 * U;
        sub_[2] = 4 * (L + U - UL);
        sub_[3] = 2 * (L + UR);
        sub_[4] = 4 * (U + UR - UUR);
        sub_[5] = 4 * (2 * L - LL);
        sub_[6] = 4 * (2 * U - UU);
        sub_[7] = 4 * med;
        sub_[8] = 2 * (L + U);
        sub_[9] = 2 * (U + UR);
        sub_[10] = 4 * (L + UR - U);
        // weights from the sub-predictor's errors at L, U, UL and UR (positions outside the
        // stripe count 0)
        // rows of errors are padded with a zero entry on each side, and the row above the
        // stripe's first row is all zeros, so every sum reads four entries
        const int32_t* ec = errs(y) + size_t(x + 1) * kSub;      // errors at (y, x)
        const int32_t* ep = errs(y + 1) + size_t(x + 1) * kSub;  // ... at (y - 1, x)
        int32_t e[kSub];
        for (int i = 0; i < kSub; ++i) e[i] = ec[i - kSub] + ep[i - kSub] + ep[i] + ep[i + kSub];
        int64_t num = 0, den = 0;
        for (int i = 0; i < kSub; ++i) {
            const int64_t w = kWeights.w[std::min(e[i] >> 2, 4095)];
            num += w * sub_[i];
            den += w;
        }
        int pred = int(floor_div(2 * num + 4 * den, 8 * den));  // round(num / den / 4)
        int q1 = bias_.quant(UR - U), q2 = bias_.quant(U - UL), q3 = bias_.quant(UL - L);
        int sign = 1;
        if (q1 < 0 || (q1 == 0 && (q2 < 0 || (q2 == 0 && q3 < 0)))) {
            q1 = -q1, q2 = -q2, q3 = -q3;
            sign = -1;
        }
        const int q = (q1 + 4) * 81 + (q2 + 4) * 9 + (q3 + 4);
        // the bias correction pays in near-lossless coding but not in lossless coding, so only
        // the former uses it
        if (bias_.near > 0) pred += sign * bias_.C[q];
        pred = pred < bias_.lo ? bias_.lo : (pred > bias_.hi ? bias_.hi : pred);
        const int act = std::abs(UR - U) + std::abs(U - UL) + std::abs(UL - L) + std::abs(L - LL);
        return {pred, activity_class(act / (bias_.near + 1)), q, sign};
    }

    // Records the reconstructed value of sample (y, x) and the coded error of its bias context.
    void commit(int y, int x, int value, const Predictor& pr, int coded) {
        row(y)[x] = int16_t(value);
        int32_t* ec = errs(y) + size_t(x + 1) * kSub;
        for (int i = 0; i < kSub; ++i) ec[i] = std::abs(4 * value - sub_[i]);
        if (bias_.near) bias_.update(pr.q, coded);
    }

private:
    int16_t* row(int y) { return a_.data() + size_t(y % 3) * W_; }
    int32_t* errs(int y) { return err_.data() + size_t(y & 1) * (W_ + 2) * kSub; }

    size_t W_;
    BiasState bias_;
    std::vector<int16_t> a_;    // reconstructed values, rows y % 3
    std::vector<int32_t> err_;  // |4 a - sub-prediction| per position and sub-predictor, rows y % 2
    int32_t sub_[kSub] = {};
};

inline int quantise(int e, int near, int step) {
    return e >= 0 ? (e + near) / step : -((-e + near) / step);
}

inline int clamp255(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

// The decoded value of plane p's sample from its coded error q (the same in encoder and
// decoder): plane 0 (green or gray) directly, planes 1 and 2 as differences from the pixel's
// decoded green g_rec (set by plane 0). Records it in the plane's model.
inline int reconstruct(PlaneModel& m, size_t p, int y, int x, const Predictor& pr, int q, int step, int& g_rec) {
    const int d = pr.pred + pr.sign * q * step;
    if (p == 0) {
        g_rec = clamp255(d);
        m.commit(y, x, g_rec, pr, q);
        return g_rec;
    }
    const int value = clamp255(g_rec + d);
    m.commit(y, x, value - g_rec, pr, q);
    return value;
}

int alphabet_size(int mode, int v, int nruns) { return mode == 0 ? 2 * v + 2 : nruns * (2 * v + 1); }

int terminal_index(int q, int v) {  // run mode: nonzero literal -> index, else ESC (2v)
    if (q >= -v && q <= v) return q < 0 ? q + v : q + v - 1;
    return 2 * v;
}

uint64_t escape_bits(int q, int v) { return 1 + uint64_t(eg0_length(uint32_t(std::abs(q) - v - 1))); }

uint64_t lengths_bits(const std::vector<uint8_t>& len) {
    uint64_t b = 0;
    int prev = 0;
    for (uint8_t l : len) {
        b += uint64_t(eg0_length(uint32_t(zigzag(int(l) - prev))));
        prev = l;
    }
    return b;
}

struct Phrase {
    uint32_t run;
    int32_t term;  // the nonzero value after the run (unused for the trailing phrase)
};

// The values of one table's samples, in coding order, and what a table of them costs.
struct TableChoice {
    int mode = 0, vi = 0, nruns = 1;
    int trail_t = -1;  // run mode: the trailing phrase's terminal index (-1: no trailing run)
    std::vector<uint8_t> lengths;
    uint64_t bits = UINT64_MAX;  // description + data
};

struct Stats {
    std::vector<uint32_t> hist;  // q + 510
    uint64_t n = 0;
    int maxabs = 0;
    bool runs = false;  // phrases collected (zero-run tables considered)
    std::vector<Phrase> phrases;
    uint32_t trailing = 0;  // zeros after the last nonzero value
    bool has_trailing = false;
    Stats() : hist(2 * kPixelMaxQuantised + 1, 0) {}
    void add_phrase_value(int q) {
        if (q == 0) {
            ++trailing;
        } else {
            phrases.push_back({trailing, q});
            trailing = 0;
        }
    }
    void finish() {
        for (int q = -kPixelMaxQuantised; q <= kPixelMaxQuantised; ++q)
            if (hist[q + kPixelMaxQuantised]) maxabs = std::max(maxabs, std::abs(q));
        has_trailing = trailing > 0;
    }
};

TableChoice direct_table(const Stats& s, int vi) {
    const int v = kV[vi];
    std::vector<uint32_t> f(size_t(2 * v + 2), 0);
    uint64_t esc_bits = 0;
    for (int q = -kPixelMaxQuantised; q <= kPixelMaxQuantised; ++q) {
        const uint32_t c = s.hist[q + kPixelMaxQuantised];
        if (!c) continue;
        if (q >= -v && q <= v) {
            f[size_t(q + v)] += c;
        } else {
            f[size_t(2 * v + 1)] += c;
            esc_bits += uint64_t(c) * escape_bits(q, v);
        }
    }
    TableChoice t;
    t.mode = 0;
    t.vi = vi;
    t.lengths = huffman_code_lengths(f, kPixelMaxCodeLength);
    uint64_t b = 1 + 4 + lengths_bits(t.lengths) + esc_bits;
    for (size_t i = 0; i < f.size(); ++i) b += uint64_t(f[i]) * t.lengths[i];
    t.bits = b;
    return t;
}

TableChoice run_table(const Stats& s, int vi, int nruns) {
    const int v = kV[vi];
    const int nt = 2 * v + 1;
    if (nruns * nt > kMaxAlphabet) return TableChoice{};
    std::vector<uint32_t> f(size_t(nruns * nt), 0);
    uint64_t extra = 0;
    const int last = nruns - 1;
    const uint32_t last_base = SymbolCoder::run_class_base(last);
    auto cls_bits = [&](uint32_t run, int& k) -> uint64_t {
        k = std::min(SymbolCoder::run_class_of(run, kMaxRuns), last);
        if (k == last) return uint64_t(eg0_length(run - last_base));
        return uint64_t(SymbolCoder::run_class_extra_bits(k));
    };
    for (const Phrase& p : s.phrases) {
        int k;
        extra += cls_bits(p.run, k);
        const int t = terminal_index(p.term, v);
        if (t == nt - 1) extra += escape_bits(p.term, v);
        ++f[size_t(k * nt + t)];
    }
    TableChoice c;
    c.mode = 1;
    c.vi = vi;
    c.nruns = nruns;
    if (s.has_trailing) {
        int k;
        extra += cls_bits(s.trailing, k);
        int t = -1;
        uint32_t best = 0;
        for (int i = 0; i < nt - 1; ++i)
            if (f[size_t(k * nt + i)] > best) best = f[size_t(k * nt + i)], t = i;
        if (t < 0) t = v >= 1 ? v : nt - 1;  // value +1, or ESC when the table has no literal
        if (t == nt - 1) extra += 2;          // ESC '0' eg0(0): the value v + 1, never used
        ++f[size_t(k * nt + t)];
        c.trail_t = t;
    }
    c.lengths = huffman_code_lengths(f, kPixelMaxCodeLength);
    uint64_t b = 1 + 4 + 5 + lengths_bits(c.lengths) + extra;
    for (size_t i = 0; i < f.size(); ++i) b += uint64_t(f[i]) * c.lengths[i];
    c.bits = b;
    return c;
}

TableChoice best_table(const Stats& s) {
    // Literal ranges around the values' spread: the smallest kV covering the largest value,
    // and the three below it.
    int top = 0;
    while (top < 15 && kV[top] < s.maxabs) ++top;
    TableChoice best;
    for (int vi = std::max(0, top - 3); vi <= top; ++vi) {
        TableChoice t = direct_table(s, vi);
        if (t.bits < best.bits) best = std::move(t);
    }
    if (s.runs) {  // zero runs pay only where zeros dominate
        uint32_t maxrun = s.trailing;
        for (const Phrase& p : s.phrases) maxrun = std::max(maxrun, p.run);
        const int kmax = SymbolCoder::run_class_of(maxrun, kMaxRuns);
        // literal ranges up to 15 next to the best direct table's, and its own if wider; two
        // run-class counts, within the alphabet's limit
        const int cap = std::min(best.vi, 8);
        for (int vi : {cap - 1, cap, best.vi > 8 ? best.vi : -1}) {
            if (vi < 0) continue;
            const int most = kMaxAlphabet / (2 * kV[vi] + 1);
            for (int nr : {kmax + 1, kmax - 3}) {
                nr = std::min(nr, std::min(most, kMaxRuns));
                if (nr < 1) continue;
                TableChoice t = run_table(s, vi, nr);
                if (t.bits < best.bits) best = std::move(t);
            }
        }
    }
    return best;
}

struct PlanePlan {
    PlaneConfig cfg;
    int ntables = 0;
    std::vector<int> map;  // context -> table
    std::vector<TableChoice> tables;
    uint64_t bits = UINT64_MAX;
};

// Samples of the stripe in coding order: for pixel (y, x), plane 0, then 1, 2.
struct Samples {
    std::vector<int16_t> q;
    std::vector<uint8_t> cls;
};

PlanePlan plan_plane(const Samples& sm, int p, int channels, size_t npix) {
    PlanePlan best;
    const size_t C = size_t(channels);
    const int gmax = (p > 0) ? 1 : 0;
    for (int g = 0; g <= gmax; ++g) {
        // histograms of the finest contexts, summed for the coarser ones
        PlaneConfig fine;
        fine.g = g;
        std::vector<std::vector<uint32_t>> hist(size_t(fine.nctx()),
                                                std::vector<uint32_t>(2 * kPixelMaxQuantised + 1, 0));
        auto gclass = [&](size_t i) { return g ? std::min(std::abs(int(sm.q[i * C])), kGClasses - 1) : 0; };
        for (size_t i = 0; i < npix; ++i) {
            const size_t j = i * C + size_t(p);
            ++hist[size_t(fine.ctx(sm.cls[j], gclass(i)))][size_t(sm.q[j] + kPixelMaxQuantised)];
        }
        for (int shift = 0; shift <= 3; ++shift) {
            PlanePlan plan;
            plan.cfg.shift = shift;
            plan.cfg.g = g;
            const int nctx = plan.cfg.nctx();
            std::vector<Stats> st(static_cast<size_t>(nctx));
            for (int ca = 0; ca < kPixelActivityClasses; ++ca)
                for (int gc = 0; gc < (g ? kGClasses : 1); ++gc) {
                    Stats& t = st[size_t(plan.cfg.ctx(ca, gc))];
                    const std::vector<uint32_t>& h = hist[size_t(fine.ctx(ca, gc))];
                    for (size_t k = 0; k < h.size(); ++k) {
                        t.hist[k] += h[k];
                        t.n += h[k];
                    }
                }
            bool any_runs = false;
            for (Stats& t : st) {
                t.runs = t.n && 2 * uint64_t(t.hist[kPixelMaxQuantised]) >= t.n;
                any_runs |= t.runs;
            }
            if (any_runs) {  // the zero runs of the contexts where zeros dominate
                for (size_t i = 0; i < npix; ++i) {
                    const size_t j = i * C + size_t(p);
                    Stats& t = st[size_t(plan.cfg.ctx(sm.cls[j], gclass(i)))];
                    if (t.runs) t.add_phrase_value(sm.q[j]);
                }
            }
            plan.map.assign(size_t(nctx), 0);
            uint64_t bits = 2 + (p > 0 ? 1 : 0);
            for (int c = 0; c < nctx; ++c) {
                if (!st[size_t(c)].n) continue;
                st[size_t(c)].finish();
                plan.map[size_t(c)] = plan.ntables++;
                plan.tables.push_back(best_table(st[size_t(c)]));
                bits += plan.tables.back().bits;
            }
            bits += uint64_t(eg0_length(uint32_t(plan.ntables - 1)));
            if (plan.ntables < nctx) {
                int w = 0;
                while ((1 << w) < plan.ntables) ++w;
                bits += uint64_t(nctx) * uint64_t(w);
            }
            plan.bits = bits;
            if (plan.bits < best.bits) best = std::move(plan);
        }
    }
    return best;
}

void write_escape(BitWriter& bw, int q, int v) {
    bw.put(q < 0 ? 1 : 0, 1);
    bw.put_eg0(uint32_t(std::abs(q) - v - 1));
}

// Encoder-side state of one table while the samples are written.
struct EncTable {
    const TableChoice* choice;
    HuffmanCode code;
    int v, nt;
    std::vector<int16_t> seq;  // the table's values in coding order
    size_t pos = 0;            // next value of seq
    uint64_t remaining = 0;    // samples still covered by the last written phrase
};

void write_run_phrase(BitWriter& bw, EncTable& t) {
    const TableChoice& c = *t.choice;
    size_t j = t.pos;
    while (j < t.seq.size() && t.seq[j] == 0) ++j;
    const uint32_t run = uint32_t(j - t.pos);
    const bool trailing = j == t.seq.size();
    const int last = c.nruns - 1;
    const int k = std::min(SymbolCoder::run_class_of(run, kMaxRuns), last);
    const int q = trailing ? 0 : t.seq[j];
    const int ti = trailing ? c.trail_t : terminal_index(q, t.v);
    t.code.encode(bw, uint32_t(k * t.nt + ti));
    const uint32_t base = SymbolCoder::run_class_base(k);
    if (k == last)
        bw.put_eg0(run - base);
    else
        bw.put(run - base, SymbolCoder::run_class_extra_bits(k));
    if (ti == t.nt - 1) {
        if (trailing)
            write_escape(bw, t.v + 1, t.v);
        else
            write_escape(bw, q, t.v);
    }
    t.remaining = trailing ? run : uint64_t(run) + 1;
}

// Decoder-side state of one table.
struct DecTable {
    int mode = 0, v = 0, nruns = 1, nt = 1;
    HuffmanCode code;
    uint64_t pending = 0;  // zeros still to return
    bool has_term = false;
    int32_t term = 0;
};

int32_t read_escape(BitReader& br, int v) {
    const uint32_t neg = br.get(1);
    const uint32_t e = br.get_eg0();
    const int64_t mag = int64_t(v) + 1 + int64_t(e);
    if (mag > kPixelMaxQuantised)
        throw FormatError("pixel stream: escaped value of magnitude " + std::to_string(mag) +
                          " exceeds the largest possible, " + std::to_string(kPixelMaxQuantised));
    return neg ? -int32_t(mag) : int32_t(mag);
}

inline int32_t next_value(DecTable& t, BitReader& br) {
    if (t.mode == 0) {
        const uint32_t s = t.code.decode(br);
        if (s == uint32_t(2 * t.v + 1)) return read_escape(br, t.v);
        return int32_t(s) - t.v;
    }
    if (t.pending) {
        --t.pending;
        return 0;
    }
    if (t.has_term) {
        t.has_term = false;
        return t.term;
    }
    const uint32_t s = t.code.decode(br);
    const int k = int(s / uint32_t(t.nt));
    const int ti = int(s % uint32_t(t.nt));
    const int last = t.nruns - 1;
    uint64_t run = SymbolCoder::run_class_base(k);
    run += k == last ? uint64_t(br.get_eg0()) : uint64_t(br.get(SymbolCoder::run_class_extra_bits(k)));
    const int32_t term = ti == t.nt - 1 ? read_escape(br, t.v) : (ti < t.v ? ti - t.v : ti - t.v + 1);
    if (run == 0) return term;
    t.pending = run - 1;
    t.has_term = true;
    t.term = term;
    return 0;
}

void check_dims(int width, int rows, int channels, int max_error) {
    if (width < 1 || rows < 1 || width > (1 << 20) || rows > (1 << 20))
        throw ArgumentError("pixel stripe: width and rows must be 1..2^20, got " + std::to_string(width) + "x" +
                            std::to_string(rows));
    if (channels != 1 && channels != 3)
        throw ArgumentError("pixel stripe: channels must be 1 or 3, got " + std::to_string(channels));
    if (max_error < 0 || max_error > kPixelMaxError)
        throw ArgumentError("pixel stripe: max_error must be 0.." + std::to_string(kPixelMaxError) + ", got " +
                            std::to_string(max_error));
}

// Output component of plane p: green first, then red and blue as differences from green.
constexpr int kPlaneChannel[3] = {1, 0, 2};

}  // namespace

std::vector<uint8_t> pixel_encode_stripe(const uint8_t* px, ptrdiff_t row_stride, ptrdiff_t col_stride,
                                         ptrdiff_t ch_stride, int width, int rows, int channels,
                                         int max_error, uint8_t* recon, PixelStripeStats* stats) {
    check_dims(width, rows, channels, max_error);
    const int near = max_error, step = 2 * near + 1;
    const size_t W = size_t(width), npix = W * size_t(rows), C = size_t(channels);
    Samples sm;
    sm.q.resize(npix * C);
    sm.cls.resize(npix * C);
    // Two reconstructed rows per plane (the previous and the current one).
    std::vector<PlaneModel> model;
    for (size_t p = 0; p < C; ++p) model.emplace_back(width, near, p == 0 ? 0 : -255, 255);
    for (int y = 0; y < rows; ++y) {
        const uint8_t* src = px + ptrdiff_t(y) * row_stride;
        for (int x = 0; x < width; ++x) {
            const uint8_t* pix = src + ptrdiff_t(x) * col_stride;
            const size_t i = (size_t(y) * W + size_t(x)) * C;
            int g_rec = 0;
            for (size_t p = 0; p < C; ++p) {
                const Predictor pr = model[p].predict(y, x);
                const int ch = C == 3 ? kPlaneChannel[p] : 0;
                const int orig = pix[ptrdiff_t(ch) * ch_stride];
                const int target = p == 0 ? orig : orig - g_rec;
                const int q = quantise(pr.sign * (target - pr.pred), near, step);
                sm.q[i + p] = int16_t(q);
                sm.cls[i + p] = uint8_t(pr.cls);
                const int value = reconstruct(model[p], p, y, x, pr, q, step, g_rec);
                if (recon) recon[i + size_t(ch)] = uint8_t(value);
            }
        }
    }
    // Tables per plane, then the samples in coding order.
    std::vector<PlanePlan> plans;
    for (size_t p = 0; p < C; ++p) plans.push_back(plan_plane(sm, int(p), channels, npix));
    BitWriter bw(npix * C / 2 + 64);
    std::vector<std::vector<EncTable>> tabs(C);
    for (size_t p = 0; p < C; ++p) {
        const PlanePlan& pl = plans[p];
        bw.put(uint32_t(pl.cfg.shift), 2);
        if (p > 0) bw.put(uint32_t(pl.cfg.g), 1);
        bw.put_eg0(uint32_t(pl.ntables - 1));
        const int nctx = pl.cfg.nctx();
        if (pl.ntables < nctx) {
            int w = 0;
            while ((1 << w) < pl.ntables) ++w;
            for (int c = 0; c < nctx; ++c) bw.put(uint32_t(pl.map[size_t(c)]), w);
        }
        tabs[p].resize(pl.tables.size());
        for (size_t t = 0; t < pl.tables.size(); ++t) {
            const TableChoice& tc = pl.tables[t];
            bw.put(uint32_t(tc.mode), 1);
            bw.put(uint32_t(tc.vi), 4);
            if (tc.mode == 1) bw.put(uint32_t(tc.nruns - 1), 5);
            int prev = 0;
            for (uint8_t l : tc.lengths) {
                bw.put_eg0(uint32_t(zigzag(int(l) - prev)));
                prev = l;
            }
            EncTable& et = tabs[p][t];
            et.choice = &tc;
            et.code = HuffmanCode(tc.lengths);
            et.v = kV[tc.vi];
            et.nt = 2 * et.v + 1;
        }
    }
    const uint64_t header_bits = bw.bits_written();
    // Each table's values in coding order (for the zero runs' look-ahead).
    std::vector<uint8_t> table_of(npix * C);
    for (size_t i = 0; i < npix; ++i) {
        const int gc = std::min(std::abs(int(sm.q[i * C])), kGClasses - 1);
        for (size_t p = 0; p < C; ++p) {
            const size_t j = i * C + p;
            const int t = plans[p].map[size_t(plans[p].cfg.ctx(sm.cls[j], gc))];
            table_of[j] = uint8_t(t);
            if (plans[p].tables[size_t(t)].mode == 1) tabs[p][size_t(t)].seq.push_back(sm.q[j]);
        }
    }
    for (size_t i = 0; i < npix; ++i) {
        for (size_t p = 0; p < C; ++p) {
            const size_t j = i * C + p;
            EncTable& t = tabs[p][table_of[j]];
            const int q = sm.q[j];
            if (t.choice->mode == 0) {
                if (q >= -t.v && q <= t.v) {
                    t.code.encode(bw, uint32_t(q + t.v));
                } else {
                    t.code.encode(bw, uint32_t(2 * t.v + 1));
                    write_escape(bw, q, t.v);
                }
                continue;
            }
            if (t.remaining == 0) write_run_phrase(bw, t);
            --t.remaining;
            ++t.pos;
        }
    }
    if (stats) {
        stats->header_bits = header_bits;
        stats->data_bits = bw.bits_written() - header_bits;
    }
    return bw.finish();
}

namespace {

// Decodes the stripe; false if a zero run is left unfinished (its zeros go past the stripe).
bool decode_stripe(BitReader& br, int width, int rows, int channels, int max_error, uint8_t* out,
                   ptrdiff_t out_row_stride) {
    const int near = max_error, step = 2 * near + 1;
    const size_t C = size_t(channels);
    PlaneConfig cfg[3];
    std::vector<int> map[3];
    std::vector<DecTable> tabs[3];
    for (size_t p = 0; p < C; ++p) {
        cfg[p].shift = int(br.get(2));
        cfg[p].g = p > 0 ? int(br.get(1)) : 0;
        const int nctx = cfg[p].nctx();
        const uint32_t nt = br.get_eg0() + 1;
        if (nt > uint32_t(nctx))
            throw FormatError("pixel stream: plane " + std::to_string(p) + " declares " + std::to_string(nt) +
                              " tables for " + std::to_string(nctx) + " contexts");
        const int ntables = int(nt);
        map[p].assign(size_t(nctx), 0);
        if (ntables < nctx) {
            int w = 0;
            while ((1 << w) < ntables) ++w;
            for (int c = 0; c < nctx; ++c) {
                const uint32_t t = br.get(w);
                if (t >= nt) throw FormatError("pixel stream: context mapped to a table that does not exist");
                map[p][size_t(c)] = int(t);
            }
        } else {
            for (int c = 0; c < nctx; ++c) map[p][size_t(c)] = c;
        }
        tabs[p].resize(size_t(ntables));
        for (DecTable& t : tabs[p]) {
            t.mode = int(br.get(1));
            t.v = kV[br.get(4)];
            t.nruns = t.mode == 1 ? int(br.get(5)) + 1 : 1;
            t.nt = 2 * t.v + 1;
            const int asz = alphabet_size(t.mode, t.v, t.nruns);
            if (asz > kMaxAlphabet)
                throw FormatError("pixel stream: a zero-run table's alphabet of " + std::to_string(asz) +
                                  " symbols exceeds " + std::to_string(kMaxAlphabet));
            std::vector<uint8_t> len(static_cast<size_t>(asz));
            int prev = 0;
            for (int s = 0; s < asz; ++s) {
                const int l = prev + unzigzag(br.get_eg0());
                if (l < 0 || l > kPixelMaxCodeLength)
                    throw FormatError("pixel stream: code length " + std::to_string(l) + " outside 0.." +
                                      std::to_string(kPixelMaxCodeLength));
                len[size_t(s)] = uint8_t(l);
                prev = l;
            }
            t.code = HuffmanCode(len);  // FormatError if the lengths are no prefix code
            if (br.overrun()) throw FormatError("pixel stream: truncated in its tables");
        }
    }
    std::vector<PlaneModel> model;
    for (size_t p = 0; p < C; ++p) model.emplace_back(width, near, p == 0 ? 0 : -255, 255);
    for (int y = 0; y < rows; ++y) {
        uint8_t* dst = out + ptrdiff_t(y) * out_row_stride;
        for (int x = 0; x < width; ++x) {
            int g_rec = 0, gq = 0;
            for (size_t p = 0; p < C; ++p) {
                const Predictor pr = model[p].predict(y, x);
                const int gc = std::min(std::abs(gq), kGClasses - 1);
                DecTable& t = tabs[p][size_t(map[p][size_t(cfg[p].ctx(pr.cls, gc))])];
                const int32_t q = next_value(t, br);
                if (q > kPixelMaxQuantised || q < -kPixelMaxQuantised)
                    throw FormatError("pixel stream: value " + std::to_string(q) + " outside -510..510");
                if (p == 0) gq = q;
                const int value = reconstruct(model[p], p, y, x, pr, q, step, g_rec);
                const int ch = C == 3 ? kPlaneChannel[p] : 0;
                dst[size_t(x) * C + size_t(ch)] = uint8_t(value);
            }
        }
        if (br.overrun()) throw FormatError("pixel stream: truncated");
    }
    for (size_t p = 0; p < C; ++p)
        for (const DecTable& t : tabs[p])
            if (t.pending) return false;
    return true;
}

}  // namespace

void pixel_decode_stripe(const uint8_t* data, size_t size, int width, int rows, int channels,
                         int max_error, uint8_t* out, ptrdiff_t out_row_stride) {
    check_dims(width, rows, channels, max_error);
    BitReader br(data, size);
    bool runs_done;
    try {
        runs_done = decode_stripe(br, width, rows, channels, max_error, out, out_row_stride);
    } catch (const FormatError&) {
        // past the end every bit reads as 0, which may look like an over-long code first
        if (br.bits_consumed() + 32 > size * 8) throw FormatError("pixel stream: truncated");
        throw;
    }
    const size_t used = br.bits_consumed();
    if (used > size * 8) throw FormatError("pixel stream: truncated");
    if (!runs_done) throw FormatError("pixel stream: a run of zeros goes past the end of the stripe");
    if (size * 8 - used > 7)
        throw FormatError("pixel stream: " + std::to_string(size * 8 - used) +
                          " bits left over after the last pixel (at most 7 allowed)");
}

}  // namespace fastcodec
