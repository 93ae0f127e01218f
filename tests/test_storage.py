"""Model directories: round trips, atomic replacement, and damaged or foreign directories."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from latentrec import ModelFileError, fit, load, save
from latentrec.storage import load_checkpoint, save_checkpoint
from latentrec.training import predict_index


@pytest.fixture(scope="module", params=["dot", "nn"])
def trained(request, board):
    net, _ = fit(board, request.param, epochs=2, progress=False)
    return net, board[0]


def test_round_trip_gives_identical_predictions(trained, tmp_path: Path):
    net, train = trained
    save(net, tmp_path / "model", train, info={"note": "x"})
    saved = load(tmp_path / "model")
    users = torch.tensor([0, 1, 5, -1, 3])
    items = torch.tensor([2, -1, 0, 4, -1])
    assert torch.equal(predict_index(net, users, items), predict_index(saved.model, users, items))
    assert saved.ratings.users.ids.tolist() == train.users.ids.tolist()
    assert saved.ratings.title(500) == "Item 0"
    assert sorted(
        zip(saved.ratings.user_index.tolist(), saved.ratings.item_index.tolist(), strict=False)
    ) == (sorted(zip(train.user_index.tolist(), train.item_index.tolist(), strict=False)))
    assert saved.info == {"note": "x"}


def test_directory_holds_no_pickle(trained, tmp_path: Path):
    net, train = trained
    folder = save(net, tmp_path / "m", train)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "ids.json", "model.safetensors", "train.safetensors"]
    )


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_saved_model_has_the_modes_the_umask_gives(trained, tmp_path: Path, mask):
    # regression (review): the directory was 0700 and the safetensors files 0600 whatever the
    # umask (mkdtemp's and safetensors' own modes), so a service user could not read them
    net, train = trained
    before = os.umask(mask)
    try:
        folder = save(net, tmp_path / "m", train)
    finally:
        os.umask(before)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path.name


def test_failed_save_leaves_the_previous_model_intact(trained, tmp_path: Path, monkeypatch):
    net, train = trained
    target = tmp_path / "model"
    save(net, target, train, info={"version": 1})
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("latentrec.storage.save_file", broken)
    with pytest.raises(ModelFileError, match=r"cannot save the model to .*model: disk full"):
        save(net, target, train, info={"version": 2})
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left behind


def test_save_replaces_an_existing_model(trained, tmp_path: Path):
    net, train = trained
    save(net, tmp_path / "m", train, info={"version": 1})
    save(net, tmp_path / "m", train, info={"version": 2})
    assert load(tmp_path / "m").info == {"version": 2}


def test_save_refuses_to_overwrite_a_foreign_directory(trained, tmp_path: Path):
    net, train = trained
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.txt").write_text("precious")
    with pytest.raises(ModelFileError, match="not a latentrec model directory"):
        save(net, tmp_path / "docs", train)
    assert (tmp_path / "docs" / "thesis.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: (d / "model.safetensors").unlink(), "missing model.safetensors"),
        (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "damaged"),
        (lambda d: (d / "config.json").write_text("{not json"), "damaged"),
        (lambda d: (d / "config.json").write_text(json.dumps({"format": "x"})), "not written by"),
        (lambda d: (d / "ids.json").write_text(json.dumps({"users": [1], "items": [2]})), "lists"),
    ],
)
def test_damaged_directories_raise_model_file_error(trained, tmp_path: Path, damage, needle):
    net, train = trained
    folder = save(net, tmp_path / "m", train)
    damage(folder)
    with pytest.raises(ModelFileError, match=needle):
        load(folder)


def test_missing_directory(tmp_path: Path):
    with pytest.raises(ModelFileError, match="no model directory"):
        load(tmp_path / "nothing")


def test_weights_that_do_not_fit_the_config(trained, tmp_path: Path):
    net, train = trained
    folder = save(net, tmp_path / "m", train)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["layers"] = [3]
    config["model"]["n_factors"] = 7
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="does not fit its config"):
        load(folder)


def _tensors(value: float) -> dict[str, torch.Tensor]:
    return {"weight": torch.full((3, 2), value)}


def test_a_new_checkpoint_replaces_the_old_one_only_once_complete(tmp_path):
    save_checkpoint(tmp_path, 5, _tensors(5.0), {"epoch": 0})
    save_checkpoint(tmp_path, 10, _tensors(10.0), {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000010.json",
        "step-000000010.safetensors",
    ]
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.step == 10 and checkpoint.meta["epoch"] == 1
    assert torch.equal(checkpoint.tensors["weight"], _tensors(10.0)["weight"])


def test_a_checkpoint_killed_while_writing_leaves_the_previous_one(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 5, _tensors(5.0), {"epoch": 0})

    def dies_half_way(tensors, path):
        path.write_bytes(b"\x00" * 17)  # a torn file, then the process is gone
        raise KeyboardInterrupt

    monkeypatch.setattr("latentrec.storage._save_tensors", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 10, _tensors(10.0), {"epoch": 1})
    (tmp_path / ".step-000000010.safetensors.abc.tmp").write_bytes(b"torn")  # as SIGKILL leaves
    assert load_checkpoint(tmp_path).step == 5
    monkeypatch.undo()
    save_checkpoint(tmp_path, 15, _tensors(15.0), {"epoch": 2})  # and the debris is cleared
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000015.json",
        "step-000000015.safetensors",
    ]


def test_no_checkpoint_and_a_foreign_json_read_as_none(tmp_path):
    assert load_checkpoint(tmp_path / "missing") is None
    (tmp_path / "step-000000001.json").write_text('{"format": "other"}')
    assert load_checkpoint(tmp_path) is None


def test_checkpoints_all_damaged_are_named_not_read_as_none(tmp_path):
    # regression (review): a damaged checkpoint read as "no checkpoint in ..."
    save_checkpoint(tmp_path, 5, _tensors(5.0), {"epoch": 0})
    tensors = tmp_path / "step-000000005.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:40])
    with pytest.raises(
        ModelFileError, match=r"no complete checkpoint in .*1 damaged \(step-000000005: "
    ):
        load_checkpoint(tmp_path)
    tensors.unlink()
    with pytest.raises(ModelFileError, match="1 damaged"):
        load_checkpoint(tmp_path)
