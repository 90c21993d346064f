"""Model optimization: the steps a team runs before production.

Quantize an ONNX model to INT8 for CPU serving (`quantize`) and build a TensorRT engine for GPU
serving (`trt_build`). What an optimization cost in accuracy and bought in speed is measured by
`modeldeploy_runtime.measure`. The `modeldeploy optimize` command in `modeldeploy_runtime.tools`
is a thin argument parser over these modules.
"""
