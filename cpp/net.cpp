#include "net.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <cstdio>
#include <cstdlib>

#include "errors.hpp"

namespace fastcodec {

namespace {

void check_layer(const ConvLayer& L, const char* what) {
    if (L.cin <= 0 || L.cout <= 0 || (L.k != 1 && L.k != 3) || L.shuffle < 1 || L.cout % (L.shuffle * L.shuffle))
        throw ArgumentError(std::string(what) + ": inconsistent layer shape");
    if (L.weight.size() != size_t(L.cout) * L.cin * L.k * L.k || L.bias.size() != size_t(L.cout))
        throw ArgumentError(std::string(what) + ": weight/bias sizes do not match the layer shape");
}

}  // namespace

BufferPool::Buffer BufferPool::acquire(size_t n) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        // the smallest idle buffer that fits
        size_t best = idle_.size();
        for (size_t i = 0; i < idle_.size(); ++i)
            if (idle_[i].size >= n && (best == idle_.size() || idle_[i].size < idle_[best].size)) best = i;
        if (best < idle_.size()) {
            Buffer b = std::move(idle_[best]);
            idle_.erase(idle_.begin() + long(best));
            return b;
        }
    }
    Buffer b;
    b.data.reset(new float[n]);
    b.size = n;
    return b;
}

void BufferPool::give_back(Buffer&& b) {
    if (!b.data) return;
    std::lock_guard<std::mutex> lock(mu_);
    size_t held = 0;
    for (const Buffer& i : idle_) held += i.size;
    if ((held + b.size) * sizeof(float) > limit_) return;  // freed: b goes out of scope
    idle_.push_back(std::move(b));
}

void BufferPool::set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes;
}

size_t BufferPool::limit() const {
    std::lock_guard<std::mutex> lock(mu_);
    return limit_;
}

void BufferPool::trim() {
    std::vector<Buffer> drop;
    std::lock_guard<std::mutex> lock(mu_);
    drop.swap(idle_);
}

size_t BufferPool::idle_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const Buffer& b : idle_) n += b.size * sizeof(float);
    return n;
}

BufferPool::Buffer igdn_norm(BufferPool& pool, const ConvLayer& gdn, const float* packed, const Padded& x,
                             int threads) {
    Padded ab(pool, x.c, x.h, x.w);
    const size_t n = x.size();
    const float* src = x.data();
    float* dst = ab.data();
    parallel_for(int((n + 4095) / 4096), threads, [&](int a, int b) {
        const size_t e = std::min(n, size_t(b) * 4096);
        for (size_t i = size_t(a) * 4096; i < e; ++i) dst[i] = std::fabs(src[i]);  // borders stay 0
    });
    BufferPool::Buffer norm = pool.acquire(size_t(x.c) * size_t(x.h) * x.ws());
    conv_padded(gdn, packed, ab.data(), x.h, x.w, norm.data.get(), threads);
    return norm;
}

Net::Net(std::vector<NetOp> ops, int in_channels) : ops_(std::move(ops)), in_channels_(in_channels) {
    if (in_channels <= 0) throw ArgumentError("Net: the input needs at least one channel");
    int c = in_channels;
    std::vector<int> stack;
    for (const NetOp& op : ops_) {
        switch (op.kind) {
            case NetOp::conv:
                check_layer(op.layer, "Net conv");
                if (op.layer.cin != c) throw ArgumentError("Net: a convolution's input channels do not match");
                c = op.layer.cout / (op.layer.shuffle * op.layer.shuffle);
                break;
            case NetOp::igdn:
                check_layer(op.layer, "Net igdn");
                if (op.layer.k != 1 || op.layer.cin != c || op.layer.cout != c || op.layer.shuffle != 1 || op.layer.relu)
                    throw ArgumentError("Net: igdn needs a plain 1x1 C -> C convolution");
                break;
            case NetOp::unshuffle:
                if (op.r < 1 || op.r > 8) throw ArgumentError("Net: unshuffle factor must be 1..8");
                c *= op.r * op.r;
                break;
            case NetOp::push:
                stack.push_back(c);
                break;
            case NetOp::add:
                if (stack.empty()) throw ArgumentError("Net: add without a pushed tensor");
                if (stack.back() != c) throw ArgumentError("Net: add of tensors with different channels");
                stack.pop_back();
                break;
            case NetOp::plane:
                c += 1;
                break;
            default:
                throw ArgumentError("Net: unknown operation");
        }
    }
    if (!stack.empty()) throw ArgumentError("Net: a pushed tensor is never added");
    for (NetOp& op : ops_) op.layer.fused = true;  // every product-sum of the Net is a fused multiply-add
    for (const NetOp& op : ops_)
        packed_.push_back(op.kind == NetOp::conv || op.kind == NetOp::igdn ? pack_conv_weights(op.layer)
                                                                           : std::vector<float>());
}

void Net::out_shape(int h, int w, int* c, int* oh, int* ow) const {
    int cc = in_channels_;
    for (const NetOp& op : ops_) {
        if (op.kind == NetOp::conv) {
            const int r = op.layer.shuffle;
            // every tensor of a run stays below 2^32 values (and its sides below 2^31)
            if (int64_t(op.layer.cout) * h * w > (int64_t(1) << 32) || int64_t(h) * r > (int64_t(1) << 30) ||
                int64_t(w) * r > (int64_t(1) << 30))
                throw ArgumentError("Net: an input of " + std::to_string(h) + "x" + std::to_string(w) +
                                    " makes tensors of more than 2^32 values; run it in tiles");
            cc = op.layer.cout / (r * r);
            h *= r;
            w *= r;
        } else if (op.kind == NetOp::unshuffle) {
            if (h % op.r || w % op.r)
                throw ArgumentError("Net: the input size " + std::to_string(h) + "x" + std::to_string(w) +
                                    " is not divisible by the unshuffle factor " + std::to_string(op.r));
            cc *= op.r * op.r;
            h /= op.r;
            w /= op.r;
        } else if (op.kind == NetOp::plane) {
            cc += 1;
        }
    }
    *c = cc;
    *oh = h;
    *ow = w;
}

Tensor Net::run(const float* x, int h, int w, float param, int threads) const {
    if (h <= 0 || w <= 0) throw ArgumentError("Net: the input must not be empty");
    if (size_t(h) * size_t(w) > (size_t(1) << 28)) throw ArgumentError("Net: the input is too large");
    int oc, oh, ow;
    out_shape(h, w, &oc, &oh, &ow);  // validates the sizes before anything is allocated
    FlushDenormals fd;
    Padded cur(pool_, in_channels_, h, w);
    cur.zero_border(threads);
    parallel_for(cur.c, threads, [&](int a, int b) {
        for (int c = a; c < b; ++c)
            for (int y = 0; y < h; ++y) std::copy(x + (size_t(c) * h + y) * w, x + (size_t(c) * h + y + 1) * w, cur.row(c, y));
    });
    std::vector<Padded> stack;
    for (size_t oi = 0; oi < ops_.size(); ++oi) {
        const NetOp& op = ops_[oi];
        switch (op.kind) {
            case NetOp::conv: {
                const ConvLayer& L = op.layer;
                const size_t ws = cur.ws();
                const int ch = cur.h, cw = cur.w;
                if (L.shuffle == 1) {
                    // straight into the next tensor's padded planes: output element (y, x) at
                    // y*ws + x lands on padded (y + 1, x + 1); the two scratch columns of each row
                    // land on border cells (and the last one on the next plane's first cell or the
                    // slack), which zero_border clears again afterwards
                    Padded next(pool_, L.cout, ch, cw);
                    conv_padded(L, packed_[oi].data(), cur.data(), ch, cw, next.data() + ws + 1, threads,
                                next.plane());
                    next.zero_border(threads);
                    if (L.relu) {
                        parallel_for(next.c, threads, [&](int a, int b) {
                            for (int c = a; c < b; ++c)
                                for (int y = 0; y < ch; ++y) {
                                    float* v = next.row(c, y);
                                    for (int xx = 0; xx < cw; ++xx) v[xx] = v[xx] > 0.f ? v[xx] : 0.f;  // NaN -> 0
                                }
                        });
                    }
                    cur = std::move(next);
                    break;
                }
                BufferPool::Buffer pre = pool_.acquire(size_t(L.cout) * ch * ws);
                conv_padded(L, packed_[oi].data(), cur.data(), ch, cw, pre.data.get(), threads);
                const int r = L.shuffle;
                Padded next(pool_, L.cout / (r * r), ch * r, cw * r);
                next.zero_border(threads);
                const bool relu = L.relu;
                const float* pp = pre.data.get();
                parallel_for(next.c, threads, [&](int a, int b) {
                    for (int c = a; c < b; ++c) {
                        if (r == 2 && !relu) {
                            // the common case (the synthesis): output row 2y + i interleaves the
                            // rows y of sub-channels (i, 0) and (i, 1), written in order
                            for (int i = 0; i < 2; ++i) {
                                const float* s0 = pp + size_t(c * 4 + i * 2) * ch * ws;
                                const float* s1 = s0 + size_t(ch) * ws;
                                for (int y = 0; y < ch; ++y) {
                                    float* dst = next.row(c, y * 2 + i);
                                    const float* a0 = s0 + size_t(y) * ws;
                                    const float* a1 = s1 + size_t(y) * ws;
                                    for (int xx = 0; xx < cw; ++xx) {
                                        dst[2 * size_t(xx)] = a0[xx];
                                        dst[2 * size_t(xx) + 1] = a1[xx];
                                    }
                                }
                            }
                            continue;
                        }
                        for (int i = 0; i < r; ++i)
                            for (int j = 0; j < r; ++j) {
                                const float* src = pp + size_t(c * r * r + i * r + j) * ch * ws;
                                for (int y = 0; y < ch; ++y) {
                                    float* dst = next.row(c, y * r + i) + j;
                                    const float* s = src + size_t(y) * ws;
                                    if (relu) {
                                        for (int xx = 0; xx < cw; ++xx) dst[size_t(xx) * r] = s[xx] > 0.f ? s[xx] : 0.f;  // NaN -> 0
                                    } else {
                                        for (int xx = 0; xx < cw; ++xx) dst[size_t(xx) * r] = s[xx];
                                    }
                                }
                            }
                    }
                });
                pool_.give_back(std::move(pre));
                cur = std::move(next);
                break;
            }
            case NetOp::igdn: {
                // norm = beta + gamma |x| (a 1x1 convolution of |x|), then x = x * norm
                BufferPool::Buffer norm = igdn_norm(pool_, op.layer, packed_[oi].data(), cur, threads);
                const size_t ws = cur.ws();
                const int ch = cur.h, cw = cur.w;
                const float* np_ = norm.data.get();
                parallel_for(cur.c, threads, [&](int a, int b) {
                    for (int c = a; c < b; ++c)
                        for (int y = 0; y < ch; ++y) {
                            float* v = cur.row(c, y);
                            const float* m = np_ + (size_t(c) * ch + y) * ws;
                            for (int xx = 0; xx < cw; ++xx) v[xx] = v[xx] * m[xx];
                        }
                });
                pool_.give_back(std::move(norm));
                break;
            }
            case NetOp::unshuffle: {
                const int r = op.r, nh = cur.h / r, nw = cur.w / r;
                Padded next(pool_, cur.c * r * r, nh, nw);
                next.zero_border(threads);
                parallel_for(cur.c, threads, [&](int a, int b) {
                    for (int c = a; c < b; ++c)
                        for (int i = 0; i < r; ++i)
                            for (int j = 0; j < r; ++j)
                                for (int y = 0; y < nh; ++y) {
                                    const float* s = cur.row(c, y * r + i) + j;
                                    float* d = next.row(c * r * r + i * r + j, y);
                                    for (int xx = 0; xx < nw; ++xx) d[xx] = s[size_t(xx) * r];
                                }
                });
                cur = std::move(next);
                break;
            }
            case NetOp::push: {
                Padded copy(pool_, cur.c, cur.h, cur.w);
                std::copy(cur.data(), cur.data() + cur.size(), copy.data());
                stack.push_back(std::move(copy));
                break;
            }
            case NetOp::add: {
                Padded& top = stack.back();
                if (top.h != cur.h || top.w != cur.w || top.c != cur.c)
                    throw ArgumentError("Net: add of tensors with different shapes");
                const size_t n = cur.size();  // borders and slack: 0 + 0
                float* d = cur.data();
                const float* t = top.data();
                for (size_t i = 0; i < n; ++i) d[i] = t[i] + d[i];
                stack.pop_back();
                break;
            }
            case NetOp::plane: {
                Padded next(pool_, cur.c + 1, cur.h, cur.w);
                std::copy(cur.data(), cur.data() + size_t(cur.c) * cur.plane(), next.data());
                float* p = next.data() + size_t(cur.c) * cur.plane();
                std::fill(p, next.data() + next.size(), 0.f);
                for (int y = 0; y < cur.h; ++y) std::fill(next.row(cur.c, y), next.row(cur.c, y) + cur.w, param);
                cur = std::move(next);
                break;
            }
        }
    }
    Tensor out;
    out.c = cur.c;
    out.h = cur.h;
    out.w = cur.w;
    out.v.resize(size_t(out.c) * out.h * out.w);
    for (int c = 0; c < out.c; ++c)
        for (int y = 0; y < out.h; ++y)
            std::copy(cur.row(c, y), cur.row(c, y) + out.w, out.v.data() + (size_t(c) * out.h + y) * out.w);
    return out;
}

namespace {

// log(x) for x > 0 (finite, normal): x = m * 2^e with m in [sqrt(1/2), sqrt(2)),
// log(m) = 2 atanh(s), s = (m - 1) / (m + 1), summed to s^25 (|s| <= 0.172: error < 1e-18).
double det_log(double x) {
    int e = 0;
    double m = std::frexp(x, &e);  // exact: m in [0.5, 1)
    if (m < 0.70710678118654752440) {
        m = m * 2.0;
        e -= 1;
    }
    const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double sum = 0.0;
    for (int k = 25; k >= 1; k -= 2) sum = sum * s2 + 1.0 / k;
    const double ln2 = 0.69314718055994530942;
    return 2.0 * s * sum + double(e) * ln2;
}

// exp(x) for |x| < 700: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor series to r^17.
double det_exp(double x) {
    const double ln2_hi = 0.693147180369123816490, ln2_lo = 1.90821492927058770002e-10;
    const double n = std::nearbyint(x * 1.44269504088896340736);
    const double r = (x - n * ln2_hi) - n * ln2_lo;
    double sum = 1.0;
    for (int k = 17; k >= 1; --k) sum = 1.0 + sum * r / k;
    return std::ldexp(sum, int(n));
}

}  // namespace

float det_interp(float a, float b, double t) {
    if (!(a > 0.f) || !(b > 0.f) || !(t >= 0.0) || !(t <= 1.0) || !std::isfinite(a) || !std::isfinite(b))
        throw ArgumentError("det_interp needs a, b > 0 (finite) and 0 <= t <= 1");
    const double v = det_exp((1.0 - t) * det_log(double(a)) + t * det_log(double(b)));
    return static_cast<float>(v);
}

}  // namespace fastcodec
