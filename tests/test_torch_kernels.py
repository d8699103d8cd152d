"""The compiled kernels on the PyTorch backend (`torch.library` operators): PyTorch's own
checks of custom operators (`torch.library.opcheck`), `torch.compile` without graph breaks
or recompiles, forward mode, `torch.func.vmap`, run-time errors of the operators, and
exports. The portable path (the same `keras.ops` code under PyTorch's autograd) is the
comparison.

Runs with KERAS_BACKEND=torch.
"""

import numpy as np
import pytest

from autodiff import BACKEND
from carafe_reference import carafe_downsample_reference, carafe_reference
from keras_carafe.ops import carafe, carafe_downsample

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="needs KERAS_BACKEND=torch")

if BACKEND == "torch":
    import torch

    from keras_carafe.backend.torch import library


@pytest.fixture
def operators():
    return library.load().module


def tensors(rng, *shapes, dtype="float64"):
    return [torch.tensor(rng.uniform(-1, 1, shape)).to(getattr(torch, dtype))
            for shape in shapes]


def assert_close(actual, expected, tolerance=1e-11):
    np.testing.assert_allclose(np.asarray(torch.as_tensor(actual).detach().double()),
                               np.asarray(expected, np.float64), rtol=tolerance,
                               atol=tolerance)


# (scale, stride, kernel_size, groups), features shape
ATTRIBUTES = [((2, 1, 3, 2), (2, 3, 4, 4)), ((1, 2, 5, 1), (1, 5, 6, 3)),
              ((3, 1, 1, 3), (1, 2, 2, 6)), ((1, 3, 3, 2), (2, 7, 5, 4))]


def shapes(attrs, features_shape):
    scale, stride, k, g = attrs
    n, h, w, c = features_shape
    oh, ow = (h * scale, w * scale) if stride == 1 else (-(-h // stride), -(-w // stride))
    return features_shape, (n, oh, ow, g * k * k), (n, oh, ow, c)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("attrs, features_shape", ATTRIBUTES, ids=str)
def test_opcheck_passes_for_every_operator(rng, operators, attrs, features_shape, dtype):
    features, kernels, grad_output = tensors(rng, *shapes(attrs, features_shape), dtype=dtype)
    h, w = features_shape[1:3]
    for op, args in ((operators.forward, (features, kernels)),
                     (operators.features_grad, (grad_output, kernels, h, w)),
                     (operators.kernels_grad, (grad_output, features))):
        leaves = [a.requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]
        torch.library.opcheck(op, (*leaves, *attrs))


def test_the_operator_runs_on_non_contiguous_inputs(rng, operators):
    features, kernels, _ = tensors(rng, *shapes((2, 1, 3, 1), (1, 3, 4, 2)))
    transposed = features.transpose(1, 2).contiguous().transpose(1, 2)
    assert not transposed.is_contiguous()
    assert_close(operators.forward(transposed, kernels, 2, 1, 3, 1),
                 carafe_reference(features.numpy(), kernels.numpy(), 2, 3, 1))


@pytest.mark.parametrize("implementation", ["auto", "op"])
def test_torch_compile_traces_one_graph_and_does_not_recompile(rng, implementation):
    import torch._dynamo

    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(lambda f, k: carafe(f, k, 2, 3, 2, implementation=implementation),
                             fullgraph=True, backend="aot_eager")
    features, kernels, _ = tensors(rng, *shapes((2, 1, 3, 2), (2, 3, 4, 4)))
    with torch._dynamo.config.patch(error_on_recompile=True):
        for scale in (1.0, 2.0, -0.5):
            assert_close(compiled(features * scale, kernels),
                         carafe_reference((features * scale).numpy(), kernels.numpy(), 2, 3, 2))
    assert counters["stats"]["unique_graphs"] == 1


def test_the_compiled_graph_holds_the_operator(rng):
    import torch._dynamo

    graphs = []

    def keep(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(lambda f, k: carafe(f, k, 2, 3, 2), fullgraph=True, backend=keep)
    compiled(*tensors(rng, *shapes((2, 1, 3, 2), (2, 3, 4, 4))[:2]))
    [graph] = graphs
    targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_function"]
    assert "keras_carafe.forward.default" in targets


def test_a_torch_compiled_layer_trains_with_the_operator(rng):
    import keras
    import torch._dynamo

    from keras_carafe import CARAFE

    torch._dynamo.reset()
    layer = CARAFE(compressed_channels=4, kernel_size=3)
    x = torch.tensor(rng.standard_normal((2, 4, 4, 6)).astype("float32"))
    layer(x)
    compiled = torch.compile(layer, backend="aot_eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(3):
            loss = torch.sum(compiled(x + step) ** 2)
            loss.backward()
    grads = [v.value.grad for v in layer.trainable_variables]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    np.testing.assert_allclose(np.asarray(compiled(x).detach()),
                               np.asarray(keras.ops.convert_to_numpy(layer(x))), atol=1e-6)


@pytest.mark.parametrize("implementation", ["op", "portable"])
def test_torch_func_jvp_is_the_sum_of_the_two_linear_parts(rng, implementation):
    features, kernels, _ = tensors(rng, *shapes((2, 1, 3, 2), (2, 3, 4, 4)))
    t_features, t_kernels = torch.randn_like(features), torch.randn_like(kernels)
    _, tangent = torch.func.jvp(lambda f, k: carafe(f, k, 2, 3, 2, implementation=implementation),
                                (features, kernels), (t_features, t_kernels))
    expected = (carafe_reference(t_features.numpy(), kernels.numpy(), 2, 3, 2)
                + carafe_reference(features.numpy(), t_kernels.numpy(), 2, 3, 2))
    assert_close(tangent, expected)


def test_dual_tensors_carry_their_tangents_through_the_operator(rng):
    import torch.autograd.forward_ad as forward_ad

    features, kernels, _ = tensors(rng, *shapes((1, 2, 5, 1), (1, 5, 6, 3)))
    tangent = torch.randn_like(features)
    with forward_ad.dual_level():
        out = carafe_downsample(forward_ad.make_dual(features, tangent), kernels, 2, 5, 1,
                                implementation="op")
        result = forward_ad.unpack_dual(out).tangent
    assert_close(result, carafe_downsample_reference(tangent.numpy(), kernels.numpy(), 2, 5, 1))


def test_double_backward_with_create_graph_matches_the_portable_path(rng):
    features, kernels, _ = tensors(rng, *shapes((2, 1, 3, 2), (2, 3, 4, 4)))

    def second_order(implementation):
        f, k = features.clone().requires_grad_(True), kernels.clone().requires_grad_(True)
        out = carafe(f, k, 2, 3, 2, implementation=implementation)
        grad_f, grad_k = torch.autograd.grad(torch.sum(out ** 3), [f, k], create_graph=True)
        return torch.autograd.grad(torch.sum(grad_f ** 2) + torch.sum(torch.sin(grad_k)), [f, k])

    for a, b in zip(second_order("op"), second_order("portable")):
        assert_close(a, b.detach().numpy())


def test_vmap_matches_the_portable_path(rng):
    features, kernels, _ = tensors(rng, *shapes((2, 1, 3, 2), (2, 3, 4, 4)))
    stacked = torch.stack([features, -features, 2 * features])

    def mapped(implementation):
        return torch.func.vmap(
            lambda f: carafe(f, kernels, 2, 3, 2, implementation=implementation))(stacked)

    assert_close(mapped("op"), mapped("portable").numpy())


@pytest.mark.parametrize("call, error, message", [
    (lambda ops, f, k: ops.forward(f, k[..., :9], 2, 1, 3, 2), ValueError,
     r"kernels channels must be group_size \* kernel_size\^2 = 18, got 9"),
    (lambda ops, f, k: ops.forward(f, k.float(), 2, 1, 3, 2), TypeError,
     r"kernels must have the dtype of features \(Double\), got Float"),
    (lambda ops, f, k: ops.kernels_grad(torch.zeros(2, 5, 8, 4, dtype=f.dtype), f, 2, 1, 3, 2),
     ValueError, r"grad_output must have the output shape \[2,6,8,4\], got \[2,5,8,4\]"),
    (lambda ops, f, k: ops.features_grad(torch.zeros(2, 6, 8, 4, dtype=f.dtype), k, 3, 5, 2, 1,
                                         3, 2), ValueError,
     r"kernels spatial size must be \(6, 10\)"),
    (lambda ops, f, k: ops.forward(f, k, 2, 2, 3, 2), ValueError,
     "scale and stride cannot both exceed 1"),
])
def test_the_operators_check_their_arguments_at_run_time(rng, operators, call, error, message):
    features, kernels, _ = tensors(rng, *shapes((2, 1, 3, 2), (2, 3, 4, 4)))
    with pytest.raises(error, match=message):
        call(operators, features, kernels)


def test_torch_export_traces_the_portable_path(rng):
    features, kernels, _ = tensors(rng, *shapes((2, 1, 3, 2), (2, 3, 4, 4)), dtype="float32")

    class Module(torch.nn.Module):
        def forward(self, f, k):
            return carafe(f, k, 2, 3, 2)

    program = torch.export.export(Module(), (features, kernels))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("keras_carafe" in t for t in targets), targets
    assert_close(program.module()(features, kernels),
                 carafe_reference(features.numpy(), kernels.numpy(), 2, 3, 2), 1e-5)
