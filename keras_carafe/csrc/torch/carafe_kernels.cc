// PyTorch kernels of the CARAFE maps (schemas in carafe_ops.cc): check the
// tensors against the attributes, allocate the result, and hand raw pointers
// to the framework-free CPU kernels (on ATen's intra-op threads) or CUDA
// kernels (on the current CUDA stream of the tensors' device).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

#include "carafe_cpu.h"
#include "carafe_cuda.h"
#include "carafe_shapes.h"

namespace keras_carafe {
namespace torch_glue {
namespace {

Dims DimsOf(const at::Tensor& t) {
  return Dims{t.sizes().data(), static_cast<int>(t.dim())};
}

ScalarKind KindOf(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ScalarKind::kFloat32;
    case at::kDouble: return ScalarKind::kFloat64;
    case at::kHalf: return ScalarKind::kFloat16;
    case at::kBFloat16: return ScalarKind::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "CARAFE tensors must be float16, bfloat16, float32 or float64, "
                       "got ", t.scalar_type());
  }
  return ScalarKind::kFloat32;  // not reached
}

// The element kind shared by both inputs, on one device.
ScalarKind CheckPair(const char* first_name, const at::Tensor& first, const char* second_name,
                     const at::Tensor& second) {
  TORCH_CHECK_TYPE(first.scalar_type() == second.scalar_type(), second_name,
                   " must have the dtype of ", first_name, " (", first.scalar_type(), "), got ",
                   second.scalar_type());
  TORCH_CHECK(first.device() == second.device(), second_name, " must be on the device of ",
              first_name, " (", first.device(), "), got ", second.device());
  return KindOf(first);
}

void Check(const std::string& error) { TORCH_CHECK_VALUE(error.empty(), error); }

// ATen's intra-op threads as the kernels' pool.
void ParallelFor(void*, int64_t total, int64_t cost, cpu::Shard shard) {
  // Ranges of at least ~32k cycles of work each.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, cost));
  at::parallel_for(0, total, grain, [&](int64_t begin, int64_t end) {
    shard.run(shard.context, begin, end);
  });
}

void KernelResult(const char* error) {
  TORCH_CHECK(error == nullptr, "CARAFE kernel failed: ", error ? error : "");
}

// Map `map` of `first` and `second` on their device. The result has `result_sizes`
// where given (the features gradient's), else the shape the geometry implies.
at::Tensor Run(Map map, const char* first_name, const at::Tensor& first_in,
               const char* second_name, const at::Tensor& second_in, const int64_t* result_sizes,
               const Attributes& attributes) {
  const ScalarKind kind = CheckPair(first_name, first_in, second_name, second_in);
  const at::Tensor first = first_in.contiguous(), second = second_in.contiguous();
  CarafeGeometry g;
  Check(CheckMap(map, attributes, DimsOf(first), DimsOf(second),
                 Dims{result_sizes, result_sizes ? 4 : 0}, &g));
  int64_t sizes[4];
  if (result_sizes != nullptr) {
    std::copy(result_sizes, result_sizes + 4, sizes);
  } else if (map == Map::kForward) {
    OutputDims(g, sizes);
  } else {
    KernelDims(g, sizes);
  }
  at::Tensor result = at::empty(sizes, first.options());
  const void* a = first.const_data_ptr();
  const void* b = second.const_data_ptr();
  void* out = result.mutable_data_ptr();
  if (first.device().is_cpu()) {
    KernelResult(cpu::Run(map, kind, g, a, b, out, cpu::ThreadPool{ParallelFor, nullptr}));
    return result;
  }
#ifdef KERAS_CARAFE_WITH_CUDA
  if (first.device().is_cuda()) {
    const c10::DeviceGuard guard(first.device());
    const c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
    KernelResult(cuda::Run(map, kind, g, a, b, out,
                           impl.getStream(first.device()).native_handle()));
    return result;
  }
#endif
  TORCH_CHECK(false, "the compiled CARAFE kernels run on CPU",
#ifdef KERAS_CARAFE_WITH_CUDA
              " and CUDA",
#endif
              " tensors, got a tensor on ", first.device());
  return result;  // not reached
}

at::Tensor Forward(const at::Tensor& features, const at::Tensor& kernels, int64_t scale,
                   int64_t stride, int64_t kernel_size, int64_t groups) {
  return Run(Map::kForward, "features", features, "kernels", kernels, nullptr,
             Attributes{scale, stride, kernel_size, groups});
}

at::Tensor FeaturesGrad(const at::Tensor& grad_output, const at::Tensor& kernels,
                        c10::SymInt height, c10::SymInt width, int64_t scale, int64_t stride,
                        int64_t kernel_size, int64_t groups) {
  TORCH_CHECK_VALUE(grad_output.dim() == 4, "grad_output must have rank 4, got shape ",
                    grad_output.sizes());
  const int64_t features_sizes[4] = {grad_output.size(0), height.expect_int(),
                                     width.expect_int(), grad_output.size(3)};
  return Run(Map::kFeaturesGrad, "grad_output", grad_output, "kernels", kernels, features_sizes,
             Attributes{scale, stride, kernel_size, groups});
}

at::Tensor KernelsGrad(const at::Tensor& grad_output, const at::Tensor& features, int64_t scale,
                       int64_t stride, int64_t kernel_size, int64_t groups) {
  return Run(Map::kKernelsGrad, "grad_output", grad_output, "features", features, nullptr,
             Attributes{scale, stride, kernel_size, groups});
}

}  // namespace
}  // namespace torch_glue
}  // namespace keras_carafe

TORCH_LIBRARY_IMPL(keras_carafe, CPU, m) {
  m.impl("forward", &keras_carafe::torch_glue::Forward);
  m.impl("features_grad", &keras_carafe::torch_glue::FeaturesGrad);
  m.impl("kernels_grad", &keras_carafe::torch_glue::KernelsGrad);
}

#ifdef KERAS_CARAFE_WITH_CUDA
TORCH_LIBRARY_IMPL(keras_carafe, CUDA, m) {
  m.impl("forward", &keras_carafe::torch_glue::Forward);
  m.impl("features_grad", &keras_carafe::torch_glue::FeaturesGrad);
  m.impl("kernels_grad", &keras_carafe::torch_glue::KernelsGrad);
}
#endif
