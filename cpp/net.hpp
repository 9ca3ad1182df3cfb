// A small deterministic network executor: the exact decoder.
//
// onnxruntime's float kernels sum in different orders on different CPUs, instruction sets and
// versions, so the pixels that the float synthesis makes of a file may differ by a level here and
// there between machines (the symbols never do: see hyper.hpp). Net runs the synthesis, the
// post-filter and the hyper-decoder's mean branch with the deterministic convolutions of
// conv.hpp and element-wise operations that are single IEEE-754 float32 operations, so that a
// file decodes to the same pixels, bit for bit, on every machine, thread count and build.
//
// A Net is a straight sequence of operations on one current tensor (C x H x W, float32), with a
// stack for skip connections:
//   conv       1x1 or 3x3 convolution (stride 1, zero padding), then an optional pixel shuffle
//              (depth to space, PyTorch/ONNX "CRD" order) and an optional ReLU
//   unshuffle  space to depth by r (channel c*r*r + i*r + j holds pixel (y*r + i, x*r + j))
//   igdn       simplified inverse GDN: x * (beta + gamma |x|), gamma a 1x1 convolution
//   push       copies the current tensor onto the stack
//   add        pops the stack's top and adds it to the current tensor (same shape)
//   plane      appends one channel holding the run-time parameter (the post-filter's quality)
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "conv.hpp"

namespace fastcodec {

struct NetOp {
    enum Kind { conv, unshuffle, igdn, push, add, plane };
    Kind kind = conv;
    ConvLayer layer;  // conv: the layer; igdn: the 1x1 convolution of |x| (weight gamma, bias beta)
    int r = 2;        // unshuffle factor
};

struct Tensor {
    int c = 0, h = 0, w = 0;
    std::vector<float> v;  // c x h x w
};

// Large float buffers kept for reuse between runs: fresh memory costs a page fault per 4 KiB on
// first touch (measured on 2 cores: about 60 ms to allocate and pad one 38 MB tensor, against a
// few ms to reuse one), so a Net keeps the buffers of its last runs, up to kMaxIdleBytes (a
// Kodak-size synthesis needs about 190 MB), until trim().
class BufferPool {
public:
    static constexpr size_t kMaxIdleBytes = size_t(256) << 20;
    struct Buffer {
        std::unique_ptr<float[]> data;
        size_t size = 0;
    };
    Buffer acquire(size_t n);      // a buffer of at least n floats (contents undefined)
    void give_back(Buffer&& b);    // returns a buffer for reuse (or frees it beyond the limit)
    void trim();                   // frees every idle buffer
    size_t idle_bytes() const;
    // the most idle memory kept; a caller that runs many tiles of one large image raises it for
    // the duration (and trims afterwards), so that every tile reuses the first one's buffers
    void set_limit(size_t bytes);
    size_t limit() const;

private:
    mutable std::mutex mu_;
    std::vector<Buffer> idle_;
    size_t limit_ = kMaxIdleBytes;
};

// What Net and QSynthesis (qnet.hpp) share: the pool of buffers kept between runs.
class PooledExecutor {
public:
    // Frees the buffers kept from earlier runs (after a large image, say).
    void trim() const { pool_.trim(); }
    size_t cached_bytes() const { return pool_.idle_bytes(); }
    void set_cache_limit(size_t bytes) const { pool_.set_limit(bytes); }
    size_t cache_limit() const { return pool_.limit(); }

protected:
    mutable BufferPool pool_;
};

// A tensor held zero-bordered, as conv_padded reads it: c planes of (h+2) x (w+2) floats with the
// values in the interior, then kConvSlack zeros. Its buffer comes from (and goes back to) a pool.
struct Padded {
    BufferPool* pool = nullptr;
    BufferPool::Buffer buf;
    int c = 0, h = 0, w = 0;

    Padded() = default;
    Padded(BufferPool& p, int c_, int h_, int w_) : pool(&p), c(c_), h(h_), w(w_) {
        buf = p.acquire(size());
    }
    Padded(Padded&& o) noexcept : pool(o.pool), buf(std::move(o.buf)), c(o.c), h(o.h), w(o.w) {}
    Padded& operator=(Padded&& o) noexcept {
        if (this != &o) {
            if (pool) pool->give_back(std::move(buf));
            pool = o.pool;
            buf = std::move(o.buf);
            c = o.c;
            h = o.h;
            w = o.w;
        }
        return *this;
    }
    ~Padded() {
        if (pool) pool->give_back(std::move(buf));
    }
    size_t ws() const { return size_t(w) + 2; }
    size_t plane() const { return (size_t(h) + 2) * ws(); }
    size_t size() const { return size_t(c) * plane() + kConvSlack; }
    float* data() { return buf.data.get(); }
    const float* data() const { return buf.data.get(); }
    float* row(int ch, int y) { return data() + size_t(ch) * plane() + (size_t(y) + 1) * ws() + 1; }
    const float* row(int ch, int y) const { return data() + size_t(ch) * plane() + (size_t(y) + 1) * ws() + 1; }

    // zeros the border of every plane and the slack (the interior is left as it is)
    void zero_border(int threads) {
        const size_t W = ws(), P = plane();
        parallel_for(c, threads, [&](int a, int b) {
            for (int ch = a; ch < b; ++ch) {
                float* p = data() + size_t(ch) * P;
                std::fill(p, p + W, 0.f);
                std::fill(p + (size_t(h) + 1) * W, p + P, 0.f);
                for (int y = 1; y <= h; ++y) {
                    p[size_t(y) * W] = 0.f;
                    p[size_t(y) * W + W - 1] = 0.f;
                }
            }
        });
        std::fill(data() + size_t(c) * P, data() + size(), 0.f);
    }
};

// The simplified IGDN's norm of x (Net's igdn, the mixed decoder's wide stages): |x| zero-bordered,
// then the 1x1 convolution gdn (weight gamma, bias beta; packed: pack_conv_weights(gdn)). Returns
// x.c planes of x.h x (x.w + 2) floats (element (y, x) at y * (w + 2) + x), from the pool.
BufferPool::Buffer igdn_norm(BufferPool& pool, const ConvLayer& gdn, const float* packed, const Padded& x,
                             int threads);

class Net : public PooledExecutor {
public:
    // ops: the sequence; in_channels: the channels of the input tensor.
    Net(std::vector<NetOp> ops, int in_channels);

    // Runs the network on x (in_channels x h x w). param: the value of "plane" channels.
    Tensor run(const float* x, int h, int w, float param, int threads = 1) const;

    int in_channels() const { return in_channels_; }
    // Output shape for an h x w input (ArgumentError if an unshuffle does not divide it).
    void out_shape(int h, int w, int* c, int* oh, int* ow) const;

private:
    std::vector<NetOp> ops_;
    std::vector<std::vector<float>> packed_;  // per op: packed convolution weights (conv, igdn)
    int in_channels_;
};

// exp(log(a) * (1 - t) + log(b) * t) in float64 with a fixed sequence of IEEE-754 operations
// (no libm), rounded to float32: the log-linear interpolation of a gain between two trained
// levels, the same on every machine. a, b > 0, 0 <= t <= 1.
float det_interp(float a, float b, double t);

}  // namespace fastcodec
