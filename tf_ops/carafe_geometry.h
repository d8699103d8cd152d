// Sizes of one CARAFE reassembly problem, shared by the CPU and CUDA kernels.
//
// Layout contract (channels-last):
//   features: (batch, in_h, in_w, channels)
//   kernels:  (batch, in_h * scale, in_w * scale, groups * kernel_size^2),
//             channel index = group * kernel_size^2 + ky * kernel_size + kx
//   output:   (batch, in_h * scale, in_w * scale, channels)
//
//   output[n, oh, ow, c] = sum_{ky, kx} kernels[n, oh, ow, g * k * k + ky * k + kx]
//                          * features[n, oh / s + ky - r, ow / s + kx - r, c]
//   with g = c / (channels / groups), r = (k - 1) / 2, zero outside the image.
#ifndef KERAS_CARAFE_TF_OPS_CARAFE_GEOMETRY_H_
#define KERAS_CARAFE_TF_OPS_CARAFE_GEOMETRY_H_

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
  int64_t scale;
  int64_t kernel_size;
  int64_t groups;

  CARAFE_HOST_DEVICE int64_t out_h() const { return in_h * scale; }
  CARAFE_HOST_DEVICE int64_t out_w() const { return in_w * scale; }
  CARAFE_HOST_DEVICE int64_t radius() const { return (kernel_size - 1) / 2; }
  CARAFE_HOST_DEVICE int64_t taps() const { return kernel_size * kernel_size; }
  CARAFE_HOST_DEVICE int64_t group_channels() const { return channels / groups; }
  CARAFE_HOST_DEVICE int64_t kernel_channels() const { return groups * taps(); }
  CARAFE_HOST_DEVICE int64_t in_pixels() const { return batch * in_h * in_w; }
  CARAFE_HOST_DEVICE int64_t out_pixels() const {
    return batch * out_h() * out_w();
  }
};

// Element types the kernels are built for; the launchers take untyped
// pointers so that callers need no CUDA headers.
enum class ScalarKind { kFloat32, kFloat64, kFloat16, kBFloat16 };

// The ScalarKind of an element type. float and double are declared here; the
// caller declares its 16-bit types (bit patterns of IEEE half and bfloat16),
// which the CPU kernels widen a vector at a time.
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

#endif  // KERAS_CARAFE_TF_OPS_CARAFE_GEOMETRY_H_
