"""Run by tests/model/test_distribute.py in a fresh process: train the design CNN on a tiny,
learnable problem inside a fracturelib.models.distribute strategy and print what happened as JSON.

    python tests/model/distribute_worker.py STRATEGY LOGICAL_CPUS
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    name, cpus = sys.argv[1], int(sys.argv[2])
    import numpy as np
    import tensorflow as tf
    if cpus > 1:                          # before TensorFlow touches a device
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
    import keras

    from fracturelib.models import cnn, distribute, train
    keras.utils.set_random_seed(0)
    strategy = distribute.make_strategy(name)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 60, (128, 32, 32, 1)).astype("float32")
    y = (rng.random(128) < 0.5).astype("float32")
    x[y == 1, 8:24, 8:24] += 150          # a bright square means "fractured"
    with strategy.scope():
        model = cnn.build_binary_cnn(32, 1, learning_rate=3e-3)
    batch = distribute.global_batch(8, strategy)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).with_options(opts)
    val = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(32)
    h = train.fit(model, ds, val, epochs=4, class_weight={0: 1.0, 1: 1.0}, patience=4, verbose=0)
    checksum = float(sum(np.abs(w).sum() for w in model.get_weights()))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "batch": batch,
                      "kind": type(strategy).__name__, "loss": h.history["loss"],
                      "accuracy": float(np.mean((model.predict(x, verbose=0)[:, 0] > 0.5) == y)),
                      "checksum": checksum}))


if __name__ == "__main__":
    main()
