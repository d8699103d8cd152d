// The CUDA probe of libraries built without the CUDA kernels (see
// carafe_cuda.h); linked in place of carafe_cuda.cu.
#include "carafe_cuda.h"

extern "C" const char* keras_carafe_cuda_probe() { return "{\"built\": false}"; }
