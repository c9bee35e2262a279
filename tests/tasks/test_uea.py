"""UEA/UCR data through aeon: bundled names, local .ts files, non-bundled names offline."""

from __future__ import annotations

import numpy as np
import pytest

from autoprune.errors import ConfigError, TaskError
from autoprune.tasks import build_task


def test_japanese_vowels_offline_shapes_and_stratified_val():
    dm = build_task("uea:JapaneseVowels", seed=0, val_fraction=0.2)
    dm.setup()
    assert (dm.n_train + dm.n_val, dm.n_test) == (270, 370)
    assert (dm.n_channels, dm.n_classes) == (12, 9)
    assert dm.class_names == [str(i) for i in range(1, 10)]
    assert dm.max_length == 29
    assert dm.n_val == 54
    for split in ("val", "train", "test"):
        assert set(dm.tensors(split)[2].tolist()) == set(range(9))  # every class present
    lengths = np.concatenate([dm.tensors(s)[1].numpy() for s in ("train", "val", "test")])
    assert lengths.min() == 7 and lengths.max() == 29


def test_normalisation_fitted_on_train_only_and_padding_is_zero():
    dm = build_task("uea:JapaneseVowels")
    x, lengths, _ = dm.tensors("train")
    valid = np.arange(x.shape[1])[None, :] < lengths.numpy()[:, None]
    steps = x.numpy()[valid]
    np.testing.assert_allclose(steps.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(steps.std(axis=0), 1, atol=1e-4)
    assert np.all(x.numpy()[~valid] == 0)
    xv, lv, _ = dm.tensors("val")  # val is normalised with the train statistics
    valid_v = np.arange(xv.shape[1])[None, :] < lv.numpy()[:, None]
    assert not np.allclose(xv.numpy()[valid_v].mean(axis=0), 0, atol=1e-5)
    assert np.all(xv.numpy()[~valid_v] == 0)
    assert dm.channel_mean.shape == dm.channel_std.shape == (12,)


@pytest.mark.parametrize(("name", "shape"), [("BasicMotions", (40, 40, 6, 4, 100)),
                                             ("GunPoint", (50, 150, 1, 2, 150))])
def test_other_bundled_dataset_by_name(name, shape):
    dm = build_task(f"uea:{name}")
    assert (dm.n_train + dm.n_val, dm.n_test, dm.n_channels, dm.n_classes,
            dm.max_length) == shape


def test_not_bundled_without_download_fails_fast(monkeypatch):
    import aeon.datasets._data_loaders as loaders

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(loaders, "_download_all_zenodo_files", no_network)
    with pytest.raises(TaskError, match=r"'ECG200' is not bundled with aeon and downloading "
                                        r"is disabled.*local copy pass "
                                        r"'uea:/path/to/ECG200_TRAIN\.ts'"):
        build_task("uea:ECG200", options={"allow_download": False})


def test_not_bundled_download_failure_gives_the_same_message(monkeypatch):
    import aeon.datasets._data_loaders as loaders

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(loaders, "_download_all_zenodo_files", offline)
    with pytest.raises(TaskError, match=r"'ECG200' is not bundled with aeon and downloading "
                                        r"failed.*network is unreachable.*local copy"):
        build_task("uea:ECG200")


def test_misspelled_name_suggests_bundled_one():
    with pytest.raises(TaskError, match="Did you mean JapaneseVowels"):
        build_task("uea:japanesevowels", options={"allow_download": False})


def test_bundled_regression_set_is_refused():
    with pytest.raises(TaskError, match="not a classification set"):
        build_task("uea:Covid3Month")


def _write_pair(tmp_path, name="Toy"):
    from aeon.datasets import save_to_ts_file

    rng = np.random.default_rng(0)
    for suffix, n in (("_TRAIN", 12), ("_TEST", 6)):
        x = [rng.normal(size=(2, t)) for t in rng.integers(3, 9, size=n)]
        y = np.array(["up", "down"] * (n // 2))
        save_to_ts_file(x, y, label_type="classification", path=str(tmp_path),
                        problem_name=name, file_suffix=suffix)
    return tmp_path / f"{name}_TRAIN.ts"


def test_local_ts_file_pair(tmp_path):
    train = _write_pair(tmp_path)
    dm = build_task(f"uea:{train}", val_fraction=0.25)
    assert (dm.n_train, dm.n_val, dm.n_test, dm.n_channels) == (9, 3, 6, 2)
    assert dm.class_names == ["down", "up"]
    assert dm.tensors("test")[1].tolist() != [dm.max_length] * 6  # unequal lengths kept
    # the directory form and the TEST file name work too
    assert build_task(f"uea:{tmp_path}").n_test == 6
    assert build_task(f"uea:{tmp_path / 'Toy_TEST.ts'}").n_test == 6


def test_local_ts_errors(tmp_path):
    missing = tmp_path / "Nope_TRAIN.ts"
    with pytest.raises(TaskError, match=f"'{missing}' does not exist"):
        build_task(f"uea:{missing}")
    train = _write_pair(tmp_path)
    (tmp_path / "Toy_TEST.ts").unlink()
    with pytest.raises(TaskError, match="has no matching Toy_TEST.ts"):
        build_task(f"uea:{train}")
    with pytest.raises(TaskError, match="apply to dataset names"):
        build_task(f"uea:{train}", options={"equal_length": True})
    with pytest.raises(ConfigError, match="allowed options: allow_download, equal_length"):
        build_task("uea:GunPoint", options={"download": False})
