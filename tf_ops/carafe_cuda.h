// CUDA launchers of the CARAFE reassembly, callable without CUDA headers.
//
// Pointers are device pointers of the element type named by `kind`; `stream`
// is a cudaStream_t. Each launcher returns nullptr on success or a static
// message describing the CUDA error of the launch.
#ifndef KERAS_CARAFE_TF_OPS_CARAFE_CUDA_H_
#define KERAS_CARAFE_TF_OPS_CARAFE_CUDA_H_

#include "carafe_geometry.h"

namespace keras_carafe {
namespace cuda {

const char* Forward(ScalarKind kind, const CarafeGeometry& geometry,
                    const void* features, const void* kernels, void* output,
                    void* stream);

// Writes both gradients; each output element is written by one thread, so the
// result does not depend on scheduling.
const char* Backward(ScalarKind kind, const CarafeGeometry& geometry,
                     const void* grad_output, const void* features,
                     const void* kernels, void* grad_features,
                     void* grad_kernels, void* stream);

}  // namespace cuda
}  // namespace keras_carafe

extern "C" {
// Runtime state of the CUDA kernels in this library: "ok: <n> device(s), ..."
// or the reason they cannot run here (no driver, no device, old driver).
const char* keras_carafe_cuda_status();
// Architectures the kernels were compiled for, e.g. "sm_80,sm_90,compute_90".
const char* keras_carafe_cuda_architectures();
}

#endif  // KERAS_CARAFE_TF_OPS_CARAFE_CUDA_H_
