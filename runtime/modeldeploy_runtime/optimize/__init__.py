"""Model optimization: the steps a team runs before production.

Quantize an ONNX model to INT8 for CPU serving (`quantize`), build a TensorRT engine for GPU
serving (`trt_build`), check what the optimization cost in accuracy (`compare`) and what it
bought in speed (`bench`, `bench_http`). The `modeldeploy optimize|validate|bench` commands in
`modeldeploy_runtime.tools` are thin argument parsers over these modules.
"""
