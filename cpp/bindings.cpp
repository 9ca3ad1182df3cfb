// Thin pybind11 layer over the pure C++ core (fastcodec._core).
//
// Buffers come in as numpy arrays without copies (py::array_t without forcecast checks
// dtype and layout instead of converting). Native loops run with the GIL released: this is
// safe because every input array is owned by a py::array that lives on this C++ frame for the
// whole call (so the memory cannot be freed), outputs are fresh arrays nobody else can see
// yet, and no Python API is touched while the GIL is released. A caller that mutates an input
// array from another thread during the call gets unspecified output, as with any buffer API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "huffman.hpp"
#include "hyper.hpp"
#include "image.hpp"
#include "latent.hpp"
#include "net.hpp"
#include "pixels.hpp"
#include "qconv.hpp"
#include "qnet.hpp"
#include "symbols.hpp"

namespace py = pybind11;
using namespace fastcodec;

namespace {

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

// Requires an exact dtype and C-contiguity rather than silently copying.
template <typename T>
carray<T> expect(const py::array& a, const char* name, ssize_t ndim) {
    if (!py::isinstance<carray<T>>(a) || !(a.flags() & py::array::c_style))
        throw ArgumentError(std::string(name) + " must be a C-contiguous " +
                            py::str(py::dtype::of<T>()).cast<std::string>() + " array, got " +
                            (a.dtype().is(py::dtype::of<T>()) || a.dtype().equal(py::dtype::of<T>())
                                 ? std::string("a non-contiguous one (numpy.ascontiguousarray makes one)")
                                 : py::str(a.dtype()).cast<std::string>()));
    if (ndim >= 0 && a.ndim() != ndim)
        throw ArgumentError(std::string(name) + " must have " + std::to_string(ndim) + " dimensions, got " +
                            std::to_string(a.ndim()));
    return py::reinterpret_borrow<carray<T>>(a);
}

// The (rows, width, channels) array a stripe decodes into: a new one, or the caller's `out`
// (C-contiguous, of that shape, writeable).
template <typename T>
carray<T> stripe_out(const py::object& out_obj, int rows, int width, int channels) {
    if (out_obj.is_none()) return carray<T>({ssize_t(rows), ssize_t(width), ssize_t(channels)});
    carray<T> out = expect<T>(out_obj, "out", 3);
    if (out.shape(0) != rows || out.shape(1) != width || out.shape(2) != channels)
        throw ArgumentError("out must have shape (rows, width, channels)");
    if (!out.writeable()) throw ArgumentError("out must be writeable");
    return out;
}

Tensor run_executor(const Net& n, const float* x, int h, int w, float param, int threads) {
    return n.run(x, h, w, param, threads);
}
Tensor run_executor(const QSynthesis& n, const float* x, int h, int w, float, int threads) {
    return n.run(x, h, w, threads);
}
Tensor run_executor(const QFilter& n, const float* x, int h, int w, float quality, int threads) {
    return n.run(x, h, w, quality, threads);
}

// The methods Net and QSynthesis share: the buffer pool, the output shape, and run(x, param,
// threads) with the GIL released (x is kept alive by the py::array on this frame).
template <typename T>
void bind_executor(py::class_<T>& c) {
    c.def_property_readonly("in_channels", &T::in_channels)
        .def("trim", &T::trim, "frees the buffers kept from earlier runs")
        .def_property_readonly("cached_bytes", &T::cached_bytes)
        .def_property("cache_limit", &T::cache_limit, &T::set_cache_limit,
                      "the most memory (bytes) kept idle for reuse between runs")
        .def("out_shape",
             [](const T& n, int h, int w) {
                 int ch, oh, ow;
                 n.out_shape(h, w, &ch, &oh, &ow);
                 return py::make_tuple(1, ch, oh, ow);
             })
        .def("run",
             [](const T& n, py::array x, float param, int threads) {
                 auto xa = expect<float>(x, "x", 4);
                 if (xa.shape(0) != 1 || xa.shape(1) != n.in_channels())
                     throw ArgumentError("x must have shape (1, " + std::to_string(n.in_channels()) + ", H, W)");
                 const int h = int(xa.shape(2)), w = int(xa.shape(3));
                 const float* xp = xa.data();
                 Tensor t;
                 {
                     py::gil_scoped_release nogil;
                     t = run_executor(n, xp, h, w, param, threads);
                 }
                 py::array_t<float> out({ssize_t(1), ssize_t(t.c), ssize_t(t.h), ssize_t(t.w)});
                 std::copy(t.v.begin(), t.v.end(), out.mutable_data());
                 return out;
             },
             py::arg("x"), py::arg("param") = 0.f, py::arg("threads") = 1);
}

// An int8 convolution from its arrays: int8 weights (out, in, k, k), int32 bias and float32
// requantisation multipliers (unused, and may be absent, for a raw layer).
QConvLayer qconv_layer(const py::array& w_, const py::array& b_, const py::array* s_, int in_zp, int out_zp,
                       int shuffle, bool raw, const std::string& what) {
    auto w = expect<int8_t>(w_, (what + " weight (int8)").c_str(), 4);
    auto b = expect<int32_t>(b_, (what + " bias (int32)").c_str(), 1);
    if (w.shape(2) != w.shape(3)) throw ArgumentError(what + ": int8 convolutions need square kernels");
    QConvLayer L;
    L.cout = int(w.shape(0));
    L.cin = int(w.shape(1));
    L.k = int(w.shape(2));
    L.weight.assign(w.data(), w.data() + w.size());
    L.bias.assign(b.data(), b.data() + b.size());
    if (raw || s_ == nullptr) {
        L.scale.assign(size_t(L.cout), 1.f);
    } else {
        auto sc = expect<float>(*s_, (what + " scale").c_str(), 1);
        L.scale.assign(sc.data(), sc.data() + sc.size());
    }
    L.in_zp = in_zp;
    L.out_zp = out_zp;
    L.shuffle = shuffle;
    L.raw = raw;
    return L;
}

struct CoderSet {
    std::vector<SymbolCoder> coders;
};

// A latent (1, C, H, W) with a same-shaped companion and a per-channel vector; returns (C, H*W).
std::pair<size_t, size_t> latent_shape(const py::array& a, const py::array& same, const py::array& per_channel,
                                       const char* what) {
    const size_t C = a.shape(1), plane = a.shape(2) * a.shape(3);
    if (a.shape(0) != 1 || a.size() != same.size() || size_t(per_channel.size()) != C)
        throw ArgumentError(std::string(what) + " must have equal shapes (1, C, H, W) and a C-entry channel vector");
    return {C, plane};
}

ScaleGrid make_grid(float log_min, float inv_step, int nbins) {
    if (nbins < 1 || nbins > 256) throw ArgumentError("nbins must be in 1..256");
    ScaleGrid g;
    g.log_min = log_min;
    g.inv_step = inv_step;
    g.nbins = nbins;
    return g;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastcodec native core (private; use the fastcodec package)";

    // The one place where C++ errors become the package's Python exceptions.
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const FormatError& e) {
            py::object cls = py::module_::import("fastcodec.errors").attr("FormatError");
            PyErr_SetString(cls.ptr(), e.what());
        } catch (const ArgumentError& e) {
            py::object cls = py::module_::import("fastcodec.errors").attr("ArgumentError");
            PyErr_SetString(cls.ptr(), e.what());
        } catch (const std::bad_alloc&) {
            py::object cls = py::module_::import("fastcodec.errors").attr("ResourceError");
            PyErr_SetString(cls.ptr(), "out of memory in the native core");
        }
    });

    m.def("pixels_to_tensor",
          [](py::array img, size_t ph, size_t pw) {
              if (!py::isinstance<py::array_t<uint8_t>>(img) || img.dtype().kind() != 'u' || img.itemsize() != 1)
                  throw ArgumentError("pixels must be a uint8 array");
              if (img.ndim() != 3 || img.shape(2) != 3)
                  throw ArgumentError("pixels must have shape (height, width, 3)");
              const size_t h = img.shape(0), w = img.shape(1);
              if (h == 0 || w == 0) throw ArgumentError("image must be at least 1x1 pixels");
              if (ph < h || pw < w || ph * pw > (size_t(1) << 31))
                  throw ArgumentError("invalid padded size");
              py::array_t<float> out({ssize_t(1), ssize_t(3), ssize_t(ph), ssize_t(pw)});
              const uint8_t* src = static_cast<const uint8_t*>(img.data());
              const ptrdiff_t rs = img.strides(0), cs = img.strides(1), chs = img.strides(2);
              float* dst = out.mutable_data();
              {
                  py::gil_scoped_release nogil;
                  pixels_to_tensor(src, h, w, rs, cs, chs, dst, ph, pw);
              }
              return out;
          },
          py::arg("pixels"), py::arg("padded_height"), py::arg("padded_width"));

    m.def("pixel_encode_stripe",
          [](py::array img, int max_error, bool want_recon, bool matches, bool contexts2) -> py::tuple {
              if (img.dtype().kind() != 'u' || (img.itemsize() != 1 && img.itemsize() != 2))
                  throw ArgumentError("pixels must be a uint8 or uint16 array");
              if (img.ndim() != 3 || (img.shape(2) != 1 && img.shape(2) != 3))
                  throw ArgumentError("pixels must have shape (rows, width, 1 or 3)");
              const int rows = int(img.shape(0)), w = int(img.shape(1)), c = int(img.shape(2));
              if (img.itemsize() == 2) {  // 16-bit samples: a stripe of a file with flag bit 1, no copies
                  if (img.strides(0) % 2 || img.strides(1) % 2 || img.strides(2) % 2)
                      throw ArgumentError("uint16 pixels must have strides of whole elements");
                  const uint16_t* src = static_cast<const uint16_t*>(img.data());
                  py::array_t<uint16_t> recon;
                  uint16_t* rp = nullptr;
                  if (want_recon) {
                      recon = py::array_t<uint16_t>({ssize_t(rows), ssize_t(w), ssize_t(c)});
                      rp = recon.mutable_data();
                  }
                  std::vector<uint8_t> out;
                  PixelStripeStats st;
                  {
                      py::gil_scoped_release nogil;  // img stays alive on this frame; see the top
                      out = pixel_encode_stripe16(src, img.strides(0) / 2, img.strides(1) / 2, img.strides(2) / 2, w,
                                                  rows, c, max_error, rp, &st, contexts2);
                  }
                  py::bytes b(reinterpret_cast<const char*>(out.data()), out.size());
                  return py::make_tuple(b, want_recon ? py::object(recon) : py::object(py::none()),
                                        st.header_bits, st.data_bits, false, st.plain_bits);
              }
              const uint8_t* src = static_cast<const uint8_t*>(img.data());
              const ptrdiff_t rs = img.strides(0), cs = img.strides(1), chs = img.strides(2);
              py::array_t<uint8_t> recon;
              uint8_t* rp = nullptr;
              if (want_recon) {
                  recon = py::array_t<uint8_t>({ssize_t(rows), ssize_t(w), ssize_t(c)});
                  rp = recon.mutable_data();
              }
              std::vector<uint8_t> out;
              PixelStripeStats st;
              bool used = false;
              {
                  py::gil_scoped_release nogil;  // img stays alive on this frame; see the top
                  out = pixel_encode_stripe(src, rs, cs, chs, w, rows, c, max_error, rp, &st, matches, &used, contexts2);
              }
              py::bytes b(reinterpret_cast<const char*>(out.data()), out.size());
              return py::make_tuple(b, want_recon ? py::object(recon) : py::object(py::none()),
                                    st.header_bits, st.data_bits, used, st.plain_bits);
          },
          py::arg("pixels"), py::arg("max_error"), py::arg("recon") = false, py::arg("matches") = false,
          py::arg("contexts2") = false,
          "codes a stripe of pixels (rows, width, 1 or 3) uint8, any strides; returns (bytes, the "
          "decoded pixels or None, table bits, sample bits, whether it has copies: then it starts "
          "with the mode bit 1, else it has no mode bit; the bits it would take without copies). "
          "uint16 pixels: a stripe of a 16-bit file (flag bit 1), never with copies; contexts2: a stripe of a "
          "file with flag bit 2");

    m.def("pixel_decode_stripe",
          [](py::buffer data, int width, int rows, int channels, int max_error, py::object out_obj,
             bool mode_bit, bool deep, bool contexts2) -> py::object {
              py::buffer_info bi = data.request();
              if (bi.itemsize != 1 || bi.ndim != 1) throw ArgumentError("data must be a 1-D byte buffer");
              const uint8_t* dp = static_cast<const uint8_t*>(bi.ptr);
              const size_t n = size_t(bi.size);
              if (rows < 1 || width < 1 || (channels != 1 && channels != 3))
                  throw ArgumentError("pixel_decode_stripe: rows and width must be >= 1, channels 1 or 3");
              if (deep) {  // 16-bit samples (flag bit 1)
                  if (mode_bit) throw ArgumentError("pixel_decode_stripe: 16-bit stripes have no mode bit");
                  carray<uint16_t> out = stripe_out<uint16_t>(out_obj, rows, width, channels);
                  uint16_t* op = out.mutable_data();
                  {
                      py::gil_scoped_release nogil;  // data and out stay alive on this frame
                      pixel_decode_stripe16(dp, n, width, rows, channels, max_error, op, ptrdiff_t(width) * channels,
                                            contexts2);
                  }
                  return std::move(out);
              }
              carray<uint8_t> out = stripe_out<uint8_t>(out_obj, rows, width, channels);
              uint8_t* op = out.mutable_data();
              {
                  py::gil_scoped_release nogil;  // data and out stay alive on this frame
                  pixel_decode_stripe(dp, n, width, rows, channels, max_error, op,
                                      ptrdiff_t(width) * channels, mode_bit, contexts2);
              }
              return out;
          },
          py::arg("data"), py::arg("width"), py::arg("rows"), py::arg("channels"), py::arg("max_error"),
          py::arg("out") = py::none(), py::arg("mode_bit") = false, py::arg("deep") = false,
          py::arg("contexts2") = false,
          "decodes a stripe into a new (rows, width, channels) uint8 array, or into out (C-contiguous); "
          "mode_bit: the file's flag bit 0 (the stripe starts with a bit saying whether it has copies); "
          "deep: the file's flag bit 1 (16-bit samples: a uint16 array); contexts2: its flag bit 2");

    m.def("png_unfilter",
          [](py::buffer data, size_t rows, size_t row_bytes, int bpp) {
              py::buffer_info bi = data.request();
              if (bi.itemsize != 1 || bi.ndim != 1) throw ArgumentError("data must be a 1-D byte buffer");
              if (rows == 0 || row_bytes == 0 || size_t(bi.size) != rows * (row_bytes + 1))
                  throw ArgumentError("png_unfilter: the data must be rows x (1 + row bytes) bytes");
              py::array_t<uint8_t> out({ssize_t(rows), ssize_t(row_bytes)});
              const uint8_t* src = static_cast<const uint8_t*>(bi.ptr);
              uint8_t* dst = out.mutable_data();
              const size_t n = size_t(bi.size);
              {
                  py::gil_scoped_release nogil;  // data and out stay alive on this frame
                  png_unfilter(src, n, rows, row_bytes, bpp, dst);
              }
              return out;
          },
          py::arg("data"), py::arg("rows"), py::arg("row_bytes"), py::arg("bpp"),
          "PNG's row filters undone: rows x (1 + row_bytes) bytes -> a (rows, row_bytes) uint8 array");

    m.def("tensor_to_pixels",
          [](py::array t, size_t h, size_t w) {
              auto a = expect<float>(t, "tensor", 4);
              if (a.shape(0) != 1 || a.shape(1) != 3) throw ArgumentError("tensor must have shape (1, 3, H, W)");
              const size_t ph = a.shape(2), pw = a.shape(3);
              if (h == 0 || w == 0 || h > ph || w > pw) throw ArgumentError("crop size out of range");
              py::array_t<uint8_t> out({ssize_t(h), ssize_t(w), ssize_t(3)});
              const float* src = a.data();
              uint8_t* dst = out.mutable_data();
              {
                  py::gil_scoped_release nogil;
                  tensor_to_pixels(src, ph, pw, dst, h, w);
              }
              return out;
          },
          py::arg("tensor"), py::arg("height"), py::arg("width"));

    m.def("quantize_latent", [](py::array y, py::array gain, py::array mu) {
        auto ya = expect<float>(y, "y", 4);
        auto ga = expect<float>(gain, "gain", 1);
        auto ma = expect<float>(mu, "mu", 4);
        const auto [C, plane] = latent_shape(ya, ma, ga, "y and mu");
        py::array_t<int32_t> r(ya.request().shape);
        const float *yp = ya.data(), *gp = ga.data(), *mp = ma.data();
        int32_t* rp = r.mutable_data();
        {
            py::gil_scoped_release nogil;
            quantize_latent(yp, gp, mp, C, plane, rp);
        }
        return r;
    });

    m.def("dequantize_latent", [](py::array r, py::array mu, py::array igain) {
        auto ra = expect<int32_t>(r, "r", 4);
        auto ma = expect<float>(mu, "mu", 4);
        auto ga = expect<float>(igain, "igain", 1);
        const auto [C, plane] = latent_shape(ra, ma, ga, "r and mu");
        py::array_t<float> out(ra.request().shape);
        const int32_t* rp = ra.data();
        const float *mp = ma.data(), *gp = ga.data();
        float* op = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            dequantize_latent(rp, mp, gp, C, plane, op);
        }
        return out;
    });

    m.def("huffman_code_lengths",
          [](const std::vector<uint32_t>& freqs, int max_len) { return huffman_code_lengths(freqs, max_len); },
          py::arg("freqs"), py::arg("max_len"));

    m.def("run_class_base", &SymbolCoder::run_class_base);
    m.def("run_class_extra_bits", &SymbolCoder::run_class_extra_bits);

    py::class_<HyperScale>(m, "HyperScale")
        .def(py::init([](py::list layers, float log_lo, float log_hi) {
                 std::vector<ConvLayer> ls;
                 for (py::handle h : layers) {
                     auto t = h.cast<py::tuple>();
                     if (t.size() != 4) throw ArgumentError("layer must be (weight, bias, shuffle, relu)");
                     auto w = expect<float>(t[0].cast<py::array>(), "weight", 4);
                     auto b = expect<float>(t[1].cast<py::array>(), "bias", 1);
                     if (w.shape(2) != 3 || w.shape(3) != 3) throw ArgumentError("weights must be 3x3 kernels");
                     ConvLayer L;
                     L.cout = int(w.shape(0));
                     L.cin = int(w.shape(1));
                     L.weight.assign(w.data(), w.data() + w.size());
                     L.bias.assign(b.data(), b.data() + b.size());
                     L.shuffle = t[2].cast<int>();
                     L.relu = t[3].cast<bool>();
                     ls.push_back(std::move(L));
                 }
                 return std::make_unique<HyperScale>(std::move(ls), log_lo, log_hi);
             }),
             py::arg("layers"), py::arg("log_lo"), py::arg("log_hi"))
        .def("bins",
             [](const HyperScale& hs, py::array z, float log_min, float inv_step, int nbins, int threads) {
                 auto za = expect<int32_t>(z, "z", 4);
                 if (za.shape(0) != 1) throw ArgumentError("z must have shape (1, C, h, w)");
                 const int C = int(za.shape(1)), h = int(za.shape(2)), w = int(za.shape(3));
                 const int s = hs.upscale();
                 ScaleGrid grid = make_grid(log_min, inv_step, nbins);
                 py::array_t<uint8_t> out({ssize_t(1), ssize_t(hs.out_channels()), ssize_t(h) * s, ssize_t(w) * s});
                 const int32_t* zp = za.data();
                 uint8_t* op = out.mutable_data();
                 {
                     py::gil_scoped_release nogil;
                     hs.bins(zp, C, h, w, grid, op, threads);
                 }
                 return out;
             },
             py::arg("z"), py::arg("log_min"), py::arg("inv_step"), py::arg("nbins"), py::arg("threads") = 1)
        .def("log_scales", [](const HyperScale& hs, py::array z, int threads) {
            auto za = expect<int32_t>(z, "z", 4);
            const int C = int(za.shape(1)), h = int(za.shape(2)), w = int(za.shape(3));
            const int s = hs.upscale();
            std::vector<float> v;
            const int32_t* zp = za.data();
            {
                py::gil_scoped_release nogil;
                v = hs.log_scales(zp, C, h, w, threads);
            }
            py::array_t<float> out({ssize_t(1), ssize_t(hs.out_channels()), ssize_t(h) * s, ssize_t(w) * s});
            std::copy(v.begin(), v.end(), out.mutable_data());
            return out;
        }, py::arg("z"), py::arg("threads") = 1);

    py::class_<Net> net(m, "Net");
    net.def(py::init([](py::list ops, int in_channels) {
                 std::vector<NetOp> v;
                 for (py::handle h : ops) {
                     auto t = h.cast<py::tuple>();
                     if (t.size() < 1) throw ArgumentError("a Net operation is a tuple that starts with its name");
                     const std::string kind = t[0].cast<std::string>();
                     NetOp op;
                     if (kind == "conv" || kind == "igdn") {
                         if (t.size() != (kind == "conv" ? 5u : 3u))
                             throw ArgumentError("Net operations: ('conv', weight, bias, shuffle, relu) or "
                                                 "('igdn', gamma, beta)");
                         auto w = expect<float>(t[1].cast<py::array>(), "weight", 4);
                         auto b = expect<float>(t[2].cast<py::array>(), "bias", 1);
                         if (w.shape(2) != w.shape(3) || (w.shape(2) != 1 && w.shape(2) != 3))
                             throw ArgumentError("Net convolutions must have 1x1 or 3x3 kernels");
                         op.kind = kind == "conv" ? NetOp::conv : NetOp::igdn;
                         op.layer.cout = int(w.shape(0));
                         op.layer.cin = int(w.shape(1));
                         op.layer.k = int(w.shape(2));
                         op.layer.weight.assign(w.data(), w.data() + w.size());
                         op.layer.bias.assign(b.data(), b.data() + b.size());
                         if (kind == "conv") {
                             op.layer.shuffle = t[3].cast<int>();
                             op.layer.relu = t[4].cast<bool>();
                         }
                     } else if (kind == "unshuffle") {
                         if (t.size() != 2) throw ArgumentError("Net operation ('unshuffle', r)");
                         op.kind = NetOp::unshuffle;
                         op.r = t[1].cast<int>();
                     } else if (kind == "push" || kind == "add" || kind == "plane") {
                         op.kind = kind == "push" ? NetOp::push : kind == "add" ? NetOp::add : NetOp::plane;
                     } else {
                         throw ArgumentError("unknown Net operation '" + kind +
                                             "'; known: conv, igdn, unshuffle, push, add, plane");
                     }
                     v.push_back(std::move(op));
                 }
                 return std::make_unique<Net>(std::move(v), in_channels);
             }),
             py::arg("ops"), py::arg("in_channels"));
    bind_executor(net);

    py::class_<QSynthesis> qsyn(m, "QSynthesis");
    qsyn.def(py::init([](py::tuple head, py::list ops, py::tuple tail, py::list wide) {
                 auto float_layer = [](py::handle w_, py::handle b_, const char* what) {
                     auto w = expect<float>(w_.cast<py::array>(), what, 4);
                     auto b = expect<float>(b_.cast<py::array>(), what, 1);
                     if (w.shape(2) != 3 || w.shape(3) != 3)
                         throw ArgumentError(std::string(what) + ": a 3x3 convolution is needed");
                     ConvLayer L;
                     L.cout = int(w.shape(0));
                     L.cin = int(w.shape(1));
                     L.k = 3;
                     L.shuffle = 2;
                     L.weight.assign(w.data(), w.data() + w.size());
                     L.bias.assign(b.data(), b.data() + b.size());
                     return L;
                 };
                 auto qlayer = [](py::handle w_, py::handle b_, py::handle s_, int in_zp, int out_zp, int shuffle) {
                     const py::array sc = s_.cast<py::array>();
                     return qconv_layer(w_.cast<py::array>(), b_.cast<py::array>(), &sc, in_zp, out_zp, shuffle,
                                        false, "int8 convolution");
                 };
                 auto table = [](py::handle t_, const char* what) {
                     auto t = expect<uint8_t>(t_.cast<py::array>(), what, -1);
                     return std::vector<uint8_t>(t.data(), t.data() + t.size());
                 };
                 auto ftable = [](py::handle t_, const char* what) {
                     auto t = expect<float>(t_.cast<py::array>(), what, 1);
                     return std::vector<float>(t.data(), t.data() + t.size());
                 };
                 if (head.size() != 4) throw ArgumentError("QSynthesis head: (weight, bias, scale, zero_point)");
                 QHead H;
                 H.conv = float_layer(head[0], head[1], "head weight/bias");
                 H.scale = head[2].cast<float>();
                 H.zp = head[3].cast<int>();
                 std::vector<QOp> v;
                 for (py::handle h : ops) {
                     auto t = h.cast<py::tuple>();
                     if (t.size() < 1) throw ArgumentError("a QSynthesis operation is a tuple that starts with its name");
                     const std::string kind = t[0].cast<std::string>();
                     QOp op;
                     if (kind == "igdn") {
                         if (t.size() != 7 && t.size() != 8)
                             throw ArgumentError("QSynthesis operation ('igdn', abs_table, gamma, bias, scale, "
                                                 "norm_zero_point, mul_table[, (za, sa, zb, sb, sc, zc)])");
                         op.kind = QOp::igdn;
                         op.abs_table = table(t[1], "abs_table");
                         op.layer = qlayer(t[2], t[3], t[4], 0, t[5].cast<int>(), 1);
                         op.mul_table = table(t[6], "mul_table");
                         if (t.size() == 8 && !t[7].is_none()) {
                             auto p = t[7].cast<py::tuple>();
                             if (p.size() != 6) throw ArgumentError("igdn mul parameters: (za, sa, zb, sb, sc, zc)");
                             op.has_mul_params = true;
                             op.za = p[0].cast<int>();
                             op.sa = p[1].cast<float>();
                             op.zb = p[2].cast<int>();
                             op.sb = p[3].cast<float>();
                             op.sc = p[4].cast<float>();
                             op.zc = p[5].cast<int>();
                         }
                     } else if (kind == "qconv") {
                         if (t.size() != 7)
                             throw ArgumentError("QSynthesis operation ('qconv', weight, bias, scale, in_zero_point, "
                                                 "out_zero_point, shuffle)");
                         op.kind = QOp::qconv;
                         op.layer = qlayer(t[1], t[2], t[3], t[4].cast<int>(), t[5].cast<int>(), t[6].cast<int>());
                     } else {
                         throw ArgumentError("unknown QSynthesis operation '" + kind + "'; known: igdn, qconv");
                     }
                     v.push_back(std::move(op));
                 }
                 if (tail.size() != 6)
                     throw ArgumentError("QSynthesis tail: (weight, mult, add, in_zero_point, out_zero_point, out_dequant)");
                 QTail T;
                 {
                     auto w = expect<int16_t>(tail[0].cast<py::array>(), "tail weight", 4);
                     if (w.shape(2) != 3 || w.shape(3) != 3) throw ArgumentError("QSynthesis tail: a 3x3 convolution is needed");
                     T.cout = int(w.shape(0));
                     T.cin = int(w.shape(1));
                     T.weight.assign(w.data(), w.data() + w.size());
                 }
                 T.mult = ftable(tail[1], "mult");
                 T.add = ftable(tail[2], "add");
                 T.in_zp = tail[3].cast<int>();
                 T.out_zp = tail[4].cast<int>();
                 T.out_dequant = ftable(tail[5], "out_dequant");
                 std::vector<QWide> wv;
                 for (py::handle h : wide) {
                     auto t = h.cast<py::tuple>();
                     if (t.size() != 9)
                         throw ArgumentError("a QSynthesis wide stage is (gamma, beta, scale, zero_point, weight, bias, "
                                             "mult, out_zero_point, float_out)");
                     QWide st;
                     auto g = expect<float>(t[0].cast<py::array>(), "wide gamma", 4);
                     auto b = expect<float>(t[1].cast<py::array>(), "wide beta", 1);
                     if (g.shape(2) != 1 || g.shape(3) != 1) throw ArgumentError("wide gamma: a 1x1 convolution is needed");
                     st.gdn.cout = int(g.shape(0));
                     st.gdn.cin = int(g.shape(1));
                     st.gdn.k = 1;
                     st.gdn.weight.assign(g.data(), g.data() + g.size());
                     st.gdn.bias.assign(b.data(), b.data() + b.size());
                     st.scale = t[2].cast<float>();
                     st.zp = t[3].cast<int>();
                     const py::array mult = t[6].cast<py::array>();
                     st.conv = qconv_layer(t[4].cast<py::array>(), t[5].cast<py::array>(), &mult, 0, t[7].cast<int>(), 2,
                                           false, "wide convolution");
                     st.float_out = t[8].cast<bool>();
                     wv.push_back(std::move(st));
                 }
                 return std::make_unique<QSynthesis>(std::move(H), std::move(v), std::move(T), std::move(wv));
             }),
             py::arg("head"), py::arg("ops"), py::arg("tail"), py::arg("wide") = py::list())
        .def_property_readonly("arithmetic", &QSynthesis::arithmetic,
                               "per igdn: whether its |x| and its product are computed instead of looked up");
    bind_executor(qsyn);

    py::class_<QFilter> qfilt(m, "QFilter");
    qfilt.def(py::init([](py::dict d) {
                  auto get = [&](const char* k) -> py::array {
                      if (!d.contains(k)) throw ArgumentError(std::string("QFilter: the array '") + k + "' is missing");
                      return d[k].cast<py::array>();
                  };
                  auto layer = [&](const std::string& name, int in_zp, int out_zp, int shuffle, bool raw) {
                      const py::array sc = raw ? py::array() : get((name + ".scale").c_str());
                      return qconv_layer(get((name + ".w").c_str()), get((name + ".b").c_str()), raw ? nullptr : &sc,
                                         in_zp, out_zp, shuffle, raw, "QFilter " + name);
                  };
                  auto scalar = [&](const char* k) {
                      auto a = expect<int32_t>(get(k), k, 0);
                      return int(*a.data());
                  };
                  auto floats = [&](const char* k) {
                      auto a = expect<float>(get(k), k, 1);
                      return std::vector<float>(a.data(), a.data() + a.size());
                  };
                  QFilterSpec S;
                  S.inc = layer("inc", 0, 0, 1, false);
                  S.down = layer("down", 0, 0, 1, false);
                  for (int k = 0; d.contains(("mid" + std::to_string(k) + ".w").c_str()); ++k)
                      S.mids.push_back(layer("mid" + std::to_string(k), 0, 0, 1, false));
                  S.up = layer("up", 0, scalar("up.zp"), 2, false);
                  {
                      auto t = expect<uint8_t>(get("add_table"), "add_table", 1);
                      S.add_table.assign(t.data(), t.data() + t.size());
                  }
                  S.dec = layer("dec", scalar("s.zp"), 0, 1, false);
                  S.out = layer("out", 0, 0, 1, true);
                  S.mult = floats("out.mult");
                  S.add = floats("out.add");
                  return std::make_unique<QFilter>(std::move(S));
              }),
              py::arg("arrays"),
              "the exact int8 post-filter from the arrays of postfilter_int8.npz (name -> array)");
    bind_executor(qfilt);
    m.def("qconv_kernel", &qconv_kernel_name, "the int8 convolution kernel this machine runs");

    m.def("det_interp", &det_interp, py::arg("a"), py::arg("b"), py::arg("t"),
          "exp((1 - t) log a + t log b) computed by a fixed IEEE-754 sequence (no libm), as float32");

    py::class_<CoderSet>(m, "CoderSet")
        .def(py::init([](py::list specs) {
                 auto cs = std::make_unique<CoderSet>();
                 for (py::handle h : specs) {
                     auto t = h.cast<py::tuple>();
                     if (t.size() != 5) throw ArgumentError("coder spec must be (mode, vmin, vmax, nruns, freqs)");
                     SymbolTableSpec s;
                     s.mode = t[0].cast<int>();
                     s.vmin = t[1].cast<int32_t>();
                     s.vmax = t[2].cast<int32_t>();
                     s.nruns = t[3].cast<int>();
                     s.freqs = t[4].cast<std::vector<uint32_t>>();
                     cs->coders.emplace_back(s);
                 }
                 if (cs->coders.empty() || cs->coders.size() > 256)
                     throw ArgumentError("a coder set holds 1..256 coders");
                 return cs;
             }),
             py::arg("specs"))
        .def("__len__", [](const CoderSet& c) { return c.coders.size(); })
        .def("encode",
             [](const CoderSet& c, py::array values, py::array groups) {
                 auto va = expect<int32_t>(values, "values", -1);
                 auto ga = expect<uint8_t>(groups, "groups", -1);
                 if (va.size() != ga.size()) throw ArgumentError("values and groups must have the same size");
                 std::vector<uint8_t> out;
                 const int32_t* vp = va.data();
                 const uint8_t* gp = ga.data();
                 const size_t n = va.size();
                 {
                     py::gil_scoped_release nogil;
                     out = encode_grouped(vp, gp, n, c.coders);
                 }
                 return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
             })
        .def("code_length",
             [](const CoderSet& c, py::array values, py::array groups) {
                 auto va = expect<int32_t>(values, "values", -1);
                 auto ga = expect<uint8_t>(groups, "groups", -1);
                 if (va.size() != ga.size()) throw ArgumentError("values and groups must have the same size");
                 const int32_t* vp = va.data();
                 const uint8_t* gp = ga.data();
                 const size_t n = va.size();
                 py::gil_scoped_release nogil;
                 return grouped_code_length(vp, gp, n, c.coders);
             })
        .def("decode", [](const CoderSet& c, py::buffer data, py::array groups) {
            py::buffer_info bi = data.request();
            if (bi.itemsize != 1 || bi.ndim != 1) throw ArgumentError("data must be a 1-D bytes-like object");
            auto ga = expect<uint8_t>(groups, "groups", -1);
            py::array_t<int32_t> out(ga.request().shape);
            const uint8_t* dp = static_cast<const uint8_t*>(bi.ptr);
            const size_t size = bi.size, n = ga.size();
            const uint8_t* gp = ga.data();
            int32_t* op = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                decode_grouped(dp, size, gp, n, c.coders, op);
            }
            return out;
        });
}
