// Registration and shape functions of the CARAFE reassembly ops: upsampling
// (CARAFE) and downsampling (CARAFE++), each with its gradient op.
#include <string>

#include "carafe_shapes.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace keras_carafe {
namespace {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Reads the attributes of an op whose factor is `factor_name` ("scale_factor"
// or "stride") and checks them with the kernels' own rules.
Status ReadAttrs(InferenceContext* c, const char* factor_name, Attributes* attrs) {
  int64_t factor;
  TF_RETURN_IF_ERROR(c->GetAttr(factor_name, &factor));
  TF_RETURN_IF_ERROR(c->GetAttr("kernel_size", &attrs->kernel_size));
  TF_RETURN_IF_ERROR(c->GetAttr("group_size", &attrs->groups));
  const bool up = std::string(factor_name) == "scale_factor";
  attrs->scale = up ? factor : 1;
  attrs->stride = up ? 1 : factor;
  const std::string error = CheckAttributes(*attrs);
  if (!error.empty()) return tensorflow::errors::InvalidArgument(error);
  return tensorflow::OkStatus();
}

// Output rows (columns) for `in` input rows (columns): in * scale, or
// ceil(in / stride).
Status OutputExtent(InferenceContext* c, DimensionHandle in, const Attributes& attrs,
                    DimensionHandle* out) {
  if (attrs.stride == 1) return c->Multiply(in, attrs.scale, out);
  DimensionHandle padded;
  TF_RETURN_IF_ERROR(c->Add(in, attrs.stride - 1, &padded));
  return c->Divide(padded, attrs.stride, /*evenly_divisible=*/false, out);
}

// Checks features against kernels and returns the output shape
// (N, out_h, out_w, C); every known dimension is checked, unknown ones flow.
Status ReassembledShape(InferenceContext* c, ShapeHandle features, ShapeHandle kernels,
                        const Attributes& attrs, ShapeHandle* out) {
  TF_RETURN_IF_ERROR(c->WithRank(features, 4, &features));
  TF_RETURN_IF_ERROR(c->WithRank(kernels, 4, &kernels));
  DimensionHandle batch, out_h, out_w, channels_per_group, kernel_channels;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(features, 0), c->Dim(kernels, 0), &batch));
  TF_RETURN_IF_ERROR(OutputExtent(c, c->Dim(features, 1), attrs, &out_h));
  TF_RETURN_IF_ERROR(c->Merge(out_h, c->Dim(kernels, 1), &out_h));
  TF_RETURN_IF_ERROR(OutputExtent(c, c->Dim(features, 2), attrs, &out_w));
  TF_RETURN_IF_ERROR(c->Merge(out_w, c->Dim(kernels, 2), &out_w));
  TF_RETURN_IF_ERROR(
      c->Divide(c->Dim(features, 3), attrs.groups, /*evenly_divisible=*/true, &channels_per_group));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(kernels, 3),
                                  attrs.groups * attrs.kernel_size * attrs.kernel_size,
                                  &kernel_channels));
  *out = c->MakeShape({batch, out_h, out_w, c->Dim(features, 3)});
  return tensorflow::OkStatus();
}

template <const char* kFactor>
Status ForwardShape(InferenceContext* c) {
  Attributes attrs;
  TF_RETURN_IF_ERROR(ReadAttrs(c, kFactor, &attrs));
  ShapeHandle out;
  TF_RETURN_IF_ERROR(ReassembledShape(c, c->input(0), c->input(1), attrs, &out));
  c->set_output(0, out);
  return tensorflow::OkStatus();
}

template <const char* kFactor>
Status GradShape(InferenceContext* c) {
  Attributes attrs;
  TF_RETURN_IF_ERROR(ReadAttrs(c, kFactor, &attrs));
  ShapeHandle out, grad_output;
  TF_RETURN_IF_ERROR(ReassembledShape(c, c->input(1), c->input(2), attrs, &out));
  TF_RETURN_IF_ERROR(c->Merge(c->input(0), out, &grad_output));
  c->set_output(0, c->input(1));
  c->set_output(1, c->input(2));
  return tensorflow::OkStatus();
}

constexpr char kScaleFactor[] = "scale_factor";
constexpr char kStride[] = "stride";

}  // namespace

REGISTER_OP("KerasCarafeReassemble")
    .Input("features: T")
    .Input("kernels: T")
    .Output("output: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("scale_factor: int = 2")
    .Attr("kernel_size: int = 5")
    .Attr("group_size: int = 1")
    .SetShapeFn(ForwardShape<kScaleFactor>)
    .Doc(R"doc(
CARAFE upsampling reassembly: output pixel (oh, ow) is the k x k neighbourhood
of input pixel (oh / s, ow / s) weighted by its own kernel (channels-last;
kernels are not normalized).
)doc");

REGISTER_OP("KerasCarafeReassembleGrad")
    .Input("grad_output: T")
    .Input("features: T")
    .Input("kernels: T")
    .Output("grad_features: T")
    .Output("grad_kernels: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("scale_factor: int = 2")
    .Attr("kernel_size: int = 5")
    .Attr("group_size: int = 1")
    .SetShapeFn(GradShape<kScaleFactor>)
    .Doc("Gradients of KerasCarafeReassemble with respect to features and kernels.");

REGISTER_OP("KerasCarafeDownsample")
    .Input("features: T")
    .Input("kernels: T")
    .Output("output: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("stride: int = 2")
    .Attr("kernel_size: int = 5")
    .Attr("group_size: int = 1")
    .SetShapeFn(ForwardShape<kStride>)
    .Doc(R"doc(
CARAFE++ downsampling reassembly: output pixel (oh, ow) is the k x k
neighbourhood of input pixel (oh * stride, ow * stride) weighted by its own
kernel (channels-last; ceil(H / stride) x ceil(W / stride) outputs).
)doc");

REGISTER_OP("KerasCarafeDownsampleGrad")
    .Input("grad_output: T")
    .Input("features: T")
    .Input("kernels: T")
    .Output("grad_features: T")
    .Output("grad_kernels: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("stride: int = 2")
    .Attr("kernel_size: int = 5")
    .Attr("group_size: int = 1")
    .SetShapeFn(GradShape<kStride>)
    .Doc("Gradients of KerasCarafeDownsample with respect to features and kernels.");

}  // namespace keras_carafe
