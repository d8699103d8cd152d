// Registration and shape functions of the CARAFE reassembly ops.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace keras_carafe {
namespace {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

struct Attrs {
  int64_t scale;
  int64_t kernel_size;
  int64_t groups;
};

Status ReadAttrs(InferenceContext* c, Attrs* attrs) {
  TF_RETURN_IF_ERROR(c->GetAttr("scale_factor", &attrs->scale));
  TF_RETURN_IF_ERROR(c->GetAttr("kernel_size", &attrs->kernel_size));
  TF_RETURN_IF_ERROR(c->GetAttr("group_size", &attrs->groups));
  if (attrs->scale < 1)
    return tensorflow::errors::InvalidArgument("scale_factor must be >= 1, got ", attrs->scale);
  if (attrs->kernel_size < 1 || attrs->kernel_size % 2 == 0)
    return tensorflow::errors::InvalidArgument("kernel_size must be odd and >= 1, got ",
                                               attrs->kernel_size);
  if (attrs->groups < 1)
    return tensorflow::errors::InvalidArgument("group_size must be >= 1, got ", attrs->groups);
  return tensorflow::OkStatus();
}

// Checks features against kernels and returns the output shape
// (N, H * s, W * s, C); every known dimension is checked, unknown ones flow.
Status ReassembledShape(InferenceContext* c, ShapeHandle features, ShapeHandle kernels,
                        const Attrs& attrs, ShapeHandle* out) {
  TF_RETURN_IF_ERROR(c->WithRank(features, 4, &features));
  TF_RETURN_IF_ERROR(c->WithRank(kernels, 4, &kernels));
  DimensionHandle batch, out_h, out_w, channels_per_group, kernel_channels;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(features, 0), c->Dim(kernels, 0), &batch));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(features, 1), attrs.scale, &out_h));
  TF_RETURN_IF_ERROR(c->Merge(out_h, c->Dim(kernels, 1), &out_h));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(features, 2), attrs.scale, &out_w));
  TF_RETURN_IF_ERROR(c->Merge(out_w, c->Dim(kernels, 2), &out_w));
  TF_RETURN_IF_ERROR(
      c->Divide(c->Dim(features, 3), attrs.groups, /*evenly_divisible=*/true, &channels_per_group));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(kernels, 3),
                                  attrs.groups * attrs.kernel_size * attrs.kernel_size,
                                  &kernel_channels));
  *out = c->MakeShape({batch, out_h, out_w, c->Dim(features, 3)});
  return tensorflow::OkStatus();
}

}  // namespace

REGISTER_OP("KerasCarafeReassemble")
    .Input("features: T")
    .Input("kernels: T")
    .Output("output: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("scale_factor: int = 2")
    .Attr("kernel_size: int = 5")
    .Attr("group_size: int = 1")
    .SetShapeFn([](InferenceContext* c) {
      Attrs attrs;
      TF_RETURN_IF_ERROR(ReadAttrs(c, &attrs));
      ShapeHandle out;
      TF_RETURN_IF_ERROR(ReassembledShape(c, c->input(0), c->input(1), attrs, &out));
      c->set_output(0, out);
      return tensorflow::OkStatus();
    })
    .Doc(R"doc(
CARAFE reassembly: each output pixel is the k x k neighbourhood of its source
pixel weighted by its own kernel (channels-last; kernels are not normalized).
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
    .SetShapeFn([](InferenceContext* c) {
      Attrs attrs;
      TF_RETURN_IF_ERROR(ReadAttrs(c, &attrs));
      ShapeHandle out, grad_output;
      TF_RETURN_IF_ERROR(ReassembledShape(c, c->input(1), c->input(2), attrs, &out));
      TF_RETURN_IF_ERROR(c->Merge(c->input(0), out, &grad_output));
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      return tensorflow::OkStatus();
    })
    .Doc("Gradients of KerasCarafeReassemble with respect to features and kernels.");

}  // namespace keras_carafe
