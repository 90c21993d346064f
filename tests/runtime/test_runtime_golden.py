"""The golden set gate: the comparison as a pure function, the file checked against the model, the
inputs run in batches, and the provider-mismatch decision."""

from __future__ import annotations

import numpy as np
import pytest
from modeldeploy_runtime.backends.base import TensorSpec
from modeldeploy_runtime.backends.onnx import OnnxBackend
from modeldeploy_runtime.config import ConfigError, load_config
from modeldeploy_runtime.errors import GoldenSetMismatch, InvalidConfiguration, ModelLoadFailed
from modeldeploy_runtime.golden import (
    GoldenSet,
    GoldenSetInvalid,
    Tolerances,
    check_golden_gate,
    check_golden_set,
    fetch_golden_set,
    golden_verdict,
    read_golden_set,
    run_golden_set,
    write_golden_set,
)
from modeldeploy_runtime.providers import CUDA_EP, TRT_EP, provider_mismatch

CPU_EP = "CPUExecutionProvider"


def scores(labels, classes: int = 4) -> np.ndarray:
    """One-hot-ish float scores whose argmax is each label."""
    out = np.full((len(labels), classes), 0.1, dtype=np.float32)
    out[np.arange(len(labels)), labels] = 0.7
    return out


# ---- golden_verdict ---------------------------------------------------------------------------------


def test_the_issues_example_message():
    want = scores([0, 1, 2, 3] * 16)
    got = scores([0, 1, 2, 3] * 10 + [1, 2, 3, 0] * 6)  # 40 of 64 agree
    assert golden_verdict({"logits": want}, {"logits": got}, Tolerances()) == (
        'output "logits" top-1 agreement 0.62 < 0.99 on 64 inputs'
    )


def test_identical_answers_pass():
    want = {"logits": scores([0, 1, 2, 3]), "label": np.array([0, 1, 2, 3])}
    assert golden_verdict(want, {k: v.copy() for k, v in want.items()}, Tolerances()) is None


def test_top1_at_exactly_the_bound_passes_and_just_below_fails():
    want = scores([0] * 100)
    got = scores([0] * 99 + [1])
    assert golden_verdict({"p": want}, {"p": got}, Tolerances(min_top1=0.99)) is None
    got = scores([0] * 98 + [1, 1])
    assert golden_verdict({"p": want}, {"p": got}, Tolerances(min_top1=0.99)) == (
        'output "p" top-1 agreement 0.98 < 0.99 on 100 inputs'
    )


def test_the_agreement_is_shown_with_the_digits_that_make_it_read_below_the_bound():
    want = scores([0] * 1000)
    got = scores([0] * 989 + [1] * 11)  # 0.989, which two digits would round to 0.99
    assert "top-1 agreement 0.989 < 0.99 " in golden_verdict({"p": want}, {"p": got}, Tolerances())


def test_integer_labels_agree_by_equality():
    verdict = golden_verdict({"label": np.array([1, 2, 3, 4])}, {"label": np.array([1, 2, 0, 0])}, Tolerances())
    assert verdict == 'output "label" top-1 agreement 0.5 < 0.99 on 4 inputs'


def test_abs_error_is_checked_when_set():
    want = scores([0, 1])
    got = want + np.float32(0.3)
    verdict = golden_verdict({"p": want}, {"p": got}, Tolerances(max_abs_error=0.001))
    assert verdict == 'output "p" max abs error 0.3 > 0.001 on 2 inputs'
    assert golden_verdict({"p": want}, {"p": got}, Tolerances(max_abs_error=0.5)) is None


def test_rel_error_is_checked_when_set():
    want = np.array([[10.0, 1.0]], dtype=np.float32)
    got = np.array([[11.0, 1.0]], dtype=np.float32)  # argmax agrees, 10 % off
    assert golden_verdict({"p": want}, {"p": got}, Tolerances()) is None
    assert golden_verdict({"p": want}, {"p": got}, Tolerances(max_rel_error=0.01)) == (
        'output "p" max rel error 0.1 > 0.01 on 1 inputs'
    )


def test_outputs_without_top1_get_a_default_relative_tolerance():
    want = np.linspace(1, 2, 8, dtype=np.float32)  # [N]: no class axis
    assert golden_verdict({"y": want}, {"y": want * 1.005}, Tolerances()) is None
    assert golden_verdict({"y": want}, {"y": want * 1.05}, Tolerances()) == (
        'output "y" max rel error 0.05 > 0.01 on 8 inputs'
    )
    # A tolerance given replaces the default.
    assert golden_verdict({"y": want}, {"y": want * 1.05}, Tolerances(max_abs_error=0.2)) is None


def test_every_failing_output_is_named_once():
    want = {"a": scores([0, 1]), "b": np.array([3, 4])}
    got = {"a": scores([1, 0]), "b": np.array([0, 0])}
    assert golden_verdict(want, got, Tolerances()) == (
        'output "a" top-1 agreement 0 < 0.99; output "b" top-1 agreement 0 < 0.99 on 2 inputs'
    )


def test_nan_where_the_golden_set_has_numbers_fails_even_when_argmax_agrees():
    want = scores([0, 0])
    got = want.copy()
    got[1, 2] = np.nan
    assert golden_verdict({"p": want}, {"p": got}, Tolerances()) == (
        'output "p" is NaN in 1 of 8 elements (the golden set has numbers there) on 2 inputs'
    )


def test_nan_in_both_agrees():
    want = np.array([[np.nan, 1.0, 0.0]], dtype=np.float32)
    assert golden_verdict({"p": want}, {"p": want.copy()}, Tolerances(max_abs_error=0.0)) is None


def test_infinite_error_is_shown_as_inf():
    want = np.array([[1.0, 0.0]], dtype=np.float32)
    got = np.array([[np.inf, 0.0]], dtype=np.float32)
    assert golden_verdict({"p": want}, {"p": got}, Tolerances(max_abs_error=1.0)) == (
        'output "p" max abs error inf > 1 on 1 inputs'
    )


def test_a_different_shape_is_a_mismatch_not_a_crash():
    verdict = golden_verdict({"p": scores([0, 1])}, {"p": scores([0, 1], classes=5)}, Tolerances())
    assert verdict == 'output "p" has shape [2, 5], the golden set [2, 4] on 2 inputs'


def test_a_missing_output_is_a_mismatch():
    verdict = golden_verdict({"p": scores([0])}, {}, Tolerances())
    assert verdict == 'output "p" is missing from the model\'s answers on 1 inputs'


# ---- reading and checking the file --------------------------------------------------------------------

AFFINE_IN = [TensorSpec("x", "FP32", (-1, 4))]
AFFINE_OUT = [TensorSpec("y", "FP32", (-1, 4))]


def save(path, **arrays) -> str:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return str(path)


def affine_set(tmp_path, n: int = 5, **changes) -> str:
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    arrays = {"input:x": x, "output:y": 2 * x + 1, **changes}
    return save(tmp_path / "g.npz", **{k: v for k, v in arrays.items() if v is not None})


def check(path, inputs=AFFINE_IN, outputs=AFFINE_OUT, batched=True):
    check_golden_set(read_golden_set(path), inputs, outputs, batched)


def test_a_well_formed_set_reads_back(tmp_path):
    golden = read_golden_set(affine_set(tmp_path))
    assert golden.count == 5 and set(golden.inputs) == {"x"} and set(golden.outputs) == {"y"}
    check(affine_set(tmp_path))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"input:x": None, "input:z": np.zeros((5, 4), np.float32)}, ['no array "input:x"', "FP32 [-1, 4]"]),
        ({"output:q": np.zeros((5, 4), np.float32)}, ['"output:q" names no output', "its outputs: y"]),
        ({"input:x": np.zeros((5, 3), np.float32)}, ["shape [5, 3]", "needs [N, 4]"]),
        ({"input:x": np.zeros((5,), np.float32)}, ["shape [5]", "needs [N, 4]"]),
        ({"input:x": np.zeros((5, 4), np.int64)}, ['"input:x" is int64', "FP32"]),
        ({"output:y": np.zeros((5, 4), np.int32)}, ['"output:y" is int32', "FP32"]),
    ],
    ids=["missing-input", "unknown-output", "wrong-shape", "wrong-rank", "wrong-kind-input", "wrong-kind-output"],
)
def test_a_set_that_does_not_fit_the_model_is_refused_naming_what(tmp_path, changes, words):
    with pytest.raises(GoldenSetInvalid) as err:
        check(affine_set(tmp_path, **changes))
    for word in words:
        assert word in str(err.value)


def test_other_float_widths_are_accepted_and_cast(tmp_path):
    check(affine_set(tmp_path, **{"input:x": np.zeros((5, 4), np.float64), "output:y": np.zeros((5, 4), np.float16)}))


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"x": np.zeros((2, 4))}, ['array is named "x"', "input:<model input>"]),
        ({"input:x": np.zeros((2, 4))}, ["needs", "the file has input:x"]),
        ({"input:x": np.zeros((2, 4)), "output:y": np.zeros((3, 4))}, ["same number", '"input:x" 2', '"output:y" 3']),
        ({"input:x": np.zeros((0, 4)), "output:y": np.zeros((0, 4))}, ["1 or more"]),
        ({"input:x": np.array(1.0), "output:y": np.array(1.0)}, ["a scalar"]),
        ({"input:x": np.array([b"a"], dtype=object), "output:y": np.zeros((1, 4))}, ["BYTES"]),
    ],
    ids=["unprefixed", "no-outputs", "counts-differ", "empty", "scalars", "pickled-objects"],
)
def test_malformed_files_are_refused(tmp_path, arrays, words):
    path = tmp_path / "g.npz"
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # object arrays go in pickled, as numpy writes them
    with pytest.raises(GoldenSetInvalid) as err:
        read_golden_set(str(path))
    for word in words:
        assert word in str(err.value)


def test_a_file_that_is_not_an_npz_is_refused(tmp_path):
    path = tmp_path / "g.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(GoldenSetInvalid, match="not an .npz file"):
        read_golden_set(str(path))


def test_an_oversized_set_is_refused_before_it_is_loaded(tmp_path, monkeypatch):
    import modeldeploy_runtime.golden as golden

    monkeypatch.setattr(golden, "MAX_GOLDEN_BYTES", 1000)
    path = affine_set(tmp_path, n=100)  # 2 x 1600 bytes of arrays
    with pytest.raises(GoldenSetInvalid, match="bytes uncompressed, more than the 1000"):
        read_golden_set(path)


def test_an_array_header_declaring_more_than_its_data_is_refused_before_numpy_allocates_it(tmp_path):
    """numpy allocates what an .npy header declares before reading the data: a 16-byte member
    claiming 10^12 floats would be a 4 TB allocation."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    path = tmp_path / "hostile.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("input:x.npy", header.getvalue() + b"\0" * 16)
        archive.writestr("output:y.npy", header.getvalue() + b"\0" * 16)
    with pytest.raises(GoldenSetInvalid, match="8000000000000 bytes uncompressed, more than the"):
        read_golden_set(str(path))


def test_unbatched_models_take_whole_inputs_stacked(tmp_path):
    specs_in, specs_out = [TensorSpec("x", "FP32", (2, 3))], [TensorSpec("y", "FP32", (3, 2))]
    path = save(tmp_path / "g.npz", **{"input:x": np.zeros((4, 2, 3), np.float32), "output:y": np.zeros((4, 3, 2))})
    check(path, specs_in, specs_out, batched=False)
    with pytest.raises(GoldenSetInvalid, match=r"has shape \[4, 2, 3\] .* needs \[N, 3, 3\]"):
        check(path, [TensorSpec("x", "FP32", (3, 3))], specs_out, batched=False)


# ---- running it through a real backend ------------------------------------------------------------


class Counting:
    """A real backend whose batch sizes are recorded."""

    def __init__(self, backend):
        self._backend, self.batches = backend, []
        self.inputs, self.outputs, self.max_batch_size = backend.inputs, backend.outputs, backend.max_batch_size

    def infer(self, inputs):
        self.batches.append(len(next(iter(inputs.values()))))
        return self._backend.infer(inputs)


def test_the_set_runs_in_batches_within_the_max_batch_size(models, tmp_path):
    backend = Counting(OnnxBackend(str(models["affine"]), max_batch_size=3, cache_dir=str(tmp_path)))
    x = np.arange(7 * 4, dtype=np.float32).reshape(7, 4)
    got = run_golden_set(backend, GoldenSet({"x": x}, {"y": np.zeros((7, 4), np.float32)}))
    assert backend.batches == [3, 3, 1]
    assert np.array_equal(got["y"], 2 * x + 1)


def test_an_unbatched_model_runs_one_sample_at_a_time(models, tmp_path):
    backend = OnnxBackend(str(models["fixed"]), max_batch_size=8, cache_dir=str(tmp_path))
    x = np.arange(3 * 6, dtype=np.float32).reshape(3, 2, 3)
    got = run_golden_set(backend, GoldenSet({"x": x}, {"y": np.zeros((3, 3, 2), np.float32)}))
    assert np.array_equal(got["y"], x.transpose(0, 2, 1))


def test_the_gate_passes_a_true_set_and_refuses_a_false_one(models, tmp_path):
    backend = OnnxBackend(str(models["affine"]), max_batch_size=4, cache_dir=str(tmp_path))
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    good = tmp_path / "good.npz"
    write_golden_set(str(good), {"x": x}, {"y": 2 * x + 1})
    check_golden_gate(backend, str(good), Tolerances(max_abs_error=1e-5))
    bad = tmp_path / "bad.npz"
    write_golden_set(str(bad), {"x": x}, {"y": 2 * x + 1.5})
    with pytest.raises(GoldenSetMismatch) as err:
        check_golden_gate(backend, str(bad), Tolerances(max_abs_error=1e-5))
    assert err.value.termination_message == 'golden set mismatch: output "y" max abs error 0.5 > 1e-05 on 6 inputs'
    malformed = tmp_path / "malformed.npz"
    write_golden_set(str(malformed), {"x": x[:, :3]}, {"y": x[:, :3]})
    with pytest.raises(InvalidConfiguration) as err:
        check_golden_gate(backend, str(malformed), Tolerances())
    assert err.value.termination_message.startswith(f"invalid configuration: golden set {malformed}: ")


def test_the_set_is_fetched_as_the_model_is_and_named_so(tmp_path):
    path = affine_set(tmp_path)
    assert fetch_golden_set(path, "", str(tmp_path)) == path
    with pytest.raises(ModelLoadFailed) as err:
        fetch_golden_set(str(tmp_path / "absent.npz"), "", str(tmp_path))
    message = err.value.termination_message
    assert message.startswith("model load failed: golden set: ") and "MODELDEPLOY_GOLDEN_SET_PATH" in message
    with pytest.raises(ModelLoadFailed, match="MODELDEPLOY_GOLDEN_SET_SHA256 expects"):
        fetch_golden_set(path, "0" * 64, str(tmp_path))


# ---- settings -----------------------------------------------------------------------------------------

BASE = {"MODELDEPLOY_MODEL_PATH": "/m.onnx", "MODELDEPLOY_MODEL_NAME": "m"}


def test_golden_settings_default_to_no_check():
    config = load_config([], BASE)
    assert config.golden_set_path == ""
    assert (config.golden_set_max_abs_error, config.golden_set_max_rel_error) == (None, None)
    assert config.golden_set_min_top1_agreement == 0.99


def test_golden_settings_are_read():
    config = load_config(
        [],
        {
            **BASE,
            "MODELDEPLOY_GOLDEN_SET_PATH": "file:///g/golden.npz",
            "MODELDEPLOY_GOLDEN_SET_MAX_ABS_ERROR": "0.5",
            "MODELDEPLOY_GOLDEN_SET_MAX_REL_ERROR": "",
            "MODELDEPLOY_GOLDEN_SET_MIN_TOP1_AGREEMENT": "0.9",
        },
    )
    assert config.golden_set_path == "/g/golden.npz"
    assert (config.golden_set_max_abs_error, config.golden_set_max_rel_error) == (0.5, None)
    assert config.golden_set_min_top1_agreement == 0.9


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"MODELDEPLOY_GOLDEN_SET_PATH": "https://h/g.npz"}, ["MODELDEPLOY_GOLDEN_SET_SHA256", "required"]),
        ({"MODELDEPLOY_GOLDEN_SET_SHA256": "abc"}, ["MODELDEPLOY_GOLDEN_SET_SHA256", "64 hex"]),
        ({"MODELDEPLOY_GOLDEN_SET_MIN_TOP1_AGREEMENT": "1.5"}, ["MIN_TOP1_AGREEMENT", "from 0 to 1"]),
        ({"MODELDEPLOY_GOLDEN_SET_MAX_ABS_ERROR": "-1"}, ["MAX_ABS_ERROR", "0 or more"]),
        ({"MODELDEPLOY_GOLDEN_SET_MAX_REL_ERROR": "lots"}, ["MAX_REL_ERROR", "a number"]),
    ],
)
def test_bad_golden_settings_are_refused_naming_the_variable(env, words):
    with pytest.raises(ConfigError) as err:
        load_config([], {**BASE, **env})
    for word in words:
        assert word in str(err.value)


# ---- provider mismatch ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("require_gpu", "precision", "in_use", "mismatch"),
    [
        (False, "fp32", [CPU_EP], False),  # the CPU defaults
        (False, "int8", [CPU_EP], False),  # a quantized model on the CPU: nothing was asked of a GPU
        (True, "fp32", [CUDA_EP, CPU_EP], False),
        (True, "fp32", [TRT_EP, CUDA_EP, CPU_EP], False),
        (True, "fp32", [CPU_EP], True),  # CUDA asked, CPU got
        (True, "fp16", [TRT_EP, CUDA_EP, CPU_EP], False),
        (True, "fp16", [CUDA_EP, CPU_EP], True),  # TensorRT asked, CUDA got: fp32 at half the speed
        (True, "int8", [CPU_EP], True),
        (True, "fp32", [], True),
    ],
)
def test_provider_mismatch_decision(require_gpu, precision, in_use, mismatch):
    assert (provider_mismatch(require_gpu, precision, in_use) is not None) is mismatch


def test_provider_mismatch_says_what_was_asked_and_what_runs():
    cpu = provider_mismatch(True, "fp32", [CPU_EP])
    assert f"asked for {TRT_EP} or {CUDA_EP}" in cpu and f"runs the model on {CPU_EP}" in cpu
    trt = provider_mismatch(True, "fp16", [CUDA_EP, CPU_EP])
    assert f"MODELDEPLOY_PRECISION=fp16 needs {TRT_EP}" in trt and f"runs the model on {CUDA_EP}" in trt
