"""The TensorRT backend's decisions, tested without a GPU: engine identity and cache keys,
optimization profiles, batching, buffers and data types."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from modeldeploy_runtime.backends.trt_plan import (
    EngineIdentity,
    EngineTensor,
    PlanError,
    ProfileShape,
    calibration_shapes,
    engine_mismatch,
    meta_path,
    numpy_dtype,
    plan_batching,
    plan_buffers,
    profile_shapes,
    sha256_file,
    trt_dtype_name,
    v2_datatype,
)


def identity(**changes) -> EngineIdentity:
    base = dict(
        model_sha256="ab" * 32,
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability=(9, 0),
        precision="fp16",
        max_batch_size=32,
        opt_batch_size=32,
        input_shapes={},
    )
    base.update(changes)
    return EngineIdentity(**base)


# --- identity and cache keys ------------------------------------------------------------------


def test_engine_filename_spells_out_precision_batch_tensorrt_gpu_and_model_hash():
    name = identity().engine_filename("ResNet 50")
    assert name.startswith("resnet-50.fp16.b32.trt10.3.0.sm90.nvidia-h100-80gb-hbm3.abababababab.")
    assert name.endswith(".engine")


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "cd" * 32},
        {"tensorrt_version": "10.4.0"},
        {"gpu_name": "NVIDIA A100-SXM4-80GB"},
        {"compute_capability": (8, 0)},
        {"precision": "int8"},
        {"max_batch_size": 64},
        {"opt_batch_size": 8},
        {"input_shapes": {"input": [3, 320, 320]}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_anything_an_engine_depends_on_changes_its_key_and_name(change):
    assert identity(**change).cache_key() != identity().cache_key()
    assert identity(**change).engine_filename("m") != identity().engine_filename("m")


def test_same_build_same_key():
    assert identity().cache_key() == identity().cache_key()
    assert identity().engine_filename("m") == identity().engine_filename("m")


def test_identity_round_trips_through_the_sidecar():
    meta = identity(input_shapes={"x": [3, 8]}).to_meta()
    assert meta["cache_key"] == identity(input_shapes={"x": [3, 8]}).cache_key()
    assert EngineIdentity.from_meta(meta) == identity(input_shapes={"x": [3, 8]})


def test_meta_path_is_next_to_the_engine(tmp_path):
    assert meta_path(tmp_path / "m.engine") == tmp_path / "m.engine.json"


def test_sha256_file_hashes_content_in_chunks(tmp_path):
    path = tmp_path / "model.onnx"
    content = bytes(range(256)) * 5000  # larger than one chunk
    path.write_bytes(content)
    assert sha256_file(path, chunk=4096) == hashlib.sha256(content).hexdigest()


# --- refusing engines built elsewhere ---------------------------------------------------------


def test_engine_from_this_gpu_and_tensorrt_may_load():
    assert engine_mismatch(identity().to_meta(), "10.3.0", "NVIDIA H100 80GB HBM3", (9, 0)) is None


@pytest.mark.parametrize(
    "trt, gpu, cc, expected",
    [
        ("10.4.0", "NVIDIA H100 80GB HBM3", (9, 0), "TensorRT 10.3.0 (this runtime has 10.4.0)"),
        ("10.3.0", "NVIDIA A100-SXM4-80GB", (8, 0), "compute capability 9.0 (this GPU is 8.0)"),
        ("10.3.0", "NVIDIA H100 PCIe", (9, 0), "GPU 'NVIDIA H100 80GB HBM3' (this one is 'NVIDIA H100 PCIe')"),
    ],
)
def test_engine_from_another_gpu_or_tensorrt_is_refused_with_the_reason_and_fix(trt, gpu, cc, expected):
    reason = engine_mismatch(identity().to_meta(), trt, gpu, cc)
    assert expected in reason
    assert "modeldeploy optimize tensorrt" in reason


def test_engine_without_facts_is_not_refused():
    assert engine_mismatch({}, "10.3.0", "any", (9, 0)) is None


# --- optimization profiles --------------------------------------------------------------------


def test_dynamic_batch_spans_one_to_max_and_tunes_for_opt():
    profiles = profile_shapes([("input", ["batch", 3, 224, 224])], max_batch_size=32, opt_batch_size=8)
    assert profiles == {"input": ProfileShape((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))}


def test_opt_batch_defaults_to_the_max():
    (p,) = profile_shapes([("x", [None, 64])], max_batch_size=16).values()
    assert p.opt == (16, 64)


def test_dynamic_non_batch_dims_need_input_shape_and_the_error_says_so():
    with pytest.raises(PlanError, match=r"--input-shape input:3xNxN"):
        profile_shapes([("input", ["batch", 3, "h", "w"])], max_batch_size=8)


def test_input_shape_fixes_dynamic_dims():
    profiles = profile_shapes(
        [("input", ["batch", 3, "h", "w"])], max_batch_size=4, input_shapes={"input": [3, 320, 256]}
    )
    assert profiles["input"].max == (4, 3, 320, 256)


@pytest.mark.parametrize(
    "shapes, match",
    [
        ({"other": [3]}, "unknown input"),
        ({"input": [3, 320]}, "expected 3 positive dimension"),
        ({"input": [4, 320, 320]}, "dimension 1 is fixed to 3"),
    ],
)
def test_bad_input_shapes_are_named(shapes, match):
    with pytest.raises(PlanError, match=match):
        profile_shapes([("input", ["batch", 3, "h", "w"])], max_batch_size=4, input_shapes=shapes)


def test_fixed_batch_dimension_cannot_be_batched():
    with pytest.raises(PlanError, match="fixed batch dimension 1.*--max-batch-size 0"):
        profile_shapes([("input", [1, 3, 224, 224])], max_batch_size=8)


def test_max_batch_zero_builds_the_model_shapes_as_they_are():
    (p,) = profile_shapes([("input", [1, 3, 224, 224])], max_batch_size=0).values()
    assert p.min == p.opt == p.max == (1, 3, 224, 224)


def test_opt_batch_beyond_the_max_is_refused():
    with pytest.raises(PlanError, match="--opt-batch-size 9 must lie in 1..8"):
        profile_shapes([("x", [None, 4])], max_batch_size=8, opt_batch_size=9)


def test_calibration_uses_opt_shape_with_calibration_batch_clamped_to_profile():
    profiles = profile_shapes([("x", [None, 3, 8, 8])], max_batch_size=4)
    assert calibration_shapes(profiles, 16) == {"x": (4, 3, 8, 8)}
    assert calibration_shapes(profiles, 2) == {"x": (2, 3, 8, 8)}


# --- serving: batching and buffers ------------------------------------------------------------


def t(name, is_input, shape, max_shape, dtype="FLOAT"):
    return EngineTensor(name, is_input, dtype, tuple(shape), tuple(max_shape))


def test_batch_defaults_to_the_profile_max():
    tensors = [t("x", True, (-1, 64), (32, 64)), t("y", False, (-1, 10), (32, 10))]
    assert plan_batching(tensors, 0) == (32, None)
    assert plan_batching(tensors, 8) == (8, None)


def test_batch_beyond_the_profile_is_clamped_with_a_note_naming_the_rebuild():
    size, note = plan_batching([t("x", True, (-1, 64), (16, 64))], 64)
    assert size == 16
    assert "--max-batch-size 64" in note


def test_static_engine_is_served_unbatched():
    assert plan_batching([t("x", True, (1, 64), (1, 64))], 0) == (0, None)
    size, note = plan_batching([t("x", True, (1, 64), (1, 64))], 8)
    assert size == 0 and "unbatched" in note


def test_buffers_are_sized_for_the_largest_shape():
    plans = plan_buffers([t("x", True, (-1, 3, 4), (8, 3, 4)), t("y", False, (-1, 10), (8, 10), "HALF")])
    assert [(p.name, p.elements, p.nbytes, p.dtype) for p in plans] == [
        ("x", 96, 384, np.dtype(np.float32)),
        ("y", 80, 160, np.dtype(np.float16)),
    ]


def test_data_dependent_output_shapes_are_refused():
    with pytest.raises(PlanError, match="data-dependent shape"):
        plan_buffers([t("boxes", False, (-1, 4), (-1, 4))])


# --- data types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trt, np_dtype, v2",
    [
        ("FLOAT", np.float32, "FP32"),
        ("HALF", np.float16, "FP16"),
        ("INT8", np.int8, "INT8"),
        ("INT32", np.int32, "INT32"),
        ("INT64", np.int64, "INT64"),
        ("BOOL", np.bool_, "BOOL"),
        ("UINT8", np.uint8, "UINT8"),
    ],
)
def test_dtype_mapping(trt, np_dtype, v2):
    assert numpy_dtype(trt) == np.dtype(np_dtype)
    assert v2_datatype(trt) == v2


@pytest.mark.parametrize("trt", ["BF16", "FP8", "INT4"])
def test_types_without_numpy_equivalent_are_refused_by_name(trt):
    with pytest.raises(PlanError, match=f"{trt} of tensor 'logits'"):
        numpy_dtype(trt, "logits")


def test_trt_dtype_name_reads_enum_members_and_strings():
    class Member:
        name = "HALF"

    assert trt_dtype_name(Member()) == "HALF"
    assert trt_dtype_name("DataType.FLOAT") == "FLOAT"
