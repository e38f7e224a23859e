"""Issue 8 item 9 and 10: training never replaces a good file with a bad one, a failed save loses nothing, a NaN
loss stops training and saves nothing; the held-out note tells the share actually held out."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch

from advgui.cli import main


@pytest.fixture
def tree(tmp_path):
    from advgui.core.models import resource_path
    root = tmp_path / "data"
    shutil.copytree(resource_path("demo_images"), root)
    return root


def train_args(data, out, *extra):
    return ["train", "--model", "demo", "--data", str(data), "--method", "clean", "--epochs", "2",
            "--batch-size", "16", "--val-fraction", "0.2", "--val-steps", "1", "--out", str(out), "--quiet", *extra]


def good_files(folder: Path) -> dict[str, bytes]:
    (folder / "keep.safetensors").write_bytes(b"a good model")
    (folder / "keep.log.csv").write_bytes(b"its log")
    (folder / "keep.log.json").write_bytes(b"{}")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("keep.")}


def test_ctrl_c_saves_beside_and_never_replaces_the_good_file(tmp_path, tree, monkeypatch, capsys):
    import advgui.core.training as training
    before = good_files(tmp_path)
    real = training.train_model

    def interrupted(*a, on_batch=None, **k):
        def stop_after_two(info):
            on_batch(info)
            return info.epoch == 1 and info.batch == 2        # Ctrl-C during epoch 1
        return real(*a, on_batch=stop_after_two, **k)

    monkeypatch.setattr(training, "train_model", interrupted)
    assert main(train_args(tree, tmp_path / "keep.safetensors")) == 130
    err = capsys.readouterr().err
    assert "keep.interrupted.safetensors" in err and "left as it was" in err
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    from advgui.core.models import load_model
    saved = load_model(str(tmp_path / "keep.interrupted.safetensors"), device="cpu")
    assert saved.class_names == [str(i) for i in range(10)]
    assert (tmp_path / "keep.interrupted.log.json").exists()
    assert not (tmp_path / "keep.partial.log.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_nan_loss_stops_with_an_error_and_saves_nothing(tmp_path, tree, capsys):
    before = good_files(tmp_path)
    assert main(train_args(tree, tmp_path / "keep.safetensors", "--lr", "1e12")) == 2
    err = capsys.readouterr().err
    assert "loss became nan" in err and "nothing was saved" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keep.")} == before


@pytest.fixture(scope="module")
def trained():
    from advgui.core.models import load_model
    from advgui.core.training import TrainConfig, train
    from advgui.core.data import digits_dataset
    x, y = digits_dataset("test")
    clf = load_model("demo", device="cpu")
    res = train(clf, x[:32], y[:32], TrainConfig(method="clean", eps=0.0, epochs=1, batch_size=16))
    return res


def test_a_failed_save_keeps_the_weights_and_saves_elsewhere(tmp_path, trained, monkeypatch):
    from safetensors import SafetensorError
    import advgui.core.models as models
    import advgui.core.training as training
    from advgui.core.training import TrainingError, save_training_safely
    target = tmp_path / "full" / "keep.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"a good model")
    real = training.save_weights

    def disk_full_in(folder):
        def save(path, *a, **k):
            if Path(path).parent == folder:
                raise SafetensorError("Error while serializing: IoError(No space left on device)")
            return real(path, *a, **k)
        return save

    monkeypatch.setattr(training, "save_weights", disk_full_in(target.parent))
    spare = tmp_path / "spare"
    spare.mkdir()
    paths, failures = save_training_safely(trained, target, fallback_dirs=[spare])
    assert target.read_bytes() == b"a good model"
    assert Path(paths["weights"]).parent == spare and Path(paths["weights"]).name.startswith("keep.recovered-")
    assert failures and failures[0]["path"] == str(target) and "No space" in failures[0]["reason"]
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    # nowhere works: one error listing every attempt; the weights are still in memory for another try
    monkeypatch.setattr(training, "save_weights", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "the disk is full")))
    with pytest.raises(TrainingError) as e:
        save_training_safely(trained, target, fallback_dirs=[spare])
    assert e.value.code == "save-failed" and len(e.value.details["attempts"]) == 2
    monkeypatch.setattr(training, "save_weights", real)
    paths, failures = save_training_safely(trained, tmp_path / "later.safetensors", fallback_dirs=[])
    assert not failures
    again = models.load_model(str(paths["weights"]), device="cpu").net.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in trained.classifier.net.state_dict().items())


def test_a_write_interrupted_midway_leaves_the_old_file(tmp_path, trained, monkeypatch):
    import safetensors.torch as st
    from advgui.core.training import save_training
    target = tmp_path / "keep.safetensors"
    target.write_bytes(b"a good model")
    real = st.save_file

    def half(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a fi")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "save_file", half)
    with pytest.raises(OSError) as e:
        save_training(trained, target, log=False)
    assert str(target) in str(e.value) and "full" in str(e.value)          # disk-full errors name the path
    assert target.read_bytes() == b"a good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]
    monkeypatch.setattr(st, "save_file", real)


def test_holdout_note_says_the_share_actually_held_out():
    from advgui.core.training import holdout_note, split_holdout
    x = torch.zeros(10, 1, 4, 4)
    y = torch.arange(10) % 5                     # 5 classes of 2: one of each is held out
    _, (vx, vy) = split_holdout(x, y, 0.1)
    note = holdout_note(len(vy), len(y), 0.1, "tiny")
    assert len(vy) == 5
    assert "5 of 10 images held out from tiny (50%" in note and "10% was asked" in note
    assert holdout_note(10, 100, 0.1, "big") == "validation: 10 of 100 images held out from big (10%)"


def test_training_data_uses_matching_class_folders_and_lists_the_rest(tree):
    from advgui.core.models import load_model
    from advgui.core.training import load_training_set
    (tree / "stray").mkdir()
    shutil.copy(next((tree / "3").glob("*.png")), tree / "stray" / "x.png")
    ts = load_training_set(tree, load_model("demo", device="cpu"))
    assert len(ts) == 50
    assert any("stray/: 1 image(s) left out" in k for k in ts.skipped)
