"""bf16 is served only where the CPU has bf16 instructions: the refusal, with the CPU flags simulated."""

from __future__ import annotations

import pytest
from modeldeploy_runtime.backends.base import UnsupportedConfigurationError
from modeldeploy_runtime.cpu import bf16_missing, cpu_flags

ov_backend = pytest.importorskip("modeldeploy_runtime.backends.openvino")

ZEN3 = frozenset({"sse4_2", "avx2", "fma"})  # no AVX-512 at all
ICELAKE = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"})  # AVX-512, but no BF16
COOPERLAKE = ICELAKE | {"avx512_bf16"}
SAPPHIRE = COOPERLAKE | {"amx_bf16", "amx_tile"}
CAPS = ["BF16", "FP32", "INT8"]


@pytest.mark.parametrize("flags", [ZEN3, ICELAKE, frozenset()])
def test_bf16_refused_without_bf16_instructions_names_them(flags):
    with pytest.raises(UnsupportedConfigurationError) as err:
        ov_backend.check_precision("bf16", flags, CAPS)
    assert "AVX512_BF16" in str(err.value) and "AMX_BF16" in str(err.value)
    assert "precision fp32" in str(err.value)


@pytest.mark.parametrize("flags", [COOPERLAKE, SAPPHIRE, frozenset({"amx_bf16"})])
def test_bf16_accepted_with_either_instruction_set(flags):
    assert ov_backend.check_precision("bf16", flags, CAPS) == "bf16"


def test_bf16_refused_where_openvino_reports_no_bf16():
    with pytest.raises(UnsupportedConfigurationError, match="no BF16 capability"):
        ov_backend.check_precision("bf16", SAPPHIRE, ["FP32", "INT8"])


@pytest.mark.parametrize(("precision", "hint"), [("fp32", "f32"), ("int8", "f32")])
def test_fp32_is_explicit_on_any_cpu(precision, hint):
    assert ov_backend.check_precision(precision, ZEN3, ["FP32"]) == hint


def test_fp16_is_refused():
    with pytest.raises(UnsupportedConfigurationError, match="fp32, bf16 or int8"):
        ov_backend.check_precision("fp16", SAPPHIRE, CAPS)


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: x\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert bf16_missing(cpu_flags(str(info))) is None


def test_bf16_refusal_at_startup_is_an_invalid_configuration(tmp_path, monkeypatch):
    """The server turns the refusal into the termination message the operator classifies."""
    from modeldeploy_runtime import server
    from modeldeploy_runtime.config import load_config
    from modeldeploy_runtime.errors import InvalidConfiguration

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    monkeypatch.setattr(ov_backend, "cpu_flags", lambda: ICELAKE)
    config = load_config(
        [], {"MODELDEPLOY_MODEL_PATH": str(model), "MODELDEPLOY_MODEL_NAME": "m", "MODELDEPLOY_BACKEND": "openvino",
             "MODELDEPLOY_PRECISION": "bf16", "MODELDEPLOY_CACHE_DIR": str(tmp_path)}
    )  # fmt: skip
    with pytest.raises(InvalidConfiguration) as err:
        server.load_model(config, threads=1)
    assert err.value.termination_message.startswith("invalid configuration: precision bf16 on OpenVINO: ")
    assert "AVX512_BF16" in err.value.termination_message
