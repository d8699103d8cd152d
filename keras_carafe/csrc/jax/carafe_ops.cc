// The XLA FFI handler symbols of the CARAFE maps, one per map and platform:
// keras_carafe_{forward,features_grad,kernels_grad}_{cpu,cuda}. Each takes
// two buffers, returns one, and carries the attributes scale, stride,
// kernel_size and groups (scale > 1 upsamples, stride > 1 downsamples).
// keras_carafe/backend/jax/library.py registers them with jax.ffi.
#include "carafe_kernels.h"

namespace {

namespace ffi = ::xla::ffi;
using ::keras_carafe::Attributes;
using ::keras_carafe::Map;

// Two buffers in, one out, the four attributes, after the context `Ctx`.
template <typename Ctx>
auto Binding() {
  return ffi::Ffi::Bind()
      .Ctx<Ctx>()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Attr<int64_t>("scale")
      .template Attr<int64_t>("stride")
      .template Attr<int64_t>("kernel_size")
      .template Attr<int64_t>("groups");
}

// The handler of map `M` on the CPU, and on CUDA.
template <Map M>
ffi::Error Cpu(ffi::ThreadPool pool, ffi::AnyBuffer first, ffi::AnyBuffer second,
               ffi::Result<ffi::AnyBuffer> result, int64_t scale, int64_t stride,
               int64_t kernel_size, int64_t groups) {
  return keras_carafe::jax::RunOnCpu(M, pool, first, second, result,
                                     Attributes{scale, stride, kernel_size, groups});
}

#ifdef KERAS_CARAFE_WITH_CUDA
template <Map M>
ffi::Error Cuda(void* stream, ffi::AnyBuffer first, ffi::AnyBuffer second,
                ffi::Result<ffi::AnyBuffer> result, int64_t scale, int64_t stride,
                int64_t kernel_size, int64_t groups) {
  return keras_carafe::jax::RunOnCuda(M, stream, first, second, result,
                                      Attributes{scale, stride, kernel_size, groups});
}
#endif  // KERAS_CARAFE_WITH_CUDA

using CpuPool = ffi::ThreadPool;
using CudaStream = ffi::PlatformStream<void*>;

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_forward_cpu, Cpu<Map::kForward>,
                              Binding<CpuPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_features_grad_cpu, Cpu<Map::kFeaturesGrad>,
                              Binding<CpuPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_kernels_grad_cpu, Cpu<Map::kKernelsGrad>,
                              Binding<CpuPool>());

#ifdef KERAS_CARAFE_WITH_CUDA
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_forward_cuda, Cuda<Map::kForward>,
                              Binding<CudaStream>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_features_grad_cuda, Cuda<Map::kFeaturesGrad>,
                              Binding<CudaStream>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_kernels_grad_cuda, Cuda<Map::kKernelsGrad>,
                              Binding<CudaStream>());
#endif  // KERAS_CARAFE_WITH_CUDA
