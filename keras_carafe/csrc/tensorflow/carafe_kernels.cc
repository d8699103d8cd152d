// TensorFlow OpKernels of the CARAFE reassembly ops (upsampling and
// downsampling): check shapes at run time, allocate outputs, and hand raw
// pointers to the framework-free CPU or CUDA kernels, on TensorFlow's
// intra-op thread pool or CUDA stream.
#include <string>

#include "carafe_cpu.h"
#include "carafe_cuda.h"
#include "carafe_geometry.h"
#include "carafe_shapes.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/threadpool.h"

namespace keras_carafe {

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
using ::tensorflow::errors::InvalidArgument;

struct CpuDevice {};
struct GpuDevice {};

// Upsampling ops carry `scale_factor`, downsampling ops `stride`.
enum class Direction { kUp, kDown };

Dims DimsOf(const Tensor& t, int64_t (&storage)[kMaxPrintedDims]) {
  const int rank = t.dims() < kMaxPrintedDims ? t.dims() : kMaxPrintedDims;
  for (int i = 0; i < rank; ++i) storage[i] = t.dim_size(i);
  return Dims{storage, t.dims()};
}

Status AsStatus(const std::string& error) {
  if (error.empty()) return tensorflow::OkStatus();
  return InvalidArgument(error);
}

Status KernelResult(const char* error, const char* device) {
  if (error == nullptr) return tensorflow::OkStatus();
  return tensorflow::errors::Internal("CARAFE ", device, " kernel failed: ", error);
}

// TensorFlow's intra-op pool as the kernels' thread pool.
cpu::ThreadPool PoolOf(OpKernelContext* ctx) {
  return cpu::ThreadPool{
      [](void* pool, int64_t total, int64_t cost, cpu::Shard shard) {
        static_cast<tensorflow::thread::ThreadPool*>(pool)->ParallelFor(
            total, cost, [&](int64_t begin, int64_t end) { shard.run(shard.context, begin, end); });
      },
      ctx->device()->tensorflow_cpu_worker_threads()->workers};
}

// Map `map` (carafe_geometry.h) of two operands into `result` on the op's device:
// TensorFlow's intra-op pool, or its CUDA stream.
template <typename Device>
Status RunMap(OpKernelContext* ctx, Map map, ScalarKind kind, const CarafeGeometry& g,
              const void* first, const void* second, void* result);

template <>
Status RunMap<CpuDevice>(OpKernelContext* ctx, Map map, ScalarKind kind, const CarafeGeometry& g,
                         const void* first, const void* second, void* result) {
  return KernelResult(cpu::Run(map, kind, g, first, second, result, PoolOf(ctx)), "CPU");
}

#ifdef KERAS_CARAFE_WITH_CUDA
// TensorFlow's CUDA stream for this op, through the Eigen GPU device that
// OpKernelContext has exposed to custom ops since TensorFlow 1.x (the build
// defines EIGEN_USE_GPU for this file), rather than StreamExecutor
// internals that move between releases.
template <>
Status RunMap<GpuDevice>(OpKernelContext* ctx, Map map, ScalarKind kind, const CarafeGeometry& g,
                         const void* first, const void* second, void* result) {
  return KernelResult(cuda::Run(map, kind, g, first, second, result,
                                ctx->eigen_device<Eigen::GpuDevice>().stream()),
                      "CUDA");
}
#endif  // KERAS_CARAFE_WITH_CUDA

template <Direction D>
class CarafeKernelBase : public OpKernel {
 public:
  explicit CarafeKernelBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    int64_t factor;
    OP_REQUIRES_OK(ctx, ctx->GetAttr(D == Direction::kUp ? "scale_factor" : "stride", &factor));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kernel_size", &attributes_.kernel_size));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("group_size", &attributes_.groups));
    attributes_.scale = D == Direction::kUp ? factor : 1;
    attributes_.stride = D == Direction::kUp ? 1 : factor;
    OP_REQUIRES_OK(ctx, AsStatus(CheckAttributes(attributes_)));
  }

 protected:
  Status Geometry(const Tensor& features, const Tensor& kernels, CarafeGeometry* g) const {
    int64_t f[kMaxPrintedDims], k[kMaxPrintedDims];
    return AsStatus(CheckReassembly(attributes_, DimsOf(features, f), DimsOf(kernels, k), g));
  }

 private:
  Attributes attributes_;
};

template <typename Device, typename T, Direction D>
class CarafeOp : public CarafeKernelBase<D> {
 public:
  using CarafeKernelBase<D>::CarafeKernelBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    const Tensor& kernels = ctx->input(1);
    CarafeGeometry g;
    OP_REQUIRES_OK(ctx, this->Geometry(features, kernels, &g));
    int64_t out_dims[4];
    OutputDims(g, out_dims);
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(out_dims, &out_shape));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    OP_REQUIRES_OK(ctx, RunMap<Device>(ctx, Map::kForward, KindOf<T>::value, g,
                                       features.flat<T>().data(), kernels.flat<T>().data(),
                                       output->flat<T>().data()));
  }
};

template <typename Device, typename T, Direction D>
class CarafeGradOp : public CarafeKernelBase<D> {
 public:
  using CarafeKernelBase<D>::CarafeKernelBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad_output = ctx->input(0);
    const Tensor& features = ctx->input(1);
    const Tensor& kernels = ctx->input(2);
    CarafeGeometry g;
    OP_REQUIRES_OK(ctx, this->Geometry(features, kernels, &g));
    int64_t out_dims[4], grad_dims[kMaxPrintedDims];
    OutputDims(g, out_dims);
    OP_REQUIRES_OK(ctx, AsStatus(CheckDims("grad_output", DimsOf(grad_output, grad_dims),
                                           out_dims, "the output shape")));
    Tensor* grad_features = nullptr;
    Tensor* grad_kernels = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, features.shape(), &grad_features));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, kernels.shape(), &grad_kernels));
    const T* d = grad_output.flat<T>().data();
    OP_REQUIRES_OK(ctx, RunMap<Device>(ctx, Map::kFeaturesGrad, KindOf<T>::value, g, d,
                                       kernels.flat<T>().data(),
                                       grad_features->flat<T>().data()));
    OP_REQUIRES_OK(ctx, RunMap<Device>(ctx, Map::kKernelsGrad, KindOf<T>::value, g, d,
                                       features.flat<T>().data(),
                                       grad_kernels->flat<T>().data()));
  }
};

#define REGISTER_CARAFE_KERNELS(DEVICE_NAME, DEVICE, T)                                    \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("KerasCarafeReassemble").Device(DEVICE_NAME).TypeConstraint<T>("T"),            \
      CarafeOp<DEVICE, T, Direction::kUp>);                                                \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("KerasCarafeReassembleGrad").Device(DEVICE_NAME).TypeConstraint<T>("T"),        \
      CarafeGradOp<DEVICE, T, Direction::kUp>);                                            \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("KerasCarafeDownsample").Device(DEVICE_NAME).TypeConstraint<T>("T"),            \
      CarafeOp<DEVICE, T, Direction::kDown>);                                              \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("KerasCarafeDownsampleGrad").Device(DEVICE_NAME).TypeConstraint<T>("T"),        \
      CarafeGradOp<DEVICE, T, Direction::kDown>);

REGISTER_CARAFE_KERNELS(DEVICE_CPU, CpuDevice, float);
REGISTER_CARAFE_KERNELS(DEVICE_CPU, CpuDevice, double);
REGISTER_CARAFE_KERNELS(DEVICE_CPU, CpuDevice, Eigen::half);
REGISTER_CARAFE_KERNELS(DEVICE_CPU, CpuDevice, Eigen::bfloat16);
#ifdef KERAS_CARAFE_WITH_CUDA
REGISTER_CARAFE_KERNELS(DEVICE_GPU, GpuDevice, float);
REGISTER_CARAFE_KERNELS(DEVICE_GPU, GpuDevice, double);
REGISTER_CARAFE_KERNELS(DEVICE_GPU, GpuDevice, Eigen::half);
REGISTER_CARAFE_KERNELS(DEVICE_GPU, GpuDevice, Eigen::bfloat16);
#endif

}  // namespace
}  // namespace keras_carafe
