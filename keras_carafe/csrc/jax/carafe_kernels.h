// XLA FFI implementations of the three CARAFE maps (see carafe_kernels.cc);
// carafe_ops.cc binds them to the handler symbols that JAX registers.
#ifndef KERAS_CARAFE_CSRC_JAX_CARAFE_KERNELS_H_
#define KERAS_CARAFE_CSRC_JAX_CARAFE_KERNELS_H_

#include "carafe_geometry.h"
#include "carafe_shapes.h"
#include "xla/ffi/api/ffi.h"

namespace keras_carafe {
namespace jax {

namespace ffi = ::xla::ffi;

// Map `map` (carafe_geometry.h) of two operand buffers into `result`, on XLA's CPU
// intra-op thread pool.
ffi::Error RunOnCpu(Map map, ffi::ThreadPool pool, ffi::AnyBuffer first, ffi::AnyBuffer second,
                    ffi::Result<ffi::AnyBuffer> result, Attributes attributes);

#ifdef KERAS_CARAFE_WITH_CUDA
// The same on XLA's CUDA stream (a cudaStream_t).
ffi::Error RunOnCuda(Map map, void* stream, ffi::AnyBuffer first, ffi::AnyBuffer second,
                     ffi::Result<ffi::AnyBuffer> result, Attributes attributes);
#endif  // KERAS_CARAFE_WITH_CUDA

}  // namespace jax
}  // namespace keras_carafe

#endif  // KERAS_CARAFE_CSRC_JAX_CARAFE_KERNELS_H_
