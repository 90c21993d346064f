"""Which backend serves each model format: the default when none is set, and the backends that can
read it at all. The runtime's configuration and the operator's spec validation both use this table,
so a spec the operator accepts is one the runtime starts with."""

from __future__ import annotations

# An OpenVINO IR (NAME.xml with its weights in NAME.bin) is read by OpenVINO alone; a .tflite by
# LiteRT alone; ``auto`` times ONNX Runtime against OpenVINO on an ONNX model (or picks OpenVINO
# for an IR).
DEFAULT_BACKEND = {"onnx": "onnxruntime", "tensorrt": "tensorrt", "tflite": "litert", "openvino": "openvino"}
SERVES = {
    "onnx": ("onnxruntime", "openvino", "auto"),
    "tensorrt": ("tensorrt",),
    "tflite": ("litert",),
    "openvino": ("openvino", "auto"),
}
