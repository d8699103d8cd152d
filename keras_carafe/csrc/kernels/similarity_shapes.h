// Run-time shape checks of the local similarity (SAPA's query-key
// similarity), shared by the glues that expose it as an op of its own.
//
//   similarity[n, oh, ow, g*k*k + ky*k + kx]
//       = sum over c in group g of queries[n, oh, ow, c]
//         * keys[n, oh / s + ky - r, ow / s + kx - r, c]      (zero outside the image)
//
// is the kernels gradient of the upsampling reassembly with the queries in
// the place of the output gradient and the keys in the place of the
// features, so the checked geometry is that of the reassembly of the keys:
// in_h, in_w are the keys' sizes and the queries have the output's. The
// messages name the public arguments (queries, keys, scale_factor,
// kernel_size, group_size).
#ifndef KERAS_CARAFE_CSRC_KERNELS_SIMILARITY_SHAPES_H_
#define KERAS_CARAFE_CSRC_KERNELS_SIMILARITY_SHAPES_H_

#include <cstdint>
#include <string>

#include "carafe_geometry.h"
#include "carafe_shapes.h"

namespace keras_carafe {

// Checks `queries` (N, H*s, W*s, C) and `keys` (N, H, W, C) against the
// attributes (stride 1); fills `*g` and returns "" when they fit, else the reason.
inline std::string CheckLocalSimilarity(const Attributes& a, Dims queries, Dims keys,
                                        CarafeGeometry* g) {
  using shapes_internal::Concat;
  using shapes_internal::Text;
  std::string error = CheckAttributes(a);
  if (!error.empty()) return error;
  if (a.stride != 1) return "the local similarity has no stride";
  if (queries.rank != 4)
    return Concat("queries must have rank 4 (N, H*scale_factor, W*scale_factor, C), got shape ",
                  Text(queries));
  if (keys.rank != 4) return Concat("keys must have rank 4 (N, H, W, C), got shape ", Text(keys));
  *g = CarafeGeometry{keys.sizes[0], keys.sizes[1], keys.sizes[2], keys.sizes[3],
                      a.scale, 1, a.kernel_size, a.groups};
  int64_t product;
  if (__builtin_mul_overflow(g->in_h, a.scale, &product) ||
      __builtin_mul_overflow(g->in_w, a.scale, &product))
    return Concat("scale_factor (", a.scale, ") times the keys spatial size (", g->in_h, ", ",
                  g->in_w, ") overflows int64");
  if (__builtin_mul_overflow(a.kernel_size, a.kernel_size, &product) ||
      __builtin_mul_overflow(product, a.groups, &product))
    return Concat("group_size * kernel_size^2 overflows int64 (kernel_size ", a.kernel_size,
                  ", group_size ", a.groups, ")");
  if (queries.sizes[3] != g->channels)
    return Concat("queries channels (", queries.sizes[3], ") must equal keys channels (",
                  g->channels, ")");
  if (g->channels % a.groups != 0)
    return Concat("keys channels (", g->channels, ") must be divisible by group_size (",
                  a.groups, ")");
  if (queries.sizes[0] != g->batch)
    return Concat("queries batch (", queries.sizes[0], ") must equal keys batch (", g->batch,
                  ")");
  if (queries.sizes[1] != g->out_h() || queries.sizes[2] != g->out_w())
    return Concat("queries spatial size must be scale_factor * keys spatial size = (",
                  g->out_h(), ", ", g->out_w(), "), got (", queries.sizes[1], ", ",
                  queries.sizes[2], ")");
  if (const char* reason = GeometryError(*g))
    return Concat("unsupported local similarity problem (keys shape ", Text(keys), "): ", reason);
  return "";
}

}  // namespace keras_carafe

#endif  // KERAS_CARAFE_CSRC_KERNELS_SIMILARITY_SHAPES_H_
