"""Label order, folder-name mapping, and the dataset readers (on generated data)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_fer_csv, make_kaggle_tree

from fer_core.analysis.datasets import (
    list_labelled_folder,
    load_face_arrays,
    load_split,
    read_fer2013_csv,
    resolve_split_dir,
)
from fer_core.labels import EMOTIONS, UnknownClassError, canonical_name, label_index


def test_label_order_is_fer2013_csv_order():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.mark.parametrize("name,expected", [
    ("Angry", "angry"), ("anger", "angry"), ("HAPPINESS", "happy"), ("sadness", "sad"),
    ("surprised", "surprise"), ("Fearful", "fear"), ("disgusted", "disgust"), (" neutral ", "neutral"),
])
def test_aliases_map_case_insensitively(name, expected):
    assert canonical_name(name) == expected
    assert label_index(name) == EMOTIONS.index(expected)


def test_unknown_class_is_a_clear_error():
    with pytest.raises(UnknownClassError, match="contempt_face"):
        label_index("contempt_face")


def test_folder_labels_come_from_names_not_listing_order(tmp_path):
    # Alphabetical order of these folders differs from EMOTIONS; labels must still follow the names.
    names = ["surprise", "neutral", "happy", "angry"]
    make_kaggle_tree(tmp_path, per_class=3, splits=("train",), folder_names=names)
    files = list_labelled_folder(tmp_path / "train")
    for path, label in zip(files.paths, files.labels):
        assert EMOTIONS[label] == path.parent.name


def test_aliased_folder_names_are_accepted(tmp_path):
    for folder in ("Happiness", "Sadness", "Anger"):
        (tmp_path / folder).mkdir()
        import cv2
        cv2.imwrite(str(tmp_path / folder / "a.png"), np.zeros((48, 48), np.uint8))
    files = list_labelled_folder(tmp_path)
    assert sorted(EMOTIONS[i] for i in files.labels) == ["angry", "happy", "sad"]


def test_unknown_class_folder_names_the_folder(tmp_path):
    make_kaggle_tree(tmp_path, per_class=1, splits=("train",))
    (tmp_path / "train" / "bored").mkdir()
    with pytest.raises(UnknownClassError, match="bored"):
        list_labelled_folder(tmp_path / "train")


def test_split_aliases(tmp_path):
    make_kaggle_tree(tmp_path, per_class=1, splits=("train", "val"))
    assert resolve_split_dir(tmp_path, "validation").name == "val"
    with pytest.raises(FileNotFoundError):
        resolve_split_dir(tmp_path / "nothing", "train")


def test_folder_reader_decodes_every_format_to_48x48_and_caches(tmp_path):
    make_kaggle_tree(tmp_path / "data", per_class=4)
    files = list_labelled_folder(tmp_path / "data" / "train")
    arrays = load_face_arrays(files, 48, cache_dir=tmp_path / "cache")
    assert arrays.images.shape == (len(EMOTIONS) * 4, 48, 48) and arrays.images.dtype == np.uint8
    assert np.array_equal(arrays.labels, files.labels)
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1
    again = load_face_arrays(files, 48, cache_dir=tmp_path / "cache")  # served from the cache
    assert np.array_equal(again.images, arrays.images)


def test_csv_reader_splits_by_usage(tmp_path):
    csv = make_fer_csv(tmp_path / "fer2013.csv", rows_per_usage=9)
    train = read_fer2013_csv(csv, "train")
    val = load_split(csv, "validation")
    assert train.images.shape == (9, 48, 48) and val.images.shape == (9, 48, 48)
    assert train.labels.tolist() == [i % 7 for i in range(9)]


def test_csv_reader_rejects_wrong_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,data\n1,2\n")
    with pytest.raises(ValueError, match="emotion"):
        read_fer2013_csv(bad, "train")
