// Run-time shape checks of the reassembly ops, shared by every framework's
// glue: each glue hands the tensor shapes it received to these functions and
// turns a non-empty message into its own error type. The messages use the
// public API's names (scale_factor, stride, kernel_size, group_size), so a
// bad shape reads the same on TensorFlow, JAX and PyTorch.
#ifndef KERAS_CARAFE_CSRC_KERNELS_CARAFE_SHAPES_H_
#define KERAS_CARAFE_CSRC_KERNELS_CARAFE_SHAPES_H_

#include <cstdint>
#include <sstream>
#include <string>

#include "carafe_geometry.h"

namespace keras_carafe {

// The attributes of one op: `scale` > 1 upsamples (CARAFE), `stride` > 1
// downsamples (CARAFE++), the other one is 1.
struct Attributes {
  int64_t scale;
  int64_t stride;
  int64_t kernel_size;
  int64_t groups;

  bool upsampling() const { return stride == 1; }
  // The factor the public API names, for messages.
  const char* factor_name() const { return upsampling() ? "scale_factor" : "stride"; }
  int64_t factor() const { return upsampling() ? scale : stride; }
};

// A tensor's dimensions as the glue sees them. Messages print at most
// kMaxPrintedDims of them, so glues may copy no more than that.
constexpr int kMaxPrintedDims = 8;
struct Dims {
  const int64_t* sizes;
  int rank;
};

namespace shapes_internal {

inline std::string Text(Dims d) {
  std::ostringstream out;
  out << "[";
  for (int i = 0; i < d.rank && i < kMaxPrintedDims; ++i) out << (i ? "," : "") << d.sizes[i];
  out << (d.rank > kMaxPrintedDims ? ",...]" : "]");
  return out.str();
}

template <typename... Parts>
std::string Concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

}  // namespace shapes_internal

// Why the attributes cannot describe any problem, or "".
inline std::string CheckAttributes(const Attributes& a) {
  using shapes_internal::Concat;
  if (a.scale < 1 || a.stride < 1)
    return Concat(a.factor_name(), " must be >= 1, got ", a.scale < 1 ? a.scale : a.stride);
  if (a.scale > 1 && a.stride > 1) return "scale and stride cannot both exceed 1";
  if (a.kernel_size < 1 || a.kernel_size % 2 == 0)
    return Concat("kernel_size must be odd and >= 1, got ", a.kernel_size);
  if (a.groups < 1) return Concat("group_size must be >= 1, got ", a.groups);
  return "";
}

// Checks `features` (N, H, W, C) and, unless `kernels.sizes` is null,
// `kernels` (N, OH, OW, G*k*k) against the attributes; fills `*g` and
// returns "" when they fit, else the reason.
inline std::string CheckReassembly(const Attributes& a, Dims features, Dims kernels,
                                   CarafeGeometry* g) {
  using shapes_internal::Concat;
  using shapes_internal::Text;
  const bool up = a.upsampling();
  std::string error = CheckAttributes(a);
  if (!error.empty()) return error;
  if (features.rank != 4)
    return Concat("features must have rank 4 (N, H, W, C), got shape ", Text(features));
  if (kernels.sizes != nullptr && kernels.rank != 4)
    return Concat("kernels must have rank 4 (N, ", up ? "H*s, W*s" : "ceil(H/s), ceil(W/s)",
                  ", G*k*k), got shape ", Text(kernels));
  *g = CarafeGeometry{features.sizes[0], features.sizes[1], features.sizes[2],
                      features.sizes[3], a.scale, a.stride, a.kernel_size, a.groups};
  // Huge attributes must not wrap the sizes that the checks below compare.
  int64_t product;
  if (up && (__builtin_mul_overflow(g->in_h, a.scale, &product) ||
             __builtin_mul_overflow(g->in_w, a.scale, &product)))
    return Concat("scale_factor (", a.scale, ") times the features spatial size (", g->in_h,
                  ", ", g->in_w, ") overflows int64");
  if (__builtin_mul_overflow(a.kernel_size, a.kernel_size, &product) ||
      __builtin_mul_overflow(product, a.groups, &product))
    return Concat("group_size * kernel_size^2 overflows int64 (kernel_size ", a.kernel_size,
                  ", group_size ", a.groups, ")");
  if (g->channels % a.groups != 0)
    return Concat("features channels (", g->channels, ") must be divisible by group_size (",
                  a.groups, ")");
  if (kernels.sizes != nullptr) {
    if (kernels.sizes[0] != g->batch)
      return Concat("kernels batch (", kernels.sizes[0], ") must equal features batch (",
                    g->batch, ")");
    if (kernels.sizes[1] != g->out_h() || kernels.sizes[2] != g->out_w())
      return Concat("kernels spatial size must be (", g->out_h(), ", ", g->out_w(), ") = ",
                    up ? "scale_factor * features spatial size"
                       : "ceil(features spatial size / stride)",
                    ", got (", kernels.sizes[1], ", ", kernels.sizes[2], ")");
    if (kernels.sizes[3] != g->kernel_channels())
      return Concat("kernels channels must be group_size * kernel_size^2 = ",
                    g->kernel_channels(), ", got ", kernels.sizes[3]);
  }
  if (const char* reason = GeometryError(*g))
    return Concat("unsupported CARAFE problem (features shape ", Text(features), "): ", reason);
  return "";
}

// "" when `tensor` has exactly the dimensions `expected` (rank 4), else a
// message naming it.
inline std::string CheckDims(const char* name, Dims tensor, const int64_t (&expected)[4],
                             const char* what) {
  bool same = tensor.rank == 4;
  for (int i = 0; same && i < 4; ++i) same = tensor.sizes[i] == expected[i];
  if (same) return "";
  return shapes_internal::Concat(name, " must have ", what, " ",
                                 shapes_internal::Text(Dims{expected, 4}), ", got ",
                                 shapes_internal::Text(tensor));
}

// The output shape (N, OH, OW, C) of a checked geometry.
inline void OutputDims(const CarafeGeometry& g, int64_t (&out)[4]) {
  out[0] = g.batch;
  out[1] = g.out_h();
  out[2] = g.out_w();
  out[3] = g.channels;
}

// The kernels shape (N, OH, OW, G*k*k) of a checked geometry.
inline void KernelDims(const CarafeGeometry& g, int64_t (&out)[4]) {
  out[0] = g.batch;
  out[1] = g.out_h();
  out[2] = g.out_w();
  out[3] = g.kernel_channels();
}

// Checks the operands of `map` (see carafe_geometry.h) and, unless `result.sizes` is
// null, its result, and fills `*g`; "" when they fit. The features gradient needs its
// result (the features' shape): its operands do not fix the features' height and width
// when downsampling.
inline std::string CheckMap(Map map, const Attributes& a, Dims first, Dims second, Dims result,
                            CarafeGeometry* g) {
  if (map == Map::kFeaturesGrad && result.sizes == nullptr)
    return "the features gradient needs the features' shape";
  int64_t expected[4];
  std::string error;
  switch (map) {
    case Map::kForward:
      error = CheckReassembly(a, first, second, g);
      if (!error.empty() || result.sizes == nullptr) return error;
      OutputDims(*g, expected);
      return CheckDims("output", result, expected, "the shape");
    case Map::kFeaturesGrad:
      error = CheckReassembly(a, result, second, g);
      break;
    case Map::kKernelsGrad:
      error = CheckReassembly(a, second, result, g);
      break;
  }
  if (!error.empty()) return error;
  OutputDims(*g, expected);
  return CheckDims("grad_output", first, expected, "the output shape");
}

}  // namespace keras_carafe

#endif  // KERAS_CARAFE_CSRC_KERNELS_CARAFE_SHAPES_H_
