// Sizes of one CARAFE reassembly problem, shared by the CPU and CUDA kernels
// of both directions.
//
// Layout contract (channels-last):
//   features: (batch, in_h, in_w, channels)
//   kernels:  (batch, out_h, out_w, groups * kernel_size^2),
//             channel index = group * kernel_size^2 + ky * kernel_size + kx
//   output:   (batch, out_h, out_w, channels)
//
//   output[n, oh, ow, c] = sum_{ky, kx} kernels[n, oh, ow, g * k * k + ky * k + kx]
//                          * features[n, cy(oh) + ky - r, cx(ow) + kx - r, c]
//   with g = c / (channels / groups), r = (k - 1) / 2, zero outside the image.
//
// Both directions are one geometry: the output is a grid of cells, cell
// (i, j) is centred on input pixel (i * stride, j * stride) and holds
// scale x scale output pixels that all read the neighbourhood of that centre.
//   upsampling (CARAFE):     stride = 1, out = in * scale,         cy(oh) = oh / scale
//   downsampling (CARAFE++): scale = 1,  out = ceil(in / stride),  cy(oh) = oh * stride
#ifndef KERAS_CARAFE_CSRC_KERNELS_CARAFE_GEOMETRY_H_
#define KERAS_CARAFE_CSRC_KERNELS_CARAFE_GEOMETRY_H_

#include <cstdint>

#if defined(__CUDACC__)
#define CARAFE_HOST_DEVICE __host__ __device__
#else
#define CARAFE_HOST_DEVICE
#endif

namespace keras_carafe {

struct CarafeGeometry {
  int64_t batch;
  int64_t in_h;
  int64_t in_w;
  int64_t channels;
  int64_t scale;   // output pixels per cell along each axis (upsampling factor)
  int64_t stride;  // input pixels between cell centres (downsampling factor)
  int64_t kernel_size;
  int64_t groups;

  CARAFE_HOST_DEVICE int64_t cells_h() const { return (in_h + stride - 1) / stride; }
  CARAFE_HOST_DEVICE int64_t cells_w() const { return (in_w + stride - 1) / stride; }
  CARAFE_HOST_DEVICE int64_t out_h() const { return cells_h() * scale; }
  CARAFE_HOST_DEVICE int64_t out_w() const { return cells_w() * scale; }
  CARAFE_HOST_DEVICE int64_t radius() const { return (kernel_size - 1) / 2; }
  CARAFE_HOST_DEVICE int64_t taps() const { return kernel_size * kernel_size; }
  CARAFE_HOST_DEVICE int64_t group_channels() const { return channels / groups; }
  CARAFE_HOST_DEVICE int64_t kernel_channels() const { return groups * taps(); }
  CARAFE_HOST_DEVICE int64_t in_pixels() const { return batch * in_h * in_w; }
  CARAFE_HOST_DEVICE int64_t out_pixels() const { return batch * out_h() * out_w(); }

  // Input row (column) at the centre of the cell that output row (column) o belongs to.
  // One of scale and stride is 1: the branches skip a division where they can.
  CARAFE_HOST_DEVICE int64_t centre_of_output(int64_t o) const {
    return scale == 1 ? o * stride : (o / scale) * stride;
  }

  // The cell row (column) whose tap `tap` reads input row (column) `pos`, or
  // -1 when no cell does (its centre would be off the stride grid or outside
  // the cells).
  CARAFE_HOST_DEVICE int64_t cell_reading(int64_t pos, int64_t tap, int64_t cells) const {
    const int64_t centre = pos - tap + radius();
    if (centre < 0) return -1;
    if (stride == 1) return centre < cells ? centre : -1;
    if (centre % stride != 0) return -1;
    const int64_t cell = centre / stride;
    return cell < cells ? cell : -1;
  }
};

// The kernels index rows, columns, channels and taps with 32-bit integers, and
// form expressions up to an extent plus the kernel size, plus the scale or the
// stride, plus a few pixels (a row segment of the CUDA features gradient). Every
// size therefore stays at most kMaxIndex - IndexMargin(g), so that none of them
// can wrap.
constexpr int64_t kMaxIndex = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxKernelSize = 46339;  // kernel_size^2 < 2^31

CARAFE_HOST_DEVICE inline int64_t IndexMargin(const CarafeGeometry& g) {
  return g.kernel_size + (g.scale > g.stride ? g.scale : g.stride) + 8;
}

// Why `g` cannot be computed, or nullptr. The framework glue checks tensors
// against the geometry with messages in its own terms; this guards the
// kernels' own assumptions for every caller.
inline const char* GeometryError(const CarafeGeometry& g) {
  if (g.batch < 0 || g.in_h < 0 || g.in_w < 0 || g.channels < 0)
    return "sizes must be non-negative";
  if (g.in_h > kMaxIndex || g.in_w > kMaxIndex || g.channels > kMaxIndex ||
      g.scale > kMaxIndex || g.stride > kMaxIndex || g.kernel_size > kMaxKernelSize ||
      g.groups > kMaxIndex)
    return "a size exceeds 2^31 - 1 (kernel_size 46339)";
  if (g.scale < 1 || g.stride < 1) return "scale and stride must be >= 1";
  if (g.scale > 1 && g.stride > 1) return "scale and stride cannot both exceed 1";
  if (g.kernel_size < 1 || g.kernel_size % 2 == 0) return "kernel_size must be odd and >= 1";
  if (g.groups < 1 || g.channels % g.groups != 0)
    return "groups must be >= 1 and divide channels";
  if (g.out_h() > kMaxIndex || g.out_w() > kMaxIndex || g.kernel_channels() > kMaxIndex)
    return "an output size exceeds 2^31 - 1";
  const int64_t limit = kMaxIndex - IndexMargin(g);
  if (g.in_h > limit || g.in_w > limit || g.out_h() > limit || g.out_w() > limit ||
      g.channels > limit || g.scale > limit || g.stride > limit)
    return "a height, width, channel count or factor exceeds 2^31 - 1 - (kernel_size + "
           "max(scale, stride) + 8), the limit of the kernels' 32-bit indexing";
  return nullptr;
}

// Element types the kernels are built for; the launchers take untyped
// pointers so that callers need no CUDA headers.
enum class ScalarKind { kFloat32, kFloat64, kFloat16, kBFloat16 };

// Calls `launch(T())` with the element type of `kind`, `Half` and `BFloat16`
// standing for the 16-bit types of the caller (the CPU's bit patterns, CUDA's
// __half and __nv_bfloat16).
template <typename Half, typename BFloat16, typename Launch>
const char* WithScalarType(ScalarKind kind, Launch&& launch) {
  switch (kind) {
    case ScalarKind::kFloat32: return launch(float());
    case ScalarKind::kFloat64: return launch(double());
    case ScalarKind::kFloat16: return launch(Half());
    case ScalarKind::kBFloat16: return launch(BFloat16());
  }
  return "unsupported element type";
}

// The three maps of the reassembly, each two operands in and one result out:
//   kForward:      (features, kernels)     -> output
//   kFeaturesGrad: (grad_output, kernels)  -> grad_features (the features' shape)
//   kKernelsGrad:  (grad_output, features) -> grad_kernels (the kernels' shape)
// All three are bilinear, each one a partial derivative of <grad_output,
// forward(features, kernels)>, so each one's adjoints are the other two: every
// framework builds derivatives of any order from these launches.
enum class Map { kForward, kFeaturesGrad, kKernelsGrad };

// The ScalarKind of an element type. float and double are declared here; each
// framework's glue declares its own 16-bit types (IEEE half and bfloat16).
template <typename T>
struct KindOf;
template <>
struct KindOf<float> {
  static constexpr ScalarKind value = ScalarKind::kFloat32;
};
template <>
struct KindOf<double> {
  static constexpr ScalarKind value = ScalarKind::kFloat64;
};

}  // namespace keras_carafe

#endif  // KERAS_CARAFE_CSRC_KERNELS_CARAFE_GEOMETRY_H_
