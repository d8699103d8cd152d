// The schemas of the CARAFE maps as PyTorch operators, in the `keras_carafe`
// namespace: the reassembly and its two adjoints. Attributes: scale > 1
// upsamples, stride > 1 downsamples (the other one is 1), kernel_size and
// groups; the features gradient also takes the features' height and width,
// which its inputs do not fix when downsampling. carafe_kernels.cc registers
// the CPU and CUDA kernels; keras_carafe/backend/torch/library.py the
// autograd formulas and the shape functions that torch.compile traces with.
#include <torch/library.h>

TORCH_LIBRARY(keras_carafe, m) {
  m.def("forward(Tensor features, Tensor kernels, int scale, int stride, int kernel_size, "
        "int groups) -> Tensor");
  m.def("features_grad(Tensor grad_output, Tensor kernels, SymInt height, SymInt width, "
        "int scale, int stride, int kernel_size, int groups) -> Tensor");
  m.def("kernels_grad(Tensor grad_output, Tensor features, int scale, int stride, "
        "int kernel_size, int groups) -> Tensor");
}
