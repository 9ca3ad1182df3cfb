#include "qnet.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "errors.hpp"

namespace fastcodec {

namespace {

// v / scale rounded to nearest even, plus zp, clamped to 0..255 (the rounding mode is set by the
// caller's FlushDenormals).
inline uint8_t quantize(float v, float scale, int zp) {
    float t = v / scale;
    const float lo = float(-zp - 1), hi = float(256 - zp);
    t = t < lo ? lo : (t > hi ? hi : t);
    if (t != t) t = 0.f;  // NaN (not reachable with finite weights and inputs)
    const int q = int(std::nearbyint(t)) + zp;
    return uint8_t(q < 0 ? 0 : (q > 255 ? 255 : q));
}

// A buffer from the pool, returned to it when it goes out of scope.
struct Held {
    BufferPool* pool;
    BufferPool::Buffer buf;
    Held(BufferPool& p, size_t floats) : pool(&p), buf(p.acquire(floats)) {}
    Held(Held&& o) noexcept : pool(o.pool), buf(std::move(o.buf)) {}
    Held& operator=(Held&& o) noexcept {
        if (this != &o) {
            pool->give_back(std::move(buf));
            pool = o.pool;
            buf = std::move(o.buf);
        }
        return *this;
    }
    ~Held() { pool->give_back(std::move(buf)); }
    float* f() { return buf.data.get(); }
    uint8_t* u8() { return reinterpret_cast<uint8_t*>(buf.data.get()); }
};

// A uint8 NHWC tensor with a one-pixel border (qconv.hpp), in a pool buffer.
struct QTensor {
    Held mem;
    int c, h, w;
    QTensor(BufferPool& p, int c_, int h_, int w_)
        : mem(p, ((size_t(h_) + 2) * (size_t(w_) + 2) * size_t(c_) + qconv_slack(c_) + 3) / 4), c(c_), h(h_), w(w_) {}
    uint8_t* data() { return mem.u8(); }
    size_t ws() const { return size_t(w) + 2; }
    uint8_t* row(int y) { return data() + ((size_t(y) + 1) * ws() + 1) * size_t(c); }  // interior pixel (y, 0)
    void fill_border(uint8_t v) {
        const size_t rowb = ws() * size_t(c);
        std::memset(data(), v, rowb);
        std::memset(data() + (size_t(h) + 1) * rowb, v, rowb);
        for (int y = 1; y <= h; ++y) {
            std::memset(data() + size_t(y) * rowb, v, size_t(c));
            std::memset(data() + size_t(y) * rowb + rowb - size_t(c), v, size_t(c));
        }
        std::memset(data() + (size_t(h) + 2) * rowb, 0, qconv_slack(c));
    }
};

// The igdn's element-wise steps as arithmetic (vectorised by the compiler) where they equal the
// tables: the same float32 operations as the tables' construction, and round-half-even by adding
// and subtracting 1.5 * 2^23 (exact for |t| <= 2^22 in round-to-nearest-even mode, which the
// callers set; t is clamped to [-256, 256] first).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FASTCODEC_QCLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTCODEC_QCLONES
#endif

FASTCODEC_QCLONES void abs_rows(const uint8_t* s, uint8_t* d, size_t n, int zp) {
    const uint8_t z = uint8_t(zp);
    for (size_t i = 0; i < n; ++i) d[i] = s[i] > z ? uint8_t(s[i] - z) : uint8_t(z - s[i]);
}

FASTCODEC_QCLONES void mul_rows(uint8_t* x, const uint8_t* n, size_t len, int za, float sa, int zb, float sb,
                                float sc, int zc) {
    const float lo = float(-zc - 1), hi = float(256 - zc), magic = 12582912.f;
    for (size_t i = 0; i < len; ++i) {
        const float va = float(int(x[i]) - za) * sa;
        const float vb = float(int(n[i]) - zb) * sb;
        float t = (va * vb) / sc;
        t = t < lo ? lo : (t > hi ? hi : t);
        const int q = int((t + magic) - magic) + zc;
        x[i] = uint8_t(q < 0 ? 0 : (q > 255 ? 255 : q));
    }
}

void check_float_layer(const ConvLayer& L, const char* what) {
    if (L.k != 3 || L.cin <= 0 || L.cout <= 0 || L.cout % 4 || L.shuffle != 2 || L.relu)
        throw ArgumentError(std::string("QSynthesis ") + what + ": needs a 3x3 convolution followed by a 2x shuffle");
    if (L.weight.size() != size_t(L.cout) * L.cin * 9 || L.bias.size() != size_t(L.cout))
        throw ArgumentError(std::string("QSynthesis ") + what + ": weight/bias sizes do not match the layer shape");
    for (float v : L.weight)
        if (!std::isfinite(v)) throw ArgumentError(std::string("QSynthesis ") + what + ": weights must be finite");
    for (float v : L.bias)
        if (!std::isfinite(v)) throw ArgumentError(std::string("QSynthesis ") + what + ": biases must be finite");
}

void check_scale(float s, int zp, const char* what) {
    if (!(s > 0.f) || !std::isfinite(s) || zp < 0 || zp > 255)
        throw ArgumentError(std::string("QSynthesis ") + what + ": the scale must be finite and > 0, the zero point 0..255");
}

}  // namespace

QSynthesis::QSynthesis(QHead head, std::vector<QOp> ops, QTail tail, std::vector<QWide> wide)
    : head_(std::move(head)), wide_(std::move(wide)), ops_(std::move(ops)), tail_(std::move(tail)) {
    check_float_layer(head_.conv, "head");
    if (wide_.empty()) check_scale(head_.scale, head_.zp, "head");
    if (head_.conv.cout % 64) throw ArgumentError("QSynthesis head: needs a multiple of 64 output channels");
    int c = head_.conv.cout / 4;
    for (size_t i = 0; i < wide_.size(); ++i) {
        QWide& st = wide_[i];
        ConvLayer& G = st.gdn;
        if (G.k != 1 || G.cin != c || G.cout != c || G.shuffle != 1 || G.relu ||
            G.weight.size() != size_t(c) * size_t(c) || G.bias.size() != size_t(c))
            throw ArgumentError("QSynthesis wide stage: gdn must be a 1x1 C -> C convolution");
        for (float v : G.weight)
            if (!std::isfinite(v)) throw ArgumentError("QSynthesis wide stage: gdn weights must be finite");
        for (float v : G.bias)
            if (!std::isfinite(v)) throw ArgumentError("QSynthesis wide stage: gdn biases must be finite");
        G.fused = true;
        if (!(st.scale > 0.f) || !std::isfinite(st.scale) || st.zp < 0 || st.zp > 4095)
            throw ArgumentError("QSynthesis wide stage: the scale must be finite and > 0, the zero point 0..4095");
        check_qconv(st.conv);
        if (st.conv.cin != c || st.conv.k != 3 || st.conv.shuffle != 2 || st.conv.raw)
            throw ArgumentError("QSynthesis wide stage: needs a 3x3 convolution of its C channels followed by a 2x shuffle");
        if (st.float_out != (i + 1 < wide_.size()))
            throw ArgumentError("QSynthesis wide stage: every stage but the last has a float output");
        // the layer the run uses: the 12-bit zero point folded into the bias, the input zero point
        // 0 (qconv_nhwc's wide form); raw int32 sums where a float output follows
        QConvLayer R = st.conv;
        const size_t per = size_t(R.cin) * 9;
        for (int oc = 0; oc < R.cout; ++oc) {
            int64_t sum = 0;
            for (size_t k = 0; k < per; ++k) sum += R.weight[size_t(oc) * per + k];
            const int64_t b = int64_t(st.conv.bias[size_t(oc)]) - int64_t(st.zp) * sum;
            if (b < -(int64_t(1) << 30) || b > (int64_t(1) << 30))
                throw ArgumentError("QSynthesis wide stage: the bias with the zero point folded in must lie in [-2^30, 2^30]");
            R.bias[size_t(oc)] = int32_t(b);
        }
        R.in_zp = 0;
        if (st.float_out) {
            R.raw = true;
            R.shuffle = 1;
        }
        check_qconv_wide(R);
        wide_gdn_packed_.push_back(pack_conv_weights(G));
        wide_packed_.push_back(pack_qconv(R));
        wide_layers_.push_back(std::move(R));
        c = st.conv.cout / 4;
    }
    for (QOp& op : ops_) {
        const QConvLayer& L = op.layer;
        check_qconv(L);
        if (L.cin != c) throw ArgumentError("QSynthesis: an operation's input channels do not match");
        if (op.kind == QOp::igdn) {
            if (L.k != 1 || L.cout != c || L.shuffle != 1 || L.in_zp != 0)
                throw ArgumentError("QSynthesis igdn: gamma must be a 1x1 C -> C convolution of |x| (zero point 0)");
            if (op.abs_table.size() != 256 || op.mul_table.size() != 65536)
                throw ArgumentError("QSynthesis igdn: tables of 256 and 65536 entries needed");
            const int z = int(std::min_element(op.abs_table.begin(), op.abs_table.end()) - op.abs_table.begin());
            op.abs_arith = true;
            for (int v = 0; v < 256; ++v) op.abs_arith = op.abs_arith && op.abs_table[v] == std::abs(v - z);
            op.abs_zp = z;
            if (op.has_mul_params) {
                const bool finite = std::isfinite(op.sa) && std::isfinite(op.sb) && std::isfinite(op.sc) && op.sc != 0.f;
                const bool zps = op.za >= 0 && op.za <= 255 && op.zb >= 0 && op.zb <= 255 && op.zc >= 0 && op.zc <= 255;
                op.mul_arith = finite && zps;
                if (op.mul_arith) {
                    // every pair through the very function the runs call, in their rounding mode
                    std::vector<uint8_t> x(65536), n(65536);
                    for (size_t i = 0; i < 65536; ++i) x[i] = uint8_t(i >> 8), n[i] = uint8_t(i & 255);
                    FlushDenormals fd;
                    mul_rows(x.data(), n.data(), x.size(), op.za, op.sa, op.zb, op.sb, op.sc, op.zc);
                    op.mul_arith = x == op.mul_table;
                }
            }
        } else if (op.kind == QOp::qconv) {
            c = L.cout / (L.shuffle * L.shuffle);
        } else {
            throw ArgumentError("QSynthesis: unknown operation");
        }
        packed_.push_back(pack_qconv(L));
    }
    if (tail_.cin != c || tail_.cout <= 0 || tail_.cout % 4)
        throw ArgumentError("QSynthesis tail: input channels do not match, or output channels not a multiple of 4");
    if (tail_.weight.size() != size_t(tail_.cout) * tail_.cin * 9 || tail_.mult.size() != size_t(tail_.cout) ||
        tail_.add.size() != size_t(tail_.cout) || tail_.out_dequant.size() != 256)
        throw ArgumentError("QSynthesis tail: weight/mult/add sizes do not match the layer, or out_dequant is not 256 long");
    for (int16_t v : tail_.weight)
        if (v < -8191 || v > 8191) throw ArgumentError("QSynthesis tail: weights must lie in [-8191, 8191]");
    for (size_t i = 0; i < tail_.mult.size(); ++i)
        if (!std::isfinite(tail_.mult[i]) || !std::isfinite(tail_.add[i]))
            throw ArgumentError("QSynthesis tail: mult and add must be finite");
    if (tail_.out_zp < 0 || tail_.out_zp > 255) throw ArgumentError("QSynthesis tail: zero points must lie in 0..255");
    // w = 128 * hi + lo, lo in [-64, 63], hi in [-64, 64]: two int8 convolutions in one
    QConvLayer& T = tail_layer_;
    T.cin = tail_.cin;
    T.cout = (2 * tail_.cout + 15) / 16 * 16;
    T.k = 3;
    T.raw = true;
    T.in_zp = tail_.in_zp;
    T.weight.assign(size_t(T.cout) * T.cin * 9, 0);
    T.bias.assign(size_t(T.cout), 0);
    const size_t per = size_t(T.cin) * 9;
    for (int oc = 0; oc < tail_.cout; ++oc)
        for (size_t i = 0; i < per; ++i) {
            const int v = tail_.weight[size_t(oc) * per + i];
            const int lo = ((v + 64) & 127) - 64;
            T.weight[size_t(oc) * per + i] = int8_t((v - lo) / 128);
            T.weight[size_t(tail_.cout + oc) * per + i] = int8_t(lo);
        }
    tail_packed_ = pack_qconv(T);
    head_.conv.fused = true;
    head_packed_ = pack_conv_weights(head_.conv);
}

void QSynthesis::out_shape(int h, int w, int* c, int* oh, int* ow) const {
    int64_t hh = h, ww = w;
    int64_t most = int64_t(head_.conv.cout) * h * w;
    hh *= 2;
    ww *= 2;
    for (const QWide& st : wide_) {
        most = std::max(most, int64_t(st.conv.cout) * hh * ww);
        hh *= 2;
        ww *= 2;
    }
    for (const QOp& op : ops_) {
        if (op.kind == QOp::qconv) {
            most = std::max(most, int64_t(op.layer.cout) * hh * ww);
            hh *= op.layer.shuffle;
            ww *= op.layer.shuffle;
        }
    }
    most = std::max(most, int64_t(tail_layer_.cout) * hh * ww);
    if (most > (int64_t(1) << 32) || hh > (int64_t(1) << 29) || ww > (int64_t(1) << 29))
        throw ArgumentError("QSynthesis: an input of " + std::to_string(h) + "x" + std::to_string(w) +
                            " makes tensors of more than 2^32 values; run it in tiles");
    *c = tail_.cout / 4;
    *oh = int(hh * 2);
    *ow = int(ww * 2);
}

namespace {

// The wide stages' 12-bit inputs of a row: q = clamp(round_half_even((x * n) / scale) + zp, 0, 4095),
// rounded by adding and subtracting 1.5 * 2^23 (exact for |t| <= 2^22 in round-to-nearest-even
// mode, which the callers set; t is clamped to [-4096, 4096] first); NaN gives zp (not reachable
// with finite weights and inputs).
FASTCODEC_QCLONES void quant12_row(const float* x, const float* n, int len, float scale, int zp, uint16_t* q) {
    const float lo = float(-zp - 1), hi = float(4096 - zp), magic = 12582912.f;
    for (int i = 0; i < len; ++i) {
        float t = (x[i] * n[i]) / scale;
        t = t < lo ? lo : (t > hi ? hi : t);
        t = t == t ? t : 0.f;
        const int v = int((t + magic) - magic) + zp;
        q[i] = uint16_t(v < 0 ? 0 : (v > 4095 ? 4095 : v));
    }
}

}  // namespace

void QSynthesis::run_wide(const float* pre, int h, int w, int threads, void* out_tensor) const {
    QTensor& out = *static_cast<QTensor*>(out_tensor);
    // the head's output (4C planes of h x (w + 2)) DCR-shuffled into float planes
    int C = head_.conv.cout / 4;
    auto x = std::make_unique<Padded>(pool_, C, 2 * h, 2 * w);
    x->zero_border(threads);
    {
        const size_t pw = size_t(w) + 2, pplane = size_t(h) * pw;
        parallel_for(C, threads, [&](int a, int b) {
            for (int c = a; c < b; ++c)
                for (int s = 0; s < 4; ++s)
                    for (int yy = 0; yy < h; ++yy) {
                        const float* src = pre + size_t(s * C + c) * pplane + size_t(yy) * pw;
                        float* dst = x->row(c, 2 * yy + s / 2) + s % 2;
                        for (int xx = 0; xx < w; ++xx) dst[2 * size_t(xx)] = src[xx];
                    }
        });
    }
    for (size_t i = 0; i < wide_.size(); ++i) {
        const QWide& st = wide_[i];
        const QConvLayer& R = wide_layers_[i];
        const int H2 = x->h, W2 = x->w, CO = R.cout, C4 = CO / 4;
        const size_t nws = size_t(W2) + 2;
        // norm = gdn(|x|), m = x * norm, quantised to 12 bits and split into two uint8 tensors
        QTensor hi(pool_, C, H2, W2), lo(pool_, C, H2, W2);
        {
            BufferPool::Buffer norm = igdn_norm(pool_, st.gdn, wide_gdn_packed_[i].data(), *x, threads);
            hi.fill_border(uint8_t(st.zp >> 8));
            lo.fill_border(uint8_t(st.zp & 255));
            const float* np_ = norm.data.get();
            parallel_for(H2, threads, [&](int a, int b) {
                std::vector<uint16_t> q;  // one row, channel-major, then written pixel-major (NHWC)
                q.resize(size_t(W2) * size_t(C));
                for (int yy = a; yy < b; ++yy) {
                    for (int c = 0; c < C; ++c)
                        quant12_row(x->row(c, yy), np_ + (size_t(c) * size_t(H2) + size_t(yy)) * nws, W2, st.scale,
                                    st.zp, q.data() + size_t(c) * size_t(W2));
                    uint8_t* ho = hi.row(yy);
                    uint8_t* lw = lo.row(yy);
                    for (int xx = 0; xx < W2; ++xx)
                        for (int c = 0; c < C; ++c) {
                            const uint16_t v = q[size_t(c) * size_t(W2) + size_t(xx)];
                            ho[size_t(xx) * size_t(C) + size_t(c)] = uint8_t(v >> 8);
                            lw[size_t(xx) * size_t(C) + size_t(c)] = uint8_t(v & 255);
                        }
                }
            });
            pool_.give_back(std::move(norm));
        }
        x.reset();
        // the convolution of q = 256 hi + lo (qconv_nhwc's wide form): the last stage's straight into
        // the first uint8 tensor (requantised, shuffled); the others' int32 sums to float, shuffled
        if (!st.float_out) {
            qconv_nhwc(R, wide_packed_[i], hi.data(), H2, W2, out.data(), threads, lo.data());
            return;
        }
        Held sums(pool_, size_t(H2) * size_t(W2) * size_t(CO));
        qconv_nhwc(R, wide_packed_[i], hi.data(), H2, W2, sums.u8(), threads, lo.data());
        const int32_t* A = reinterpret_cast<const int32_t*>(sums.f());
        const float* mult = st.conv.scale.data();
        auto nx = std::make_unique<Padded>(pool_, C4, 2 * H2, 2 * W2);
        nx->zero_border(threads);
        parallel_for(C4, threads, [&](int a, int b) {
            for (int c = a; c < b; ++c)
                for (int sp = 0; sp < 4; ++sp) {
                    const int oc = sp * C4 + c;
                    const float m = mult[oc];
                    for (int yy = 0; yy < H2; ++yy) {
                        float* dst = nx->row(c, 2 * yy + sp / 2) + sp % 2;
                        const int32_t* src = A + size_t(yy) * size_t(W2) * size_t(CO) + size_t(oc);
                        for (int xx = 0; xx < W2; ++xx) dst[2 * size_t(xx)] = float(src[size_t(xx) * size_t(CO)]) * m;
                    }
                }
        });
        x = std::move(nx);
        C = C4;
    }
}

Tensor QSynthesis::run(const float* y, int h, int w, int threads) const {
    if (h <= 0 || w <= 0) throw ArgumentError("QSynthesis: the input must not be empty");
    if (size_t(h) * size_t(w) > (size_t(1) << 28)) throw ArgumentError("QSynthesis: the input is too large");
    int oc, oh, ow;
    out_shape(h, w, &oc, &oh, &ow);
    FlushDenormals fd;  // and round to nearest even

    // head: the float input zero-bordered, the convolution, then quantisation and the DCR shuffle
    // (the mixed decoder: the DCR shuffle in float, then the wide stages)
    const ConvLayer& H = head_.conv;
    const size_t ws = size_t(w) + 2, in_plane = (size_t(h) + 2) * ws, plane = size_t(h) * ws;
    int first_c = H.cout / 4, first_h = 2 * h, first_w = 2 * w;
    for (const QWide& st : wide_) {
        first_c = st.conv.cout / 4;
        first_h *= 2;
        first_w *= 2;
    }
    QTensor cur(pool_, first_c, first_h, first_w);
    {
        Held in(pool_, size_t(H.cin) * in_plane + kConvSlack);
        float* ip = in.f();
        std::fill(ip, ip + size_t(H.cin) * in_plane + kConvSlack, 0.f);
        parallel_for(H.cin, threads, [&](int a, int b) {
            for (int c = a; c < b; ++c)
                for (int yy = 0; yy < h; ++yy)
                    std::copy(y + (size_t(c) * h + yy) * w, y + (size_t(c) * h + yy + 1) * w,
                              ip + size_t(c) * in_plane + (size_t(yy) + 1) * ws + 1);
        });
        Held pre(pool_, size_t(H.cout) * plane);
        conv_padded(H, head_packed_.data(), ip, h, w, pre.f(), threads);
        const float* pp = pre.f();
        const int C4 = cur.c;
        const float s = head_.scale;
        const int zp = head_.zp;
        if (!wide_.empty()) {
            { Held drop = std::move(in); }
            run_wide(pp, h, w, threads, &cur);
        } else parallel_for(h, threads, [&](int a, int b) {  // (parallel_for sets the rounding mode on its threads)
            for (int yy = a; yy < b; ++yy)
                for (int i = 0; i < 2; ++i) {
                    uint8_t* dst = cur.row(2 * yy + i);
                    for (int xx = 0; xx < w; ++xx)
                        for (int j = 0; j < 2; ++j) {
                            const float* src = pp + size_t((2 * i + j) * C4) * plane + size_t(yy) * ws + size_t(xx);
                            uint8_t* d = dst + (2 * size_t(xx) + size_t(j)) * size_t(C4);
                            for (int c = 0; c < C4; ++c) d[c] = quantize(src[size_t(c) * plane], s, zp);
                        }
                }
        });
    }

    for (size_t oi = 0; oi < ops_.size(); ++oi) {
        const QOp& op = ops_[oi];
        const QConvLayer& L = op.layer;
        if (op.kind == QOp::igdn) {
            // n = gamma(|x|), then x = x * n, both through the graph's own tables
            QTensor ab(pool_, cur.c, cur.h, cur.w), norm(pool_, cur.c, cur.h, cur.w);
            const size_t rowb = size_t(cur.w) * size_t(cur.c);
            const uint8_t* at = op.abs_table.data();
            parallel_for(cur.h, threads, [&](int a, int b) {
                for (int yy = a; yy < b; ++yy) {
                    const uint8_t* s = cur.row(yy);
                    uint8_t* d = ab.row(yy);
                    if (op.abs_arith) {
                        abs_rows(s, d, rowb, op.abs_zp);
                    } else {
                        for (size_t i = 0; i < rowb; ++i) d[i] = at[s[i]];
                    }
                }
            });
            // the kernels' last pixel block reads past the interior: defined bytes there
            ab.fill_border(0);
            qconv_nhwc(L, packed_[oi], ab.data(), cur.h, cur.w, norm.data(), threads);
            const uint8_t* mt = op.mul_table.data();
            parallel_for(cur.h, threads, [&](int a, int b) {
                for (int yy = a; yy < b; ++yy) {
                    uint8_t* x = cur.row(yy);
                    const uint8_t* n = norm.row(yy);
                    if (op.mul_arith) {
                        mul_rows(x, n, rowb, op.za, op.sa, op.zb, op.sb, op.sc, op.zc);
                    } else {
                        for (size_t i = 0; i < rowb; ++i) x[i] = mt[size_t(x[i]) * 256 + n[i]];
                    }
                }
            });
        } else {
            cur.fill_border(uint8_t(L.in_zp));
            QTensor next(pool_, L.cout / (L.shuffle * L.shuffle), cur.h * L.shuffle, cur.w * L.shuffle);
            qconv_nhwc(L, packed_[oi], cur.data(), cur.h, cur.w, next.data(), threads);
            cur = std::move(next);
        }
    }

    // tail: the int16 convolution as two int8 ones, their sums combined exactly, then t =
    // acc * mult + add, quantised, shuffled (CRD) and dequantised
    const int th = cur.h, tw = cur.w, TC = tail_layer_.cout, tc = tail_.cout;
    cur.fill_border(uint8_t(tail_.in_zp));
    Held sums(pool_, size_t(th) * size_t(tw) * size_t(TC));
    qconv_nhwc(tail_layer_, tail_packed_, cur.data(), th, tw, reinterpret_cast<uint8_t*>(sums.f()), threads);
    { QTensor drop = std::move(cur); }
    Tensor out;
    out.c = oc;
    out.h = oh;
    out.w = ow;
    out.v.resize(size_t(oc) * oh * ow);
    const int32_t* acc = reinterpret_cast<const int32_t*>(sums.f());
    const float* mult = tail_.mult.data();
    const float* add = tail_.add.data();
    const int zp = tail_.out_zp;
    const float* odq = tail_.out_dequant.data();
    parallel_for(th, threads, [&](int a, int b) {
        for (int yy = a; yy < b; ++yy)
            for (int xx = 0; xx < tw; ++xx) {
                const int32_t* s = acc + (size_t(yy) * size_t(tw) + size_t(xx)) * size_t(TC);
                for (int k = 0; k < tc; ++k) {
                    const int64_t v = int64_t(s[k]) * 128 + int64_t(s[tc + k]);
                    float t = float(v) * mult[k];
                    t = t + add[k];
                    const int c = k / 4, i = (k / 2) % 2, j = k % 2;
                    out.v[(size_t(c) * oh + 2 * size_t(yy) + size_t(i)) * size_t(ow) + 2 * size_t(xx) + size_t(j)] =
                        odq[quantize(t, 1.f, zp)];
                }
            }
    });
    return out;
}


// -- the int8 post-filter -------------------------------------------------------------------------

namespace {

void check_filter_layer(const QConvLayer& L, const char* what, int k, int cin, int in_zp, bool relu_out) {
    check_qconv(L);
    if (L.k != k || L.cin != cin || L.in_zp != in_zp || (relu_out && L.out_zp != 0))
        throw ArgumentError(std::string("QFilter ") + what + ": needs a " + std::to_string(k) + "x" + std::to_string(k) +
                            " convolution of " + std::to_string(cin) + " input channels, input zero point " +
                            std::to_string(in_zp) + (relu_out ? " and output zero point 0" : ""));
}

// t rounded half to even (t clamped to [-2^22, 2^22] first; see mul_rows), as an int
inline int rne_int(float t) {
    const float magic = 12582912.f;
    t = t < -4194304.f ? -4194304.f : (t > 4194304.f ? 4194304.f : t);
    return int((t + magic) - magic);
}

}  // namespace

QFilter::QFilter(QFilterSpec spec) : s_(std::move(spec)) {
    const int C = s_.inc.cout;
    check_filter_layer(s_.inc, "inc", 3, 16, 0, true);
    if (s_.inc.shuffle != 1) throw ArgumentError("QFilter inc: no shuffle allowed");
    check_filter_layer(s_.down, "down", 1, 4 * C, 0, true);
    const int C2 = s_.down.cout;
    if (s_.down.shuffle != 1) throw ArgumentError("QFilter down: no shuffle allowed");
    for (const QConvLayer& M : s_.mids) {
        check_filter_layer(M, "mid", 3, C2, 0, true);
        if (M.cout != C2 || M.shuffle != 1) throw ArgumentError("QFilter mid: needs C2 -> C2 channels, no shuffle");
    }
    check_filter_layer(s_.up, "up", 1, C2, 0, false);
    if (s_.up.cout != 4 * C || s_.up.shuffle != 2) throw ArgumentError("QFilter up: needs C2 -> 4C channels and a 2x shuffle");
    if (s_.add_table.size() != 65536) throw ArgumentError("QFilter: the add table needs 65536 entries");
    check_filter_layer(s_.dec, "dec", 3, C, s_.dec.in_zp, true);
    if (s_.dec.cout != C || s_.dec.shuffle != 1) throw ArgumentError("QFilter dec: needs C -> C channels, no shuffle");
    const QConvLayer& O = s_.out;
    if (O.k != 3 || O.cin != C || O.cout != 12 || O.in_zp != 0 || O.shuffle != 1)
        throw ArgumentError("QFilter out: needs a 3x3 convolution of C -> 12 channels, input zero point 0");
    if (O.weight.size() != size_t(12) * size_t(C) * 9 || O.bias.size() != 12)
        throw ArgumentError("QFilter out: weight/bias sizes do not match the layer shape");
    if (s_.mult.size() != 12 || s_.add.size() != 12) throw ArgumentError("QFilter out: mult and add need 12 entries");
    for (int k = 0; k < 12; ++k)
        if (!std::isfinite(s_.mult[k]) || !std::isfinite(s_.add[k]))
            throw ArgumentError("QFilter out: mult and add must be finite");
    out16_ = O;
    out16_.cout = 16;
    out16_.raw = true;
    out16_.weight.resize(size_t(16) * size_t(C) * 9, 0);
    out16_.bias.resize(16, 0);
    out16_.scale.assign(16, 1.f);
    check_qconv(out16_);
    inc_p_ = pack_qconv(s_.inc);
    down_p_ = pack_qconv(s_.down);
    for (const QConvLayer& M : s_.mids) mids_p_.push_back(pack_qconv(M));
    up_p_ = pack_qconv(s_.up);
    dec_p_ = pack_qconv(s_.dec);
    out_p_ = pack_qconv(out16_);
}

void QFilter::out_shape(int h, int w, int* c, int* oh, int* ow) const {
    if (h <= 0 || w <= 0 || h % 4 || w % 4)
        throw ArgumentError("QFilter: the image's height and width must be positive multiples of 4, got " +
                            std::to_string(h) + "x" + std::to_string(w));
    const int64_t most = std::max<int64_t>(int64_t(4) * s_.inc.cout, 16) * (int64_t(h) / 2) * (int64_t(w) / 2);
    if (most > (int64_t(1) << 32)) throw ArgumentError("QFilter: the image is too large; run it in tiles");
    *c = 3;
    *oh = h;
    *ow = w;
}

Tensor QFilter::run(const float* x, int h, int w, float quality, int threads) const {
    int oc, oh, ow;
    out_shape(h, w, &oc, &oh, &ow);
    FlushDenormals fd;  // and round to nearest even
    const int C = s_.inc.cout, h2 = h / 2, w2 = w / 2, h4 = h / 4, w4 = w / 4;
    const size_t plane = size_t(h) * size_t(w);
    float qf = quality * 255.f;
    if (!(qf >= 0.f)) qf = 0.f;  // (NaN too)
    const uint8_t qc = uint8_t(qf > 255.f ? 255 : rne_int(qf));

    // P: the input as pixels, planar
    Held pix(pool_, (3 * plane + 3) / 4);
    uint8_t* P = pix.u8();
    parallel_for(3 * h, threads, [&](int a, int b) {
        for (int r = a; r < b; ++r) {
            const float* src = x + size_t(r) * size_t(w);
            uint8_t* dst = P + size_t(r) * size_t(w);
            for (int i = 0; i < w; ++i) {
                float v = src[i] * 255.f;
                v = v > 0.f ? (v < 255.f ? v : 255.f) : 0.f;  // (NaN -> 0)
                dst[i] = uint8_t(rne_int(v));
            }
        }
    });

    // h0: unshuffled pixels, the quality code, zeros
    QTensor h0(pool_, 16, h2, w2);
    h0.fill_border(0);
    parallel_for(h2, threads, [&](int a, int b) {
        for (int yy = a; yy < b; ++yy) {
            uint8_t* d = h0.row(yy);
            for (int xx = 0; xx < w2; ++xx, d += 16) {
                for (int c = 0; c < 3; ++c)
                    for (int i = 0; i < 2; ++i)
                        for (int j = 0; j < 2; ++j)
                            d[c * 4 + i * 2 + j] = P[size_t(c) * plane + (2 * size_t(yy) + i) * size_t(w) + 2 * size_t(xx) + j];
                d[12] = qc;
                d[13] = d[14] = d[15] = 0;
            }
        }
    });
    QTensor a1(pool_, C, h2, w2);
    qconv_nhwc(s_.inc, inc_p_, h0.data(), h2, w2, a1.data(), threads);
    { QTensor drop = std::move(h0); }

    // quarter resolution: unshuffle a1, down, the blocks, up (shuffled back to half resolution)
    QTensor q0(pool_, 4 * C, h4, w4);
    q0.fill_border(0);
    parallel_for(h4, threads, [&](int a, int b) {
        for (int yy = a; yy < b; ++yy) {
            uint8_t* d = q0.row(yy);
            for (int xx = 0; xx < w4; ++xx, d += 4 * C)
                for (int i = 0; i < 2; ++i)
                    for (int j = 0; j < 2; ++j) {
                        const uint8_t* s = a1.row(2 * yy + i) + (2 * size_t(xx) + j) * size_t(C);
                        for (int c = 0; c < C; ++c) d[c * 4 + i * 2 + j] = s[c];
                    }
        }
    });
    QTensor cur(pool_, s_.down.cout, h4, w4);
    qconv_nhwc(s_.down, down_p_, q0.data(), h4, w4, cur.data(), threads);
    { QTensor drop = std::move(q0); }
    for (size_t k = 0; k < s_.mids.size(); ++k) {
        cur.fill_border(0);
        QTensor next(pool_, cur.c, h4, w4);
        qconv_nhwc(s_.mids[k], mids_p_[k], cur.data(), h4, w4, next.data(), threads);
        cur = std::move(next);
    }
    cur.fill_border(0);  // (the 1x1 kernels' last pixel block reads past the interior)
    QTensor u(pool_, C, h2, w2);
    qconv_nhwc(s_.up, up_p_, cur.data(), h4, w4, u.data(), threads);
    { QTensor drop = std::move(cur); }

    // the skip sum, in place in a1, then dec
    const uint8_t* at = s_.add_table.data();
    const size_t rowb = size_t(w2) * size_t(C);
    parallel_for(h2, threads, [&](int a, int b) {
        for (int yy = a; yy < b; ++yy) {
            uint8_t* s = a1.row(yy);
            const uint8_t* t = u.row(yy);
            for (size_t i = 0; i < rowb; ++i) s[i] = at[size_t(s[i]) * 256 + t[i]];
        }
    });
    { QTensor drop = std::move(u); }
    a1.fill_border(uint8_t(s_.dec.in_zp));
    QTensor a2(pool_, C, h2, w2);
    qconv_nhwc(s_.dec, dec_p_, a1.data(), h2, w2, a2.data(), threads);
    { QTensor drop = std::move(a1); }

    // out: int32 sums, the residual added to the pixels, rounded
    a2.fill_border(0);
    Held sums(pool_, size_t(h2) * size_t(w2) * 16);
    qconv_nhwc(out16_, out_p_, a2.data(), h2, w2, reinterpret_cast<uint8_t*>(sums.f()), threads);
    { QTensor drop = std::move(a2); }
    Tensor out;
    out.c = 3;
    out.h = h;
    out.w = w;
    out.v.resize(3 * plane);
    const int32_t* acc = reinterpret_cast<const int32_t*>(sums.f());
    const float* mult = s_.mult.data();
    const float* add = s_.add.data();
    parallel_for(h2, threads, [&](int a, int b) {
        for (int yy = a; yy < b; ++yy)
            for (int xx = 0; xx < w2; ++xx) {
                const int32_t* s = acc + (size_t(yy) * size_t(w2) + size_t(xx)) * 16;
                for (int k = 0; k < 12; ++k) {
                    float t = float(s[k]) * mult[k];
                    t = t + add[k];
                    const size_t at_ = size_t(k / 4) * plane + (2 * size_t(yy) + size_t((k / 2) % 2)) * size_t(w) +
                                       2 * size_t(xx) + size_t(k % 2);
                    const int v = rne_int(float(P[at_]) + t);
                    out.v[at_] = float(v < 0 ? 0 : (v > 255 ? 255 : v)) / 255.f;
                }
            }
    });
    return out;
}

}  // namespace fastcodec
