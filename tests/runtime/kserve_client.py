"""Calls a running runtime with KServe's own Python clients (``kserve.InferenceGRPCClient`` and
``InferenceRESTClient`` with the v2 protocol), run by tests/runtime/test_runtime_kserve_client.py in
a virtual environment of its own (``.venv-kserve``, made by hack/setup.sh: kserve pins a protobuf
older than the project's). Prints one JSON object of what each call returned or raised.

    .venv-kserve/bin/python tests/runtime/kserve_client.py GRPC_HOST:PORT REST_BASE_URL MODEL TOKEN
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def request(model: str, a_cols: int = 3) -> tuple[InferRequest, np.ndarray, np.ndarray]:
    a = np.arange(2 * a_cols, dtype=np.float32).reshape(2, a_cols)
    b = np.ones((2, 3), dtype=np.float32)
    n = np.arange(2, dtype=np.int64).reshape(2, 1)
    tensors = []
    for name, arr, dtype in (("a", a, "FP32"), ("b", b, "FP32"), ("n", n, "INT64")):
        t = InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        tensors.append(t)
    return InferRequest(model, tensors, request_id="kserve-1"), (a + b if a_cols == 3 else None), n + 1


def outputs(response) -> dict[str, list]:
    return {out.name: out.as_numpy().tolist() for out in response.outputs}


async def grpc_calls(url: str, model: str, token: str) -> dict:
    auth = (("authorization", f"Bearer {token}"),)
    out: dict = {}
    client = InferenceGRPCClient(url, timeout=30, retries=0)
    try:
        out["live"] = await client.is_server_live()
        out["ready"] = await client.is_server_ready()
        out["model_ready"] = await client.is_model_ready(model, headers=auth)
        req, total, count = request(model)
        response = await client.infer(req, headers=auth)
        out["infer"] = {"id": response.id, "outputs": outputs(response), "want_total": total.tolist(),
                        "want_count": count.tolist()}  # fmt: skip
        for case, headers, build in (
            ("no_token", None, lambda: request(model)[0]),
            ("bad_shape", auth, lambda: request(model, a_cols=4)[0]),
        ):
            try:
                await client.infer(build(), headers=headers)
                out[case] = {"code": "OK"}
            except grpc.RpcError as exc:
                out[case] = {"code": exc.code().name, "details": exc.details()}
        response = await client.infer(request(model)[0], headers=auth)
        out["after_errors"] = outputs(response)
    finally:
        await client.close()
    return out


async def rest_calls(base: str, model: str, token: str) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    auth = {"authorization": f"Bearer {token}"}
    out: dict = {}
    try:
        out["live"] = await client.is_server_live(base)
        out["model_ready"] = await client.is_model_ready(base, model, headers=auth)
        req, total, count = request(model)
        response = await client.infer(base, req, model_name=model, headers=auth)
        out["infer"] = {"outputs": outputs(response), "want_total": total.tolist(), "want_count": count.tolist()}
        try:
            await client.infer(base, request(model, a_cols=4)[0], model_name=model, headers=auth)
            out["bad_shape"] = {"status": 200}
        except Exception as exc:  # kserve raises httpx.HTTPStatusError with the server's body
            response = getattr(exc, "response", None)
            out["bad_shape"] = {
                "status": getattr(response, "status_code", None),
                "text": getattr(response, "text", str(exc)),
            }
    finally:
        await client.close()
    return out


def main(argv: list[str]) -> int:
    grpc_url, rest_base, model, token = argv
    result = {
        "grpc": asyncio.run(grpc_calls(grpc_url, model, token)),
        "rest": asyncio.run(rest_calls(rest_base, model, token)),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
