// CPU kernels of the CARAFE reassembly, free of any framework type.
//
// Each function handles a half-open range of pixels so that the caller can
// shard the work over its own thread pool. Channels are the innermost, unit
// stride loop. `Acc` is the accumulation type (float for 16-bit inputs);
// scratch buffers belong to the calling shard so that no pixel allocates.
//
// The features gradient is a gather over the output pixels that read each
// input pixel, so every result is written by exactly one loop iteration and
// the sums run in a fixed order: results are bitwise reproducible.
#ifndef KERAS_CARAFE_TF_OPS_CARAFE_CPU_H_
#define KERAS_CARAFE_TF_OPS_CARAFE_CPU_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include "carafe_geometry.h"

namespace keras_carafe {
namespace cpu {

// Taps (ky or kx) whose source row/column lies inside [0, extent).
inline void ValidTaps(int64_t center, int64_t radius, int64_t kernel_size,
                      int64_t extent, int64_t* begin, int64_t* end) {
  *begin = std::max<int64_t>(0, radius - center);
  *end = std::min<int64_t>(kernel_size, extent - center + radius);
}

// Channel loops use GCC/Clang vector extensions with several independent
// accumulators: the auto-vectorizer alone keeps the partial sums in memory
// for the tap-count loop, which is several times slower. The vector width
// follows the instruction set the library is compiled for.
#if defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

template <typename Acc>
struct Vector;
template <>
struct Vector<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct Vector<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
};

template <typename Acc>
constexpr int64_t kLanes = kVectorBytes / sizeof(Acc);

// Loads kLanes<Acc> values of type T as one Acc vector.
template <typename Acc, typename T>
inline typename Vector<Acc>::type LoadVector(const T* p) {
  using V = typename Vector<Acc>::type;
  constexpr int64_t L = kLanes<Acc>;
  V v;
  if constexpr (std::is_same<T, Acc>::value) {
    std::memcpy(&v, p, sizeof(v));
  } else if constexpr (std::is_same<Acc, float>::value &&
                       KindOf<T>::value == ScalarKind::kBFloat16) {
    static_assert(sizeof(T) == 2, "bfloat16 storage must be 16 bits");
    // A bfloat16 is the upper half of the float with the same bits.
    typedef uint16_t Bits16 __attribute__((vector_size(kVectorBytes / 2)));
    typedef uint32_t Bits32 __attribute__((vector_size(kVectorBytes)));
    Bits16 bits;
    std::memcpy(&bits, p, sizeof(bits));
    const Bits32 wide = __builtin_convertvector(bits, Bits32) << 16;
    std::memcpy(&v, &wide, sizeof(v));
#if defined(__F16C__) && defined(__AVX__)
  } else if constexpr (std::is_same<Acc, float>::value &&
                       KindOf<T>::value == ScalarKind::kFloat16) {
    static_assert(sizeof(T) == 2 && L == 8, "half storage must be 16 bits");
    const __m256 wide = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    std::memcpy(&v, &wide, sizeof(v));
#endif
  } else {
    for (int64_t i = 0; i < L; ++i) v[i] = static_cast<Acc>(p[i]);
  }
  return v;
}

template <typename T, typename Acc>
inline void StoreVector(typename Vector<Acc>::type v, T* p) {
  if constexpr (std::is_same<T, Acc>::value) {
    std::memcpy(p, &v, sizeof(v));
  } else {
    for (int64_t i = 0; i < kLanes<Acc>; ++i) p[i] = static_cast<T>(v[i]);
  }
}

// out[j] = sum_t weights[t] * rows[t][j] for j < length, in a fixed order.
template <typename T, typename Acc>
inline void WeightedRowSum(const Acc* weights, const T* const* rows, int64_t count,
                           int64_t length, T* out) {
  using V = typename Vector<Acc>::type;
  constexpr int64_t L = kLanes<Acc>;
  int64_t c = 0;
  for (; c + 4 * L <= length; c += 4 * L) {
    V a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t t = 0; t < count; ++t) {
      const Acc w = weights[t];
      const T* row = rows[t] + c;
      a0 += w * LoadVector<Acc>(row);
      a1 += w * LoadVector<Acc>(row + L);
      a2 += w * LoadVector<Acc>(row + 2 * L);
      a3 += w * LoadVector<Acc>(row + 3 * L);
    }
    StoreVector<T, Acc>(a0, out + c);
    StoreVector<T, Acc>(a1, out + c + L);
    StoreVector<T, Acc>(a2, out + c + 2 * L);
    StoreVector<T, Acc>(a3, out + c + 3 * L);
  }
  for (; c + L <= length; c += L) {
    V a = {};
    for (int64_t t = 0; t < count; ++t) a += weights[t] * LoadVector<Acc>(rows[t] + c);
    StoreVector<T, Acc>(a, out + c);
  }
  for (; c < length; ++c) {
    Acc a = 0;
    for (int64_t t = 0; t < count; ++t) a += weights[t] * static_cast<Acc>(rows[t][c]);
    out[c] = static_cast<T>(a);
  }
}

// sum_j a[j] * b[j] for j < length, in a fixed order.
template <typename T, typename Acc>
inline Acc Dot(const T* a, const T* b, int64_t length) {
  using V = typename Vector<Acc>::type;
  constexpr int64_t L = kLanes<Acc>;
  V s0 = {}, s1 = {};
  int64_t c = 0;
  for (; c + 2 * L <= length; c += 2 * L) {
    s0 += LoadVector<Acc>(a + c) * LoadVector<Acc>(b + c);
    s1 += LoadVector<Acc>(a + c + L) * LoadVector<Acc>(b + c + L);
  }
  for (; c + L <= length; c += L) s0 += LoadVector<Acc>(a + c) * LoadVector<Acc>(b + c);
  s0 += s1;
  Acc sum = 0;
  for (int64_t i = 0; i < L; ++i) sum += s0[i];
  for (; c < length; ++c) sum += static_cast<Acc>(a[c]) * static_cast<Acc>(b[c]);
  return sum;
}

// Per-shard buffers for the (weight, row) lists, sized for the largest list
// (k*k taps times s*s sub-pixels in the features gradient).
template <typename T, typename Acc>
struct TapScratch {
  explicit TapScratch(const CarafeGeometry& g)
      : weights(g.taps() * g.scale * g.scale), rows(g.taps() * g.scale * g.scale) {}
  std::vector<Acc> weights;
  std::vector<const T*> rows;
};

template <typename T, typename Acc>
void Forward(const CarafeGeometry& g, const T* features, const T* kernels, T* output,
             int64_t pixel_begin, int64_t pixel_end, TapScratch<T, Acc>* scratch) {
  const int64_t out_w = g.out_w(), out_h = g.out_h();
  const int64_t k = g.kernel_size, r = g.radius(), taps = g.taps();
  const int64_t cg = g.group_channels();
  Acc* weights = scratch->weights.data();
  const T** rows = scratch->rows.data();
  for (int64_t p = pixel_begin; p < pixel_end; ++p) {
    const int64_t ow = p % out_w;
    const int64_t oh = (p / out_w) % out_h;
    const int64_t n = p / (out_w * out_h);
    const int64_t ih = g.centre_of_output(oh), iw = g.centre_of_output(ow);
    int64_t ky0, ky1, kx0, kx1;
    ValidTaps(ih, r, k, g.in_h, &ky0, &ky1);
    ValidTaps(iw, r, k, g.in_w, &kx0, &kx1);
    const T* pixel_kernels = kernels + p * g.kernel_channels();
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      int64_t count = 0;
      for (int64_t ky = ky0; ky < ky1; ++ky) {
        for (int64_t kx = kx0; kx < kx1; ++kx, ++count) {
          weights[count] = static_cast<Acc>(pixel_kernels[grp * taps + ky * k + kx]);
          rows[count] = features +
                        ((n * g.in_h + ih + ky - r) * g.in_w + iw + kx - r) * g.channels +
                        grp * cg;
        }
      }
      WeightedRowSum(weights, rows, count, cg, output + p * g.channels + grp * cg);
    }
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
    const int64_t ih = g.centre_of_output(oh), iw = g.centre_of_output(ow);
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
            sum = Dot<T, Acc>(dout + grp * cg, src, cg);
          }
          dk[grp * taps + ky * k + kx] = static_cast<T>(sum);
        }
      }
    }
  }
}

// d loss / d features for input pixels [pixel_begin, pixel_end): input pixel
// (y, x) is read through tap (ky, kx) by the s*s output pixels of the cell
// centred on (y - ky + r, x - kx + r), where such a cell exists.
template <typename T, typename Acc>
void BackwardFeatures(const CarafeGeometry& g, const T* grad_output, const T* kernels,
                      T* grad_features, int64_t pixel_begin, int64_t pixel_end,
                      TapScratch<T, Acc>* scratch) {
  const int64_t out_w = g.out_w(), out_h = g.out_h(), s = g.scale;
  const int64_t cells_h = g.cells_h(), cells_w = g.cells_w();
  const int64_t k = g.kernel_size, taps = g.taps();
  const int64_t cg = g.group_channels();
  Acc* weights = scratch->weights.data();
  const T** rows = scratch->rows.data();
  for (int64_t p = pixel_begin; p < pixel_end; ++p) {
    const int64_t x = p % g.in_w;
    const int64_t y = (p / g.in_w) % g.in_h;
    const int64_t n = p / (g.in_w * g.in_h);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      int64_t count = 0;
      for (int64_t ky = 0; ky < k; ++ky) {
        const int64_t cy = g.cell_reading(y, ky, cells_h);
        if (cy < 0) continue;
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t cx = g.cell_reading(x, kx, cells_w);
          if (cx < 0) continue;
          for (int64_t dy = 0; dy < s; ++dy) {
            for (int64_t dx = 0; dx < s; ++dx, ++count) {
              const int64_t q = (n * out_h + cy * s + dy) * out_w + cx * s + dx;
              weights[count] =
                  static_cast<Acc>(kernels[q * g.kernel_channels() + grp * taps + ky * k + kx]);
              rows[count] = grad_output + q * g.channels + grp * cg;
            }
          }
        }
      }
      WeightedRowSum(weights, rows, count, cg, grad_features + p * g.channels + grp * cg);
    }
  }
}

}  // namespace cpu
}  // namespace keras_carafe

#endif  // KERAS_CARAFE_TF_OPS_CARAFE_CPU_H_
