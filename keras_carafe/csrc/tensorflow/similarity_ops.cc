// Registration and shape functions of the local similarity op (SAPA's
// query-key similarity) and its gradient op. The similarity is the kernels
// gradient of the upsampling reassembly (see similarity_shapes.h), so its
// kernels are the reassembly's; it has an op of its own so that computing
// it does not also compute the features gradient.
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

Status ReadSimilarityAttrs(InferenceContext* c, Attributes* attrs) {
  TF_RETURN_IF_ERROR(c->GetAttr("scale_factor", &attrs->scale));
  TF_RETURN_IF_ERROR(c->GetAttr("kernel_size", &attrs->kernel_size));
  TF_RETURN_IF_ERROR(c->GetAttr("group_size", &attrs->groups));
  attrs->stride = 1;
  const std::string error = CheckAttributes(*attrs);
  if (!error.empty()) return tensorflow::errors::InvalidArgument(error);
  return tensorflow::OkStatus();
}

// Checks queries (N, H*s, W*s, C) against keys (N, H, W, C) and returns the
// similarity shape (N, H*s, W*s, G*k*k); unknown dimensions flow.
Status SimilarityShape(InferenceContext* c, ShapeHandle queries, ShapeHandle keys,
                       const Attributes& attrs, ShapeHandle* out) {
  TF_RETURN_IF_ERROR(c->WithRank(queries, 4, &queries));
  TF_RETURN_IF_ERROR(c->WithRank(keys, 4, &keys));
  DimensionHandle batch, out_h, out_w, channels, channels_per_group;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(queries, 0), c->Dim(keys, 0), &batch));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(keys, 1), attrs.scale, &out_h));
  TF_RETURN_IF_ERROR(c->Merge(out_h, c->Dim(queries, 1), &out_h));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(keys, 2), attrs.scale, &out_w));
  TF_RETURN_IF_ERROR(c->Merge(out_w, c->Dim(queries, 2), &out_w));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(queries, 3), c->Dim(keys, 3), &channels));
  TF_RETURN_IF_ERROR(
      c->Divide(channels, attrs.groups, /*evenly_divisible=*/true, &channels_per_group));
  *out = c->MakeShape(
      {batch, out_h, out_w, c->MakeDim(attrs.groups * attrs.kernel_size * attrs.kernel_size)});
  return tensorflow::OkStatus();
}

Status ForwardShape(InferenceContext* c) {
  Attributes attrs;
  TF_RETURN_IF_ERROR(ReadSimilarityAttrs(c, &attrs));
  ShapeHandle out;
  TF_RETURN_IF_ERROR(SimilarityShape(c, c->input(0), c->input(1), attrs, &out));
  c->set_output(0, out);
  return tensorflow::OkStatus();
}

Status GradShape(InferenceContext* c) {
  Attributes attrs;
  TF_RETURN_IF_ERROR(ReadSimilarityAttrs(c, &attrs));
  ShapeHandle out, grad_similarity;
  TF_RETURN_IF_ERROR(SimilarityShape(c, c->input(1), c->input(2), attrs, &out));
  TF_RETURN_IF_ERROR(c->Merge(c->input(0), out, &grad_similarity));
  c->set_output(0, c->input(1));
  c->set_output(1, c->input(2));
  return tensorflow::OkStatus();
}

}  // namespace

REGISTER_OP("KerasCarafeLocalSimilarity")
    .Input("queries: T")
    .Input("keys: T")
    .Output("similarity: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("scale_factor: int = 2")
    .Attr("kernel_size: int = 5")
    .Attr("group_size: int = 1")
    .SetShapeFn(ForwardShape)
    .Doc(R"doc(
Local similarity: for every query pixel (oh, ow) and group g, the dot products
of its group-g channels with those of the k x k keys around key pixel
(oh / s, ow / s) (zero outside the image), channels-last.
)doc");

REGISTER_OP("KerasCarafeLocalSimilarityGrad")
    .Input("grad_similarity: T")
    .Input("queries: T")
    .Input("keys: T")
    .Output("grad_queries: T")
    .Output("grad_keys: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("scale_factor: int = 2")
    .Attr("kernel_size: int = 5")
    .Attr("group_size: int = 1")
    .SetShapeFn(GradShape)
    .Doc("Gradients of KerasCarafeLocalSimilarity with respect to queries and keys.");

}  // namespace keras_carafe
