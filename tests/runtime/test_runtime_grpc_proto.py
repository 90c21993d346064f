"""The v2 proto this runtime serves is wire-compatible with the one tritonclient ships: the same
service and method names and streaming, and for every message the same fields with the same
numbers, types and labels. Our stubs are read in a child process: both sets register
``inference.*`` in protobuf's default pool, which refuses the same names twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")

ROOT = Path(__file__).resolve().parents[2]

DUMP = """
import json, sys
from google.protobuf import descriptor as d
module = __import__(sys.argv[1], fromlist=["DESCRIPTOR"])

def message(m):
    return {"fields": {f.name: [f.number, f.type, f.is_repeated] for f in m.fields},
            "nested": {n.name: message(n) for n in m.nested_types}}

svc = module.DESCRIPTOR.services_by_name["GRPCInferenceService"]
print(json.dumps({
    "service": svc.full_name,
    "methods": {m.name: [m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming]
                for m in svc.methods},
    "messages": {name: message(m) for name, m in module.DESCRIPTOR.message_types_by_name.items()},
}))
"""


def dump(module: str) -> dict:
    out = subprocess.run([sys.executable, "-c", DUMP, module], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_every_rpc_and_message_we_serve_matches_tritonclient():
    ours = dump("modeldeploy_runtime.v2grpc.grpc_service_pb2")
    theirs = dump("tritonclient.grpc.service_pb2")
    assert ours["service"] == theirs["service"] == "inference.GRPCInferenceService"
    assert set(ours["methods"]) == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer", "ModelStreamInfer"
    }  # fmt: skip
    for name, method in ours["methods"].items():
        assert method == theirs["methods"][name], name
    for name, message in ours["messages"].items():
        assert message == theirs["messages"][name], name


def test_generated_stubs_are_up_to_date():
    pytest.importorskip("grpc_tools", reason="grpcio-tools is installed only to regenerate the stubs")
    result = subprocess.run(
        ["bash", "hack/gen-grpc.sh", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
