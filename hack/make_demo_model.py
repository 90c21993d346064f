#!/usr/bin/env python3
"""Regenerate examples/models/digits-mlp.onnx, the small real model of the demo and the docs.

A scikit-learn MLP trained on the `digits` data set that scikit-learn ships (no download),
exported with skl2onnx. Two edits make it servable by every backend: the pixel scaling (x / 16)
moves into the graph, so clients send raw 0..16 pixel values; and skl2onnx's class lookup
(ArrayFeatureExtractor, an `ai.onnx.ml` op TensorRT cannot parse) becomes a plain ArgMax, which
is the same mapping since the classes are 0..9. Denormal weights are flushed to zero.

    .venv/bin/python hack/make_demo_model.py            # writes the model, prints its accuracy
    .venv/bin/python hack/make_demo_model.py --check    # only compares accuracy with the file's
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "examples" / "models" / "digits-mlp.onnx"
SEED = 0
OPSET = 17


def split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x.astype(np.float32), y, test_size=0.25, random_state=SEED, stratify=y)


def train(x_train, y_train):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=SEED)
    return clf.fit(x_train / 16.0, y_train)


def export(clf):
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import to_onnx

    model = to_onnx(clf, np.zeros((1, 64), np.float32), options={"zipmap": False}, target_opset=OPSET)
    graph = model.graph
    (source,) = [i.name for i in graph.input]

    # Raw pixels in: scale inside the graph.
    nodes = [
        helper.make_node("Mul", ["input", "pixel_scale"], [source], name="scale_pixels"),
    ]
    graph.initializer.append(helper.make_tensor("pixel_scale", TensorProto.FLOAT, [], [1.0 / 16.0]))
    # The label: ArgMax of the probabilities, without the ai.onnx.ml lookup.
    keep = []
    for node in graph.node:
        if node.op_type == "ArgMax":
            keep.append(helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0, name="label"))
            break
        keep.append(node)
    del graph.node[:]
    graph.node.extend(nodes + keep)
    used = {i for n in graph.node for i in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)

    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64]))
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
        ]
    )
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", OPSET))
    flush_denormals(graph)
    model.producer_name = "modeldeploy hack/make_demo_model.py"
    model.producer_version = ""
    model.doc_string = "MLP 64-64-10 trained on scikit-learn digits; input: raw 8x8 pixels 0..16"
    graph.name = "digits_mlp"
    onnx.checker.check_model(model, full_check=True)
    return model


def flush_denormals(graph) -> None:
    """Weights of always-blank pixels decay to denormal floats under L2 training; CPUs compute
    with those many times slower (the FP32 model ran 10x slower than it should). Zero them."""
    from onnx import numpy_helper

    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32:
            tiny = np.abs(array) < np.finfo(np.float32).tiny
            if tiny.any():
                init.CopyFrom(numpy_helper.from_array(np.where(tiny, np.float32(0), array), init.name))


def accuracy(model_path: Path, x, y) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (label,) = session.run(["label"], {"input": x})
    return float((label == y).mean())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report the committed model's accuracy only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    x_train, x_test, y_train, y_test = split()
    if not args.check:
        import onnx

        clf = train(x_train, y_train)
        model = export(clf)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(args.out))
        print(
            f"wrote {args.out} ({args.out.stat().st_size} bytes); scikit-learn accuracy {clf.score(x_test / 16, y_test):.4f}"
        )
    print(f"held-out accuracy ({len(y_test)} digits): {accuracy(args.out, x_test, y_test):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
