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

bool KindOf(ffi::DataType type, ScalarKind* kind) {
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
  if (!KindOf(first, kind))
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

// --- checks shared by both devices --------------------------------------------------

// The geometry of a forward call, or why its buffers do not fit.
ffi::Error ForwardGeometry(const Attributes& a, const ffi::AnyBuffer& features,
                           const ffi::AnyBuffer& kernels, const ffi::AnyBuffer& out,
                           CarafeGeometry* g, ScalarKind* kind) {
  ffi::Error error = CommonKind(
      {features.element_type(), kernels.element_type(), out.element_type()}, kind);
  if (error.failure()) return error;
  error = Checked(CheckReassembly(a, DimsOf(features), DimsOf(kernels), g));
  if (error.failure()) return error;
  int64_t expected[4];
  OutputDims(*g, expected);
  return Checked(CheckDims("output", DimsOf(out), expected, "the shape"));
}

// The features gradient: grad_output (N, OH, OW, C) and kernels in, a
// buffer of the features' shape (N, H, W, C) out.
ffi::Error FeaturesGradGeometry(const Attributes& a, const ffi::AnyBuffer& grad_output,
                                const ffi::AnyBuffer& kernels,
                                const ffi::AnyBuffer& grad_features,
                                CarafeGeometry* g, ScalarKind* kind) {
  ffi::Error error = CommonKind({grad_output.element_type(), kernels.element_type(),
                                 grad_features.element_type()}, kind);
  if (error.failure()) return error;
  error = Checked(CheckReassembly(a, DimsOf(grad_features), DimsOf(kernels), g));
  if (error.failure()) return error;
  int64_t expected[4];
  OutputDims(*g, expected);
  return Checked(CheckDims("grad_output", DimsOf(grad_output), expected, "the output shape"));
}

// The kernels gradient: grad_output and features in, a buffer of the
// kernels' shape out.
ffi::Error KernelsGradGeometry(const Attributes& a, const ffi::AnyBuffer& grad_output,
                               const ffi::AnyBuffer& features,
                               const ffi::AnyBuffer& grad_kernels,
                               CarafeGeometry* g, ScalarKind* kind) {
  ffi::Error error = CommonKind({grad_output.element_type(), features.element_type(),
                                 grad_kernels.element_type()}, kind);
  if (error.failure()) return error;
  error = Checked(CheckReassembly(a, DimsOf(features), DimsOf(grad_kernels), g));
  if (error.failure()) return error;
  int64_t expected[4];
  OutputDims(*g, expected);
  return Checked(CheckDims("grad_output", DimsOf(grad_output), expected, "the output shape"));
}

}  // namespace

ffi::Error ForwardCpu(ffi::ThreadPool pool, ffi::AnyBuffer features, ffi::AnyBuffer kernels,
                      ffi::Result<ffi::AnyBuffer> output, Attributes a) {
  CarafeGeometry g;
  ScalarKind kind;
  ffi::Error error = ForwardGeometry(a, features, kernels, *output, &g, &kind);
  if (error.failure()) return error;
  return KernelResult(cpu::Forward(kind, g, features.untyped_data(), kernels.untyped_data(),
                                   output->untyped_data(), PoolOf(&pool)));
}

ffi::Error FeaturesGradCpu(ffi::ThreadPool pool, ffi::AnyBuffer grad_output,
                           ffi::AnyBuffer kernels, ffi::Result<ffi::AnyBuffer> grad_features,
                           Attributes a) {
  CarafeGeometry g;
  ScalarKind kind;
  ffi::Error error = FeaturesGradGeometry(a, grad_output, kernels, *grad_features, &g, &kind);
  if (error.failure()) return error;
  return KernelResult(cpu::BackwardFeatures(kind, g, grad_output.untyped_data(),
                                            kernels.untyped_data(),
                                            grad_features->untyped_data(), PoolOf(&pool)));
}

ffi::Error KernelsGradCpu(ffi::ThreadPool pool, ffi::AnyBuffer grad_output,
                          ffi::AnyBuffer features, ffi::Result<ffi::AnyBuffer> grad_kernels,
                          Attributes a) {
  CarafeGeometry g;
  ScalarKind kind;
  ffi::Error error = KernelsGradGeometry(a, grad_output, features, *grad_kernels, &g, &kind);
  if (error.failure()) return error;
  return KernelResult(cpu::BackwardKernels(kind, g, grad_output.untyped_data(),
                                           features.untyped_data(),
                                           grad_kernels->untyped_data(), PoolOf(&pool)));
}

#ifdef KERAS_CARAFE_WITH_CUDA
ffi::Error ForwardCuda(void* stream, ffi::AnyBuffer features, ffi::AnyBuffer kernels,
                       ffi::Result<ffi::AnyBuffer> output, Attributes a) {
  CarafeGeometry g;
  ScalarKind kind;
  ffi::Error error = ForwardGeometry(a, features, kernels, *output, &g, &kind);
  if (error.failure()) return error;
  return KernelResult(cuda::Forward(kind, g, features.untyped_data(), kernels.untyped_data(),
                                    output->untyped_data(), stream));
}

ffi::Error FeaturesGradCuda(void* stream, ffi::AnyBuffer grad_output, ffi::AnyBuffer kernels,
                            ffi::Result<ffi::AnyBuffer> grad_features, Attributes a) {
  CarafeGeometry g;
  ScalarKind kind;
  ffi::Error error = FeaturesGradGeometry(a, grad_output, kernels, *grad_features, &g, &kind);
  if (error.failure()) return error;
  return KernelResult(cuda::BackwardFeatures(kind, g, grad_output.untyped_data(),
                                             kernels.untyped_data(),
                                             grad_features->untyped_data(), stream));
}

ffi::Error KernelsGradCuda(void* stream, ffi::AnyBuffer grad_output, ffi::AnyBuffer features,
                           ffi::Result<ffi::AnyBuffer> grad_kernels, Attributes a) {
  CarafeGeometry g;
  ScalarKind kind;
  ffi::Error error = KernelsGradGeometry(a, grad_output, features, *grad_kernels, &g, &kind);
  if (error.failure()) return error;
  return KernelResult(cuda::BackwardKernels(kind, g, grad_output.untyped_data(),
                                            features.untyped_data(),
                                            grad_kernels->untyped_data(), stream));
}
#endif  // KERAS_CARAFE_WITH_CUDA

}  // namespace jax
}  // namespace keras_carafe
