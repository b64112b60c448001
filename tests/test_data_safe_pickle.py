"""The restricted unpickler admits plain data and refuses anything that would run code."""

from __future__ import annotations

import collections
import os
import pickle

import pytest

from data_builders import DataFormatError
from data_builders.safe_pickle import load_pickle


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_containers_and_scalars_load(tmp_path, protocol):
    value = {
        "train": [{"reviewerID": "A1", "overall": 5.0, "helpful": [1, 2], "x": (1, None, True)}],
        "sets": {1, 2},
        "frozen": frozenset({"a"}),
        "bytes": b"\x00\xff",
        "ordered": collections.OrderedDict(a=1),
        "counts": collections.defaultdict(int, {"a": 3}),
        "big": 2**70,
        "complex": 1 + 2j,
    }
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    loaded = load_pickle(path)
    assert loaded == value and loaded["counts"].default_factory is int


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [_Exploit(), [1, _Exploit()], {"a": collections.Counter("ab")}])
def test_code_and_foreign_objects_are_refused(tmp_path, payload):
    path = tmp_path / "exp_splits.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(DataFormatError, match=r"exp_splits.pkl: not a plain-data pickle \(refusing to load global"):
        load_pickle(path)


def test_truncated_pickle_names_the_file(tmp_path):
    path = tmp_path / "user_id2name.pkl"
    path.write_bytes(pickle.dumps({"1": "x" * 100})[:20])
    with pytest.raises(DataFormatError, match="user_id2name.pkl: not a plain-data pickle"):
        load_pickle(path)
