// TensorFlow OpKernels of the local similarity and its gradient. They check
// shapes at run time (messages in terms of queries and keys) and call the
// reassembly's own kernels:
//
//   similarity(q, k)           = BackwardKernels(grad_output = q, features = k)
//   d similarity^T u / d q     = Forward(features = k, kernels = u)
//   d similarity^T u / d k     = BackwardFeatures(grad_output = q, kernels = u)
//
// (the three are the partial derivatives of one trilinear form, see
// keras_carafe/backend/jax/compiled.py).
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
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;

// The ScalarKind of the element types this file registers.
template <typename T>
constexpr ScalarKind Kind();
template <>
constexpr ScalarKind Kind<float>() { return ScalarKind::kFloat32; }
template <>
constexpr ScalarKind Kind<double>() { return ScalarKind::kFloat64; }
template <>
constexpr ScalarKind Kind<Eigen::half>() { return ScalarKind::kFloat16; }
template <>
constexpr ScalarKind Kind<Eigen::bfloat16>() { return ScalarKind::kBFloat16; }

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

// The three maps on one device, with the arguments named as in the reassembly.
template <typename Device>
struct Maps;

template <>
struct Maps<CpuDevice> {
  static constexpr const char* kName = "CPU";
  static const char* Forward(OpKernelContext* ctx, ScalarKind kind, const CarafeGeometry& g,
                             const void* features, const void* kernels, void* output) {
    return cpu::Forward(kind, g, features, kernels, output, PoolOf(ctx));
  }
  static const char* FeaturesGrad(OpKernelContext* ctx, ScalarKind kind,
                                  const CarafeGeometry& g, const void* grad_output,
                                  const void* kernels, void* grad_features) {
    return cpu::BackwardFeatures(kind, g, grad_output, kernels, grad_features, PoolOf(ctx));
  }
  static const char* KernelsGrad(OpKernelContext* ctx, ScalarKind kind, const CarafeGeometry& g,
                                 const void* grad_output, const void* features,
                                 void* grad_kernels) {
    return cpu::BackwardKernels(kind, g, grad_output, features, grad_kernels, PoolOf(ctx));
  }
};

#ifdef KERAS_CARAFE_WITH_CUDA
// TensorFlow's CUDA stream for this op (as in carafe_kernels.cc).
void* CudaStream(OpKernelContext* ctx) {
  return ctx->eigen_device<Eigen::GpuDevice>().stream();
}

template <>
struct Maps<GpuDevice> {
  static constexpr const char* kName = "CUDA";
  static const char* Forward(OpKernelContext* ctx, ScalarKind kind, const CarafeGeometry& g,
                             const void* features, const void* kernels, void* output) {
    return cuda::Forward(kind, g, features, kernels, output, CudaStream(ctx));
  }
  static const char* FeaturesGrad(OpKernelContext* ctx, ScalarKind kind,
                                  const CarafeGeometry& g, const void* grad_output,
                                  const void* kernels, void* grad_features) {
    return cuda::BackwardFeatures(kind, g, grad_output, kernels, grad_features,
                                  CudaStream(ctx));
  }
  static const char* KernelsGrad(OpKernelContext* ctx, ScalarKind kind, const CarafeGeometry& g,
                                 const void* grad_output, const void* features,
                                 void* grad_kernels) {
    return cuda::BackwardKernels(kind, g, grad_output, features, grad_kernels, CudaStream(ctx));
  }
};
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
    OP_REQUIRES_OK(ctx, KernelResult(Maps<Device>::KernelsGrad(
                                         ctx, Kind<T>(), g, queries.flat<T>().data(),
                                         keys.flat<T>().data(), similarity->flat<T>().data()),
                                     Maps<Device>::kName));
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
    OP_REQUIRES_OK(ctx, KernelResult(Maps<Device>::Forward(ctx, Kind<T>(), g,
                                                           keys.flat<T>().data(), upstream,
                                                           grad_queries->flat<T>().data()),
                                     Maps<Device>::kName));
    OP_REQUIRES_OK(ctx, KernelResult(Maps<Device>::FeaturesGrad(ctx, Kind<T>(), g,
                                                                queries.flat<T>().data(),
                                                                upstream,
                                                                grad_keys->flat<T>().data()),
                                     Maps<Device>::kName));
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
