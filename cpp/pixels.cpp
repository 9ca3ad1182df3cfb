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

// Contexts 2 (flag bit 2): 16 classes of the weighted prediction's expected error
// A = floor(err / (4 den)), the class counting the thresholds t <= floor(floor(A / (near + 1)) / 2^ws),
// that is those with err >= t * unit, unit = 4 den (near + 1) 2^ws (no division: a binary search
// over the 15 thresholds; unit < 2^55 and t <= 75 keep every product below 2^62).
constexpr int kMaxActivityClasses = 16;
inline int activity_class2(int64_t err, int64_t unit) {
    static constexpr int64_t t[15] = {1, 2, 3, 4, 6, 8, 10, 13, 16, 20, 26, 33, 42, 55, 75};
    int lo = 0, hi = 15;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (err >= t[mid] * unit)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

inline int zigzag(int d) { return d >= 0 ? 2 * d : -2 * d - 1; }
inline int unzigzag(uint32_t z) { return (z & 1) ? -int((z + 1) >> 1) : int(z >> 1); }

struct PlaneConfig {
    int shift = 0;     // activity classes: classes >> shift
    int g = 0;         // colour differences: contexts split by the green (or red) error's class
    int classes = kPixelActivityClasses;  // 8, or 16 with contexts 2
    int nctx() const { return (classes >> shift) * (g ? kGClasses : 1); }
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
    // ws: the sample scale (16-bit stripes; 0 for 8-bit ones), which scales the thresholds
    BiasState(int near_, int lo_, int hi_, int ws) : near(near_), lo(lo_), hi(hi_) {
        t1 = (3 << ws) + 3 * near;
        t2 = (7 << ws) + 5 * near;
        t3 = (21 << ws) + 7 * near;
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
// sub-predictor's error at the last two rows' positions, and the bias contexts. Values lo..hi;
// ws (0..8, 16-bit stripes only) scales the errors behind the weights, the activity classes and
// the gradient thresholds, so that 16-bit samples of 8 + ws significant bits behave as 8-bit
// ones do.
class PlaneModel {
public:
    // ctx2 (contexts 2): the activity class is that of the weighted prediction's expected error
    // (the sub-predictors' neighbour errors averaged with the prediction's weights), 16 classes
    PlaneModel(int width, int near, int lo, int hi, int ws = 0, bool ctx2 = false)
        : W_(size_t(width)), ws_(ws), ctx2_(ctx2), bias_(near, lo, hi, ws), a_(3 * W_, 0),
          err_(size_t(kSub) * 2 * (W_ + 2), 0), unit2_(int64_t(4) * (near + 1) << ws) {}

    // Prediction of sample (y, x); remembers the sub-predictions for commit().
    Predictor predict(int y, int x) {
        int L, U, UL, UR, LL;
        subpredict(y, x, L, U, UL, UR, LL);
        // weights from the sub-predictor's errors at L, U, UL and UR (positions outside the
        // stripe count 0)
        // rows of errors are padded with a zero entry on each side, and the row above the
        // stripe's first row is all zeros, so every sum reads four entries
        const int32_t* ec = errs(y) + size_t(x + 1) * kSub;      // errors at (y, x)
        const int32_t* ep = errs(y + 1) + size_t(x + 1) * kSub;  // ... at (y - 1, x)
        int32_t e[kSub];
        for (int i = 0; i < kSub; ++i) e[i] = ec[i - kSub] + ep[i - kSub] + ep[i] + ep[i + kSub];
        int64_t num = 0, den = 0, err = 0;
        for (int i = 0; i < kSub; ++i) {
            const int64_t w = kWeights.w[std::min(e[i] >> (2 + ws_), 4095)];
            num += w * sub_[i];
            den += w;
            err += w * e[i];
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
        if (ctx2_)  // the expected error: sum of the neighbours' errors, weighted as the prediction
            return {pred, activity_class2(err, den * unit2_), q, sign};
        const int act = std::abs(UR - U) + std::abs(U - UL) + std::abs(UL - L) + std::abs(L - LL);
        return {pred, activity_class((act / (bias_.near + 1)) >> ws_), q, sign};
    }

    // A copied sample (y, x): its value is known, and only the sub-predictions are needed, for
    // the sub-predictors' errors there (what predict() and commit() would record, for less).
    void copied(int y, int x, int value) {
        int L, U, UL, UR, LL;
        subpredict(y, x, L, U, UL, UR, LL);
        commit(y, x, value);
    }

private:
    // The neighbours of sample (y, x) and the eleven sub-predictions (sub_).
    void subpredict(int y, int x, int& L, int& U, int& UL, int& UR, int& LL) {
        const int32_t* cur = row(y);
        const int32_t* prv = row(y + 2);  // y - 1
        const int32_t* pp = row(y + 1);   // y - 2
        const int width = int(W_);
        int UU, UUR;
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
    }

public:
    // Records the reconstructed value of sample (y, x) (after predict(y, x)).
    void commit(int y, int x, int value) {
        row(y)[x] = value;
        int32_t* ec = errs(y) + size_t(x + 1) * kSub;
        for (int i = 0; i < kSub; ++i) ec[i] = std::abs(4 * value - sub_[i]);
    }
    // ... and the coded error of a coded (not copied) sample, for its bias context.
    void commit(int y, int x, int value, const Predictor& pr, int coded) {
        commit(y, x, value);
        if (bias_.near) bias_.update(pr.q, coded);
    }

private:
    int32_t* row(int y) { return a_.data() + size_t(y % 3) * W_; }
    int32_t* errs(int y) { return err_.data() + size_t(y & 1) * (W_ + 2) * kSub; }

    size_t W_;
    int ws_;
    bool ctx2_;
    BiasState bias_;
    std::vector<int32_t> a_;    // reconstructed values, rows y % 3
    std::vector<int32_t> err_;  // |4 a - sub-prediction| per position and sub-predictor, rows y % 2
    int64_t unit2_;             // contexts 2: 4 (near + 1) 2^ws, the class unit per unit of weight
    int32_t sub_[kSub] = {};
};

inline int quantise(int e, int near, int step) {
    return e >= 0 ? (e + near) / step : -((-e + near) / step);
}

inline int clamp_to(int v, int maxval) { return v < 0 ? 0 : (v > maxval ? maxval : v); }

// What plane p's value is a difference from, given the pixel's decoded planes before it (rec[0]
// green, rec[1] red): nothing for plane 0 (green or gray), green for plane 1 (red), and for
// plane 2 (blue) green, or with contexts 2 the mean of red and green.
inline int plane_reference(size_t p, const int* rec, bool ctx2) {
    if (p == 0) return 0;
    return (p == 2 && ctx2) ? (rec[0] + rec[1]) >> 1 : rec[0];
}

// The decoded value of plane p's sample from its coded error q (the same in encoder and
// decoder), stored in rec[p] and recorded in the plane's model (as the difference from its
// reference). Values 0..maxval (255, or 65535 in 16-bit stripes).
inline int reconstruct(PlaneModel& m, size_t p, int y, int x, const Predictor& pr, int q, int step, int* rec,
                       int maxval, bool ctx2) {
    const int ref = plane_reference(p, rec, ctx2);
    const int value = clamp_to(ref + pr.pred + pr.sign * q * step, maxval);
    m.commit(y, x, value - ref, pr, q);
    rec[p] = value;
    return value;
}

// The class of the other plane's coded error that splits a colour difference's contexts (g):
// green's (plane 0), or with contexts 2 for plane 2 (blue) red's (plane 1).
inline int cross_class(const int32_t* q, size_t p, bool ctx2) {
    return std::min(std::abs(int(q[(p == 2 && ctx2) ? 1 : 0])), kGClasses - 1);
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
    uint8_t cls;   // natural_run_class(run)
};

// The values of one table's samples, in coding order, and what a table of them costs.
struct TableChoice {
    int mode = 0, vi = 0, nruns = 1;
    int r = 0;         // raw low bits after each value (16-bit stripes)
    int trail_t = -1;  // run mode: the trailing phrase's terminal index (-1: no trailing run)
    std::vector<uint8_t> lengths;
    uint64_t bits = UINT64_MAX;  // description + data
};

struct Stats {
    int bound;                   // the values are -bound..bound
    std::vector<uint32_t> hist;  // q + bound
    int r = 0;                   // raw low bits per value (16-bit stripes: the values are q >> r)
    int desc = 0;                // bits of the table's description besides mode, vi and nruns
    uint64_t n = 0;
    int maxabs = 0;
    bool runs = false;  // phrases collected (zero-run tables considered)
    std::vector<Phrase> phrases;
    uint32_t trailing = 0;  // zeros after the last nonzero value
    bool has_trailing = false;
    explicit Stats(int bound_ = kPixelMaxQuantised) : bound(bound_), hist(2 * size_t(bound_) + 1, 0) {}
    void add_phrase_value(int q) {
        if (q == 0) {
            ++trailing;
        } else {
            phrases.push_back({trailing, int32_t(q), uint8_t(natural_run_class(trailing))});
            trailing = 0;
        }
    }
    void finish() {
        for (int q = -bound; q <= bound; ++q)
            if (hist[size_t(q + bound)]) maxabs = std::max(maxabs, std::abs(q));
        has_trailing = trailing > 0;
    }
};

TableChoice direct_table(const Stats& s, int vi) {
    const int v = kV[vi];
    std::vector<uint32_t> f(size_t(2 * v + 2), 0);
    uint64_t esc_bits = 0;
    for (int q = -s.bound; q <= s.bound; ++q) {
        const uint32_t c = s.hist[size_t(q + s.bound)];
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
    t.r = s.r;
    t.lengths = huffman_code_lengths(f, kPixelMaxCodeLength);
    uint64_t b = 1 + 4 + uint64_t(s.desc) + s.n * uint64_t(s.r) + lengths_bits(t.lengths) + esc_bits;
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
    int extra_of[kMaxRuns];  // the extra bits of each class below the last
    for (int k = 0; k < last; ++k) extra_of[k] = SymbolCoder::run_class_extra_bits(k);
    for (const Phrase& p : s.phrases) {
        const int k = p.cls < last ? int(p.cls) : last;
        extra += k < last ? uint64_t(extra_of[k]) : uint64_t(eg0_length(p.run - last_base));
        const int t = terminal_index(p.term, v);
        if (t == nt - 1) extra += escape_bits(p.term, v);
        ++f[size_t(k * nt + t)];
    }
    TableChoice c;
    c.mode = 1;
    c.vi = vi;
    c.nruns = nruns;
    c.r = s.r;
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
    uint64_t b = 1 + 4 + 5 + uint64_t(s.desc) + s.n * uint64_t(s.r) + lengths_bits(c.lengths) + extra;
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
    std::vector<int32_t> q;
    std::vector<uint8_t> cls;
};

// 16-bit stripes: a table's values are q >> r, each followed by the r low bits of q. The r of a
// context: the smallest cost of a direct table over r from bitlen(mean |q|) - 4 to bitlen(mean |q|)
// (raw bits are what the noise's low bits cost anyway; the table codes what is left).
struct ValueCount {
    int32_t q;
    uint32_t n;
};
Stats deep_stats(const std::vector<const std::vector<ValueCount>*>& lists, int r) {
    int maxabs = 0;
    for (const auto* l : lists)
        for (const ValueCount& vc : *l) maxabs = std::max(maxabs, std::abs(vc.q >> r));
    Stats st(maxabs);
    st.r = r;
    st.desc = 4;
    for (const auto* l : lists)
        for (const ValueCount& vc : *l) {
            st.hist[size_t((vc.q >> r) + maxabs)] += vc.n;
            st.n += vc.n;
        }
    return st;
}

int choose_r(const std::vector<const std::vector<ValueCount>*>& lists) {
    uint64_t n = 0, sum = 0;
    for (const auto* l : lists)
        for (const ValueCount& vc : *l) n += vc.n, sum += uint64_t(vc.n) * uint64_t(std::abs(vc.q));
    if (!n) return 0;
    int top = 0;
    while (top < 15 && (uint64_t(1) << top) <= sum / std::max<uint64_t>(n, 1)) ++top;
    int best_r = 0;
    uint64_t best = UINT64_MAX;
    for (int r = std::max(0, top - 4); r <= top; ++r) {
        Stats st = deep_stats(lists, r);
        st.finish();
        const uint64_t b = best_table(st).bits;
        if (b < best) best = b, best_r = r;
    }
    return best_r;
}

// The plane's configuration (activity classes, green classes) and tables that code its samples
// in the fewest bits; only configuration `only` if given. deep: a 16-bit stripe (values up to
// maxq = 131070 in magnitude, each table with its r).
PlanePlan plan_plane(const Samples& sm, int p, int channels, size_t npix, const PlaneConfig* only = nullptr,
                     bool deep = false, bool ctx2 = false) {
    PlanePlan best;
    const size_t C = size_t(channels);
    const int gmax = (p > 0) ? 1 : 0;
    const int maxq = deep ? kPixelMaxQuantised16 : kPixelMaxQuantised;
    for (int g = 0; g <= gmax; ++g) {
        if (only && g != only->g) continue;
        // histograms of the finest contexts, summed for the coarser ones (16-bit stripes: the
        // distinct values of each and their counts)
        PlaneConfig fine;
        fine.g = g;
        fine.classes = ctx2 ? kMaxActivityClasses : kPixelActivityClasses;
        std::vector<std::vector<uint32_t>> hist(deep ? 0 : size_t(fine.nctx()),
                                                std::vector<uint32_t>(2 * kPixelMaxQuantised + 1, 0));
        std::vector<std::vector<ValueCount>> values(deep ? size_t(fine.nctx()) : 0);
        // the plane's values and finest contexts, contiguous
        std::vector<int32_t> qs(npix);
        std::vector<uint8_t> fc(npix);
        for (size_t i = 0; i < npix; ++i) {
            const size_t j = i * C + size_t(p);
            qs[i] = sm.q[j];
            fc[i] = uint8_t(fine.ctx(sm.cls[j], g ? cross_class(&sm.q[i * C], size_t(p), ctx2) : 0));
            if (!deep) ++hist[fc[i]][size_t(qs[i] + kPixelMaxQuantised)];
        }
        if (deep) {  // counted in one table, only the distinct values sorted
            std::vector<std::vector<int32_t>> of(values.size());
            for (size_t i = 0; i < npix; ++i) of[fc[i]].push_back(qs[i]);
            std::vector<uint32_t> count(2 * size_t(maxq) + 1, 0);
            std::vector<int32_t> distinct;
            for (size_t f = 0; f < of.size(); ++f) {
                distinct.clear();
                for (int32_t q : of[f])
                    if (count[size_t(q + maxq)]++ == 0) distinct.push_back(q);
                std::sort(distinct.begin(), distinct.end());
                for (int32_t q : distinct) {
                    values[f].push_back({q, count[size_t(q + maxq)]});
                    count[size_t(q + maxq)] = 0;
                }
            }
        }
        for (int shift = 0; shift <= 3; ++shift) {
            if (only && shift != only->shift) continue;
            PlanePlan plan;
            plan.cfg.shift = shift;
            plan.cfg.g = g;
            plan.cfg.classes = fine.classes;
            const int nctx = plan.cfg.nctx();
            std::vector<Stats> st;
            uint8_t r_of_fine[kMaxActivityClasses * kGClasses] = {};
            if (!deep) {
                st.assign(static_cast<size_t>(nctx), Stats());
                for (int ca = 0; ca < fine.classes; ++ca)
                    for (int gc = 0; gc < (g ? kGClasses : 1); ++gc) {
                        Stats& t = st[size_t(plan.cfg.ctx(ca, gc))];
                        const std::vector<uint32_t>& h = hist[size_t(fine.ctx(ca, gc))];
                        for (size_t k = 0; k < h.size(); ++k) {
                            t.hist[k] += h[k];
                            t.n += h[k];
                        }
                    }
            } else {
                for (int c = 0; c < nctx; ++c) {
                    std::vector<const std::vector<ValueCount>*> lists;
                    for (int ca = 0; ca < fine.classes; ++ca)
                        for (int gc = 0; gc < (g ? kGClasses : 1); ++gc)
                            if (plan.cfg.ctx(ca, gc) == c) lists.push_back(&values[size_t(fine.ctx(ca, gc))]);
                    const int r = choose_r(lists);
                    st.push_back(deep_stats(lists, r));
                    for (int ca = 0; ca < fine.classes; ++ca)
                        for (int gc = 0; gc < (g ? kGClasses : 1); ++gc)
                            if (plan.cfg.ctx(ca, gc) == c) r_of_fine[fine.ctx(ca, gc)] = uint8_t(r);
                }
            }
            bool any_runs = false;
            for (Stats& t : st) {
                t.runs = t.n && 2 * uint64_t(t.hist[size_t(t.bound)]) >= t.n;
                any_runs |= t.runs;
            }
            if (any_runs) {  // the zero runs of the contexts where zeros dominate
                Stats* of_fine[kMaxActivityClasses * kGClasses] = {};
                for (int ca = 0; ca < fine.classes; ++ca)
                    for (int gc = 0; gc < (g ? kGClasses : 1); ++gc) {
                        Stats& t = st[size_t(plan.cfg.ctx(ca, gc))];
                        if (t.runs) of_fine[fine.ctx(ca, gc)] = &t;
                    }
                for (size_t i = 0; i < npix; ++i)
                    if (Stats* t = of_fine[fc[i]]) t->add_phrase_value(qs[i] >> r_of_fine[fc[i]]);
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
    int v, nt, r;
    std::vector<int32_t> seq;  // the table's values in coding order (q >> r)
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
    int r = 0;        // raw low bits after each value (16-bit stripes)
    int esc_max = 0;  // the largest escaped magnitude (of q >> r) a valid stream can have
    HuffmanCode code;
    uint64_t pending = 0;  // zeros still to return
    bool has_term = false;
    int32_t term = 0;
};

int32_t read_escape(BitReader& br, int v, int most) {
    const uint32_t neg = br.get(1);
    const uint32_t e = br.get_eg0();
    const int64_t mag = int64_t(v) + 1 + int64_t(e);
    if (mag > most)
        throw FormatError("pixel stream: escaped value of magnitude " + std::to_string(mag) +
                          " exceeds the largest possible, " + std::to_string(most));
    return neg ? -int32_t(mag) : int32_t(mag);
}

inline int32_t next_value(DecTable& t, BitReader& br) {
    if (t.mode == 0) {
        const uint32_t s = t.code.decode(br);
        if (s == uint32_t(2 * t.v + 1)) return read_escape(br, t.v, t.esc_max);
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
    const int32_t term = ti == t.nt - 1 ? read_escape(br, t.v, t.esc_max) : (ti < t.v ? ti - t.v : ti - t.v + 1);
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

void write_lengths(BitWriter& bw, const std::vector<uint8_t>& lengths) {
    int prev = 0;
    for (uint8_t l : lengths) {
        bw.put_eg0(uint32_t(zigzag(int(l) - prev)));
        prev = l;
    }
}

std::vector<uint8_t> read_lengths(BitReader& br, size_t n) {
    std::vector<uint8_t> len(n);
    int prev = 0;
    for (size_t s = 0; s < n; ++s) {
        const int l = prev + unzigzag(br.get_eg0());
        if (l < 0 || l > kPixelMaxCodeLength)
            throw FormatError("pixel stream: code length " + std::to_string(l) + " outside 0.." +
                              std::to_string(kPixelMaxCodeLength));
        len[s] = uint8_t(l);
        prev = l;
    }
    return len;
}

// The planes' tables and samples of a stripe (or of its literal pixels): writes the plane
// descriptions, then the samples pixel by pixel.
class SampleWriter {
public:
    SampleWriter(const Samples& sm, std::vector<PlanePlan> plans, size_t C, size_t npix, bool deep = false,
                 bool ctx2 = false)
        : sm_(sm), plans_(std::move(plans)), C_(C), npix_(npix), deep_(deep), tabs_(C), table_of_(npix * C) {
        for (size_t p = 0; p < C; ++p) {
            tabs_[p].resize(plans_[p].tables.size());
            for (size_t t = 0; t < plans_[p].tables.size(); ++t) {
                const TableChoice& tc = plans_[p].tables[t];
                EncTable& et = tabs_[p][t];
                et.choice = &tc;
                et.code = HuffmanCode(tc.lengths);
                et.v = kV[tc.vi];
                et.nt = 2 * et.v + 1;
                et.r = tc.r;
            }
        }
        // each table's values in coding order (for the zero runs' look-ahead)
        for (size_t i = 0; i < npix; ++i) {
            for (size_t p = 0; p < C; ++p) {
                const int gc = cross_class(&sm.q[i * C], p, ctx2);
                const size_t j = i * C + p;
                const int t = plans_[p].map[size_t(plans_[p].cfg.ctx(sm.cls[j], gc))];
                table_of_[j] = uint8_t(t);
                const TableChoice& tc = plans_[p].tables[size_t(t)];
                if (tc.mode == 1) tabs_[p][size_t(t)].seq.push_back(sm.q[j] >> tc.r);
            }
        }
    }

    const std::vector<PlanePlan>& plans() const { return plans_; }
    uint64_t bits() const {  // the plane descriptions and all samples, exactly
        uint64_t b = 0;
        for (const PlanePlan& pl : plans_) b += pl.bits;
        return b;
    }

    void describe(BitWriter& bw) const {
        for (size_t p = 0; p < C_; ++p) {
            const PlanePlan& pl = plans_[p];
            bw.put(uint32_t(pl.cfg.shift), 2);
            if (p > 0) bw.put(uint32_t(pl.cfg.g), 1);
            bw.put_eg0(uint32_t(pl.ntables - 1));
            const int nctx = pl.cfg.nctx();
            if (pl.ntables < nctx) {
                int w = 0;
                while ((1 << w) < pl.ntables) ++w;
                for (int c = 0; c < nctx; ++c) bw.put(uint32_t(pl.map[size_t(c)]), w);
            }
            for (const TableChoice& tc : pl.tables) {
                bw.put(uint32_t(tc.mode), 1);
                bw.put(uint32_t(tc.vi), 4);
                if (tc.mode == 1) bw.put(uint32_t(tc.nruns - 1), 5);
                if (deep_) bw.put(uint32_t(tc.r), 4);
                write_lengths(bw, tc.lengths);
            }
        }
    }

    // The samples of pixel i; pixels must be written in order.
    void write_pixel(BitWriter& bw, size_t i) {
        for (size_t p = 0; p < C_; ++p) {
            const size_t j = i * C_ + p;
            EncTable& t = tabs_[p][table_of_[j]];
            const int q = sm_.q[j] >> t.r;
            if (t.choice->mode == 0) {
                if (q >= -t.v && q <= t.v) {
                    t.code.encode(bw, uint32_t(q + t.v));
                } else {
                    t.code.encode(bw, uint32_t(2 * t.v + 1));
                    write_escape(bw, q, t.v);
                }
            } else {
                if (t.remaining == 0) write_run_phrase(bw, t);
                --t.remaining;
                ++t.pos;
            }
            if (t.r) bw.put(uint32_t(sm_.q[j]) & ((1u << t.r) - 1), t.r);
        }
    }

    // What each pixel's samples cost, in bits (a zero-run phrase's bits spread over its samples).
    std::vector<float> pixel_costs() const {
        std::vector<float> cost(npix_, 0.f);
        std::vector<std::vector<std::vector<uint32_t>>> where(C_);  // run tables: their samples' pixels
        for (size_t p = 0; p < C_; ++p) where[p].resize(tabs_[p].size());
        for (size_t i = 0; i < npix_; ++i)
            for (size_t p = 0; p < C_; ++p) {
                const size_t j = i * C_ + p;
                const EncTable& t = tabs_[p][table_of_[j]];
                cost[i] += float(t.r);
                if (t.choice->mode == 1) {
                    where[p][table_of_[j]].push_back(uint32_t(i));
                    continue;
                }
                const int q = sm_.q[j] >> t.r;
                if (q >= -t.v && q <= t.v)
                    cost[i] += t.choice->lengths[size_t(q + t.v)];
                else
                    cost[i] += float(t.choice->lengths[size_t(2 * t.v + 1)] + escape_bits(q, t.v));
            }
        for (size_t p = 0; p < C_; ++p)
            for (size_t ti = 0; ti < tabs_[p].size(); ++ti) {
                const EncTable& t = tabs_[p][ti];
                if (t.choice->mode != 1) continue;
                const TableChoice& c = *t.choice;
                const int last = c.nruns - 1;
                size_t pos = 0;
                while (pos < t.seq.size()) {
                    size_t j = pos;
                    while (j < t.seq.size() && t.seq[j] == 0) ++j;
                    const uint32_t run = uint32_t(j - pos);
                    const bool trailing = j == t.seq.size();
                    const int k = std::min(SymbolCoder::run_class_of(run, kMaxRuns), last);
                    const int ti2 = trailing ? c.trail_t : terminal_index(t.seq[j], t.v);
                    double b = c.lengths[size_t(k * t.nt + ti2)];
                    b += k == last ? eg0_length(run - SymbolCoder::run_class_base(k))
                                   : SymbolCoder::run_class_extra_bits(k);
                    if (!trailing && ti2 == t.nt - 1) b += double(escape_bits(t.seq[j], t.v));
                    const size_t count = trailing ? run : size_t(run) + 1;
                    for (size_t m = pos; m < pos + count; ++m) cost[where[p][ti][m]] += float(b / double(count));
                    pos += count;
                }
            }
        return cost;
    }

private:
    const Samples& sm_;
    std::vector<PlanePlan> plans_;
    size_t C_, npix_;
    bool deep_;
    std::vector<std::vector<EncTable>> tabs_;
    std::vector<uint8_t> table_of_;
};

// ---- Matches: copies of earlier pixels of the stripe (flag bit 0 of a version-3 file) ----

constexpr int kTokenClasses = SymbolCoder::kMaxRunClasses;  // 48 classes at most per token table

// Class of value v in a token table of n classes (the last one open, with eg0), and the bits
// after its symbol.
inline int token_class(uint64_t v, int n) { return std::min(natural_run_class(v), n - 1); }
inline uint64_t token_extra_bits(uint64_t v, int k, int n) {
    if (k == n - 1) return uint64_t(eg0_length(uint32_t(v - run_class_base_unchecked(k))));
    return uint64_t(run_class_extra_bits_unchecked(k));
}

struct Token {
    uint32_t lit;   // literal pixels before the copy
    uint32_t len;   // pixels copied (0: none, the stripe ends after the literals)
    uint32_t dist;  // how far back, in pixels of the stripe in scan order
};

// The distances of the last 16 copies, most recent first (move to front; 1 at the start).
// Text repeats its glyphs row by row, each row of a glyph at the distance the row above used a
// few copies earlier: 60 % of a text page's copies reuse one of the last 16 distances.
constexpr int kReps = 16;
struct DistCache {
    uint32_t d[kReps];
    DistCache() {
        for (uint32_t& x : d) x = 1;
    }
    int find(uint32_t v) const {
        for (int i = 0; i < kReps; ++i)
            if (d[i] == v) return i;
        return -1;
    }
    void use(uint32_t v) {
        int i = find(v);
        if (i < 0) i = kReps - 1;
        for (; i > 0; --i) d[i] = d[i - 1];
        d[0] = v;
    }
};

// Distance symbol: i < 16 the cache's entry i, 16 one row up, 17 + k class k of dist - 1.
constexpr int kDistFirstClass = kReps + 1;
inline int dist_symbol(uint32_t d, const DistCache& cache, uint32_t width, int n) {
    const int i = cache.find(d);
    if (i >= 0) return i;
    if (d == width) return kReps;
    return kDistFirstClass + token_class(d - 1, n);
}

// Token tables: literal runs, copy lengths and distances.
struct TokenTables {
    int n[3] = {1, 1, 1};              // classes of each table
    std::vector<uint8_t> lengths[3];   // code lengths (distances: 17 + n[2] symbols)
    uint64_t bits = 0;                 // the stripe's mode bit, the description and the tokens
};

TokenTables token_tables(const std::vector<Token>& tokens, uint32_t width) {
    TokenTables tt;
    int top[3] = {0, 0, 0};
    DistCache cache;
    for (const Token& t : tokens) {
        top[0] = std::max(top[0], token_class(t.lit, kTokenClasses));
        if (!t.len) continue;
        top[1] = std::max(top[1], token_class(t.len - 1, kTokenClasses));
        if (cache.find(t.dist) < 0 && t.dist != width)
            top[2] = std::max(top[2], token_class(t.dist - 1, kTokenClasses));
        cache.use(t.dist);
    }
    std::vector<uint32_t> f[3];
    for (int a = 0; a < 3; ++a) {
        tt.n[a] = top[a] + 1;
        f[a].assign(size_t(a == 2 ? kDistFirstClass + tt.n[a] : tt.n[a]), 0);
    }
    uint64_t extra = 0;
    cache = DistCache();
    for (const Token& t : tokens) {
        int k = token_class(t.lit, tt.n[0]);
        ++f[0][size_t(k)];
        extra += token_extra_bits(t.lit, k, tt.n[0]);
        if (!t.len) continue;
        k = token_class(t.len - 1, tt.n[1]);
        ++f[1][size_t(k)];
        extra += token_extra_bits(t.len - 1, k, tt.n[1]);
        const int s = dist_symbol(t.dist, cache, width, tt.n[2]);
        ++f[2][size_t(s)];
        if (s >= kDistFirstClass) extra += token_extra_bits(t.dist - 1, s - kDistFirstClass, tt.n[2]);
        cache.use(t.dist);
    }
    tt.bits = 1 + extra;
    for (int a = 0; a < 3; ++a) {
        bool any = false;
        for (uint32_t c : f[a]) any |= c != 0;
        tt.lengths[a] = any ? huffman_code_lengths(f[a], kPixelMaxCodeLength) : std::vector<uint8_t>(f[a].size(), 0);
        tt.bits += 6 + lengths_bits(tt.lengths[a]);
        for (size_t s = 0; s < f[a].size(); ++s) tt.bits += uint64_t(f[a][s]) * tt.lengths[a][s];
    }
    return tt;
}

void put_token_value(BitWriter& bw, const HuffmanCode& code, uint64_t v, int n, uint32_t first_symbol) {
    const int k = token_class(v, n);
    code.encode(bw, uint32_t(k) + first_symbol);
    const uint64_t r = v - SymbolCoder::run_class_base(k);
    if (k == n - 1)
        bw.put_eg0(uint32_t(r));
    else
        bw.put(r, SymbolCoder::run_class_extra_bits(k));
}

class TokenWriter {
public:
    TokenWriter(const TokenTables& tt, uint32_t width) : tt_(tt), width_(width) {
        for (int a = 0; a < 3; ++a) code_[a] = HuffmanCode(tt.lengths[a]);
    }
    void describe(BitWriter& bw) const {
        bw.put(1, 1);  // the stripe's mode bit: it has copies
        for (int a = 0; a < 3; ++a) {
            bw.put(uint32_t(tt_.n[a] - 1), 6);
            write_lengths(bw, tt_.lengths[a]);
        }
    }
    void write(BitWriter& bw, const Token& t) {
        put_token_value(bw, code_[0], t.lit, tt_.n[0], 0);
        if (!t.len) return;
        put_token_value(bw, code_[1], t.len - 1, tt_.n[1], 0);
        const int s = dist_symbol(t.dist, cache_, width_, tt_.n[2]);
        if (s < kDistFirstClass)
            code_[2].encode(bw, uint32_t(s));
        else
            put_token_value(bw, code_[2], t.dist - 1, tt_.n[2], kDistFirstClass);
        cache_.use(t.dist);
    }

private:
    const TokenTables& tt_;
    uint32_t width_;
    DistCache cache_;
    HuffmanCode code_[3];
};

// What the parser assumes a token costs (bits).
struct TokenCosts {
    // (settings measured on photographs and synthetic images; within 0.1 % of each other)
    double lit = 3;  // a literal run's symbol and extra bits, on average
    int n[3] = {kTokenClasses, kTokenClasses, kTokenClasses};
    double len_sym[kTokenClasses], dist_sym[kDistFirstClass + kTokenClasses];
    TokenCosts() {
        for (double& c : len_sym) c = 3;
        for (double& c : dist_sym) c = 5;
        for (int i = 0; i < kReps; ++i) dist_sym[i] = 2 + i / 4;  // recent distances are cheap
        dist_sym[kReps] = 4;
    }
    double len(uint64_t L) const {
        const int k = token_class(L - 1, n[1]);
        return len_sym[k] + double(token_extra_bits(L - 1, k, n[1]));
    }
    double dist(uint32_t d, const DistCache& cache, uint32_t width) const {
        const int s = dist_symbol(d, cache, width, n[2]);
        return dist_sym[s] + (s >= kDistFirstClass ? double(token_extra_bits(d - 1, s - kDistFirstClass, n[2])) : 0.0);
    }
};

// Greedy parse with one step of lazy matching: at each pixel the copy (from the last four
// distances, one row up, one pixel left, or positions found by a hash of the next three pixels)
// that saves the most bits over coding its pixels (pre: prefix sums of the pixels' costs).
std::vector<Token> parse_matches(const std::vector<uint32_t>& key, uint32_t width, const std::vector<double>& pre,
                                 const TokenCosts& tc) {
    const size_t n = key.size();
    constexpr int kHashBits = 16;
    // hash chain: 32 candidates where copies pay (synthetic images), 4 where they save little
    // (photographs: -2.45 % instead of -2.48 % of Kodak's bits, and half the time on large ones)
    constexpr int kDeep = 32, kShallow = 4;
    int depth_limit = kDeep;
    constexpr size_t kMaxCompare = size_t(1) << 14;
    std::vector<int32_t> head(size_t(1) << kHashBits, -1), prev(n, -1);
    auto hash = [&](size_t i) {
        const uint64_t h = uint64_t(key[i]) * 0x9E3779B97F4A7C15ull ^ uint64_t(key[i + 1]) * 0xC2B2AE3D27D4EB4Full ^
                           uint64_t(key[i + 2]) * 0x165667B19E3779F9ull;
        return size_t((h ^ (h >> 29)) * 0x9E3779B97F4A7C15ull >> (64 - kHashBits));
    };
    size_t inserted = 0;
    auto insert_to = [&](size_t end) {
        for (; inserted < end; ++inserted) {
            if (inserted + 2 >= n) continue;
            const size_t h = hash(inserted);
            prev[inserted] = head[h];
            head[h] = int32_t(inserted);
        }
    };
    struct Cand {
        uint32_t len = 0, dist = 0, longest = 0;
        double saving = 0;
    };
    auto search = [&](size_t i, const DistCache& cache) {
        Cand best;
        auto consider = [&](size_t d) {
            if (d == 0 || d > i) return;
            const size_t m = std::min(n - i, kMaxCompare);
            size_t L = 0;
            while (L < m && key[i + L] == key[i + L - d]) ++L;
            if (!L) return;
            best.longest = std::max(best.longest, uint32_t(L));
            const double gain = pre[i + L] - pre[i] - tc.lit;
            if (gain <= best.saving) return;  // no copy is free
            const double s = gain - tc.len(L) - tc.dist(uint32_t(d), cache, width);
            if (s > best.saving) best.len = uint32_t(L), best.dist = uint32_t(d), best.saving = s;
        };
        uint32_t tried[6] = {cache.d[0], cache.d[1], cache.d[2], cache.d[3], width, 1};
        auto seen = [&](size_t d, int upto) {
            for (int k = 0; k < upto; ++k)
                if (tried[k] == d) return true;
            return false;
        };
        for (int k = 0; k < 6; ++k)
            if (!seen(tried[k], k)) consider(tried[k]);
        if (i + 2 < n) {
            int32_t j = head[hash(i)];
            for (int depth = 0; j >= 0 && depth < depth_limit; ++depth, j = prev[size_t(j)]) {
                const size_t d = i - size_t(j);
                // (as zlib) only a candidate that matches one pixel past the best can beat it
                if (best.len && (i + best.len >= n || key[i + best.len] != key[i + best.len - d])) continue;
                if (!seen(d, 6)) consider(d);
            }
        }
        return best;
    };
    std::vector<Token> tokens;
    size_t i = 0, lit_start = 0, next_check = 1 << 14;
    double saved = 0;
    DistCache cache;
    while (i < n) {
        if (i >= next_check) {  // every 16384 pixels: copies saved a tenth of the bits so far?
            depth_limit = saved >= 0.1 * pre[i] ? kDeep : kShallow;
            next_check = i + (1 << 14);
        }
        insert_to(i);
        const Cand c = search(i, cache);
        if (c.saving > 0) {
            if (i + 1 < n) {
                insert_to(i + 1);
                if (search(i + 1, cache).saving > c.saving) {  // better one pixel on: code this one
                    ++i;
                    continue;
                }
            }
            tokens.push_back({uint32_t(i - lit_start), c.len, c.dist});
            cache.use(c.dist);
            saved += c.saving;
            i += c.len;
            lit_start = i;
        } else {
            // a long copy that does not pay: its pixels cost next to nothing already (a flat
            // area); skip half of it rather than search at each of its pixels
            i += c.longest >= 64 ? c.longest / 2 : 1;
        }
    }
    if (lit_start < n) tokens.push_back({uint32_t(n - lit_start), 0, 0});
    return tokens;
}

// The samples of the pixels no token copies, in order.
Samples literal_samples(const Samples& sm, const std::vector<Token>& tokens, size_t C) {
    Samples out;
    size_t pos = 0;
    for (const Token& t : tokens) {
        out.q.insert(out.q.end(), sm.q.begin() + ptrdiff_t(pos * C), sm.q.begin() + ptrdiff_t((pos + t.lit) * C));
        out.cls.insert(out.cls.end(), sm.cls.begin() + ptrdiff_t(pos * C),
                       sm.cls.begin() + ptrdiff_t((pos + t.lit) * C));
        pos += size_t(t.lit) + t.len;
    }
    return out;
}

std::vector<PlanePlan> plan_planes(const Samples& sm, int channels, size_t npix,
                                   const std::vector<PlanePlan>* configs = nullptr, bool deep = false,
                                   bool ctx2 = false) {
    std::vector<PlanePlan> plans;
    for (int p = 0; p < channels; ++p)
        plans.push_back(
            plan_plane(sm, p, channels, npix, configs ? &(*configs)[size_t(p)].cfg : nullptr, deep, ctx2));
    return plans;
}

// The sample scale of a 16-bit stripe: how many bits its largest value has beyond 8 (0..8).
template <typename T>
int sample_scale(const T* px, ptrdiff_t row_stride, ptrdiff_t col_stride, ptrdiff_t ch_stride, int width,
                 int rows, int channels) {
    unsigned top = 0;
    for (int y = 0; y < rows; ++y)
        for (int x = 0; x < width; ++x)
            for (int c = 0; c < channels; ++c)
                top |= px[ptrdiff_t(y) * row_stride + ptrdiff_t(x) * col_stride + ptrdiff_t(c) * ch_stride];
    int bits = 0;
    while (top >> bits) ++bits;
    return std::max(0, bits - 8);
}

template <typename T>
std::vector<uint8_t> encode_stripe(const T* px, ptrdiff_t row_stride, ptrdiff_t col_stride, ptrdiff_t ch_stride,
                                   int width, int rows, int channels, int max_error, T* recon,
                                   PixelStripeStats* stats, bool allow_matches, bool* used_matches, bool ctx2) {
    constexpr bool deep = sizeof(T) == 2;
    constexpr int maxval = deep ? 65535 : 255;
    check_dims(width, rows, channels, max_error);
    if (used_matches) *used_matches = false;
    const int near = max_error, step = 2 * near + 1;
    const int ws = deep ? sample_scale(px, row_stride, col_stride, ch_stride, width, rows, channels) : 0;
    const size_t W = size_t(width), npix = W * size_t(rows), C = size_t(channels);
    Samples sm;
    sm.q.resize(npix * C);
    sm.cls.resize(npix * C);
    std::vector<PlaneModel> model;
    for (size_t p = 0; p < C; ++p) model.emplace_back(width, near, p == 0 ? 0 : -maxval, maxval, ws, ctx2);
    for (int y = 0; y < rows; ++y) {
        const T* src = px + ptrdiff_t(y) * row_stride;
        for (int x = 0; x < width; ++x) {
            const T* pix = src + ptrdiff_t(x) * col_stride;
            const size_t i = (size_t(y) * W + size_t(x)) * C;
            int rec[3] = {0, 0, 0};
            for (size_t p = 0; p < C; ++p) {
                const Predictor pr = model[p].predict(y, x);
                const int ch = C == 3 ? kPlaneChannel[p] : 0;
                const int orig = pix[ptrdiff_t(ch) * ch_stride];
                const int target = orig - plane_reference(p, rec, ctx2);
                const int q = quantise(pr.sign * (target - pr.pred), near, step);
                sm.q[i + p] = q;
                sm.cls[i + p] = uint8_t(pr.cls);
                const int value = reconstruct(model[p], p, y, x, pr, q, step, rec, maxval, ctx2);
                if (recon) recon[i + size_t(ch)] = T(value);
            }
        }
    }
    SampleWriter plain(sm, plan_planes(sm, channels, npix, nullptr, deep, ctx2), C, npix, deep, ctx2);
    if (stats) stats->plain_bits = plain.bits();
    // Copies of earlier pixels (lossless only, where the decoded pixels are the original ones, so
    // that the literal pixels' samples stay as computed above), parsed with the plain stripe's
    // costs of each pixel; used if they make the stripe smaller. (A second parse with the first
    // one's token costs saves 0.3 % more on photographs and under 1 % on synthetic images, for a
    // fifth more time: not done.)
    if (!deep && allow_matches && near == 0 && npix >= 2 && npix < kMaxEg0Value) {
        std::vector<uint32_t> key(npix);
        for (int y = 0; y < rows; ++y)
            for (int x = 0; x < width; ++x) {
                const T* pix = px + ptrdiff_t(y) * row_stride + ptrdiff_t(x) * col_stride;
                uint32_t k = 0;
                for (size_t c = 0; c < C; ++c) k |= uint32_t(pix[ptrdiff_t(c) * ch_stride]) << (8 * c);
                key[size_t(y) * W + size_t(x)] = k;
            }
        std::vector<double> pre(npix + 1, 0.0);
        {
            const std::vector<float> cost = plain.pixel_costs();
            for (size_t i = 0; i < npix; ++i) pre[i + 1] = pre[i] + double(cost[i]);
        }
        uint64_t best_bits = plain.bits();
        std::vector<Token> best_tokens = parse_matches(key, uint32_t(width), pre, TokenCosts());
        Samples best_lit;
        std::vector<PlanePlan> best_plans;
        TokenTables tt;
        if (best_tokens.size() > 1 || best_tokens[0].len) {
            tt = token_tables(best_tokens, uint32_t(width));
            best_lit = literal_samples(sm, best_tokens, C);
            // the plain stripe's configurations, tables made anew (searching them all again
            // saves 0.01 % on photographs, nothing on synthetic images, for 15 % more time)
            best_plans = plan_planes(best_lit, channels, best_lit.q.size() / C, &plain.plans(), false, ctx2);
            uint64_t bits = tt.bits;
            for (const PlanePlan& pl : best_plans) bits += pl.bits;
            if (bits < best_bits)
                best_bits = bits;
            else
                best_tokens.clear();
        } else {
            best_tokens.clear();
        }
        if (!best_tokens.empty()) {
            const size_t nlit = best_lit.q.size() / C;
            SampleWriter sw(best_lit, std::move(best_plans), C, nlit, false, ctx2);
            TokenWriter tw(tt, uint32_t(width));
            BitWriter bw(best_bits / 8 + 64);
            tw.describe(bw);
            sw.describe(bw);
            const uint64_t header_bits = bw.bits_written();
            size_t li = 0;
            for (const Token& t : best_tokens) {
                tw.write(bw, t);
                for (uint32_t k = 0; k < t.lit; ++k) sw.write_pixel(bw, li++);
            }
            if (stats) {
                stats->header_bits = header_bits;
                stats->data_bits = bw.bits_written() - header_bits;
            }
            if (used_matches) *used_matches = true;
            return bw.finish();
        }
    }
    BitWriter bw(npix * C * sizeof(T) / 2 + 64);
    if (deep) bw.put(uint32_t(ws), 4);
    plain.describe(bw);
    const uint64_t header_bits = bw.bits_written();
    for (size_t i = 0; i < npix; ++i) plain.write_pixel(bw, i);
    if (stats) {
        stats->header_bits = header_bits;
        stats->data_bits = bw.bits_written() - header_bits;
        if (deep) stats->plain_bits = bw.bits_written();
    }
    return bw.finish();
}

}  // namespace

std::vector<uint8_t> pixel_encode_stripe(const uint8_t* px, ptrdiff_t row_stride, ptrdiff_t col_stride,
                                         ptrdiff_t ch_stride, int width, int rows, int channels,
                                         int max_error, uint8_t* recon, PixelStripeStats* stats,
                                         bool allow_matches, bool* used_matches, bool contexts2) {
    return encode_stripe(px, row_stride, col_stride, ch_stride, width, rows, channels, max_error, recon, stats,
                         allow_matches, used_matches, contexts2);
}

std::vector<uint8_t> pixel_encode_stripe16(const uint16_t* px, ptrdiff_t row_stride, ptrdiff_t col_stride,
                                           ptrdiff_t ch_stride, int width, int rows, int channels, int max_error,
                                           uint16_t* recon, PixelStripeStats* stats, bool contexts2) {
    return encode_stripe(px, row_stride, col_stride, ch_stride, width, rows, channels, max_error, recon, stats,
                         false, nullptr, contexts2);
}

namespace {

// Decoder-side token tables and the distance cache.
class TokenReader {
public:
    void describe(BitReader& br) {
        for (int a = 0; a < 3; ++a) {
            n_[a] = int(br.get(6)) + 1;
            if (n_[a] > kTokenClasses)
                throw FormatError("pixel stream: a token table of " + std::to_string(n_[a]) + " classes (at most " +
                                  std::to_string(kTokenClasses) + ")");
            code_[a] = HuffmanCode(read_lengths(br, size_t(a == 2 ? kDistFirstClass + n_[a] : n_[a])));
        }
        if (br.overrun()) throw FormatError("pixel stream: truncated in its tables");
    }
    // The token at pixel pos of npix: literal pixels, then the copy's length (0: none) and distance.
    void read(BitReader& br, uint64_t pos, uint64_t npix, uint32_t width, uint64_t& lit, uint64_t& len,
              uint64_t& dist) {
        lit = value(br, 0, code_[0].decode(br));
        if (lit > npix - pos)
            throw FormatError("pixel stream: a run of literal pixels goes past the end of the stripe");
        len = 0;
        if (lit == npix - pos) return;
        len = value(br, 1, code_[1].decode(br)) + 1;
        const uint32_t s = code_[2].decode(br);
        dist = s < uint32_t(kReps) ? cache_.d[s] : s == uint32_t(kReps) ? width : value(br, 2, s - kDistFirstClass) + 1;
        if (len > npix - pos - lit) throw FormatError("pixel stream: a copy goes past the end of the stripe");
        if (dist > pos + lit) throw FormatError("pixel stream: a copy from before the start of the stripe");
        cache_.use(uint32_t(dist));
    }

private:
    uint64_t value(BitReader& br, int a, uint32_t k) {
        const uint64_t base = SymbolCoder::run_class_base(int(k));
        return base + (int(k) == n_[a] - 1 ? uint64_t(br.get_eg0())
                                           : uint64_t(br.get(SymbolCoder::run_class_extra_bits(int(k)))));
    }
    int n_[3] = {1, 1, 1};
    HuffmanCode code_[3];
    DistCache cache_;
};

// Decodes the stripe; false if a zero run is left unfinished (its zeros go past the stripe).
// T: uint8_t, or uint16_t for a 16-bit stripe (never with copies).
template <typename T>
bool decode_stripe(BitReader& br, int width, int rows, int channels, int max_error, bool mode_bit, T* out,
                   ptrdiff_t out_row_stride, bool ctx2) {
    constexpr bool deep = sizeof(T) == 2;
    constexpr int maxval = deep ? 65535 : 255;
    constexpr int maxq = deep ? kPixelMaxQuantised16 : kPixelMaxQuantised;
    const int near = max_error, step = 2 * near + 1;
    const size_t C = size_t(channels);
    const bool copies = !deep && mode_bit && br.get(1);
    int ws = 0;
    if (deep) {
        ws = int(br.get(4));
        if (ws > 8) throw FormatError("pixel stream: sample scale " + std::to_string(ws) + " (0..8 allowed)");
    }
    TokenReader tokens;
    if (copies) tokens.describe(br);
    PlaneConfig cfg[3];
    std::vector<int> map[3];
    std::vector<DecTable> tabs[3];
    for (size_t p = 0; p < C; ++p) {
        cfg[p].classes = ctx2 ? kMaxActivityClasses : kPixelActivityClasses;
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
            t.r = deep ? int(br.get(4)) : 0;
            t.esc_max = (maxq + (1 << t.r) - 1) >> t.r;  // |q >> r| <= ceil(maxq / 2^r)
            t.nt = 2 * t.v + 1;
            const int asz = alphabet_size(t.mode, t.v, t.nruns);
            if (asz > kMaxAlphabet)
                throw FormatError("pixel stream: a zero-run table's alphabet of " + std::to_string(asz) +
                                  " symbols exceeds " + std::to_string(kMaxAlphabet));
            t.code = HuffmanCode(read_lengths(br, size_t(asz)));  // FormatError if no prefix code
            if (br.overrun()) throw FormatError("pixel stream: truncated in its tables");
        }
    }
    std::vector<PlaneModel> model;
    for (size_t p = 0; p < C; ++p) model.emplace_back(width, near, p == 0 ? 0 : -maxval, maxval, ws, ctx2);
    const uint64_t npix = uint64_t(width) * uint64_t(rows);
    uint64_t lit_left = 0, copy_left = 0, pend_len = 0, pend_dist = 0, dist = 0;
    for (int y = 0; y < rows; ++y) {
        T* dst = out + ptrdiff_t(y) * out_row_stride;
        for (int x = 0; x < width; ++x) {
            if (copies) {
                bool copy = false;
                for (;;) {  // each token covers at least one pixel, so this ends
                    if (copy_left) {
                        --copy_left;
                        copy = true;
                        break;
                    }
                    if (lit_left) {
                        --lit_left;
                        break;
                    }
                    if (pend_len) {
                        copy_left = pend_len, dist = pend_dist, pend_len = 0;
                        continue;
                    }
                    tokens.read(br, uint64_t(y) * uint64_t(width) + uint64_t(x), npix, uint32_t(width), lit_left,
                                pend_len, pend_dist);
                }
                if (copy) {
                    // the pixel dist back in scan order, already decoded; the planes' models
                    // record its values and their sub-predictors' errors
                    const uint64_t src = uint64_t(y) * uint64_t(width) + uint64_t(x) - dist;
                    const T* sp = out + ptrdiff_t(src / uint64_t(width)) * out_row_stride +
                                  ptrdiff_t(src % uint64_t(width)) * ptrdiff_t(C);
                    T* dp = dst + size_t(x) * C;
                    for (size_t c = 0; c < C; ++c) dp[c] = sp[c];
                    const int rec[3] = {C == 3 ? dp[1] : dp[0], C == 3 ? dp[0] : 0, 0};  // green (or gray), red
                    for (size_t p = 0; p < C; ++p)
                        model[p].copied(y, x, dp[C == 3 ? kPlaneChannel[p] : 0] - plane_reference(p, rec, ctx2));
                    continue;
                }
            }
            int rec[3] = {0, 0, 0};
            int32_t qs[3] = {0, 0, 0};
            for (size_t p = 0; p < C; ++p) {
                const Predictor pr = model[p].predict(y, x);
                const int gc = cross_class(qs, p, ctx2);
                DecTable& t = tabs[p][size_t(map[p][size_t(cfg[p].ctx(pr.cls, gc))])];
                int32_t q = next_value(t, br);
                if (t.r) q = int32_t(uint32_t(q) << t.r) | int32_t(br.get(t.r));  // q * 2^r + the low bits
                if (q > maxq || q < -maxq)
                    throw FormatError("pixel stream: value " + std::to_string(q) + " outside -" + std::to_string(maxq) +
                                      ".." + std::to_string(maxq));
                qs[p] = q;
                const int value = reconstruct(model[p], p, y, x, pr, q, step, rec, maxval, ctx2);
                const int ch = C == 3 ? kPlaneChannel[p] : 0;
                dst[size_t(x) * C + size_t(ch)] = T(value);
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

namespace {

template <typename T>
void decode_whole(const uint8_t* data, size_t size, int width, int rows, int channels, int max_error, T* out,
                  ptrdiff_t out_row_stride, bool mode_bit, bool ctx2) {
    check_dims(width, rows, channels, max_error);
    BitReader br(data, size);
    bool runs_done;
    try {
        runs_done = decode_stripe(br, width, rows, channels, max_error, mode_bit, out, out_row_stride, ctx2);
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

}  // namespace

void pixel_decode_stripe(const uint8_t* data, size_t size, int width, int rows, int channels,
                         int max_error, uint8_t* out, ptrdiff_t out_row_stride, bool mode_bit, bool contexts2) {
    decode_whole(data, size, width, rows, channels, max_error, out, out_row_stride, mode_bit, contexts2);
}

void pixel_decode_stripe16(const uint8_t* data, size_t size, int width, int rows, int channels, int max_error,
                           uint16_t* out, ptrdiff_t out_row_stride, bool contexts2) {
    decode_whole(data, size, width, rows, channels, max_error, out, out_row_stride, false, contexts2);
}

}  // namespace fastcodec
