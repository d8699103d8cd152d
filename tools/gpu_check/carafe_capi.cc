// C entry points over the framework-free CUDA launchers, for callers that
// hold device pointers from any framework (ctypes on PyTorch or CuPy memory).
//
// `sizes` holds batch, in_h, in_w, channels, scale, stride, kernel_size,
// groups; `kind` is 0 float32, 1 float64, 2 float16, 3 bfloat16. Each call
// returns nullptr on success or the error message.
#include <cstdint>

#include "carafe_cuda.h"

namespace {

keras_carafe::CarafeGeometry FromSizes(const int64_t* s) {
  return keras_carafe::CarafeGeometry{s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]};
}

bool KindFromInt(int kind, keras_carafe::ScalarKind* out) {
  using keras_carafe::ScalarKind;
  static const ScalarKind kinds[] = {ScalarKind::kFloat32, ScalarKind::kFloat64,
                                     ScalarKind::kFloat16, ScalarKind::kBFloat16};
  if (kind < 0 || kind > 3) return false;
  *out = kinds[kind];
  return true;
}

constexpr char kBadKind[] = "kind must be 0 (float32), 1 (float64), 2 (float16) or 3 (bfloat16)";

const char* Run(keras_carafe::Map map, int kind, const int64_t* sizes, const void* first,
                const void* second, void* result, void* stream) {
  keras_carafe::ScalarKind k;
  if (!KindFromInt(kind, &k)) return kBadKind;
  return keras_carafe::cuda::Run(map, k, FromSizes(sizes), first, second, result, stream);
}

}  // namespace

extern "C" {

const char* carafe_forward(int kind, const int64_t* sizes, const void* features,
                           const void* kernels, void* output, void* stream) {
  return Run(keras_carafe::Map::kForward, kind, sizes, features, kernels, output, stream);
}

const char* carafe_backward_features(int kind, const int64_t* sizes, const void* grad_output,
                                     const void* kernels, void* grad_features, void* stream) {
  return Run(keras_carafe::Map::kFeaturesGrad, kind, sizes, grad_output, kernels,
             grad_features, stream);
}

const char* carafe_backward_kernels(int kind, const int64_t* sizes, const void* grad_output,
                                    const void* features, void* grad_kernels, void* stream) {
  return Run(keras_carafe::Map::kKernelsGrad, kind, sizes, grad_output, features,
             grad_kernels, stream);
}

}  // extern "C"
