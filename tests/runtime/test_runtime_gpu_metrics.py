"""GPU metrics on /metrics: present, per GPU and read from NVML where a GPU is; absent (and nothing
of NVML imported) where none is. Runs on both kinds of machine, checking what each should show."""

from __future__ import annotations

import re
import urllib.request

import numpy as np
from runtime_helpers import nvml_gpus, post


def scrape(server) -> str:
    with urllib.request.urlopen(server.base + "/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_gpu_gauges_follow_what_nvml_sees(affine_server):
    x = np.ones((1, 4), dtype=np.float32)
    header = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}'
    status, _ = post(affine_server, header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))},
                     path="/v2/models/affine/infer")  # fmt: skip
    assert status == 200
    text = scrape(affine_server)
    gpus = nvml_gpus()
    if not gpus:
        assert "modeldeploy_gpu_utilization_ratio" not in text
        assert "modeldeploy_gpu_memory_used_bytes" not in text
        return
    util = dict(re.findall(r'^modeldeploy_gpu_utilization_ratio\{gpu="(\d+)"\} (\S+)$', text, re.M))
    used = dict(re.findall(r'^modeldeploy_gpu_memory_used_bytes\{gpu="(\d+)"\} (\S+)$', text, re.M))
    assert sorted(util) == sorted(used) == [str(i) for i in range(gpus)]
    assert all(0.0 <= float(v) <= 1.0 for v in util.values())
    assert all(float(v) > 0 for v in used.values())  # the driver itself holds some memory on every GPU
