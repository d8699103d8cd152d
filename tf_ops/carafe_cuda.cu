// CUDA kernels of the CARAFE reassembly (see carafe_geometry.h for the
// contract). Channels-last layout makes consecutive threads read consecutive
// channels of the same pixel, so feature and gradient accesses coalesce and
// the per-pixel kernel weight is a broadcast load. All sums run in a fixed
// order with no atomics: forward and backward are bitwise deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>

#include "carafe_cuda.h"

#ifndef KERAS_CARAFE_CUDA_ARCHS
#define KERAS_CARAFE_CUDA_ARCHS "unknown"
#endif

namespace keras_carafe {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
// Grid-stride loops cover any size; this bounds the grid itself.
constexpr int64_t kMaxBlocks = 1 << 20;

template <typename T>
struct Accumulator {
  using type = float;
};
template <>
struct Accumulator<double> {
  using type = double;
};

__device__ __forceinline__ float Load(const float* p) { return *p; }
__device__ __forceinline__ double Load(const double* p) { return *p; }
__device__ __forceinline__ float Load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float Load(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

__device__ __forceinline__ void Store(float* p, float v) { *p = v; }
__device__ __forceinline__ void Store(double* p, double v) { *p = v; }
__device__ __forceinline__ void Store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void Store(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

int BlocksFor(int64_t work_items) {
  const int64_t blocks = (work_items + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// One thread per output element (pixel, channel).
template <typename T>
__global__ void ForwardKernel(CarafeGeometry g, const T* __restrict__ features,
                              const T* __restrict__ kernels, T* __restrict__ output) {
  using Acc = typename Accumulator<T>::type;
  const int64_t total = g.out_pixels() * g.channels;
  const int64_t k = g.kernel_size, r = g.radius();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % g.channels;
    const int64_t p = i / g.channels;
    const int64_t ow = p % g.out_w();
    const int64_t oh = (p / g.out_w()) % g.out_h();
    const int64_t n = p / (g.out_w() * g.out_h());
    const int64_t ih = oh / g.scale, iw = ow / g.scale;
    const T* pixel_kernels =
        kernels + p * g.kernel_channels() + (c / g.group_channels()) * g.taps();
    Acc acc = 0;
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t y = ih + ky - r;
      if (y < 0 || y >= g.in_h) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t x = iw + kx - r;
        if (x < 0 || x >= g.in_w) continue;
        acc += static_cast<Acc>(Load(pixel_kernels + ky * k + kx)) *
               static_cast<Acc>(
                   Load(features + ((n * g.in_h + y) * g.in_w + x) * g.channels + c));
      }
    }
    Store(output + i, acc);
  }
}

// One thread per input element (pixel, channel): gathers from the output
// pixels that read it.
template <typename T>
__global__ void BackwardFeaturesKernel(CarafeGeometry g, const T* __restrict__ grad_output,
                                       const T* __restrict__ kernels,
                                       T* __restrict__ grad_features) {
  using Acc = typename Accumulator<T>::type;
  const int64_t total = g.in_pixels() * g.channels;
  const int64_t k = g.kernel_size, r = g.radius(), s = g.scale;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % g.channels;
    const int64_t p = i / g.channels;
    const int64_t x = p % g.in_w;
    const int64_t y = (p / g.in_w) % g.in_h;
    const int64_t n = p / (g.in_w * g.in_h);
    const int64_t tap_offset = (c / g.group_channels()) * g.taps();
    Acc acc = 0;
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t sy = y - ky + r;
      if (sy < 0 || sy >= g.in_h) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t sx = x - kx + r;
        if (sx < 0 || sx >= g.in_w) continue;
        for (int64_t dy = 0; dy < s; ++dy) {
          for (int64_t dx = 0; dx < s; ++dx) {
            const int64_t q = (n * g.out_h() + sy * s + dy) * g.out_w() + sx * s + dx;
            acc += static_cast<Acc>(
                       Load(kernels + q * g.kernel_channels() + tap_offset + ky * k + kx)) *
                   static_cast<Acc>(Load(grad_output + q * g.channels + c));
          }
        }
      }
    }
    Store(grad_features + i, acc);
  }
}

// One warp per (output pixel, group): lanes stride the group's channels and a
// fixed shuffle tree reduces them, once per tap.
template <typename T>
__global__ void BackwardKernelsKernel(CarafeGeometry g, const T* __restrict__ grad_output,
                                      const T* __restrict__ features,
                                      T* __restrict__ grad_kernels) {
  using Acc = typename Accumulator<T>::type;
  const int64_t total_warps = g.out_pixels() * g.groups;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t k = g.kernel_size, r = g.radius(), cg = g.group_channels();
  // The loop condition depends on the warp index only, so every lane of a
  // warp takes the same trip count, as the full-mask shuffles require.
  for (int64_t w = blockIdx.x * warps_per_block + threadIdx.x / kWarp; w < total_warps;
       w += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    const int64_t grp = w % g.groups;
    const int64_t p = w / g.groups;
    const int64_t ow = p % g.out_w();
    const int64_t oh = (p / g.out_w()) % g.out_h();
    const int64_t n = p / (g.out_w() * g.out_h());
    const int64_t ih = oh / g.scale, iw = ow / g.scale;
    const T* dout = grad_output + p * g.channels + grp * cg;
    T* dk = grad_kernels + p * g.kernel_channels() + grp * g.taps();
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t y = ih + ky - r;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t x = iw + kx - r;
        Acc sum = 0;
        if (y >= 0 && y < g.in_h && x >= 0 && x < g.in_w) {
          const T* src = features + ((n * g.in_h + y) * g.in_w + x) * g.channels + grp * cg;
          for (int64_t c = lane; c < cg; c += kWarp)
            sum += static_cast<Acc>(Load(dout + c)) * static_cast<Acc>(Load(src + c));
        }
        for (int offset = kWarp / 2; offset > 0; offset /= 2)
          sum += __shfl_down_sync(0xffffffffu, sum, offset);
        if (lane == 0) Store(dk + ky * k + kx, sum);
      }
    }
  }
}

const char* LastLaunchError() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <typename T>
const char* ForwardTyped(const CarafeGeometry& g, const void* features, const void* kernels,
                         void* output, cudaStream_t stream) {
  const int64_t work = g.out_pixels() * g.channels;
  if (work == 0) return nullptr;
  ForwardKernel<T><<<BlocksFor(work), kThreads, 0, stream>>>(
      g, static_cast<const T*>(features), static_cast<const T*>(kernels),
      static_cast<T*>(output));
  return LastLaunchError();
}

template <typename T>
const char* BackwardTyped(const CarafeGeometry& g, const void* grad_output,
                          const void* features, const void* kernels, void* grad_features,
                          void* grad_kernels, cudaStream_t stream) {
  const int64_t feature_work = g.in_pixels() * g.channels;
  if (feature_work > 0) {
    BackwardFeaturesKernel<T><<<BlocksFor(feature_work), kThreads, 0, stream>>>(
        g, static_cast<const T*>(grad_output), static_cast<const T*>(kernels),
        static_cast<T*>(grad_features));
    if (const char* err = LastLaunchError()) return err;
  }
  const int64_t kernel_work = g.out_pixels() * g.groups * kWarp;
  if (kernel_work > 0) {
    BackwardKernelsKernel<T><<<BlocksFor(kernel_work), kThreads, 0, stream>>>(
        g, static_cast<const T*>(grad_output), static_cast<const T*>(features),
        static_cast<T*>(grad_kernels));
    if (const char* err = LastLaunchError()) return err;
  }
  return nullptr;
}

}  // namespace

const char* Forward(ScalarKind kind, const CarafeGeometry& g, const void* features,
                    const void* kernels, void* output, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (kind) {
    case ScalarKind::kFloat32: return ForwardTyped<float>(g, features, kernels, output, s);
    case ScalarKind::kFloat64: return ForwardTyped<double>(g, features, kernels, output, s);
    case ScalarKind::kFloat16: return ForwardTyped<__half>(g, features, kernels, output, s);
    case ScalarKind::kBFloat16:
      return ForwardTyped<__nv_bfloat16>(g, features, kernels, output, s);
  }
  return "unsupported element type";
}

const char* Backward(ScalarKind kind, const CarafeGeometry& g, const void* grad_output,
                     const void* features, const void* kernels, void* grad_features,
                     void* grad_kernels, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (kind) {
    case ScalarKind::kFloat32:
      return BackwardTyped<float>(g, grad_output, features, kernels, grad_features,
                                  grad_kernels, s);
    case ScalarKind::kFloat64:
      return BackwardTyped<double>(g, grad_output, features, kernels, grad_features,
                                   grad_kernels, s);
    case ScalarKind::kFloat16:
      return BackwardTyped<__half>(g, grad_output, features, kernels, grad_features,
                                   grad_kernels, s);
    case ScalarKind::kBFloat16:
      return BackwardTyped<__nv_bfloat16>(g, grad_output, features, kernels, grad_features,
                                          grad_kernels, s);
  }
  return "unsupported element type";
}

}  // namespace cuda
}  // namespace keras_carafe

extern "C" const char* keras_carafe_cuda_status() {
  static char message[256];
  int driver = 0, runtime = 0, devices = 0;
  cudaRuntimeGetVersion(&runtime);
  const cudaError_t driver_err = cudaDriverGetVersion(&driver);
  if (driver_err != cudaSuccess || driver == 0) {
    std::snprintf(message, sizeof(message), "no CUDA driver found (kernels built for CUDA %d.%d)",
                  runtime / 1000, (runtime % 1000) / 10);
    return message;
  }
  if (driver < runtime) {
    std::snprintf(message, sizeof(message),
                  "CUDA driver %d.%d is older than the CUDA %d.%d the kernels were built with",
                  driver / 1000, (driver % 1000) / 10, runtime / 1000, (runtime % 1000) / 10);
    return message;
  }
  const cudaError_t count_err = cudaGetDeviceCount(&devices);
  if (count_err != cudaSuccess || devices == 0) {
    std::snprintf(message, sizeof(message), "no CUDA device (%s)",
                  count_err != cudaSuccess ? cudaGetErrorString(count_err) : "count is 0");
    cudaGetLastError();
    return message;
  }
  std::snprintf(message, sizeof(message), "ok: %d device(s), driver %d.%d, runtime %d.%d", devices,
                driver / 1000, (driver % 1000) / 10, runtime / 1000, (runtime % 1000) / 10);
  return message;
}

extern "C" const char* keras_carafe_cuda_architectures() { return KERAS_CARAFE_CUDA_ARCHS; }
