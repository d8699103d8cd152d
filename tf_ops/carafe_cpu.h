// CPU kernels of the CARAFE reassembly, free of any framework type.
//
// Each function handles a half-open range of pixels so that the caller can
// shard the work over its own thread pool. Channels are the innermost, unit
// stride loop, which the compiler vectorizes. `Acc` is the accumulation type
// (float for 16-bit inputs) and `scratch` holds `geometry.channels` values of
// it, owned by the calling shard so that no pixel allocates.
//
// The features gradient is a gather over the output pixels that read each
// input pixel, so every result is written by exactly one loop iteration and
// the sums run in a fixed order: results are bitwise reproducible.
#ifndef KERAS_CARAFE_TF_OPS_CARAFE_CPU_H_
#define KERAS_CARAFE_TF_OPS_CARAFE_CPU_H_

#include <algorithm>
#include <cstdint>

#include "carafe_geometry.h"

namespace keras_carafe {
namespace cpu {

// Taps (ky or kx) whose source row/column lies inside [0, extent).
inline void ValidTaps(int64_t center, int64_t radius, int64_t kernel_size,
                      int64_t extent, int64_t* begin, int64_t* end) {
  *begin = std::max<int64_t>(0, radius - center);
  *end = std::min<int64_t>(kernel_size, extent - center + radius);
}

template <typename T, typename Acc>
void Forward(const CarafeGeometry& g, const T* features, const T* kernels,
             T* output, int64_t pixel_begin, int64_t pixel_end, Acc* scratch) {
  const int64_t out_w = g.out_w(), out_h = g.out_h();
  const int64_t k = g.kernel_size, r = g.radius(), taps = g.taps();
  const int64_t cg = g.group_channels();
  for (int64_t p = pixel_begin; p < pixel_end; ++p) {
    const int64_t ow = p % out_w;
    const int64_t oh = (p / out_w) % out_h;
    const int64_t n = p / (out_w * out_h);
    const int64_t ih = oh / g.scale, iw = ow / g.scale;
    int64_t ky0, ky1, kx0, kx1;
    ValidTaps(ih, r, k, g.in_h, &ky0, &ky1);
    ValidTaps(iw, r, k, g.in_w, &kx0, &kx1);
    const T* pixel_kernels = kernels + p * g.kernel_channels();
    std::fill(scratch, scratch + g.channels, Acc(0));
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      Acc* acc = scratch + grp * cg;
      for (int64_t ky = ky0; ky < ky1; ++ky) {
        const T* row = features +
                       ((n * g.in_h + ih + ky - r) * g.in_w) * g.channels +
                       grp * cg;
        for (int64_t kx = kx0; kx < kx1; ++kx) {
          const Acc w = static_cast<Acc>(pixel_kernels[grp * taps + ky * k + kx]);
          const T* src = row + (iw + kx - r) * g.channels;
#pragma omp simd
          for (int64_t c = 0; c < cg; ++c) acc[c] += w * static_cast<Acc>(src[c]);
        }
      }
    }
    T* out = output + p * g.channels;
#pragma omp simd
    for (int64_t c = 0; c < g.channels; ++c) out[c] = static_cast<T>(scratch[c]);
  }
}

// d loss / d kernels for output pixels [pixel_begin, pixel_end).
template <typename T, typename Acc>
void BackwardKernels(const CarafeGeometry& g, const T* grad_output,
                     const T* features, T* grad_kernels, int64_t pixel_begin,
                     int64_t pixel_end) {
  const int64_t out_w = g.out_w(), out_h = g.out_h();
  const int64_t k = g.kernel_size, r = g.radius(), taps = g.taps();
  const int64_t cg = g.group_channels();
  for (int64_t p = pixel_begin; p < pixel_end; ++p) {
    const int64_t ow = p % out_w;
    const int64_t oh = (p / out_w) % out_h;
    const int64_t n = p / (out_w * out_h);
    const int64_t ih = oh / g.scale, iw = ow / g.scale;
    const T* dout = grad_output + p * g.channels;
    T* dk = grad_kernels + p * g.kernel_channels();
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      for (int64_t ky = 0; ky < k; ++ky) {
        const int64_t y = ih + ky - r;
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t x = iw + kx - r;
          Acc sum = 0;
          if (y >= 0 && y < g.in_h && x >= 0 && x < g.in_w) {
            const T* src =
                features + ((n * g.in_h + y) * g.in_w + x) * g.channels + grp * cg;
            const T* d = dout + grp * cg;
#pragma omp simd reduction(+ : sum)
            for (int64_t c = 0; c < cg; ++c)
              sum += static_cast<Acc>(d[c]) * static_cast<Acc>(src[c]);
          }
          dk[grp * taps + ky * k + kx] = static_cast<T>(sum);
        }
      }
    }
  }
}

// d loss / d features for input pixels [pixel_begin, pixel_end): input pixel
// (y, x) is read through tap (ky, kx) by the s*s output pixels whose source
// pixel is (y - ky + r, x - kx + r).
template <typename T, typename Acc>
void BackwardFeatures(const CarafeGeometry& g, const T* grad_output,
                      const T* kernels, T* grad_features, int64_t pixel_begin,
                      int64_t pixel_end, Acc* scratch) {
  const int64_t out_w = g.out_w(), out_h = g.out_h(), s = g.scale;
  const int64_t k = g.kernel_size, r = g.radius(), taps = g.taps();
  const int64_t cg = g.group_channels();
  for (int64_t p = pixel_begin; p < pixel_end; ++p) {
    const int64_t x = p % g.in_w;
    const int64_t y = (p / g.in_w) % g.in_h;
    const int64_t n = p / (g.in_w * g.in_h);
    // Source pixel sy = y - ky + r must lie in [0, in_h).
    int64_t ky0, ky1, kx0, kx1;
    ValidTaps(g.in_h - 1 - y, r, k, g.in_h, &ky0, &ky1);
    ValidTaps(g.in_w - 1 - x, r, k, g.in_w, &kx0, &kx1);
    std::fill(scratch, scratch + g.channels, Acc(0));
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      const int64_t sy = y - ky + r;
      for (int64_t kx = kx0; kx < kx1; ++kx) {
        const int64_t sx = x - kx + r;
        for (int64_t dy = 0; dy < s; ++dy) {
          for (int64_t dx = 0; dx < s; ++dx) {
            const int64_t q = (n * out_h + sy * s + dy) * out_w + sx * s + dx;
            const T* dout = grad_output + q * g.channels;
            const T* kq = kernels + q * g.kernel_channels() + ky * k + kx;
            for (int64_t grp = 0; grp < g.groups; ++grp) {
              const Acc w = static_cast<Acc>(kq[grp * taps]);
              Acc* acc = scratch + grp * cg;
              const T* d = dout + grp * cg;
#pragma omp simd
              for (int64_t c = 0; c < cg; ++c) acc[c] += w * static_cast<Acc>(d[c]);
            }
          }
        }
      }
    }
    T* df = grad_features + p * g.channels;
#pragma omp simd
    for (int64_t c = 0; c < g.channels; ++c) df[c] = static_cast<T>(scratch[c]);
  }
}

}  // namespace cpu
}  // namespace keras_carafe

#endif  // KERAS_CARAFE_TF_OPS_CARAFE_CPU_H_
