"""Pretrain the in-domain backbone shipped as fracturelib/assets/<FRACATLAS_BACKBONE file>.

A MobileNetV2 (alpha 0.35, 160 px) trained from scratch on FracAtlas radiographs with a
multi-task head (fractured, body region, view, hardware, multi-scan: 11 sigmoid outputs from
dataset.csv), so that transfer learning works offline with radiograph features. On a 2-core CPU it
runs at ~130 training images/s, about 30 s an epoch on the 3,463 usable images of the development
portion. Reproducible: fixed seed, group-aware 10% hold-out reported in the JSON card beside it.

    .venv/bin/python scripts/pretrain_fracatlas.py --data ../shared/data/fracatlas --epochs 25
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fracturelib.data.fracatlas import REGIONS, VIEWS  # noqa: E402

TASKS = ["fractured", *REGIONS, *VIEWS, "hardware", "multiscan"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/fracatlas")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    from fracturelib.data import build_manifest, manifest_hash
    from fracturelib.data.pipeline import make_dataset
    from fracturelib.data.splits import assign_splits
    from fracturelib.models import backbones
    from fracturelib.models.train import set_seed

    fb = backbones.FRACATLAS_BACKBONE
    size = fb["image_size"]
    set_seed(a.seed, deterministic=False)
    df = build_manifest(a.data)
    d = assign_splits(df, val_fraction=0.10, test_fraction=0.10, seed=a.seed, respect_existing=False)
    d.loc[d["split"] == "test", "split"] = "train"      # no test set: this is pretraining
    y = {s: d.loc[d["split"] == s, TASKS].fillna(0).to_numpy("float32") for s in ("train", "val")}

    train_rows = d[d["split"] == "train"]
    images = make_dataset(train_rows, None, size, 1, a.batch, training=False, augment=False,
                          with_labels=False)
    # shuffle image/label pairs together, augment after batching
    from fracturelib.data.augment import augmenter
    aug = augmenter(a.seed)
    train_ds = (tf.data.Dataset.zip((images.unbatch(), tf.data.Dataset.from_tensor_slices(y["train"])))
                .cache().shuffle(len(train_rows), seed=a.seed).batch(a.batch)
                .map(lambda x, t: (aug(x, training=True), t), num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.zip((
        make_dataset(d[d["split"] == "val"], None, size, 1, a.batch, with_labels=False),
        tf.data.Dataset.from_tensor_slices(y["val"]).batch(a.batch)))

    base = backbones.build_backbone("mobilenetv2", None, input_shape=(size, size, 3), alpha=fb["alpha"])
    for layer in base.layers:   # Keras' 0.999 is for fine-tuning; from scratch the moving
        if isinstance(layer, keras.layers.BatchNormalization):   # statistics must keep up
            layer.momentum = 0.9
    inp = keras.Input((size, size, 1))
    x = backbones.preprocess_layer("mobilenetv2")(inp)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    out = keras.layers.Dense(len(TASKS), activation="sigmoid")(x)
    model = keras.Model(inp, out)
    steps = a.epochs * int(np.ceil(len(train_rows) / a.batch))
    lr = keras.optimizers.schedules.CosineDecay(2e-3, steps, warmup_target=None)
    model.compile(keras.optimizers.Adam(lr), "binary_crossentropy",
                  metrics=[keras.metrics.AUC(multi_label=True, name="auc")])
    t0 = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=a.epochs, verbose=2,
              callbacks=[keras.callbacks.EarlyStopping("val_auc", mode="max", patience=8,
                                                       restore_best_weights=True)])
    minutes = (time.time() - t0) / 60
    p = model.predict(val_ds.map(lambda x, t: x), verbose=0)
    aucs = {t: float(roc_auc_score(y["val"][:, k], p[:, k])) for k, t in enumerate(TASKS)
            if len(np.unique(y["val"][:, k])) == 2}
    out_path = a.out or str(backbones.ASSETS / fb["file"])
    base.save_weights(out_path)
    card = {"what": "MobileNetV2 backbone (no top) pretrained on FracAtlas radiographs",
            "alpha": fb["alpha"], "image_size": size, "tasks": TASKS, "epochs_max": a.epochs,
            "seed": a.seed, "train_images": int(len(train_rows)), "val_images": int((d["split"] == "val").sum()),
            "val_auc_per_task": aucs, "minutes_on_this_machine": round(minutes, 1),
            "data": {"root": os.path.basename(os.path.abspath(a.data)), "manifest_hash": manifest_hash(df)},
            "licence": "derived from FracAtlas (CC BY 4.0), Abedeen et al., Sci Data 10, 521 (2023)",
            "caveat": "trained on FracAtlas: do not use it to evaluate on FracAtlas images (leakage)",
            "command": "python scripts/pretrain_fracatlas.py " + " ".join(
                f"--{k} {v}" for k, v in vars(a).items() if v is not None)}
    with open(os.path.splitext(os.path.splitext(out_path)[0])[0] + ".json", "w") as f:
        json.dump(card, f, indent=2)
    print(json.dumps({k: card[k] for k in ("val_auc_per_task", "minutes_on_this_machine")}, indent=2))


if __name__ == "__main__":
    main()
