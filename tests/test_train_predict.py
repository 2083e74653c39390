"""cnnfeat train / predict / load_model: a classifier from your folder, in a file that is safe to load (issue 25)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnfeat.model_file import ModelFileError, _digest, load_model, read_model
from cnnfeat.predict import main as predict
from cnnfeat.train import main as train

TINY = "cnn:tiny_test/pool?weights=none&batch_size=8"
COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200), "green": (40, 190, 60)}


def _photos(root: Path, per_class: int, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        for i in range(per_class):
            path = root / name / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(np.array(colour) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)).save(path)
    return root


@pytest.fixture
def model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    data = _photos(tmp_path / "train", 12, seed=0)
    (data / "red" / "broken.jpg").write_text("not a photo")
    out = tmp_path / "m.cnnfeat-model"
    assert (
        train(["--data", str(data), "--method", TINY, "--normalize", "l2", "--output", str(out), "--cache", str(tmp_path / "c")])
        == 3
    )
    assert "saved" in capsys.readouterr().out
    return out


def test_train_then_predict_held_out_images_with_probabilities_and_accuracy(model: Path, tmp_path: Path, capsys) -> None:
    held = _photos(tmp_path / "held", 5, seed=1)
    (held / "blue" / "page.jpg").write_text("<html>404</html>")
    csv_path = tmp_path / "pred.csv"
    code = predict([str(model), str(held), "--output", str(csv_path), "--top-k", "2", "--cache", str(tmp_path / "c")])
    assert code == 3  # the HTML page was skipped, and said
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 16 and list(rows[0])[:5] == ["path", "predicted", "probability", "top2", "top2_probability"]
    read = [r for r in rows if not r["error"]]
    assert len(read) == 15 and all(abs(float(r["probability"]) + float(r["top2_probability"]) - 1) < 0.35 for r in read)
    assert [r["error"] for r in rows if r["error"]] == ["not an image: the file holds an HTML/XML page (a failed download?)"]
    accuracy = float(capsys.readouterr().out.split("model: ")[1].split(" %")[0])
    assert accuracy >= 80  # three colours: the random tiny network still separates them
    card, _ = read_model(model)
    assert card.classes == ["blue", "green", "red"] and card.normalize == "l2" and card.data_digest
    assert 0 < card.measured["validation_accuracy"] <= 1 and card.measured["images"] == 36
    pipeline = load_model(model, cache=tmp_path / "c")
    assert list(pipeline.predict([str(held / "green" / "0.jpg")])) == ["green"]


def test_a_tampered_or_foreign_model_file_is_refused_and_no_pickle_is_ever_loaded(model: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(model) as z:
        body, arrays = json.loads(z.read("model.json")), z.read("arrays.npz")

    def write(name: str, body: dict, arrays: bytes, extra: dict | None = None) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("model.json", json.dumps(body))
            z.writestr("arrays.npz", arrays)
            for member, data in (extra or {}).items():
                z.writestr(member, data)
        return path

    flipped = bytearray(arrays)
    flipped[len(flipped) // 2] ^= 1
    pickled = io.BytesIO()
    np.savez(pickled, coef=np.array([object()], dtype=object), intercept=np.zeros(3))
    resealed = {**body, "arrays_sha256": hashlib.sha256(pickled.getvalue()).hexdigest()}
    resealed["sha256"] = _digest(resealed)
    cases = {
        write("classes.m", {**body, "classes": ["a", "b", "c"]}, arrays): "changed after it was written",
        write("weights.m", body, bytes(flipped)): "changed after it was written",
        write("extra.m", body, arrays, {"x.py": b"print(1)"}): "not a cnnfeat model file",
        write("version.m", {**body, "version": 99}, arrays): "version 99",
        write("pickle.m", resealed, pickled.getvalue()): "Object arrays cannot be loaded",  # a tamperer who re-sealed it
    }
    (tmp_path / "junk.m").write_bytes(b"PK\x03\x04 not really a zip")
    cases[tmp_path / "junk.m"] = "not a readable model file"
    for path, message in cases.items():
        with pytest.raises(ModelFileError, match=message):
            load_model(path)
    assert predict([str(tmp_path / "classes.m"), str(tmp_path), "--output", str(tmp_path / "p.csv")]) == 1


def test_what_a_model_file_cannot_hold_is_a_bad_command_line(tmp_path: Path, capsys) -> None:
    data = _photos(tmp_path / "train", 4, seed=0)
    for method in ("sift_bovw", "cnn:tiny_test/block1_pool,pool?weights=none", "finetune:tiny_test/head?weights=none"):
        assert train(["--data", str(data), "--method", method, "--output", str(tmp_path / "m")]) == 2
        assert "a model file holds one network's single tap" in capsys.readouterr().err
    assert train(["--data", str(data), "--method", TINY, "--normalize", "pca", "--output", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m").exists()
