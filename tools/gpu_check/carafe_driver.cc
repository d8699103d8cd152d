// A small program around the CUDA launchers, for tools that are slow to start
// under a Python framework:
//   carafe_driver sanitize
//       runs forward and both gradients on small problems of every element
//       type, both directions, with and without 16-byte vectors, on buffers
//       of exactly the needed size (for compute-sanitizer);
//   carafe_driver profile N H W C SCALE STRIDE K G
//       runs each float32 kernel twice on one problem (for ncu).
// Exits non-zero with a message when a launch fails.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "carafe_cuda.h"

namespace {

using keras_carafe::CarafeGeometry;
using keras_carafe::ScalarKind;

struct Buffer {
  // `offset` elements before the data misalign it, forcing the scalar path.
  Buffer(int64_t elements, int64_t element_bytes, int64_t offset) {
    const size_t bytes = static_cast<size_t>((elements + offset) * element_bytes);
    Check(cudaMalloc(&base, bytes > 0 ? bytes : 1), "cudaMalloc");
    // Filled with a bit pattern that is a small finite number in every type.
    Check(cudaMemset(base, 0x3c, bytes > 0 ? bytes : 1), "cudaMemset");
    data = static_cast<char*>(base) + offset * element_bytes;
  }
  ~Buffer() { cudaFree(base); }
  static void Check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) {
      std::fprintf(stderr, "%s failed: %s\n", what, cudaGetErrorString(err));
      std::exit(1);
    }
  }
  void* base = nullptr;
  void* data = nullptr;
};

void Require(const char* error, const char* what) {
  if (error != nullptr) {
    std::fprintf(stderr, "%s failed: %s\n", what, error);
    std::exit(1);
  }
}

int64_t ElementBytes(ScalarKind kind) {
  switch (kind) {
    case ScalarKind::kFloat64: return 8;
    case ScalarKind::kFloat32: return 4;
    default: return 2;
  }
}

void RunAll(ScalarKind kind, const CarafeGeometry& g, int64_t offset, int repeats) {
  const int64_t bytes = ElementBytes(kind);
  const int64_t out_elements = g.out_pixels() * g.channels;
  Buffer features(g.in_pixels() * g.channels, bytes, offset);
  Buffer kernels(g.out_pixels() * g.kernel_channels(), bytes, offset);
  Buffer output(out_elements, bytes, offset);
  Buffer grad_features(g.in_pixels() * g.channels, bytes, offset);
  Buffer grad_kernels(g.out_pixels() * g.kernel_channels(), bytes, offset);
  for (int i = 0; i < repeats; ++i) {
    Require(keras_carafe::cuda::Forward(kind, g, features.data, kernels.data, output.data,
                                        nullptr),
            "Forward");
    // The forward output stands in for the upstream gradient: same shape.
    Require(keras_carafe::cuda::BackwardFeatures(kind, g, output.data, kernels.data,
                                                 grad_features.data, nullptr),
            "BackwardFeatures");
    Require(keras_carafe::cuda::BackwardKernels(kind, g, output.data, features.data,
                                                grad_kernels.data, nullptr),
            "BackwardKernels");
  }
  Buffer::Check(cudaDeviceSynchronize(), "kernel execution");
}

int Sanitize() {
  // batch, in_h, in_w, channels, scale, stride, kernel_size, groups
  const std::vector<CarafeGeometry> problems = {
      {1, 1, 1, 1, 1, 1, 1, 1},    {2, 3, 4, 4, 2, 1, 3, 2},   {1, 5, 1, 2, 3, 1, 3, 2},
      {1, 1, 6, 2, 2, 1, 5, 1},    {1, 2, 3, 8, 4, 1, 3, 4},   {1, 3, 5, 64, 2, 1, 5, 2},
      {1, 4, 3, 48, 3, 1, 7, 1},   {1, 3, 2, 16, 4, 1, 5, 1},  {2, 5, 6, 4, 1, 2, 3, 2},
      {1, 7, 1, 2, 1, 3, 3, 2},    {1, 6, 7, 64, 1, 2, 5, 1},  {1, 9, 10, 24, 1, 4, 7, 2},
      {0, 3, 3, 8, 2, 1, 5, 1},    {1, 4, 4, 32, 1, 1, 5, 4},
  };
  const ScalarKind kinds[] = {ScalarKind::kFloat32, ScalarKind::kFloat64, ScalarKind::kFloat16,
                              ScalarKind::kBFloat16};
  int runs = 0;
  for (const CarafeGeometry& g : problems)
    for (ScalarKind kind : kinds)
      for (int64_t offset : {0, 1}) {
        RunAll(kind, g, offset, 1);
        ++runs;
      }
  std::printf("sanitize: %d problem runs completed\n", runs);
  return 0;
}

int Profile(char** argv) {
  int64_t v[8];
  for (int i = 0; i < 8; ++i) v[i] = std::atoll(argv[i]);
  const CarafeGeometry g{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
  Require(keras_carafe::GeometryError(g), "geometry");
  RunAll(ScalarKind::kFloat32, g, 0, 2);
  std::printf("profile: done\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "sanitize") == 0) return Sanitize();
  if (argc == 10 && std::strcmp(argv[1], "profile") == 0) return Profile(argv + 2);
  std::fprintf(stderr,
               "usage: %s sanitize | profile N H W C SCALE STRIDE KERNEL_SIZE GROUPS\n", argv[0]);
  return 2;
}
