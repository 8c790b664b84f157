"""Why int8 breaks parity (issue 22): per-layer int8 error of a classifier, and the gate's figures for
int8 variants that keep parts in float or calibrate differently, all on the card's validation images.

    .venv/bin/python bench/int8_parity.py MODEL.keras --data DIR [--calibration 200] [--layers 12]
        [--variants int8,weights,16x8,pertensor,pre_float,head_float,dw_float,split,dynamic,cal_all]

Variants (every one full-integer kernels with float input and output unless said):
- ``int8``: what ``fracturelib export --quantize int8`` writes (per-channel weights).
- ``pertensor``: per-tensor weights (``_experimental_disable_per_channel``).
- ``pre_float``: the preprocessing layer's tensors kept in float (the debugger's selective quantization).
- ``head_float``: pooling, dense and sigmoid kept in float (selective quantization).
- ``dw_float``: the stem conv and every depthwise conv kept in float (selective quantization).
- ``split``: the int8 backbone up to the pooled features, the dense head in float numpy.
- ``dynamic``: dynamic-range int8 (int8 weights, float activations; no calibration).
- ``cal_all``: calibration on every training image and its left-right mirror.
- ``16x8``: int16 activations, int8 weights (reference kernels: slow).
- ``weights``: no LiteRT at all: the Keras model in float with each conv kernel rounded as the converter
  rounds it (BatchNorm folded in, symmetric int8 per output channel), i.e. the weights' share of the error.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("FRACTURELIB_OFFLINE", "1")

import numpy as np  # noqa: E402


def selective(model, cal, nodes=None, ops=None) -> bytes:
    """int8 with the named tensors (or op types) kept in float, through TensorFlow's quantization debugger.

    Args:
        model: the Keras model.
        cal: calibration inputs (N, S, S, C).
        nodes: tensor names to keep in float.
        ops: op type names (e.g. ``MEAN``) to keep in float.

    Returns:
        The .tflite bytes.
    """
    import tensorflow as tf

    from fracturelib.models import export
    with tempfile.TemporaryDirectory() as d:
        conv = export.converter(model, d, "int8", cal)
        opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes, denylisted_ops=ops)
        dbg = tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=lambda: ([x[None].astype(np.float32)] for x in cal[:2]),
            debug_options=opts)
        return dbg.get_nondebug_quantized_model()


def round_weights(model) -> None:
    """Round, in place, every backbone conv kernel followed by a BatchNorm as int8 conversion does: the
    BatchNorm's scale folded in, symmetric per output channel (max |w| -> 127), then unfolded again.

    Args:
        model: a transfer model (its ``backbone`` layer); its weights change.
    """
    from keras import layers
    base = model.get_layer("backbone")
    ls = base.layers
    for conv, bn in zip(ls[:-1], ls[1:]):
        folded = isinstance(conv, (layers.Conv2D, layers.DepthwiseConv2D)) and isinstance(bn, layers.BatchNormalization)
        if not folded:
            continue
        k = conv.get_weights()[0]
        g, _, _, v = bn.get_weights()
        f = g / np.sqrt(v + bn.epsilon)
        shape = (1, 1, -1, 1) if isinstance(conv, layers.DepthwiseConv2D) else (1, 1, 1, -1)
        axes = (0, 1, 3) if isinstance(conv, layers.DepthwiseConv2D) else (0, 1, 2)
        kf = k * f.reshape(shape)
        step = np.maximum(np.abs(kf).max(axis=axes, keepdims=True) / 127, 1e-12)
        conv.set_weights([(np.round(kf / step) * step / f.reshape(shape)).astype(np.float32), *conv.get_weights()[1:]])


def tensor_names(blob: bytes) -> list[tuple[str, str]]:
    """(op name, output tensor name) of every op of a .tflite, in execution order.

    Args:
        blob: the .tflite bytes.

    Returns:
        The list.
    """
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=blob)
    details = {t["index"]: t["name"] for t in it.get_tensor_details()}
    return [(op["op_name"], details.get(op["outputs"][0], "?")) for op in it._get_ops_details()]  # noqa: SLF001


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--data", default=None)
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--layers", type=int, default=12, help="the N tensors of largest error (0: skip)")
    ap.add_argument("--debug-images", type=int, default=24)
    ap.add_argument("--variants",
                    default="int8,weights,16x8,pertensor,pre_float,head_float,dw_float,split,dynamic,cal_all")
    a = ap.parse_args()

    import keras

    from fracturelib.data.pipeline import labels_for, load_images
    from fracturelib.models import export
    from fracturelib.models.cards import load_model
    from fracturelib.models.kerasutil import layer_output
    from fracturelib.models.litert import LiteModel
    model, card = load_model(a.model)
    rows = export.split_rows(card, a.data)
    val = rows[rows.split == "val"]
    x = load_images(val, card.image_size, card.channels)
    labels = labels_for(val, card.classes).astype(int)
    t = card.decision_threshold
    ref = export.positive_scores(model.predict(x, verbose=0, batch_size=32), True)
    cal = export.calibration_images(rows, card, a.calibration)
    print(f"{a.model}: {len(x)} validation images, threshold {t:.4f}, {len(cal)} calibration images")
    gap = np.abs(ref - t)
    print("Keras scores near the threshold: " + ", ".join(f"{int((gap < e).sum())} within {e}"
                                                          for e in (0.005, 0.01, 0.02, 0.05, 0.1)))
    logit = np.log(ref / (1 - ref))
    print(f"Keras p: min {ref.min():.3f} median {np.median(ref):.3f} max {ref.max():.3f}; logit sd {logit.std():.3f}")

    if a.layers:
        t0 = time.perf_counter()
        errs = export.layer_errors(model, cal, x[:a.debug_images])
        print(f"\nper-tensor int8 error on {min(len(x), a.debug_images)} validation images "
              f"({time.perf_counter() - t0:.0f} s); rmse/step ~0.29 is pure rounding")
        first_last = errs[:4] + errs[-6:]
        worst = sorted(errs, key=lambda e: -e["rmse_per_step"])[:a.layers]
        for title, group in (("first and last tensors", first_last), ("largest rmse/step", worst)):
            print(f"  {title}:")
            for e in group:
                print(f"    {e['op']:22s} {e['tensor'][-60:]:60s} step {e['scale']:.4g} range {e['range']:.3g} "
                      f"rmse {e['rmse']:.4g} rmse/step {e['rmse_per_step']:.2f} max {e['max_abs_error']:.4g}")

    def figures(blob=None, scores=None):
        got = scores if scores is not None else export.positive_scores(LiteModel(blob, 2).predict_on_batch(x), True)
        f = export.parity(ref, got, labels, t)
        flips = np.flatnonzero((ref >= t) != (got >= t))
        f["flips"] = [(round(float(ref[i]), 4), round(float(got[i]), 4)) for i in flips[:6]]
        f["mean_abs_dp"] = float(np.abs(ref - got).mean())
        return f

    base = None
    for v in a.variants.split(","):
        t0 = time.perf_counter()
        size, f = None, None
        if v == "int8":
            base = export.convert(model, "int8", cal)
            size, f = len(base), figures(base)
        elif v == "pertensor":
            with tempfile.TemporaryDirectory() as d:
                conv = export.converter(model, d, "int8", cal)
                conv._experimental_disable_per_channel = True  # noqa: SLF001
                blob = conv.convert()
            size, f = len(blob), figures(blob)
        elif v in ("pre_float", "head_float", "dw_float"):
            base = base or export.convert(model, "int8", cal)
            names = tensor_names(base)
            key = {"pre_float": ("preprocess",), "dw_float": ("stem_bn",),
                   "head_float": ("pool", "classes", "Identity", "StatefulPartitioned")}[v]
            nodes = [n for op, n in names if (any(k in n for k in key) or v == "dw_float" and op == "DEPTHWISE_CONV_2D")
                     and op not in ("QUANTIZE", "DEQUANTIZE")]
            print(f"{v}: {len(nodes)} tensors kept in float, e.g. {nodes[0][-60:]}")
            blob = selective(model, cal, nodes=nodes)
            size, f = len(blob), figures(blob)
        elif v == "split":
            feats = keras.Model(model.inputs, layer_output(model, model.get_layer("pool")))
            blob = export.convert(feats, "int8", cal)
            w, b = model.get_layer("classes").get_weights()
            z = LiteModel(blob, 2).predict_on_batch(x) @ w + b
            size, f = len(blob), figures(scores=1 / (1 + np.exp(-z[:, 0])))
        elif v == "dynamic":
            with tempfile.TemporaryDirectory() as d:
                import tensorflow as tf
                conv = export.converter(model, d, "none")
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                blob = conv.convert()
            size, f = len(blob), figures(blob)
        elif v == "cal_all":
            tr = rows[rows.split == "train"]
            c = load_images(tr, card.image_size, card.channels)
            c = np.concatenate([c, c[:, :, ::-1]])
            blob = export.convert(model, "int8", c)
            size, f = len(blob), figures(blob)
            print(f"cal_all: {len(c)} calibration images")
        elif v == "16x8":
            import tensorflow as tf
            with tempfile.TemporaryDirectory() as d:
                conv = export.converter(model, d, "int8", cal)
                conv.target_spec.supported_ops = [
                    tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                    tf.lite.OpsSet.TFLITE_BUILTINS]
                blob = conv.convert()
            size, f = len(blob), figures(blob)
        elif v == "weights":
            rounded, _ = load_model(a.model)
            round_weights(rounded)
            size, f = 0, figures(scores=export.positive_scores(rounded.predict(x, verbose=0, batch_size=32), True))
        else:
            print(f"{v}: unknown variant")
            continue
        print(f"{v:11s} {size / 1e6:5.2f} MB agree {100 * f['agreement']:5.1f}% |dAUC| {f['roc_auc_diff']:.4f} "
              f"max|dp| {f['max_abs_diff']:.4f} mean|dp| {f['mean_abs_dp']:.4f} "
              f"{'pass' if export.passes(f) else 'FAIL'} ({time.perf_counter() - t0:.0f} s) flips (keras, lite): "
              f"{f['flips']}", flush=True)


if __name__ == "__main__":
    main()
