// TensorFlow OpKernels of the local similarity and its gradient. They check
// shapes at run time (messages in terms of queries and keys) and call the
// reassembly's own kernels:
//
//   similarity(q, k)           = Map::kKernelsGrad  (grad_output = q, features = k)
//   d similarity^T u / d q     = Map::kForward      (features = k, kernels = u)
//   d similarity^T u / d k     = Map::kFeaturesGrad (grad_output = q, kernels = u)
//
// (the three maps of carafe_geometry.h, the partial derivatives of one trilinear form).
#include <string>

#include "carafe_cpu.h"
#include "carafe_cuda.h"
#include "carafe_geometry.h"
#include "carafe_shapes.h"
#include "similarity_shapes.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/threadpool.h"

namespace keras_carafe {

// The element types' kinds, as in carafe_kernels.cc.
template <>
struct KindOf<Eigen::half> {
  static constexpr ScalarKind value = ScalarKind::kFloat16;
};
template <>
struct KindOf<Eigen::bfloat16> {
  static constexpr ScalarKind value = ScalarKind::kBFloat16;
};

namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;

struct CpuDevice {};
struct GpuDevice {};

Dims DimsOf(const Tensor& t, int64_t (&storage)[kMaxPrintedDims]) {
  const int rank = t.dims() < kMaxPrintedDims ? t.dims() : kMaxPrintedDims;
  for (int i = 0; i < rank; ++i) storage[i] = t.dim_size(i);
  return Dims{storage, t.dims()};
}

Status AsStatus(const std::string& error) {
  if (error.empty()) return tensorflow::OkStatus();
  return tensorflow::errors::InvalidArgument(error);
}

Status KernelResult(const char* error, const char* device) {
  if (error == nullptr) return tensorflow::OkStatus();
  return tensorflow::errors::Internal("local similarity ", device, " kernel failed: ", error);
}

cpu::ThreadPool PoolOf(OpKernelContext* ctx) {
  return cpu::ThreadPool{
      [](void* pool, int64_t total, int64_t cost, cpu::Shard shard) {
        static_cast<tensorflow::thread::ThreadPool*>(pool)->ParallelFor(
            total, cost, [&](int64_t begin, int64_t end) { shard.run(shard.context, begin, end); });
      },
      ctx->device()->tensorflow_cpu_worker_threads()->workers};
}

// Map `map` (carafe_geometry.h) of two operands into `result` on the op's device, as in
// carafe_kernels.cc: TensorFlow's intra-op pool, or its CUDA stream.
template <typename Device>
Status RunMap(OpKernelContext* ctx, Map map, ScalarKind kind, const CarafeGeometry& g,
              const void* first, const void* second, void* result);

template <>
Status RunMap<CpuDevice>(OpKernelContext* ctx, Map map, ScalarKind kind, const CarafeGeometry& g,
                         const void* first, const void* second, void* result) {
  return KernelResult(cpu::Run(map, kind, g, first, second, result, PoolOf(ctx)), "CPU");
}

#ifdef KERAS_CARAFE_WITH_CUDA
template <>
Status RunMap<GpuDevice>(OpKernelContext* ctx, Map map, ScalarKind kind, const CarafeGeometry& g,
                         const void* first, const void* second, void* result) {
  return KernelResult(cuda::Run(map, kind, g, first, second, result,
                                ctx->eigen_device<Eigen::GpuDevice>().stream()),
                      "CUDA");
}
#endif  // KERAS_CARAFE_WITH_CUDA

class SimilarityKernelBase : public OpKernel {
 public:
  explicit SimilarityKernelBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale_factor", &attributes_.scale));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kernel_size", &attributes_.kernel_size));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("group_size", &attributes_.groups));
    attributes_.stride = 1;
    OP_REQUIRES_OK(ctx, AsStatus(CheckAttributes(attributes_)));
  }

 protected:
  Status Geometry(const Tensor& queries, const Tensor& keys, CarafeGeometry* g) const {
    int64_t q[kMaxPrintedDims], k[kMaxPrintedDims];
    return AsStatus(CheckLocalSimilarity(attributes_, DimsOf(queries, q), DimsOf(keys, k), g));
  }

 private:
  Attributes attributes_;
};

template <typename Device, typename T>
class SimilarityOp : public SimilarityKernelBase {
 public:
  using SimilarityKernelBase::SimilarityKernelBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& queries = ctx->input(0);
    const Tensor& keys = ctx->input(1);
    CarafeGeometry g;
    OP_REQUIRES_OK(ctx, Geometry(queries, keys, &g));
    int64_t dims[4];
    KernelDims(g, dims);
    tensorflow::TensorShape shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(dims, &shape));
    Tensor* similarity = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &similarity));
    OP_REQUIRES_OK(ctx, RunMap<Device>(ctx, Map::kKernelsGrad, KindOf<T>::value, g,
                                       queries.flat<T>().data(), keys.flat<T>().data(),
                                       similarity->flat<T>().data()));
  }
};

template <typename Device, typename T>
class SimilarityGradOp : public SimilarityKernelBase {
 public:
  using SimilarityKernelBase::SimilarityKernelBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad_similarity = ctx->input(0);
    const Tensor& queries = ctx->input(1);
    const Tensor& keys = ctx->input(2);
    CarafeGeometry g;
    OP_REQUIRES_OK(ctx, Geometry(queries, keys, &g));
    int64_t expected[4], grad_dims[kMaxPrintedDims];
    KernelDims(g, expected);
    OP_REQUIRES_OK(ctx, AsStatus(CheckDims("grad_similarity", DimsOf(grad_similarity, grad_dims),
                                           expected, "the similarity shape")));
    Tensor* grad_queries = nullptr;
    Tensor* grad_keys = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, queries.shape(), &grad_queries));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, keys.shape(), &grad_keys));
    const T* upstream = grad_similarity.flat<T>().data();
    OP_REQUIRES_OK(ctx, RunMap<Device>(ctx, Map::kForward, KindOf<T>::value, g,
                                       keys.flat<T>().data(), upstream,
                                       grad_queries->flat<T>().data()));
    OP_REQUIRES_OK(ctx, RunMap<Device>(ctx, Map::kFeaturesGrad, KindOf<T>::value, g,
                                       queries.flat<T>().data(), upstream,
                                       grad_keys->flat<T>().data()));
  }
};

#define REGISTER_SIMILARITY_KERNELS(DEVICE_NAME, DEVICE, T)                                   \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("KerasCarafeLocalSimilarity").Device(DEVICE_NAME).TypeConstraint<T>("T"),          \
      SimilarityOp<DEVICE, T>);                                                               \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("KerasCarafeLocalSimilarityGrad").Device(DEVICE_NAME).TypeConstraint<T>("T"),      \
      SimilarityGradOp<DEVICE, T>);

REGISTER_SIMILARITY_KERNELS(DEVICE_CPU, CpuDevice, float);
REGISTER_SIMILARITY_KERNELS(DEVICE_CPU, CpuDevice, double);
REGISTER_SIMILARITY_KERNELS(DEVICE_CPU, CpuDevice, Eigen::half);
REGISTER_SIMILARITY_KERNELS(DEVICE_CPU, CpuDevice, Eigen::bfloat16);
#ifdef KERAS_CARAFE_WITH_CUDA
REGISTER_SIMILARITY_KERNELS(DEVICE_GPU, GpuDevice, float);
REGISTER_SIMILARITY_KERNELS(DEVICE_GPU, GpuDevice, double);
REGISTER_SIMILARITY_KERNELS(DEVICE_GPU, GpuDevice, Eigen::half);
REGISTER_SIMILARITY_KERNELS(DEVICE_GPU, GpuDevice, Eigen::bfloat16);
#endif

}  // namespace
}  // namespace keras_carafe
