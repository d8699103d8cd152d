"""The compiled kernels on the JAX backend (XLA FFI handlers behind three bilinear
primitives): `jax.jit` and eager calls, `jax.vmap`, donated buffers, every transformation
of derivatives, the platform lowerings, run-time errors of the handlers, exports, and
programs partitioned over two devices. The portable path (the same `keras.ops` code under
JAX's own autodiff) is the comparison.

Runs with KERAS_BACKEND=jax.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from autodiff import BACKEND
from carafe_reference import carafe_downsample_reference, carafe_reference
from keras_carafe.ops import validation

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="needs KERAS_BACKEND=jax")

if BACKEND == "jax":
    import jax
    import jax.numpy as jnp

    from keras_carafe.backend.jax import compiled, library
    from keras_carafe.backend.jax import portable as jax_portable

REPO = Path(__file__).resolve().parent.parent
UP = validation.upsampling(2, 3, 2)
DOWN = validation.downsampling(2, 5, 1)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def inputs(rng, geometry, n=2, h=5, w=4, c=4):
    oh, ow = geometry.output_size(h), geometry.output_size(w)
    return (jnp.asarray(rng.uniform(-1, 1, (n, h, w, c))),
            jnp.asarray(rng.uniform(-1, 1, (n, oh, ow, geometry.kernel_channels))))


def reference(geometry, features, kernels):
    function = carafe_reference if geometry.upsampling else carafe_downsample_reference
    return function(np.asarray(features), np.asarray(kernels), geometry.factor,
                    geometry.kernel_size, geometry.group_size)


def op(geometry):
    return lambda f, k: compiled.reassemble(geometry, f, k)


def portable(geometry):
    return lambda f, k: jax_portable.reassemble(geometry, f, k)


def assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-11,
                               atol=1e-12)


@pytest.mark.parametrize("geometry", [UP, DOWN], ids=["up", "down"])
def test_eager_and_jitted_calls_match_the_reference(rng, geometry):
    features, kernels = inputs(rng, geometry)
    expected = reference(geometry, features, kernels)
    assert_close(op(geometry)(features, kernels), expected)
    assert_close(jax.jit(op(geometry))(features, kernels), expected)


def test_the_jitted_program_calls_the_cpu_handler(rng):
    features, kernels = inputs(rng, UP)
    text = jax.jit(op(UP)).lower(features, kernels).as_text()
    assert 'keras_carafe_forward_cpu' in text


def test_a_program_lowered_for_cuda_calls_the_cuda_handlers(rng):
    if "cuda" not in library.load().module.platforms:
        pytest.skip("the library was built without CUDA kernels (no nvcc here)")
    features, kernels = inputs(rng, UP)

    def loss(f, k):
        return jnp.sum(op(UP)(f, k) ** 2)

    traced = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(features, kernels)
    text = traced.lower(lowering_platforms=("cuda",)).as_text()
    for kind in library.MAPS:
        assert f"keras_carafe_{kind}_cuda" in text
    assert "_cpu" not in text


@pytest.mark.parametrize("geometry", [UP, DOWN], ids=["up", "down"])
@pytest.mark.parametrize("in_axes", [(0, 0), (1, 1), (0, None), (None, 2)],
                         ids=["both-0", "both-1", "features-only", "kernels-only"])
def test_vmap_folds_the_mapped_axis_into_the_batch(rng, geometry, in_axes):
    features, kernels = inputs(rng, geometry, n=2)
    stacked = [jnp.stack([x, 2 * x + 1, -x], axis=axis) if axis is not None else x
               for x, axis in zip((features, kernels), in_axes)]
    out = jax.vmap(op(geometry), in_axes=in_axes)(*stacked)
    assert_close(out, jax.vmap(portable(geometry), in_axes=in_axes)(*stacked))


def test_vmap_of_the_gradient_matches_the_portable_path(rng):
    features, kernels = inputs(rng, UP)

    def gradients(implementation):
        loss = lambda f, k: jnp.sum(jnp.sin(implementation(UP)(f, k)))
        return jax.vmap(jax.grad(loss, argnums=(0, 1)))(jnp.stack([features, -features]),
                                                         jnp.stack([kernels, kernels + 1]))

    for a, b in zip(gradients(op), gradients(portable)):
        assert_close(a, b)


def test_donated_inputs_give_the_same_results(rng):
    features, kernels = inputs(rng, UP)
    expected = reference(UP, features, kernels)
    donating = jax.jit(lambda f, k: op(UP)(f, k) + 0.0, donate_argnums=(0, 1))
    assert_close(donating(jnp.array(features), jnp.array(kernels)), expected)

    def step(f, k):
        grads = jax.grad(lambda a, b: jnp.sum(op(UP)(a, b) ** 2), argnums=(0, 1))(f, k)
        return f - 0.1 * grads[0], k - 0.1 * grads[1]

    plain = jax.jit(step)(features, kernels)
    donated = jax.jit(step, donate_argnums=(0, 1))(jnp.array(features), jnp.array(kernels))
    for a, b in zip(plain, donated):
        assert_close(a, b)


@pytest.mark.parametrize("transform", ["jacfwd", "jacrev", "hessian"])
def test_jacobians_and_hessians_match_the_portable_path(rng, transform):
    features, kernels = inputs(rng, UP, n=1, h=2, w=2, c=2)

    def function(implementation):
        f = implementation(UP)
        if transform == "hessian":
            return jax.hessian(lambda a, b: jnp.sum(jnp.tanh(f(a, b))), argnums=(0, 1))
        return getattr(jax, transform)(f, argnums=(0, 1))

    for a, b in zip(jax.tree_util.tree_leaves(function(op)(features, kernels)),
                    jax.tree_util.tree_leaves(function(portable)(features, kernels))):
        assert_close(a, b)


@pytest.mark.parametrize("kind, message", [
    ("kernels", "kernels channels must be group_size \\* kernel_size\\^2 = 18, got 9"),
    ("grad_output", "grad_output must have the output shape \\[2,10,8,4\\]"),
])
def test_the_handlers_check_shapes_at_run_time(rng, kind, message):
    # Called below the public functions' validation: the handler itself refuses.
    features, kernels = inputs(rng, UP)
    compiled.reassemble(UP, features, kernels)  # registers the lowerings
    attrs = compiled.attributes(UP)
    if kind == "kernels":
        call = lambda: compiled.forward(features, kernels[..., :9], **attrs)
    else:
        grad_output = jnp.zeros((2, 9, 8, 4))
        call = lambda: compiled.kernels_grad(grad_output, features, **attrs)
    with pytest.raises(Exception, match=message):
        jax.block_until_ready(call())


def test_jax_export_traces_the_portable_path(rng):
    from jax import export

    from keras_carafe.ops import carafe

    features, kernels = inputs(rng, UP)
    exported = export.export(jax.jit(lambda f, k: carafe(f, k, 2, 3, 2)))(features, kernels)
    assert "custom_call" not in exported.mlir_module()
    assert_close(exported.call(features, kernels), reference(UP, features, kernels))


# --- two devices (a fresh process: the device count is fixed when JAX starts) ----------

_SHARDED = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from keras_carafe.backend.jax import compiled
    from keras_carafe.ops import validation
    geometry = validation.upsampling(2, 5, 1)
    rng = np.random.default_rng(0)
    f = rng.standard_normal((4, 8, 8, 16)).astype("float32")
    k = rng.random((4, 16, 16, 25)).astype("float32")
    def loss(f, k):
        return jnp.sum(compiled.reassemble(geometry, f, k) ** 2)
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), P("batch"))
    sharded = step.lower(jax.device_put(f, sharding), jax.device_put(k, sharding)).compile()
    value, grads = sharded(jax.device_put(f, sharding), jax.device_put(k, sharding))
    single = step(jax.device_put(f, jax.devices()[0]), jax.device_put(k, jax.devices()[0]))
    print(json.dumps({
        "hlo": sharded.as_text(),
        "value_error": abs(float(value) - float(single[0])) / abs(float(single[0])),
        "grad_error": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                          for a, b in zip(grads, single[1])),
    }))
""")


def test_on_two_devices_each_one_runs_the_kernels_on_its_batch_shard():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", _SHARDED], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    hlo = report["hlo"]
    assert "all-gather" not in hlo
    calls = [line for line in hlo.splitlines() if 'custom_call_target="keras_carafe_' in line]
    assert len(calls) == 3, calls
    # Each device holds 2 of the 4 images.
    assert all(line.split("=")[1].strip().startswith("f32[2,") for line in calls), calls
    assert report["value_error"] < 1e-6
    assert report["grad_error"] < 1e-5


_DATA_PARALLEL = textwrap.dedent("""
    import glob, json, os, sys
    devices, dump = int(sys.argv[1]), sys.argv[2]
    os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                               f"--xla_dump_to={dump} --xla_dump_hlo_as_text")
    import numpy as np, keras, jax
    from keras_carafe import CARAFE
    keras.utils.set_random_seed(0)
    if devices > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    inputs = keras.Input((8, 8, 8))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = CARAFE(compressed_channels=4, implementation="op")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(x))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 8, 8)).astype("float32")
    y = rng.standard_normal((16, 16, 16, 1)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    [step] = [f for f in glob.glob(f"{dump}/*train_step*after_optimizations.txt")]
    print(json.dumps({"hlo": open(step).read(),
                      "weights": [w.tolist() for w in model.get_weights()]}))
""")


def test_data_parallel_training_runs_the_kernels_on_each_devices_shard(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    reports = {}
    for devices in (1, 2):
        result = subprocess.run([sys.executable, "-c", _DATA_PARALLEL, str(devices),
                                 str(tmp_path / f"dump{devices}")], capture_output=True,
                                text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        reports[devices] = json.loads(result.stdout.strip().splitlines()[-1])
    hlo = reports[2]["hlo"]
    calls = [line for line in hlo.splitlines() if 'custom_call_target="keras_carafe_' in line]
    assert len(calls) == 3, calls
    # Each device reassembles its own 4 of the batch's 8 images: nothing is gathered.
    assert all(line.split("=")[1].strip().startswith("f32[4,") for line in calls), calls
    assert "all-gather" not in hlo
    for one, two in zip(reports[1]["weights"], reports[2]["weights"]):
        np.testing.assert_allclose(np.asarray(two), np.asarray(one), rtol=1e-5, atol=1e-6)
