// The XLA FFI handler symbols of the CARAFE maps, one per map and platform:
// keras_carafe_{forward,features_grad,kernels_grad}_{cpu,cuda}. Each takes
// two buffers, returns one, and carries the attributes scale, stride,
// kernel_size and groups (scale > 1 upsamples, stride > 1 downsamples).
// keras_carafe/backend/jax/library.py registers them with jax.ffi.
#include "carafe_kernels.h"

namespace {

namespace ffi = ::xla::ffi;
using ::keras_carafe::Attributes;

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

// Adapts an implementation taking `Attributes` to the binding's loose attributes.
template <typename Context, ffi::Error (*Impl)(Context, ffi::AnyBuffer, ffi::AnyBuffer,
                                               ffi::Result<ffi::AnyBuffer>, Attributes)>
ffi::Error WithAttributes(Context context, ffi::AnyBuffer a, ffi::AnyBuffer b,
                          ffi::Result<ffi::AnyBuffer> out, int64_t scale, int64_t stride,
                          int64_t kernel_size, int64_t groups) {
  return Impl(context, a, b, out, Attributes{scale, stride, kernel_size, groups});
}

using CpuPool = ffi::ThreadPool;
using CudaStream = ffi::PlatformStream<void*>;

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_forward_cpu,
                              (WithAttributes<CpuPool, keras_carafe::jax::ForwardCpu>),
                              Binding<CpuPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_features_grad_cpu,
                              (WithAttributes<CpuPool, keras_carafe::jax::FeaturesGradCpu>),
                              Binding<CpuPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_kernels_grad_cpu,
                              (WithAttributes<CpuPool, keras_carafe::jax::KernelsGradCpu>),
                              Binding<CpuPool>());

#ifdef KERAS_CARAFE_WITH_CUDA
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_forward_cuda,
                              (WithAttributes<void*, keras_carafe::jax::ForwardCuda>),
                              Binding<CudaStream>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_features_grad_cuda,
                              (WithAttributes<void*, keras_carafe::jax::FeaturesGradCuda>),
                              Binding<CudaStream>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(keras_carafe_kernels_grad_cuda,
                              (WithAttributes<void*, keras_carafe::jax::KernelsGradCuda>),
                              Binding<CudaStream>());
#endif  // KERAS_CARAFE_WITH_CUDA
