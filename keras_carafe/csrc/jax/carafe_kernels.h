// XLA FFI implementations of the three CARAFE maps (see carafe_kernels.cc);
// carafe_ops.cc binds them to the handler symbols that JAX registers.
#ifndef KERAS_CARAFE_CSRC_JAX_CARAFE_KERNELS_H_
#define KERAS_CARAFE_CSRC_JAX_CARAFE_KERNELS_H_

#include "carafe_shapes.h"
#include "xla/ffi/api/ffi.h"

namespace keras_carafe {
namespace jax {

namespace ffi = ::xla::ffi;

// The reassembly: features (N, H, W, C) and kernels (N, OH, OW, G*k*k) in,
// output (N, OH, OW, C) out.
ffi::Error ForwardCpu(ffi::ThreadPool pool, ffi::AnyBuffer features, ffi::AnyBuffer kernels,
                      ffi::Result<ffi::AnyBuffer> output, Attributes attributes);
// Its adjoint in the features: grad_output and kernels in, grad_features out.
ffi::Error FeaturesGradCpu(ffi::ThreadPool pool, ffi::AnyBuffer grad_output,
                           ffi::AnyBuffer kernels, ffi::Result<ffi::AnyBuffer> grad_features,
                           Attributes attributes);
// Its adjoint in the kernels: grad_output and features in, grad_kernels out.
ffi::Error KernelsGradCpu(ffi::ThreadPool pool, ffi::AnyBuffer grad_output,
                          ffi::AnyBuffer features, ffi::Result<ffi::AnyBuffer> grad_kernels,
                          Attributes attributes);

#ifdef KERAS_CARAFE_WITH_CUDA
// The same on XLA's CUDA stream (a cudaStream_t).
ffi::Error ForwardCuda(void* stream, ffi::AnyBuffer features, ffi::AnyBuffer kernels,
                       ffi::Result<ffi::AnyBuffer> output, Attributes attributes);
ffi::Error FeaturesGradCuda(void* stream, ffi::AnyBuffer grad_output, ffi::AnyBuffer kernels,
                            ffi::Result<ffi::AnyBuffer> grad_features, Attributes attributes);
ffi::Error KernelsGradCuda(void* stream, ffi::AnyBuffer grad_output, ffi::AnyBuffer features,
                           ffi::Result<ffi::AnyBuffer> grad_kernels, Attributes attributes);
#endif  // KERAS_CARAFE_WITH_CUDA

}  // namespace jax
}  // namespace keras_carafe

#endif  // KERAS_CARAFE_CSRC_JAX_CARAFE_KERNELS_H_
