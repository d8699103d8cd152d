// CPU kernels of the CARAFE reassembly (both directions), free of any
// framework type: raw pointers, sizes and the caller's thread pool.
//
// Pointers hold the element type named by `kind` (16-bit types as their IEEE
// half / bfloat16 bit patterns); layouts are those of carafe_geometry.h. Each
// launcher returns nullptr on success, or a static message: an invalid
// geometry, or scratch memory that could not be allocated. The features
// gradient is a gather over the output pixels that read each input pixel, so
// every result is written by exactly one loop iteration and sums run in a
// fixed order: results are bitwise reproducible whatever the threads do.
#ifndef KERAS_CARAFE_CSRC_KERNELS_CARAFE_CPU_H_
#define KERAS_CARAFE_CSRC_KERNELS_CARAFE_CPU_H_

#include <cstdint>

#include "carafe_geometry.h"

namespace keras_carafe {
namespace cpu {

// One piece of a loop: `run(context, begin, end)` handles elements
// [begin, end). It does not throw.
struct Shard {
  void (*run)(void* context, int64_t begin, int64_t end);
  void* context;
};

// How a framework spreads a loop over its threads: `parallel_for(pool, total,
// cost, shard)` calls `shard` on disjoint ranges that cover [0, total),
// possibly from several threads at once, and returns once all have run.
// `cost` is a rough count of cycles per element, for sizing the ranges.
struct ThreadPool {
  void (*parallel_for)(void* pool, int64_t total, int64_t cost, Shard shard);
  void* pool;
};

// A pool that runs every loop in the calling thread.
ThreadPool SerialThreadPool();

const char* Forward(ScalarKind kind, const CarafeGeometry& geometry, const void* features,
                    const void* kernels, void* output, const ThreadPool& pool);

// d loss / d features from the upstream gradient and the kernels.
const char* BackwardFeatures(ScalarKind kind, const CarafeGeometry& geometry,
                             const void* grad_output, const void* kernels, void* grad_features,
                             const ThreadPool& pool);

// d loss / d kernels from the upstream gradient and the features.
const char* BackwardKernels(ScalarKind kind, const CarafeGeometry& geometry,
                            const void* grad_output, const void* features, void* grad_kernels,
                            const ThreadPool& pool);

// One of the three above by `map`, with its operands in the order of the Map's comment.
const char* Run(Map map, ScalarKind kind, const CarafeGeometry& geometry, const void* first,
                const void* second, void* result, const ThreadPool& pool);

}  // namespace cpu
}  // namespace keras_carafe

#endif  // KERAS_CARAFE_CSRC_KERNELS_CARAFE_CPU_H_
