// CUDA launchers of the CARAFE reassembly (both directions), callable without
// CUDA headers.
//
// Pointers are device pointers of the element type named by `kind`; `stream`
// is a cudaStream_t. Each launcher returns nullptr on success, or a static
// message: an invalid geometry, or the CUDA error of the launch. Every output
// element is written by exactly one thread that sums in a fixed order, so
// results do not depend on scheduling.
#ifndef KERAS_CARAFE_CSRC_KERNELS_CARAFE_CUDA_H_
#define KERAS_CARAFE_CSRC_KERNELS_CARAFE_CUDA_H_

#include "carafe_geometry.h"

namespace keras_carafe {
namespace cuda {

const char* Forward(ScalarKind kind, const CarafeGeometry& geometry, const void* features,
                    const void* kernels, void* output, void* stream);

// d loss / d features from the upstream gradient and the kernels.
const char* BackwardFeatures(ScalarKind kind, const CarafeGeometry& geometry,
                             const void* grad_output, const void* kernels,
                             void* grad_features, void* stream);

// d loss / d kernels from the upstream gradient and the features.
const char* BackwardKernels(ScalarKind kind, const CarafeGeometry& geometry,
                            const void* grad_output, const void* features, void* grad_kernels,
                            void* stream);

// One of the three above by `map`, with its operands in the order of the Map's comment.
const char* Run(Map map, ScalarKind kind, const CarafeGeometry& geometry, const void* first,
                const void* second, void* result, void* stream);

}  // namespace cuda
}  // namespace keras_carafe

extern "C" {
// What the CUDA runtime says about this library on this machine, as JSON:
// {"built": true, "architectures": [...], "runtime": 12050, "driver": 12040,
//  "driver_error": "", "device_count": 1, "device_error": "",
//  "devices": [{"index": 0, "name": "...", "compute_capability": [9, 0],
//               "kernel_image": true, "error": ""}]}
// kernel_image says whether a kernel of this library can run on that device
// (machine code for it, or PTX its driver can compile). Libraries built
// without CUDA link carafe_no_cuda.cc instead, which returns {"built": false}.
// Exported from every library, whatever its symbol visibility.
__attribute__((visibility("default"))) const char* keras_carafe_cuda_probe();
}

#endif  // KERAS_CARAFE_CSRC_KERNELS_CARAFE_CUDA_H_
