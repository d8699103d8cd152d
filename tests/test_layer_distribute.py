"""CARAFE under tf.distribute.MirroredStrategy on two logical CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Logical devices must be configured before TensorFlow starts, so the training
# runs in a fresh process.
SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_carafe import CARAFE

    implementation = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 6, 4)).astype("float32")
    y = tf.image.resize(x, (12, 12)).numpy()

    def build():
        keras.utils.set_random_seed(7)
        inputs = keras.Input((6, 6, 4))
        up = CARAFE(2, 3, compressed_channels=4, implementation=implementation,
                    encoder_kernel_initializer="glorot_uniform")(inputs)
        model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(up))
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        return model

    def train(model):
        history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        return history.history["loss"], [w.tolist() for w in model.get_weights()]

    single_loss, single_weights = train(build())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build()
    mirrored_loss, mirrored_weights = train(mirrored)
    diff = max(float(np.abs(np.array(a) - np.array(b)).max())
               for a, b in zip(single_weights, mirrored_weights))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "single": single_loss,
                      "mirrored": mirrored_loss, "max_weight_diff": diff}))
""")


@pytest.mark.parametrize("implementation", ["op", "fallback"])
def test_mirrored_fit_matches_single_device(implementation):
    result = subprocess.run([sys.executable, "-c", SCRIPT, implementation], capture_output=True,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["mirrored"][-1] < report["mirrored"][0]
    for single, mirrored in zip(report["single"], report["mirrored"]):
        assert mirrored == pytest.approx(single, rel=1e-4)
    assert report["max_weight_diff"] < 1e-5
