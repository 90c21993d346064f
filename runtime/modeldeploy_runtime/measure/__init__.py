"""Measuring a model: the inputs it is fed (`data`), running it in-process on any engine
(`runner`), what an optimization cost in accuracy (`compare`, also the golden set's judge) and
what serving it costs in time, in-process or over REST and gRPC (`bench`, `bench_http`,
`bench_grpc`). The `modeldeploy validate|bench` commands in `modeldeploy_runtime.tools` are thin
argument parsers over these modules; `optimize` builds on `data` and `runner`.
"""
