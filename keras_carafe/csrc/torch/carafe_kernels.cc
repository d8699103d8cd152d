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

// The three maps on the device of `like`: `run_cpu(pool)` or `run_cuda(stream)`.
template <typename Cpu, typename Cuda>
void OnDevice(const at::Tensor& like, Cpu run_cpu, Cuda run_cuda) {
  if (like.device().is_cpu()) {
    KernelResult(run_cpu(cpu::ThreadPool{ParallelFor, nullptr}));
    return;
  }
#ifdef KERAS_CARAFE_WITH_CUDA
  if (like.device().is_cuda()) {
    const c10::DeviceGuard guard(like.device());
    const c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
    KernelResult(run_cuda(impl.getStream(like.device()).native_handle()));
    return;
  }
#endif
  (void)run_cuda;
  TORCH_CHECK(false, "the compiled CARAFE kernels run on CPU",
#ifdef KERAS_CARAFE_WITH_CUDA
              " and CUDA",
#endif
              " tensors, got a tensor on ", like.device());
}

at::Tensor Forward(const at::Tensor& features_in, const at::Tensor& kernels_in, int64_t scale,
                   int64_t stride, int64_t kernel_size, int64_t groups) {
  const ScalarKind kind = CheckPair("features", features_in, "kernels", kernels_in);
  const at::Tensor features = features_in.contiguous(), kernels = kernels_in.contiguous();
  CarafeGeometry g;
  Check(CheckReassembly(Attributes{scale, stride, kernel_size, groups}, DimsOf(features),
                        DimsOf(kernels), &g));
  int64_t sizes[4];
  OutputDims(g, sizes);
  at::Tensor output = at::empty(sizes, features.options());
  OnDevice(
      features,
      [&](const cpu::ThreadPool& pool) {
        return cpu::Forward(kind, g, features.const_data_ptr(), kernels.const_data_ptr(),
                            output.mutable_data_ptr(), pool);
      },
      [&](void* stream) {
        return cuda::Forward(kind, g, features.const_data_ptr(), kernels.const_data_ptr(),
                             output.mutable_data_ptr(), stream);
      });
  return output;
}

at::Tensor FeaturesGrad(const at::Tensor& grad_output_in, const at::Tensor& kernels_in,
                        c10::SymInt height, c10::SymInt width, int64_t scale, int64_t stride,
                        int64_t kernel_size, int64_t groups) {
  const ScalarKind kind = CheckPair("grad_output", grad_output_in, "kernels", kernels_in);
  const at::Tensor grad_output = grad_output_in.contiguous(), kernels = kernels_in.contiguous();
  TORCH_CHECK_VALUE(grad_output.dim() == 4, "grad_output must have rank 4, got shape ",
                    grad_output.sizes());
  const int64_t features_sizes[4] = {grad_output.size(0), height.expect_int(),
                                     width.expect_int(), grad_output.size(3)};
  CarafeGeometry g;
  Check(CheckReassembly(Attributes{scale, stride, kernel_size, groups}, Dims{features_sizes, 4},
                        DimsOf(kernels), &g));
  int64_t expected[4];
  OutputDims(g, expected);
  Check(CheckDims("grad_output", DimsOf(grad_output), expected, "the output shape"));
  at::Tensor grad_features = at::empty(features_sizes, grad_output.options());
  OnDevice(
      grad_output,
      [&](const cpu::ThreadPool& pool) {
        return cpu::BackwardFeatures(kind, g, grad_output.const_data_ptr(),
                                     kernels.const_data_ptr(), grad_features.mutable_data_ptr(),
                                     pool);
      },
      [&](void* stream) {
        return cuda::BackwardFeatures(kind, g, grad_output.const_data_ptr(),
                                      kernels.const_data_ptr(),
                                      grad_features.mutable_data_ptr(), stream);
      });
  return grad_features;
}

at::Tensor KernelsGrad(const at::Tensor& grad_output_in, const at::Tensor& features_in,
                       int64_t scale, int64_t stride, int64_t kernel_size, int64_t groups) {
  const ScalarKind kind = CheckPair("grad_output", grad_output_in, "features", features_in);
  const at::Tensor grad_output = grad_output_in.contiguous(), features = features_in.contiguous();
  CarafeGeometry g;
  Check(CheckReassembly(Attributes{scale, stride, kernel_size, groups}, DimsOf(features),
                        Dims{nullptr, 0}, &g));
  int64_t expected[4], kernel_sizes[4];
  OutputDims(g, expected);
  KernelDims(g, kernel_sizes);
  Check(CheckDims("grad_output", DimsOf(grad_output), expected, "the output shape"));
  at::Tensor grad_kernels = at::empty(kernel_sizes, grad_output.options());
  OnDevice(
      grad_output,
      [&](const cpu::ThreadPool& pool) {
        return cpu::BackwardKernels(kind, g, grad_output.const_data_ptr(),
                                    features.const_data_ptr(), grad_kernels.mutable_data_ptr(),
                                    pool);
      },
      [&](void* stream) {
        return cuda::BackwardKernels(kind, g, grad_output.const_data_ptr(),
                                     features.const_data_ptr(), grad_kernels.mutable_data_ptr(),
                                     stream);
      });
  return grad_kernels;
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
