"""Messages for files the safe loader refuses say why."""

import pickle

import pytest

import minifast as mf


class Payload:
    pass


def test_a_raw_pickle_is_refused_with_the_reason(tmp_path):
    f = tmp_path / "model.pkl"
    with f.open("wb") as fh:
        pickle.dump({"w": 1, "obj": Payload()}, fh)
    with pytest.raises(mf.CheckpointError, match=r"\(UnpicklingError: a raw pickle \(pickle.dump\), "
                       r"not a torch.save file: a pickle can run code"):
        mf.safe_load(f)
