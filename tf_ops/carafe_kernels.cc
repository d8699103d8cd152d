// TensorFlow OpKernels of the CARAFE reassembly ops (upsampling and
// downsampling): validate shapes at run time, allocate outputs, and hand raw
// pointers to the CPU or CUDA kernels.
#include "carafe_cpu.h"
#include "carafe_cuda.h"
#include "carafe_geometry.h"
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

template <typename T>
using Acc = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

// Rough cycles per pixel, for the thread pool's shard sizing.
int64_t CostPerPixel(const CarafeGeometry& g) { return 2 * g.taps() * g.channels + 16; }

// Upsampling ops carry `scale_factor`, downsampling ops `stride`.
enum class Direction { kUp, kDown };

// Shapes that the Python layer and the shape function normally reject; checked
// again here because the kernels index memory with them.
Status ValidateGeometry(const Tensor& features, const Tensor& kernels, Direction direction,
                        int64_t factor, int64_t kernel_size, int64_t groups, CarafeGeometry* g) {
  const bool up = direction == Direction::kUp;
  if (features.dims() != 4)
    return InvalidArgument("features must have rank 4 (N, H, W, C), got shape ",
                           features.shape().DebugString());
  if (kernels.dims() != 4)
    return InvalidArgument("kernels must have rank 4 (N, ", up ? "H*s, W*s" : "ceil(H/s), ceil(W/s)",
                           ", G*k*k), got shape ", kernels.shape().DebugString());
  *g = CarafeGeometry{features.dim_size(0), features.dim_size(1), features.dim_size(2),
                      features.dim_size(3), up ? factor : 1, up ? 1 : factor,
                      kernel_size, groups};
  // Huge attributes must not wrap the sizes that the checks below compare.
  int64_t product;
  if (up && (__builtin_mul_overflow(g->in_h, factor, &product) ||
             __builtin_mul_overflow(g->in_w, factor, &product)))
    return InvalidArgument("scale_factor (", factor, ") times the features spatial size (",
                           g->in_h, ", ", g->in_w, ") overflows int64");
  if (__builtin_mul_overflow(kernel_size, kernel_size, &product) ||
      __builtin_mul_overflow(product, groups, &product))
    return InvalidArgument("group_size * kernel_size^2 overflows int64 (kernel_size ",
                           kernel_size, ", group_size ", groups, ")");
  if (g->channels % groups != 0)
    return InvalidArgument("features channels (", g->channels,
                           ") must be divisible by group_size (", groups, ")");
  if (kernels.dim_size(0) != g->batch)
    return InvalidArgument("kernels batch (", kernels.dim_size(0),
                           ") must equal features batch (", g->batch, ")");
  if (kernels.dim_size(1) != g->out_h() || kernels.dim_size(2) != g->out_w())
    return InvalidArgument(
        "kernels spatial size must be (", g->out_h(), ", ", g->out_w(), ") = ",
        up ? "scale_factor * features spatial size" : "ceil(features spatial size / stride)",
        ", got (", kernels.dim_size(1), ", ", kernels.dim_size(2), ")");
  if (kernels.dim_size(3) != g->kernel_channels())
    return InvalidArgument("kernels channels must be group_size * kernel_size^2 = ",
                           g->kernel_channels(), ", got ", kernels.dim_size(3));
  if (const char* error = GeometryError(*g))
    return InvalidArgument("unsupported CARAFE problem (features shape ",
                           features.shape().DebugString(), "): ", error);
  return tensorflow::OkStatus();
}

template <typename Device, typename T>
struct Launch;

template <typename T>
struct Launch<CpuDevice, T> {
  static Status Forward(OpKernelContext* ctx, const CarafeGeometry& g, const T* features,
                        const T* kernels, T* output) {
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    pool->ParallelFor(g.out_pixels(), CostPerPixel(g), [&](int64_t begin, int64_t end) {
      cpu::TapScratch<T, Acc<T>> scratch(g);
      cpu::Forward<T, Acc<T>>(g, features, kernels, output, begin, end, &scratch);
    });
    return tensorflow::OkStatus();
  }

  static Status Backward(OpKernelContext* ctx, const CarafeGeometry& g, const T* grad_output,
                         const T* features, const T* kernels, T* grad_features,
                         T* grad_kernels) {
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t readers = g.scale * g.scale;  // output pixels gathered per tap
    pool->ParallelFor(g.in_pixels(), CostPerPixel(g) * readers,
                      [&](int64_t begin, int64_t end) {
                        cpu::TapScratch<T, Acc<T>> scratch(g);
                        cpu::BackwardFeatures<T, Acc<T>>(g, grad_output, kernels,
                                                         grad_features, begin, end, &scratch);
                      });
    pool->ParallelFor(g.out_pixels(), CostPerPixel(g), [&](int64_t begin, int64_t end) {
      cpu::BackwardKernels<T, Acc<T>>(g, grad_output, features, grad_kernels, begin, end);
    });
    return tensorflow::OkStatus();
  }
};

#ifdef KERAS_CARAFE_WITH_CUDA
// TensorFlow's CUDA stream for this op, through the Eigen GPU device that
// OpKernelContext has exposed to custom ops since TensorFlow 1.x (the build
// defines EIGEN_USE_GPU for this file), rather than StreamExecutor
// internals that move between releases.
void* CudaStream(OpKernelContext* ctx) {
  return ctx->eigen_device<Eigen::GpuDevice>().stream();
}

Status CudaResult(const char* error) {
  if (error == nullptr) return tensorflow::OkStatus();
  return tensorflow::errors::Internal("CARAFE CUDA kernel launch failed: ", error);
}

template <typename T>
struct Launch<GpuDevice, T> {
  static Status Forward(OpKernelContext* ctx, const CarafeGeometry& g, const T* features,
                        const T* kernels, T* output) {
    return CudaResult(
        cuda::Forward(KindOf<T>::value, g, features, kernels, output, CudaStream(ctx)));
  }

  static Status Backward(OpKernelContext* ctx, const CarafeGeometry& g, const T* grad_output,
                         const T* features, const T* kernels, T* grad_features,
                         T* grad_kernels) {
    void* stream = CudaStream(ctx);
    TF_RETURN_IF_ERROR(CudaResult(cuda::BackwardFeatures(KindOf<T>::value, g, grad_output,
                                                         kernels, grad_features, stream)));
    return CudaResult(cuda::BackwardKernels(KindOf<T>::value, g, grad_output, features,
                                            grad_kernels, stream));
  }
};
#endif  // KERAS_CARAFE_WITH_CUDA

template <Direction D>
class CarafeKernelBase : public OpKernel {
 public:
  explicit CarafeKernelBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    const char* factor_name = D == Direction::kUp ? "scale_factor" : "stride";
    OP_REQUIRES_OK(ctx, ctx->GetAttr(factor_name, &factor_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kernel_size", &kernel_size_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("group_size", &groups_));
    OP_REQUIRES(ctx, factor_ >= 1,
                InvalidArgument(factor_name, " must be >= 1, got ", factor_));
    OP_REQUIRES(ctx, kernel_size_ >= 1 && kernel_size_ % 2 == 1,
                InvalidArgument("kernel_size must be odd and >= 1, got ", kernel_size_));
    OP_REQUIRES(ctx, groups_ >= 1, InvalidArgument("group_size must be >= 1, got ", groups_));
  }

 protected:
  Status Geometry(const Tensor& features, const Tensor& kernels, CarafeGeometry* g) const {
    return ValidateGeometry(features, kernels, D, factor_, kernel_size_, groups_, g);
  }

 private:
  int64_t factor_, kernel_size_, groups_;
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
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(
                            {g.batch, g.out_h(), g.out_w(), g.channels}, &out_shape));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    OP_REQUIRES_OK(ctx, Launch<Device, T>::Forward(ctx, g, features.flat<T>().data(),
                                                   kernels.flat<T>().data(),
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
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(
                            {g.batch, g.out_h(), g.out_w(), g.channels}, &out_shape));
    OP_REQUIRES(ctx, grad_output.shape() == out_shape,
                InvalidArgument("grad_output must have the output shape ", out_shape.DebugString(),
                                ", got ", grad_output.shape().DebugString()));
    Tensor* grad_features = nullptr;
    Tensor* grad_kernels = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, features.shape(), &grad_features));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, kernels.shape(), &grad_kernels));
    OP_REQUIRES_OK(ctx, Launch<Device, T>::Backward(
                            ctx, g, grad_output.flat<T>().data(), features.flat<T>().data(),
                            kernels.flat<T>().data(), grad_features->flat<T>().data(),
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

#ifndef KERAS_CARAFE_WITH_CUDA
extern "C" const char* keras_carafe_cuda_probe() { return "{\"built\": false}"; }
#endif
