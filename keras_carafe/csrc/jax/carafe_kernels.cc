// XLA FFI implementations of the three CARAFE maps (the reassembly and its
// two adjoints): check the buffers against the attributes, then hand raw
// pointers to the framework-free CPU kernels (on XLA's intra-op thread pool)
// or CUDA kernels (on XLA's stream). carafe_ops.cc binds them to handler
// symbols.
#include "carafe_kernels.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "carafe_cpu.h"
#include "carafe_cuda.h"
#include "carafe_shapes.h"

namespace keras_carafe {
namespace jax {
namespace {

Dims DimsOf(const ffi::AnyBuffer& buffer) {
  const auto dims = buffer.dimensions();
  return Dims{dims.begin(), static_cast<int>(dims.size())};
}

bool KindOfType(ffi::DataType type, ScalarKind* kind) {
  switch (type) {
    case ffi::DataType::F32: *kind = ScalarKind::kFloat32; return true;
    case ffi::DataType::F64: *kind = ScalarKind::kFloat64; return true;
    case ffi::DataType::F16: *kind = ScalarKind::kFloat16; return true;
    case ffi::DataType::BF16: *kind = ScalarKind::kBFloat16; return true;
    default: return false;
  }
}

// The element kind shared by every buffer of a call, or an error.
ffi::Error CommonKind(std::initializer_list<ffi::DataType> types, ScalarKind* kind) {
  const ffi::DataType first = *types.begin();
  for (ffi::DataType type : types)
    if (type != first)
      return ffi::Error::InvalidArgument("CARAFE buffers must share one element type");
  if (!KindOfType(first, kind))
    return ffi::Error::InvalidArgument(
        "CARAFE buffers must be float16, bfloat16, float32 or float64");
  return ffi::Error::Success();
}

ffi::Error Checked(const std::string& error) {
  return error.empty() ? ffi::Error::Success() : ffi::Error::InvalidArgument(error);
}

ffi::Error KernelResult(const char* error) {
  return error == nullptr ? ffi::Error::Success()
                          : ffi::Error::Internal(std::string("CARAFE kernel failed: ") + error);
}

// --- XLA's intra-op thread pool as the kernels' pool --------------------------------

// A loop split into chunks that the calling thread and pool tasks claim one
// at a time. The caller works too and then waits only for chunks already
// claimed, which are running; a task that starts after the last chunk was
// claimed finds nothing to do. So no chunk waits on a pool that the caller
// itself occupies, and the shard (on the caller's stack) is only used while
// the caller waits.
struct Loop {
  Loop(int64_t total, int64_t chunk, cpu::Shard shard)
      : total(total), chunk(chunk), chunks((total + chunk - 1) / chunk), shard(shard) {}

  void Run() {
    for (;;) {
      const int64_t c = next.fetch_add(1);
      if (c >= chunks) return;
      const int64_t begin = c * chunk;
      shard.run(shard.context, begin, std::min(total, begin + chunk));
      std::lock_guard<std::mutex> lock(mutex);
      if (++finished == chunks) done.notify_all();
    }
  }

  void Wait() {
    std::unique_lock<std::mutex> lock(mutex);
    done.wait(lock, [this] { return finished == chunks; });
  }

  const int64_t total, chunk, chunks;
  const cpu::Shard shard;
  std::atomic<int64_t> next{0};
  std::mutex mutex;
  std::condition_variable done;
  int64_t finished = 0;
};

// Chunks of at least this many cycles of work, a few per thread so that
// threads that start late still get some.
constexpr int64_t kMinChunkCycles = 1 << 17;
constexpr int64_t kChunksPerThread = 4;

void ParallelFor(void* pool_pointer, int64_t total, int64_t cost, cpu::Shard shard) {
  auto* pool = static_cast<ffi::ThreadPool*>(pool_pointer);
  const int64_t threads = std::max<int64_t>(1, pool->num_threads());
  const int64_t min_chunk = std::max<int64_t>(1, kMinChunkCycles / std::max<int64_t>(1, cost));
  const int64_t chunk =
      std::max(min_chunk, (total + threads * kChunksPerThread - 1) / (threads * kChunksPerThread));
  if (threads == 1 || chunk >= total) {
    shard.run(shard.context, 0, total);
    return;
  }
  auto loop = std::make_shared<Loop>(total, chunk, shard);
  const int64_t helpers = std::min(threads, loop->chunks) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool->Schedule([loop] { loop->Run(); });
  loop->Run();
  loop->Wait();
}

cpu::ThreadPool PoolOf(ffi::ThreadPool* pool) { return cpu::ThreadPool{ParallelFor, pool}; }

// The geometry and element kind of one call, or why its buffers do not fit.
ffi::Error Checked(Map map, const Attributes& a, const ffi::AnyBuffer& first,
                   const ffi::AnyBuffer& second, const ffi::AnyBuffer& result,
                   CarafeGeometry* g, ScalarKind* kind) {
  ffi::Error error =
      CommonKind({first.element_type(), second.element_type(), result.element_type()}, kind);
  if (error.failure()) return error;
  return Checked(CheckMap(map, a, DimsOf(first), DimsOf(second), DimsOf(result), g));
}

}  // namespace

ffi::Error RunOnCpu(Map map, ffi::ThreadPool pool, ffi::AnyBuffer first, ffi::AnyBuffer second,
                    ffi::Result<ffi::AnyBuffer> result, Attributes a) {
  CarafeGeometry g;
  ScalarKind kind;
  ffi::Error error = Checked(map, a, first, second, *result, &g, &kind);
  if (error.failure()) return error;
  return KernelResult(cpu::Run(map, kind, g, first.untyped_data(), second.untyped_data(),
                               result->untyped_data(), PoolOf(&pool)));
}

#ifdef KERAS_CARAFE_WITH_CUDA
ffi::Error RunOnCuda(Map map, void* stream, ffi::AnyBuffer first, ffi::AnyBuffer second,
                     ffi::Result<ffi::AnyBuffer> result, Attributes a) {
  CarafeGeometry g;
  ScalarKind kind;
  ffi::Error error = Checked(map, a, first, second, *result, &g, &kind);
  if (error.failure()) return error;
  return KernelResult(cuda::Run(map, kind, g, first.untyped_data(), second.untyped_data(),
                                result->untyped_data(), stream));
}
#endif  // KERAS_CARAFE_WITH_CUDA

}  // namespace jax
}  // namespace keras_carafe
