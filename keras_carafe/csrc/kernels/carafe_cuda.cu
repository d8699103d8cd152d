// CUDA kernels of the CARAFE reassembly, both directions (see
// carafe_geometry.h for the contract and the cell geometry).
//
// Channels-last layout: consecutive threads read consecutive channels of the
// same pixel, so feature and gradient accesses coalesce and a pixel's kernel
// weight is one broadcast load. Where the group width allows, each thread
// moves 16 bytes of channels at a time. The S x S output pixels of a "unit"
// (S = 2 whenever the scale is even) share their source neighbourhood, so
// the forward pass and the kernels gradient load each feature vector once for
// all of them. Every output element is written by one thread (or one warp)
// that sums in a fixed order, with no atomics: results are bitwise
// reproducible.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "carafe_cuda.h"

#ifndef KERAS_CARAFE_CUDA_ARCHS
#define KERAS_CARAFE_CUDA_ARCHS ""
#endif

// Upper bound of each grid; grid-stride loops cover any larger problem. A
// build may lower it to exercise those loops on small inputs.
#ifndef KERAS_CARAFE_MAX_BLOCKS
#define KERAS_CARAFE_MAX_BLOCKS (1 << 20)
#endif

// Input pixels of a row that one thread of the features gradient handles.
#ifndef KERAS_CARAFE_FEATURE_SEGMENT
#define KERAS_CARAFE_FEATURE_SEGMENT 4
#endif

// Blocks of 256 threads that each multiprocessor should fit, which caps the
// registers per thread (more resident warps hide more memory latency).
#ifndef KERAS_CARAFE_MIN_BLOCKS
#define KERAS_CARAFE_MIN_BLOCKS 3
#endif

// The same for the 128-thread blocks of the kernels gradient, whose 32
// partial sums per lane need more registers.
#ifndef KERAS_CARAFE_REDUCE_MIN_BLOCKS
#define KERAS_CARAFE_REDUCE_MIN_BLOCKS 4
#endif

namespace keras_carafe {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
// Blocks of the kernels gradient: each warp owns kWarp x (kWarp + 4 or 2)
// accumulators of shared memory (36 KB per block in double precision).
constexpr int kReduceThreads = 128;

template <typename T>
struct Element;
// kVector: elements in 16 bytes. kWideVectors: 16-byte vectors per thread in
// the forward pass (and, when downsampling, the features gradient) where the
// group width allows; two keep more loads in flight for float32 (measured on
// an H200: forward 1.4x faster on the benchmark shapes), while 16-bit and
// double vectors would need more registers than the kernels get.
template <>
struct Element<float> {
  using Acc = float;
  static constexpr int kVector = 4;
  static constexpr int kWideVectors = 2;
};
template <>
struct Element<double> {
  using Acc = double;
  static constexpr int kVector = 2;
  static constexpr int kWideVectors = 1;
};
template <>
struct Element<__half> {
  using Acc = float;
  static constexpr int kVector = 8;
  static constexpr int kWideVectors = 1;
};
template <>
struct Element<__nv_bfloat16> {
  using Acc = float;
  static constexpr int kVector = 8;
  static constexpr int kWideVectors = 1;
};

__device__ __forceinline__ float Widen(float v) { return v; }
__device__ __forceinline__ double Widen(double v) { return v; }
__device__ __forceinline__ float Widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float Widen(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void Narrow(float v, float* out) { *out = v; }
__device__ __forceinline__ void Narrow(double v, double* out) { *out = v; }
__device__ __forceinline__ void Narrow(float v, __half* out) { *out = __float2half_rn(v); }
__device__ __forceinline__ void Narrow(float v, __nv_bfloat16* out) {
  *out = __float2bfloat16_rn(v);
}

// V consecutive elements, widened; 16-byte loads when they fill whole
// multiples of 16 bytes (the launcher checks the alignment).
template <typename T, int V>
__device__ __forceinline__ void LoadVector(const T* __restrict__ p,
                                           typename Element<T>::Acc (&out)[V]) {
  if constexpr (V * sizeof(T) % 16 == 0) {
    constexpr int kLoads = V * sizeof(T) / 16;
    uint4 raw[kLoads];
#pragma unroll
    for (int i = 0; i < kLoads; ++i) raw[i] = __ldg(reinterpret_cast<const uint4*>(p) + i);
    T elements[V];
    memcpy(elements, raw, sizeof(raw));
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = Widen(elements[i]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = Widen(p[i]);
  }
}

template <typename T, int V>
__device__ __forceinline__ void StoreVector(const typename Element<T>::Acc (&in)[V],
                                            T* __restrict__ p) {
  T elements[V];
#pragma unroll
  for (int i = 0; i < V; ++i) Narrow(in[i], &elements[i]);
  if constexpr (V * sizeof(T) % 16 == 0) {
    constexpr int kStores = V * sizeof(T) / 16;
    uint4 raw[kStores];
    memcpy(raw, elements, sizeof(raw));
#pragma unroll
    for (int i = 0; i < kStores; ++i) reinterpret_cast<uint4*>(p)[i] = raw[i];
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) p[i] = elements[i];
  }
}

// a / b and a % b; 32-bit division (several times cheaper) when both fit.
__device__ __forceinline__ int64_t DivMod(int64_t a, int64_t b, int64_t* remainder) {
  if (((a | b) >> 31) == 0) {
    const uint32_t q = static_cast<uint32_t>(a) / static_cast<uint32_t>(b);
    *remainder = a - static_cast<int64_t>(q) * b;
    return q;
  }
  const int64_t q = a / b;
  *remainder = a - q * b;
  return q;
}

int BlocksFor(int64_t threads_needed, int block_threads) {
  const int64_t blocks = (threads_needed + block_threads - 1) / block_threads;
  return static_cast<int>(blocks < KERAS_CARAFE_MAX_BLOCKS ? blocks : KERAS_CARAFE_MAX_BLOCKS);
}

// Taps [*first, *last) of one axis whose source lies inside [0, extent) for a
// window centred on `centre`.
__device__ __forceinline__ void ValidTaps(int centre, int radius, int kernel_size, int extent,
                                          int* first, int* last) {
  *first = max(0, radius - centre);
  *last = min(kernel_size, extent - centre + radius);
}

// The kernel size: a compile-time constant where the kernel is specialised
// for it (K > 0), so that tap loops unroll and weight offsets are immediate.
template <int K>
__device__ __forceinline__ int KernelSize(const CarafeGeometry& g) {
  return K > 0 ? K : static_cast<int>(g.kernel_size);
}

// One thread per (unit, V channels): the S x S output pixels of a unit are
// computed together from one pass over the k x k source pixels.
template <typename T, int V, int S, int K>
__global__ void __launch_bounds__(kThreads, KERAS_CARAFE_MIN_BLOCKS)
    ForwardKernel(CarafeGeometry g, const T* __restrict__ features,
                  const T* __restrict__ kernels, T* __restrict__ output) {
  using Acc = typename Element<T>::Acc;
  constexpr int kSub = S * S;
  const int k = KernelSize<K>(g), r = (k - 1) / 2, taps = k * k;
  const int in_h = g.in_h, in_w = g.in_w, out_w = g.out_w();
  const int64_t channels = g.channels;
  const int64_t chunks = channels / V;
  const int64_t units_w = out_w / S, units_h = g.out_h() / S;
  const int64_t items = g.batch * units_h * units_w * chunks;
  const int64_t kernel_channels = g.kernel_channels();
  const int cg = g.group_channels();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t chunk, ux, uy;
    const int64_t unit = DivMod(i, chunks, &chunk);
    const int64_t n = DivMod(DivMod(unit, units_w, &ux), units_h, &uy);
    const int c = static_cast<int>(chunk) * V;
    const int oh = static_cast<int>(uy) * S, ow = static_cast<int>(ux) * S;
    const int cy = static_cast<int>(g.centre_of_output(oh));
    const int cx = static_cast<int>(g.centre_of_output(ow));
    int ky0, ky1, kx0, kx1;
    ValidTaps(cy, r, k, in_h, &ky0, &ky1);
    ValidTaps(cx, r, k, in_w, &kx0, &kx1);
    const int64_t first_pixel = n * g.out_h() * out_w + static_cast<int64_t>(oh) * out_w + ow;
    const T* weights[kSub];
#pragma unroll
    for (int sub = 0; sub < kSub; ++sub)
      weights[sub] = kernels + (first_pixel + (sub / S) * out_w + sub % S) * kernel_channels +
                     (c / cg) * taps;
    // The window's top-left pixel (possibly outside the image; only valid
    // taps are dereferenced).
    const int64_t corner = ((n * in_h + cy - r) * in_w + cx - r) * channels + c;
    Acc acc[kSub][V] = {};
    auto tap = [&](int ky, int kx) {
      Acc f[V];
      LoadVector<T, V>(features + corner + (static_cast<int64_t>(ky) * in_w + kx) * channels, f);
#pragma unroll
      for (int sub = 0; sub < kSub; ++sub) {
        const Acc w = Widen(weights[sub][ky * k + kx]);
#pragma unroll
        for (int v = 0; v < V; ++v) acc[sub][v] += w * f[v];
      }
    };
    if constexpr (K > 0) {
#pragma unroll
      for (int ky = 0; ky < K; ++ky) {
        if (ky < ky0 || ky >= ky1) continue;
#pragma unroll
        for (int kx = 0; kx < K; ++kx)
          if (kx >= kx0 && kx < kx1) tap(ky, kx);
      }
    } else {
      for (int ky = ky0; ky < ky1; ++ky)
        for (int kx = kx0; kx < kx1; ++kx) tap(ky, kx);
    }
#pragma unroll
    for (int sub = 0; sub < kSub; ++sub)
      StoreVector<T, V>(acc[sub],
                        output + (first_pixel + (sub / S) * out_w + sub % S) * channels + c);
  }
}

// One thread per (P consecutive input pixels of a row, V channels): gathers
// from every output pixel that read them, in a fixed order. Neighbouring
// pixels are read by mostly the same cells, so each upstream gradient vector
// is loaded once for all P pixels instead of once per pixel.
template <typename T, int V, int K>
__global__ void __launch_bounds__(kThreads, KERAS_CARAFE_MIN_BLOCKS)
    BackwardFeaturesKernel(CarafeGeometry g, const T* __restrict__ grad_output,
                           const T* __restrict__ kernels, T* __restrict__ grad_features) {
  using Acc = typename Element<T>::Acc;
  constexpr int P = KERAS_CARAFE_FEATURE_SEGMENT;
  const int k = KernelSize<K>(g), r = (k - 1) / 2, taps = k * k;
  const int in_h = g.in_h, in_w = g.in_w, out_w = g.out_w(), s = g.scale;
  const int stride = g.stride, cells_h = g.cells_h(), cells_w = g.cells_w();
  const int64_t channels = g.channels;
  const int64_t chunks = channels / V;
  const int64_t segments_w = (in_w + P - 1) / P;
  const int64_t items = g.batch * in_h * segments_w * chunks;
  const int64_t kernel_channels = g.kernel_channels();
  const int cg = g.group_channels();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t chunk, segment, row;
    const int64_t n = DivMod(DivMod(DivMod(i, chunks, &chunk), segments_w, &segment), in_h, &row);
    const int c = static_cast<int>(chunk) * V, y = static_cast<int>(row);
    const int x0 = static_cast<int>(segment) * P;
    // Cells whose centre lies within r of a pixel of the segment.
    const int first_centre = x0 - r, last_centre = x0 + P - 1 + r;
    const int first_cell = first_centre <= 0 ? 0 : (first_centre + stride - 1) / stride;
    const int last_cell = min(last_centre / stride, cells_w - 1);
    const T* group_kernels = kernels + (c / cg) * taps;
    const int64_t image_pixel = n * g.out_h() * out_w;
    Acc acc[P][V] = {};
    auto row_of_taps = [&](int ky) {
      const int cy = static_cast<int>(g.cell_reading(y, ky, cells_h));
      if (cy < 0) return;
      for (int cx = first_cell; cx <= last_cell; ++cx) {
        // Tap kx of this cell reads pixel x0 + p where kx = x0 + p - centre + r.
        const int kx0 = x0 - cx * stride + r;
        for (int dy = 0; dy < s; ++dy) {
          const int64_t q0 = image_pixel + static_cast<int64_t>(cy * s + dy) * out_w + cx * s;
          for (int dx = 0; dx < s; ++dx) {
            const int64_t q = q0 + dx;
            Acc d[V];
            LoadVector<T, V>(grad_output + q * channels + c, d);
            const T* w = group_kernels + q * kernel_channels + ky * k + kx0;
#pragma unroll
            for (int p = 0; p < P; ++p) {
              if (kx0 + p < 0 || kx0 + p >= k) continue;
              const Acc weight = Widen(w[p]);
#pragma unroll
              for (int v = 0; v < V; ++v) acc[p][v] += weight * d[v];
            }
          }
        }
      }
    };
    if constexpr (K > 0) {
#pragma unroll
      for (int ky = 0; ky < K; ++ky) row_of_taps(ky);
    } else {
      for (int ky = 0; ky < k; ++ky) row_of_taps(ky);
    }
    T* out = grad_features + ((n * in_h + y) * in_w + x0) * channels + c;
#pragma unroll
    for (int p = 0; p < P; ++p)
      if (x0 + p < in_w) StoreVector<T, V>(acc[p], out + p * channels);
  }
}

// Each (unit, group) is one work item for `lanes` lanes of a warp (a power
// of two up to 32, no more than the group has channel chunks), so a warp
// serves 32 / lanes items. A lane keeps partial dot products over its share
// of the channels for up to 32 (tap, sub-pixel) pairs at once; the warp then
// sums each pair's partials through shared memory in a fixed lane order, one
// lane finishing each pair.
template <typename T, int V, int S, int K>
__global__ void __launch_bounds__(kReduceThreads, KERAS_CARAFE_REDUCE_MIN_BLOCKS)
    BackwardKernelsKernel(CarafeGeometry g, int lanes, const T* __restrict__ grad_output,
                          const T* __restrict__ features, T* __restrict__ grad_kernels) {
  using Acc = typename Element<T>::Acc;
  constexpr int kSub = S * S;
  static_assert(kWarp % kSub == 0, "a round must hold whole taps");
  // Up to 32 pairs per round; single-pixel units take 16 taps, as 32 would
  // need more registers than there are.
  constexpr int kTapsPerRound = kWarp / kSub > 16 ? 16 : kWarp / kSub;
  constexpr int kPairs = kTapsPerRound * kSub;
  constexpr int kWarpsPerBlock = kReduceThreads / kWarp;
  // Rows padded to 16 bytes for vector stores; the 4-word shift between rows
  // keeps both the row stores and the column reads free of bank conflicts.
  constexpr int kRow = kWarp + 16 / sizeof(Acc);
  __shared__ __align__(16) Acc partials[kWarpsPerBlock][kWarp][kRow];
  // Where each item of the warp writes: its first output pixel and group.
  __shared__ int64_t item_pixels[kWarpsPerBlock][kWarp];
  __shared__ int item_groups[kWarpsPerBlock][kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  Acc(*sums)[kRow] = partials[warp];

  const int k = KernelSize<K>(g), r = (k - 1) / 2, taps = k * k;
  const int in_h = g.in_h, in_w = g.in_w, out_w = g.out_w();
  const int64_t channels = g.channels;
  const int64_t units_w = out_w / S, units_h = g.out_h() / S;
  const int64_t work = g.batch * units_h * units_w * g.groups;
  const int64_t kernel_channels = g.kernel_channels();
  const int cg = g.group_channels();
  const int chunks = cg / V;
  const int items_per_warp = kWarp / lanes;
  const int slot = lane / lanes, slot_lane = lane % lanes;
  // The loop condition depends on the warp index only, so all lanes of a
  // warp run the same iterations, as __syncwarp requires.
  for (int64_t first_item =
           (blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp) * items_per_warp;
       first_item < work;
       first_item += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock * items_per_warp) {
    const int64_t item = first_item + slot;
    const bool active = item < work;
    int64_t grp = 0, ux = 0, uy = 0, n = 0;
    if (active) n = DivMod(DivMod(DivMod(item, g.groups, &grp), units_w, &ux), units_h, &uy);
    const int oh = static_cast<int>(uy) * S, ow = static_cast<int>(ux) * S;
    const int cy = static_cast<int>(g.centre_of_output(oh));
    const int cx = static_cast<int>(g.centre_of_output(ow));
    int ky0, ky1, kx0, kx1;
    ValidTaps(cy, r, k, in_h, &ky0, &ky1);
    ValidTaps(cx, r, k, in_w, &kx0, &kx1);
    const int64_t first_pixel = n * g.out_h() * out_w + static_cast<int64_t>(oh) * out_w + ow;
    if (slot_lane == 0) {
      item_pixels[warp][slot] = first_pixel;
      item_groups[warp][slot] = static_cast<int>(grp);
    }
    const T* dout[kSub];
#pragma unroll
    for (int sub = 0; sub < kSub; ++sub)
      dout[sub] = grad_output + (first_pixel + (sub / S) * out_w + sub % S) * channels + grp * cg;
    const int64_t corner = ((n * in_h + cy - r) * in_w + cx - r) * channels + grp * cg;

    for (int first_tap = 0; first_tap < taps; first_tap += kTapsPerRound) {
      Acc part[kPairs] = {};
      // The round's source pixels, found once for all channel chunks
      // (nullptr outside the image, past the last tap or for an idle slot).
      const T* sources[kTapsPerRound];
      {
        int ky = K > 0 ? 0 : first_tap / k, kx = K > 0 ? 0 : first_tap % k;
#pragma unroll
        for (int j = 0; j < kTapsPerRound; ++j) {
          if constexpr (K > 0) {
            ky = (first_tap + j) / K;
            kx = (first_tap + j) % K;
          }
          const bool inside = active && first_tap + j < taps && ky >= ky0 && ky < ky1 &&
                              kx >= kx0 && kx < kx1;
          sources[j] =
              inside ? features + corner + (static_cast<int64_t>(ky) * in_w + kx) * channels
                     : nullptr;
          if constexpr (K == 0) {
            if (++kx == k) {
              kx = 0;
              ++ky;
            }
          }
        }
      }
      for (int chunk = slot_lane; active && chunk < chunks; chunk += lanes) {
        const int c = chunk * V;
        Acc d[kSub][V];
#pragma unroll
        for (int sub = 0; sub < kSub; ++sub) LoadVector<T, V>(dout[sub] + c, d[sub]);
#pragma unroll
        for (int j = 0; j < kTapsPerRound; ++j) {
          if (sources[j] == nullptr) continue;
          Acc f[V];
          LoadVector<T, V>(sources[j] + c, f);
#pragma unroll
          for (int sub = 0; sub < kSub; ++sub) {
#pragma unroll
            for (int v = 0; v < V; ++v) part[j * kSub + sub] += d[sub][v] * f[v];
          }
        }
      }
#pragma unroll
      for (int j = 0; j < kPairs; j += 16 / sizeof(Acc)) {
        if constexpr (sizeof(Acc) == 4) {
          *reinterpret_cast<float4*>(&sums[lane][j]) =
              make_float4(part[j], part[j + 1], part[j + 2], part[j + 3]);
        } else {
          *reinterpret_cast<double2*>(&sums[lane][j]) = make_double2(part[j], part[j + 1]);
        }
      }
      __syncwarp();
      // Value t is pair t % kPairs of the warp's item t / kPairs.
      for (int t = lane; t < items_per_warp * kPairs; t += kWarp) {
        const int item_slot = t / kPairs, pair = t % kPairs;
        const int tap = first_tap + pair / kSub, sub = pair % kSub;
        if (first_item + item_slot >= work || tap >= taps) continue;
        Acc total = 0;
        for (int l = item_slot * lanes; l < (item_slot + 1) * lanes; ++l) total += sums[l][pair];
        Narrow(total, grad_kernels +
                          (item_pixels[warp][item_slot] + (sub / S) * out_w + sub % S) *
                              kernel_channels +
                          item_groups[warp][item_slot] * taps + tap);
      }
      __syncwarp();
    }
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// 16-byte channel vectors need whole vectors per group and aligned bases
// (then every pixel's row is aligned too).
template <typename T>
bool UseVectors(const CarafeGeometry& g, const void* a, const void* b, int vectors = 1) {
  return g.group_channels() % (Element<T>::kVector * vectors) == 0 && Aligned16(a) &&
         Aligned16(b);
}

const char* LastLaunchError() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

// The specialised kernel size: 5 is CARAFE's default; any other size runs
// the general loops.
constexpr int kSpecialisedKernelSize = 5;

template <typename T, int V, int S, int K>
const char* LaunchForward(const CarafeGeometry& g, const void* features, const void* kernels,
                          void* output, cudaStream_t stream) {
  const int64_t items = g.out_pixels() / (S * S) * (g.channels / V);
  if (items == 0) return nullptr;
  ForwardKernel<T, V, S, K><<<BlocksFor(items, kThreads), kThreads, 0, stream>>>(
      g, static_cast<const T*>(features), static_cast<const T*>(kernels),
      static_cast<T*>(output));
  return LastLaunchError();
}

template <typename T, int V, int S>
const char* ForwardSized(const CarafeGeometry& g, const void* features, const void* kernels,
                         void* output, cudaStream_t stream) {
  if constexpr (V > 1) {
    if (g.kernel_size == kSpecialisedKernelSize)
      return LaunchForward<T, V, S, kSpecialisedKernelSize>(g, features, kernels, output, stream);
  }
  return LaunchForward<T, V, S, 0>(g, features, kernels, output, stream);
}

template <typename T, int S>
const char* ForwardScaled(const CarafeGeometry& g, const void* features, const void* kernels,
                          void* output, cudaStream_t stream) {
  constexpr int kV = Element<T>::kVector, kU = Element<T>::kWideVectors;
  if constexpr (kU > 1) {
    if (UseVectors<T>(g, features, output, kU))
      return ForwardSized<T, kV * kU, S>(g, features, kernels, output, stream);
  }
  if (UseVectors<T>(g, features, output))
    return ForwardSized<T, kV, S>(g, features, kernels, output, stream);
  return ForwardSized<T, 1, S>(g, features, kernels, output, stream);
}

template <typename T>
const char* ForwardTyped(const CarafeGeometry& g, const void* features, const void* kernels,
                         void* output, cudaStream_t stream) {
  return g.scale % 2 == 0 ? ForwardScaled<T, 2>(g, features, kernels, output, stream)
                          : ForwardScaled<T, 1>(g, features, kernels, output, stream);
}

template <typename T, int V, int K>
const char* LaunchBackwardFeatures(const CarafeGeometry& g, const void* grad_output,
                                   const void* kernels, void* grad_features,
                                   cudaStream_t stream) {
  constexpr int P = KERAS_CARAFE_FEATURE_SEGMENT;
  const int64_t items = g.batch * g.in_h * ((g.in_w + P - 1) / P) * (g.channels / V);
  if (items == 0) return nullptr;
  BackwardFeaturesKernel<T, V, K><<<BlocksFor(items, kThreads), kThreads, 0, stream>>>(
      g, static_cast<const T*>(grad_output), static_cast<const T*>(kernels),
      static_cast<T*>(grad_features));
  return LastLaunchError();
}

template <typename T>
const char* BackwardFeaturesTyped(const CarafeGeometry& g, const void* grad_output,
                                  const void* kernels, void* grad_features,
                                  cudaStream_t stream) {
  constexpr int kV = Element<T>::kVector, kU = Element<T>::kWideVectors;
  // Wide vectors pay off when downsampling (1.6x on the benchmark shape) but
  // not when upsampling, where each thread already gathers s*s outputs.
  if constexpr (kU > 1) {
    if (g.stride > 1 && UseVectors<T>(g, grad_output, grad_features, kU)) {
      if (g.kernel_size == kSpecialisedKernelSize)
        return LaunchBackwardFeatures<T, kV * kU, kSpecialisedKernelSize>(
            g, grad_output, kernels, grad_features, stream);
      return LaunchBackwardFeatures<T, kV * kU, 0>(g, grad_output, kernels, grad_features,
                                                   stream);
    }
  }
  if (!UseVectors<T>(g, grad_output, grad_features))
    return LaunchBackwardFeatures<T, 1, 0>(g, grad_output, kernels, grad_features, stream);
  if (g.kernel_size == kSpecialisedKernelSize)
    return LaunchBackwardFeatures<T, kV, kSpecialisedKernelSize>(g, grad_output, kernels,
                                                                 grad_features, stream);
  return LaunchBackwardFeatures<T, kV, 0>(g, grad_output, kernels, grad_features, stream);
}

template <typename T, int V, int S, int K>
const char* LaunchBackwardKernels(const CarafeGeometry& g, const void* grad_output,
                                  const void* features, void* grad_kernels,
                                  cudaStream_t stream) {
  const int64_t items = g.out_pixels() / (S * S) * g.groups;
  if (items == 0) return nullptr;
  // Lanes per item: enough for every channel chunk of a group, up to a warp.
  const int64_t chunks = g.group_channels() / V;
  int lanes = kWarp;
  while (lanes > 1 && lanes / 2 >= chunks) lanes /= 2;
  const int64_t warps = (items + kWarp / lanes - 1) / (kWarp / lanes);
  BackwardKernelsKernel<T, V, S, K>
      <<<BlocksFor(warps * kWarp, kReduceThreads), kReduceThreads, 0, stream>>>(
          g, lanes, static_cast<const T*>(grad_output), static_cast<const T*>(features),
          static_cast<T*>(grad_kernels));
  return LastLaunchError();
}

template <typename T, int V, int S>
const char* BackwardKernelsSized(const CarafeGeometry& g, const void* grad_output,
                                 const void* features, void* grad_kernels,
                                 cudaStream_t stream) {
  if constexpr (V > 1) {
    if (g.kernel_size == kSpecialisedKernelSize)
      return LaunchBackwardKernels<T, V, S, kSpecialisedKernelSize>(g, grad_output, features,
                                                                    grad_kernels, stream);
  }
  return LaunchBackwardKernels<T, V, S, 0>(g, grad_output, features, grad_kernels, stream);
}

template <typename T>
const char* BackwardKernelsTyped(const CarafeGeometry& g, const void* grad_output,
                                 const void* features, void* grad_kernels,
                                 cudaStream_t stream) {
  constexpr int kV = Element<T>::kVector;
  const bool vectors = UseVectors<T>(g, grad_output, features);
  if (g.scale % 2 == 0)
    return vectors
               ? BackwardKernelsSized<T, kV, 2>(g, grad_output, features, grad_kernels, stream)
               : BackwardKernelsSized<T, 1, 2>(g, grad_output, features, grad_kernels, stream);
  return vectors
             ? BackwardKernelsSized<T, kV, 1>(g, grad_output, features, grad_kernels, stream)
             : BackwardKernelsSized<T, 1, 1>(g, grad_output, features, grad_kernels, stream);
}

// Calls `launch(T())` with the CUDA type of `kind`, for a valid geometry.
template <typename Launch>
const char* WithType(ScalarKind kind, const CarafeGeometry& g, Launch&& launch) {
  if (const char* error = GeometryError(g)) return error;
  return WithScalarType<__half, __nv_bfloat16>(kind, launch);
}

}  // namespace

const char* Forward(ScalarKind kind, const CarafeGeometry& g, const void* features,
                    const void* kernels, void* output, void* stream) {
  return WithType(kind, g, [&](auto type) {
    using T = decltype(type);
    return ForwardTyped<T>(g, features, kernels, output, static_cast<cudaStream_t>(stream));
  });
}

const char* BackwardFeatures(ScalarKind kind, const CarafeGeometry& g, const void* grad_output,
                             const void* kernels, void* grad_features, void* stream) {
  return WithType(kind, g, [&](auto type) {
    using T = decltype(type);
    return BackwardFeaturesTyped<T>(g, grad_output, kernels, grad_features,
                                    static_cast<cudaStream_t>(stream));
  });
}

const char* BackwardKernels(ScalarKind kind, const CarafeGeometry& g, const void* grad_output,
                            const void* features, void* grad_kernels, void* stream) {
  return WithType(kind, g, [&](auto type) {
    using T = decltype(type);
    return BackwardKernelsTyped<T>(g, grad_output, features, grad_kernels,
                                   static_cast<cudaStream_t>(stream));
  });
}

const char* Run(Map map, ScalarKind kind, const CarafeGeometry& g, const void* first,
                const void* second, void* result, void* stream) {
  switch (map) {
    case Map::kForward: return Forward(kind, g, first, second, result, stream);
    case Map::kFeaturesGrad: return BackwardFeatures(kind, g, first, second, result, stream);
    case Map::kKernelsGrad: return BackwardKernels(kind, g, first, second, result, stream);
  }
  return "unknown map";
}

}  // namespace cuda
}  // namespace keras_carafe

namespace {

void AppendJsonString(std::string* out, const char* text) {
  out->push_back('"');
  for (const char* p = text; *p; ++p) {
    const unsigned char ch = static_cast<unsigned char>(*p);
    if (ch == '"' || ch == '\\') {
      out->push_back('\\');
      out->push_back(*p);
    } else if (ch < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\u%04x", ch);
      out->append(escaped);
    } else {
      out->push_back(*p);
    }
  }
  out->push_back('"');
}

// The comma-separated KERAS_CARAFE_CUDA_ARCHS as a JSON list.
void AppendArchitectures(std::string* out) {
  out->push_back('[');
  std::string names = KERAS_CARAFE_CUDA_ARCHS;
  size_t start = 0;
  bool first = true;
  while (start < names.size()) {
    size_t end = names.find(',', start);
    if (end == std::string::npos) end = names.size();
    if (end > start) {
      if (!first) out->append(", ");
      AppendJsonString(out, names.substr(start, end - start).c_str());
      first = false;
    }
    start = end + 1;
  }
  out->push_back(']');
}

const char* ErrorText(cudaError_t err) { return err == cudaSuccess ? "" : cudaGetErrorString(err); }

}  // namespace

extern "C" const char* keras_carafe_cuda_probe() {
  static std::mutex mutex;
  static std::string json;
  std::lock_guard<std::mutex> lock(mutex);
  int runtime = 0, driver = 0, count = 0;
  cudaRuntimeGetVersion(&runtime);
  const cudaError_t driver_err = cudaDriverGetVersion(&driver);
  std::string driver_error = ErrorText(driver_err);
  if (driver_err == cudaSuccess && driver == 0) driver_error = "no CUDA driver is installed";
  std::string device_error;
  if (driver > 0) {
    const cudaError_t count_err = cudaGetDeviceCount(&count);
    if (count_err != cudaSuccess) {
      count = 0;
      device_error = cudaGetErrorString(count_err);
    }
  }
  json = "{\"built\": true, \"architectures\": ";
  AppendArchitectures(&json);
  char numbers[160];
  std::snprintf(numbers, sizeof(numbers), ", \"runtime\": %d, \"driver\": %d, \"driver_error\": ",
                runtime, driver);
  json += numbers;
  AppendJsonString(&json, driver_error.c_str());
  std::snprintf(numbers, sizeof(numbers), ", \"device_count\": %d, \"device_error\": ", count);
  json += numbers;
  AppendJsonString(&json, device_error.c_str());
  json += ", \"devices\": [";
  int previous = 0;
  const bool restore = count > 0 && cudaGetDevice(&previous) == cudaSuccess;
  for (int i = 0; i < count; ++i) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i);
    cudaDeviceProp prop;
    const char* name = cudaGetDeviceProperties(&prop, i) == cudaSuccess ? prop.name : "unknown";
    // Asking for a real kernel's attributes loads this library's image for
    // the device: it fails when there is neither machine code for it nor PTX
    // that its driver can compile.
    cudaError_t image_err = cudaSetDevice(i);
    if (image_err == cudaSuccess) {
      cudaFuncAttributes attributes;
      image_err = cudaFuncGetAttributes(
          &attributes, keras_carafe::cuda::ForwardKernel<float, 1, 1, 0>);
    }
    if (i > 0) json += ", ";
    std::snprintf(numbers, sizeof(numbers),
                  "{\"index\": %d, \"compute_capability\": [%d, %d], \"kernel_image\": %s, "
                  "\"name\": ",
                  i, major, minor, image_err == cudaSuccess ? "true" : "false");
    json += numbers;
    AppendJsonString(&json, name);
    json += ", \"error\": ";
    AppendJsonString(&json, ErrorText(image_err));
    json += "}";
  }
  if (restore) cudaSetDevice(previous);
  cudaGetLastError();  // The probe's errors are reported above, not left pending.
  json += "]}";
  return json.c_str();
}
