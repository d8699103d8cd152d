// CPU kernels of the CARAFE reassembly (see carafe_cpu.h for the contract
// and carafe_geometry.h for the layouts and the cell geometry).
//
// Each launcher shards its pixels over the caller's thread pool. Channels are
// the innermost, unit-stride loop, summed in explicit vector registers. `Acc`
// is the accumulation type (float for 16-bit inputs). A shard's scratch is
// bounded (kMaxRows pairs of weight and row, plus one row of partial sums
// when a gather has more rows than that), so no scale or kernel size makes
// it allocate in proportion to the problem.
#include "carafe_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

namespace keras_carafe {
namespace cpu {
namespace {

// --- 16-bit storage -------------------------------------------------------------------

// IEEE binary16 and bfloat16 values as their bit patterns: the frameworks'
// own half types have the same layout, so their buffers are read as these.
struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline uint32_t FloatToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float HalfToFloat(uint16_t h) {
#if defined(__F16C__) && defined(__AVX__)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ff;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return BitsToFloat(sign | 0x7f800000u | (mantissa << 13));
  return BitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
#endif
}

// Round to nearest, ties to even, as the frameworks' own conversions do.
inline uint16_t FloatToHalf(float f) {
#if defined(__F16C__) && defined(__AVX__)
  return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
  const uint32_t u = FloatToBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  const uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude >= 0x7f800000u)  // infinity, or NaN (kept quiet)
    return sign | 0x7c00 | (magnitude > 0x7f800000u ? 0x200 : 0);
  // From 65520 (halfway between the largest half, 65504, and 2^16) up: infinity.
  if (magnitude >= 0x477ff000u) return sign | 0x7c00;
  if (magnitude < 0x38800000u) {
    // Below the smallest normal half (2^-14): a multiple of 2^-24, rounded by
    // the float unit in its default mode (to nearest, ties to even).
    const float scaled = BitsToFloat(magnitude) * 16777216.0f;
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  uint32_t half = (((magnitude >> 23) - 112) << 10) | ((magnitude >> 13) & 0x3ff);
  const uint32_t rest = magnitude & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;  // may carry into the exponent
  return sign | static_cast<uint16_t>(half);
#endif
}

inline float BFloat16ToFloat(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

inline uint16_t FloatToBFloat16(float f) {
  const uint32_t u = FloatToBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

template <typename Acc, typename T>
inline Acc Widen(T v) {
  if constexpr (std::is_same<T, Half>::value) {
    return HalfToFloat(v.bits);
  } else if constexpr (std::is_same<T, BFloat16>::value) {
    return BFloat16ToFloat(v.bits);
  } else {
    return static_cast<Acc>(v);
  }
}

template <typename T, typename Acc>
inline T Narrow(Acc v) {
  if constexpr (std::is_same<T, Half>::value) {
    return Half{FloatToHalf(v)};
  } else if constexpr (std::is_same<T, BFloat16>::value) {
    return BFloat16{FloatToBFloat16(v)};
  } else {
    return static_cast<T>(v);
  }
}

// --- vectors --------------------------------------------------------------------------

// Channel loops use GCC/Clang vector extensions with several independent
// accumulators: the auto-vectorizer alone keeps the partial sums in memory
// for the tap-count loop, which is several times slower. The vector width
// follows the instruction set the kernels are compiled for.
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
  } else if constexpr (std::is_same<T, BFloat16>::value) {
    // A bfloat16 is the upper half of the float with the same bits.
    typedef uint16_t Bits16 __attribute__((vector_size(kVectorBytes / 2)));
    typedef uint32_t Bits32 __attribute__((vector_size(kVectorBytes)));
    Bits16 bits;
    std::memcpy(&bits, p, sizeof(bits));
    const Bits32 wide = __builtin_convertvector(bits, Bits32) << 16;
    std::memcpy(&v, &wide, sizeof(v));
#if defined(__F16C__) && defined(__AVX__)
  } else if constexpr (std::is_same<T, Half>::value) {
    static_assert(L == 8, "eight floats per AVX vector");
    const __m256 wide = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    std::memcpy(&v, &wide, sizeof(v));
#endif
  } else {
    for (int64_t i = 0; i < L; ++i) v[i] = Widen<Acc>(p[i]);
  }
  return v;
}

template <typename T, typename Acc>
inline void StoreVector(typename Vector<Acc>::type v, T* p) {
  if constexpr (std::is_same<T, Acc>::value) {
    std::memcpy(p, &v, sizeof(v));
#if defined(__F16C__) && defined(__AVX__)
  } else if constexpr (std::is_same<T, Half>::value) {
    __m256 wide;
    std::memcpy(&wide, &v, sizeof(wide));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(wide, _MM_FROUND_TO_NEAREST_INT));
#endif
  } else {
    for (int64_t i = 0; i < kLanes<Acc>; ++i) p[i] = Narrow<T>(v[i]);
  }
}

// out[j] (+)= sum_t weights[t] * rows[t][j] for j < length, in a fixed order;
// `Out` is T, or Acc for partial sums that `accumulate` adds to.
template <typename T, typename Acc, typename Out>
inline void WeightedRowSum(const Acc* weights, const T* const* rows, int64_t count,
                           int64_t length, Out* out, bool accumulate) {
  using V = typename Vector<Acc>::type;
  constexpr int64_t L = kLanes<Acc>;
  auto finish = [&](V a, int64_t c) {
    if (accumulate) a += LoadVector<Acc>(out + c);
    StoreVector<Out, Acc>(a, out + c);
  };
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
    finish(a0, c);
    finish(a1, c + L);
    finish(a2, c + 2 * L);
    finish(a3, c + 3 * L);
  }
  for (; c + L <= length; c += L) {
    V a = {};
    for (int64_t t = 0; t < count; ++t) a += weights[t] * LoadVector<Acc>(rows[t] + c);
    finish(a, c);
  }
  for (; c < length; ++c) {
    Acc a = accumulate ? Widen<Acc>(out[c]) : Acc(0);
    for (int64_t t = 0; t < count; ++t) a += weights[t] * Widen<Acc>(rows[t][c]);
    out[c] = Narrow<Out>(a);
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
  for (; c < length; ++c) sum += Widen<Acc>(a[c]) * Widen<Acc>(b[c]);
  return sum;
}

// --- gathers --------------------------------------------------------------------------

// Pairs of (weight, row) gathered for one output row, at most kMaxRows at a
// time; longer gathers are summed in pieces into a row of partial sums, in
// the order the pairs were added.
constexpr int64_t kMaxRows = 1024;

template <typename T, typename Acc>
class RowGather {
 public:
  RowGather(int64_t most_rows, int64_t length)
      : capacity_(std::min(most_rows, kMaxRows)), length_(length),
        weights_(capacity_), rows_(capacity_) {
    if (most_rows > capacity_) partial_.resize(length);
  }

  void Add(Acc weight, const T* row) {
    if (count_ == capacity_) Flush();
    weights_[count_] = weight;
    rows_[count_++] = row;
  }

  // Writes the sum of the pairs to `out` and starts over.
  void Finish(T* out) {
    if (!flushed_) {
      WeightedRowSum<T, Acc, T>(weights_.data(), rows_.data(), count_, length_, out, false);
    } else {
      Flush();
      for (int64_t c = 0; c < length_; ++c) out[c] = Narrow<T>(partial_[c]);
    }
    count_ = 0;
    flushed_ = false;
  }

 private:
  void Flush() {
    WeightedRowSum<T, Acc, Acc>(weights_.data(), rows_.data(), count_, length_,
                                partial_.data(), flushed_);
    flushed_ = true;
    count_ = 0;
  }

  int64_t capacity_, length_, count_ = 0;
  bool flushed_ = false;
  std::vector<Acc> weights_;
  std::vector<const T*> rows_;
  std::vector<Acc> partial_;
};

// Taps (ky or kx) whose source row/column lies inside [0, extent).
inline void ValidTaps(int64_t center, int64_t radius, int64_t kernel_size, int64_t extent,
                      int64_t* begin, int64_t* end) {
  *begin = std::max<int64_t>(0, radius - center);
  *end = std::min<int64_t>(kernel_size, extent - center + radius);
}

template <typename T, typename Acc>
void ForwardPixels(const CarafeGeometry& g, const T* features, const T* kernels, T* output,
             int64_t pixel_begin, int64_t pixel_end) {
  const int64_t out_w = g.out_w(), out_h = g.out_h();
  const int64_t k = g.kernel_size, r = g.radius(), taps = g.taps();
  const int64_t cg = g.group_channels();
  RowGather<T, Acc> gather(taps, cg);
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
      for (int64_t ky = ky0; ky < ky1; ++ky) {
        for (int64_t kx = kx0; kx < kx1; ++kx) {
          gather.Add(Widen<Acc>(pixel_kernels[grp * taps + ky * k + kx]),
                     features + ((n * g.in_h + ih + ky - r) * g.in_w + iw + kx - r) *
                                    g.channels + grp * cg);
        }
      }
      gather.Finish(output + p * g.channels + grp * cg);
    }
  }
}

// d loss / d kernels for output pixels [pixel_begin, pixel_end).
template <typename T, typename Acc>
void BackwardKernelsPixels(const CarafeGeometry& g, const T* grad_output, const T* features,
                     T* grad_kernels, int64_t pixel_begin, int64_t pixel_end) {
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
            const T* src = features + ((n * g.in_h + y) * g.in_w + x) * g.channels + grp * cg;
            sum = Dot<T, Acc>(dout + grp * cg, src, cg);
          }
          dk[grp * taps + ky * k + kx] = Narrow<T>(sum);
        }
      }
    }
  }
}

// d loss / d features for input pixels [pixel_begin, pixel_end): input pixel
// (y, x) is read through tap (ky, kx) by the s*s output pixels of the cell
// centred on (y - ky + r, x - kx + r), where such a cell exists.
template <typename T, typename Acc>
void BackwardFeaturesPixels(const CarafeGeometry& g, const T* grad_output, const T* kernels,
                      T* grad_features, int64_t pixel_begin, int64_t pixel_end) {
  const int64_t out_w = g.out_w(), out_h = g.out_h(), s = g.scale;
  const int64_t cells_h = g.cells_h(), cells_w = g.cells_w();
  const int64_t k = g.kernel_size, taps = g.taps();
  const int64_t cg = g.group_channels();
  int64_t readers;  // the most output rows one input row can be read by
  if (__builtin_mul_overflow(taps, s * s, &readers)) readers = INT64_MAX;
  RowGather<T, Acc> gather(readers, cg);
  for (int64_t p = pixel_begin; p < pixel_end; ++p) {
    const int64_t x = p % g.in_w;
    const int64_t y = (p / g.in_w) % g.in_h;
    const int64_t n = p / (g.in_w * g.in_h);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      for (int64_t ky = 0; ky < k; ++ky) {
        const int64_t cy = g.cell_reading(y, ky, cells_h);
        if (cy < 0) continue;
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t cx = g.cell_reading(x, kx, cells_w);
          if (cx < 0) continue;
          for (int64_t dy = 0; dy < s; ++dy) {
            for (int64_t dx = 0; dx < s; ++dx) {
              const int64_t q = (n * out_h + cy * s + dy) * out_w + cx * s + dx;
              gather.Add(Widen<Acc>(kernels[q * g.kernel_channels() + grp * taps + ky * k + kx]),
                         grad_output + q * g.channels + grp * cg);
            }
          }
        }
      }
      gather.Finish(grad_features + p * g.channels + grp * cg);
    }
  }
}

// --- launchers ------------------------------------------------------------------------

// Rough cycles per pixel, for the pool's shard sizing.
int64_t CostPerPixel(const CarafeGeometry& g) { return 2 * g.taps() * g.channels + 16; }

constexpr char kOutOfMemory[] = "out of memory for the CARAFE CPU kernels' scratch buffers";

// Runs `body(begin, end)` over [0, total) on `pool`; a shard that cannot
// allocate its scratch makes the whole call fail with kOutOfMemory instead of
// throwing through the framework's threads.
template <typename Body>
const char* ParallelFor(const ThreadPool& pool, int64_t total, int64_t cost, Body body) {
  if (total <= 0) return nullptr;
  struct Context {
    Body* body;
    std::atomic<bool> out_of_memory{false};
  } context{&body};
  Shard shard{[](void* c, int64_t begin, int64_t end) {
                auto* context = static_cast<Context*>(c);
                try {
                  (*context->body)(begin, end);
                } catch (const std::bad_alloc&) {
                  context->out_of_memory.store(true);
                }
              },
              &context};
  pool.parallel_for(pool.pool, total, cost, shard);
  return context.out_of_memory.load() ? kOutOfMemory : nullptr;
}

template <typename T>
using AccOf = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

// Calls `launch(T())` with the storage type of `kind`, for a valid geometry.
template <typename Launch>
const char* WithType(ScalarKind kind, const CarafeGeometry& g, Launch&& launch) {
  if (const char* error = GeometryError(g)) return error;
  return WithScalarType<Half, BFloat16>(kind, launch);
}

}  // namespace

ThreadPool SerialThreadPool() {
  return ThreadPool{[](void*, int64_t total, int64_t, Shard shard) {
                      shard.run(shard.context, 0, total);
                    },
                    nullptr};
}

const char* Forward(ScalarKind kind, const CarafeGeometry& g, const void* features,
                    const void* kernels, void* output, const ThreadPool& pool) {
  return WithType(kind, g, [&](auto type) {
    using T = decltype(type);
    return ParallelFor(pool, g.out_pixels(), CostPerPixel(g), [&](int64_t begin, int64_t end) {
      ForwardPixels<T, AccOf<T>>(g, static_cast<const T*>(features),
                                static_cast<const T*>(kernels), static_cast<T*>(output), begin,
                                end);
    });
  });
}

const char* BackwardFeatures(ScalarKind kind, const CarafeGeometry& g, const void* grad_output,
                             const void* kernels, void* grad_features, const ThreadPool& pool) {
  return WithType(kind, g, [&](auto type) {
    using T = decltype(type);
    // Each input pixel gathers from the s*s outputs of every cell that reads it.
    const int64_t cost = CostPerPixel(g) * g.scale * g.scale;
    return ParallelFor(pool, g.in_pixels(), cost, [&](int64_t begin, int64_t end) {
      BackwardFeaturesPixels<T, AccOf<T>>(g, static_cast<const T*>(grad_output),
                                         static_cast<const T*>(kernels),
                                         static_cast<T*>(grad_features), begin, end);
    });
  });
}

const char* BackwardKernels(ScalarKind kind, const CarafeGeometry& g, const void* grad_output,
                            const void* features, void* grad_kernels, const ThreadPool& pool) {
  return WithType(kind, g, [&](auto type) {
    using T = decltype(type);
    return ParallelFor(pool, g.out_pixels(), CostPerPixel(g), [&](int64_t begin, int64_t end) {
      BackwardKernelsPixels<T, AccOf<T>>(g, static_cast<const T*>(grad_output),
                                        static_cast<const T*>(features),
                                        static_cast<T*>(grad_kernels), begin, end);
    });
  });
}

const char* Run(Map map, ScalarKind kind, const CarafeGeometry& g, const void* first,
                const void* second, void* result, const ThreadPool& pool) {
  switch (map) {
    case Map::kForward: return Forward(kind, g, first, second, result, pool);
    case Map::kFeaturesGrad: return BackwardFeatures(kind, g, first, second, result, pool);
    case Map::kKernelsGrad: return BackwardKernels(kind, g, first, second, result, pool);
  }
  return "unknown map";
}

}  // namespace cpu
}  // namespace keras_carafe
