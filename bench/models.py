"""ONNX models with random weights for benchmarks and tests, built with `onnx` and numpy only.

The benchmarks compare our server with ONNX Runtime called in-process, so what matters is that the
graphs have the real architectures' shapes and operator mix (and so their real cost), not trained
weights. Building them here keeps CI and benchmarks free of downloads and of torch.

Every model has one float32 input named ``input`` and one float32 output named ``output``, with a
dynamic batch dimension ``batch``. Batch normalisation is folded into the convolutions (as an
exporter with constant folding does), so the graphs hold Conv, Relu/Clip, Add, MaxPool,
GlobalAveragePool, Flatten and Gemm.

Usage: ``python bench/models.py OUTDIR`` writes resnet50.onnx, mobilenet_v2.onnx and mlp.onnx.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # understood by ONNX Runtime >= 1.14 and TensorRT >= 8.6
IR_VERSION = 8


class _Graph:
    """Accumulates nodes and initializers with unique names while a model is being built."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, array: np.ndarray, prefix: str) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: Sequence[str], prefix: str | None = None, **attrs) -> str:
        out = self.name(prefix or op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, gain: float = 1.0) -> str:
        fan_in = (c_in // groups) * k * k
        std = gain * np.sqrt(2.0 / fan_in)
        w = (self.rng.standard_normal((c_out, c_in // groups, k, k)) * std).astype(np.float32)
        b = (self.rng.standard_normal(c_out) * 0.01).astype(np.float32)
        pad = k // 2
        return self.node(
            "Conv",
            [x, self.const(w, "w"), self.const(b, "b")],
            "conv",
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=groups,
        )

    def gemm(self, x: str, n_in: int, n_out: int, gain: float = 1.0) -> str:
        w = (self.rng.standard_normal((n_in, n_out)) * gain * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = (self.rng.standard_normal(n_out) * 0.01).astype(np.float32)
        return self.node("Gemm", [x, self.const(w, "w"), self.const(b, "b")], "gemm")

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def relu6(self, x: str) -> str:
        lo = self.const(np.array(0.0, dtype=np.float32), "min")
        hi = self.const(np.array(6.0, dtype=np.float32), "max")
        return self.node("Clip", [x, lo, hi], "relu6")

    def save(self, path: str, graph_name: str, x_shape: list, y_shape: list, last: str) -> str:
        self.nodes.append(helper.make_node("Identity", [last], ["output"], name="output_identity"))
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, y_shape)],
            initializer=self.inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modeldeploy-bench"
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        onnx.save(model, path)
        return path


def resnet50(path: str, seed: int = 0, num_classes: int = 1000, image_size: int = 224) -> str:
    """ResNet-50 v1.5 (stride in the 3x3 convolution), about 25.5 M parameters, input
    ``[batch, 3, image_size, image_size]``."""
    g = _Graph(seed)
    x = g.relu(g.conv("input", 3, 64, 7, stride=2))
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    for stage, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            c_out = width * 4
            y = g.relu(g.conv(x, c_in, width, 1))
            y = g.relu(g.conv(y, width, width, 3, stride=stride))
            # A small last gain keeps activations bounded through 16 residual blocks (as
            # zero-initialised residual branches do), so fp16 and int8 variants stay finite.
            y = g.conv(y, width, c_out, 1, gain=0.2)
            shortcut = g.conv(x, c_in, c_out, 1, stride=stride) if block == 0 else x
            x = g.relu(g.node("Add", [y, shortcut]))
            c_in = c_out
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    x = g.gemm(x, c_in, num_classes, gain=0.5)
    return g.save(path, "resnet50", ["batch", 3, image_size, image_size], ["batch", num_classes], x)


def mobilenet_v2(path: str, seed: int = 0, num_classes: int = 1000, image_size: int = 224) -> str:
    """MobileNetV2 (width 1.0), about 3.5 M parameters, input ``[batch, 3, image_size, image_size]``."""
    g = _Graph(seed)
    x = g.relu6(g.conv("input", 3, 32, 3, stride=2))
    c_in = 32
    # (expansion t, channels c, repeats n, stride s) from the paper's table 2
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)] + [
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c_in * t
            y = x if t == 1 else g.relu6(g.conv(x, c_in, hidden, 1))
            y = g.relu6(g.conv(y, hidden, hidden, 3, stride=stride, groups=hidden))
            y = g.conv(y, hidden, c, 1, gain=0.5)
            x = g.node("Add", [x, y]) if stride == 1 and c_in == c else y
            c_in = c
    x = g.relu6(g.conv(x, c_in, 1280, 1))
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    x = g.gemm(x, 1280, num_classes, gain=0.5)
    return g.save(path, "mobilenet_v2", ["batch", 3, image_size, image_size], ["batch", num_classes], x)


def mlp(
    path: str,
    seed: int = 0,
    in_features: int = 64,
    hidden: Sequence[int] = (256, 256),
    out_features: int = 10,
) -> str:
    """A small multi-layer perceptron (Gemm + Relu), input ``[batch, in_features]``: a model
    whose compute is tiny, so that serving overhead dominates what is measured."""
    g = _Graph(seed)
    x, width = "input", in_features
    for h in hidden:
        x = g.relu(g.gemm(x, width, h))
        width = h
    x = g.gemm(x, width, out_features)
    return g.save(path, "mlp", ["batch", in_features], ["batch", out_features], x)


MODELS = {"resnet50": resnet50, "mobilenet_v2": mobilenet_v2, "mlp": mlp}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", help="folder to write <name>.onnx into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="build only these")
    args = parser.parse_args(argv)
    for name in args.only or list(MODELS):
        path = MODELS[name](os.path.join(args.outdir, f"{name}.onnx"), seed=args.seed)
        print(f"{path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
