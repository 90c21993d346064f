"""Inputs for calibration, validation and benchmarks: .npy/.npz directories and generated data."""

from __future__ import annotations

import numpy as np
import pytest
from modeldeploy_runtime.measure.data import (
    DataError,
    batches,
    generate,
    load_dir,
    parse_input_shapes,
    sample_shape,
    tile_to,
)
from modeldeploy_runtime.measure.runner import InputSpec

IMAGE = InputSpec("image", np.dtype(np.float32), (-1, 3, 4, 4))
MASK = InputSpec("mask", np.dtype(np.int64), (-1, 4))


def test_npy_files_hold_single_samples_or_batches_concatenated_in_name_order(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 4), np.float32))  # one sample
    np.save(tmp_path / "b.npy", np.ones((5, 3, 4, 4), np.float64))  # a batch, cast to float32
    samples = load_dir(tmp_path, [IMAGE])
    assert samples["image"].shape == (6, 3, 4, 4)
    assert samples["image"].dtype == np.float32
    assert samples["image"][0].max() == 0 and samples["image"][1:].min() == 1


def test_npz_files_name_their_arrays_by_input(tmp_path):
    np.savez(tmp_path / "a.npz", image=np.zeros((2, 3, 4, 4), np.float32), mask=np.ones((2, 4), np.int64))
    samples = load_dir(tmp_path, [IMAGE, MASK])
    assert samples["image"].shape == (2, 3, 4, 4) and samples["mask"].shape == (2, 4)


def test_npy_for_a_multi_input_model_is_refused_with_the_fix(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"a\.npy: the model has 2 inputs .* give \.npz files"):
        load_dir(tmp_path, [IMAGE, MASK])


def test_npz_missing_an_input_names_it(tmp_path):
    np.savez(tmp_path / "a.npz", image=np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(DataError, match="no array for input.*mask"):
        load_dir(tmp_path, [IMAGE, MASK])


def test_wrong_shape_names_file_input_and_expected_shape(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(DataError, match=r"bad\.npy: input 'image' expects shape \[N, 3, 4, 4\]"):
        load_dir(tmp_path, [IMAGE])


def test_wrong_kind_of_data_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(DataError, match="expects int64"):
        load_dir(tmp_path, [MASK])


@pytest.mark.parametrize("setup, match", [("missing", "not a directory"), ("empty", "no .npy or .npz")])
def test_unusable_directories(tmp_path, setup, match):
    target = tmp_path / "data"
    if setup == "empty":
        target.mkdir()
    with pytest.raises(DataError, match=match):
        load_dir(target, [IMAGE])


def test_generation_is_reproducible_by_seed_and_follows_dtypes():
    a = generate([IMAGE, MASK], 4, seed=7)
    b = generate([IMAGE, MASK], 4, seed=7)
    c = generate([IMAGE, MASK], 4, seed=8)
    assert np.array_equal(a["image"], b["image"]) and not np.array_equal(a["image"], c["image"])
    assert a["image"].dtype == np.float32 and a["image"].shape == (4, 3, 4, 4)
    assert a["mask"].dtype == np.int64 and a["mask"].min() >= 0


def test_generation_within_a_range():
    x = generate([IMAGE], 64, value_range=(0.0, 16.0))["image"]
    assert x.min() >= 0.0 and x.max() < 16.0 and x.std() > 1.0


def test_dynamic_dimensions_need_input_shape():
    spec = InputSpec("tokens", np.dtype(np.int64), (-1, -1))
    with pytest.raises(DataError, match="--input-shape tokens:N"):
        sample_shape(spec)
    assert sample_shape(spec, {"tokens": [128]}) == (128,)


@pytest.mark.parametrize("value", ["input", "input:", "input:3xx4", "input:0x4", ":3x4"])
def test_bad_input_shape_flags(value):
    with pytest.raises(DataError, match="expected NAME:DIMS"):
        parse_input_shapes([value])


def test_input_shape_flags():
    assert parse_input_shapes(["a:3x224x224", "b:7"]) == {"a": [3, 224, 224], "b": [7]}


def test_batches_cover_every_sample_once():
    samples = {"image": np.arange(10 * 48, dtype=np.float32).reshape(10, 3, 4, 4)}
    got = list(batches(samples, [IMAGE], 4))
    assert [len(b["image"]) for b in got] == [4, 4, 2]
    assert np.array_equal(np.concatenate([b["image"] for b in got]), samples["image"])
    assert [len(b["image"]) for b in batches(samples, [IMAGE], 4, drop_last=True)] == [4, 4]


def test_tile_repeats_data_to_fill_a_batch():
    samples = {"image": np.arange(2 * 48, dtype=np.float32).reshape(2, 3, 4, 4)}
    tiled = tile_to(samples, [IMAGE], 5)["image"]
    assert tiled.shape == (5, 3, 4, 4)
    assert np.array_equal(tiled[2], samples["image"][0])
