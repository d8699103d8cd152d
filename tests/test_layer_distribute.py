"""CARAFE under tf.distribute: MirroredStrategy on two logical CPU devices, and
MultiWorkerMirroredStrategy with two worker processes on loopback."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
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


# One worker of a MultiWorkerMirroredStrategy cluster (or, with no cluster, the same
# training in one process on the global batch). A custom training loop: Keras 3.15's
# `fit` cannot take a multi-worker dataset (it fails to convert its PerReplica batches,
# with or without CARAFE in the model).
WORKER = textwrap.dedent("""
    import json, os
    import numpy as np, tensorflow as tf, keras
    from keras_carafe import CARAFE

    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if os.environ.get("TF_CONFIG")
                else tf.distribute.get_strategy())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 6, 4)).astype("float32")
    y = tf.image.resize(x, (12, 12)).numpy()
    global_batch = 8
    with strategy.scope():
        keras.utils.set_random_seed(7)
        inputs = keras.Input((6, 6, 4))
        up = CARAFE(2, 3, compressed_channels=4, implementation="op",
                    encoder_kernel_initializer="glorot_uniform")(inputs)
        model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(up))
        optimizer = keras.optimizers.SGD(0.05)
        optimizer.build(model.trainable_variables)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch).with_options(options)

    @tf.function
    def step(images, targets):
        def replica_step(images, targets):
            with tf.GradientTape() as tape:
                error = model(images, training=True) - targets
                # The mean over the global batch, whichever replica holds the images.
                loss = tf.reduce_sum(error ** 2) / (global_batch * 12 * 12 * 4)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss
        losses = strategy.run(replica_step, args=(images, targets))
        return strategy.reduce("SUM", losses, axis=None)

    history = []
    for epoch in range(3):
        for images, targets in strategy.experimental_distribute_dataset(data):
            history.append(float(step(images, targets)))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history,
                      "weights": [w.tolist() for w in model.get_weights()]}))
""")


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_training_with_the_op_matches_one_worker_on_the_global_batch():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, "-c", WORKER], env={**env, "TF_CONFIG": json.dumps(config)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # Both workers must run to the end: each waits for the other at every collective,
    # so one is killed only when the cluster as a whole has run out of time.
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=600))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    reports = []
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-4000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    single = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-4000:]
    alone = json.loads(single.stdout.strip().splitlines()[-1])

    assert [r["replicas"] for r in reports] == [2, 2]
    assert alone["replicas"] == 1
    assert len(alone["loss"]) == 6  # 3 epochs of 2 global batches
    for report in reports:
        assert len(report["loss"]) == len(alone["loss"])
        assert len(report["weights"]) == len(alone["weights"])
        for loss, expected in zip(report["loss"], alone["loss"]):
            assert loss == pytest.approx(expected, rel=1e-4)
        for weights, expected in zip(report["weights"], alone["weights"]):
            np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-5)
