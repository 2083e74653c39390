"""The benchmark on a user's own images: folder, domain and split trees and CSVs, read as `extract` reads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnfeat.catalog import dataset_from_inputs
from cnnfeat.exceptions import ConfigError, DatasetError
from cnnfeat.inputs import Manifest
from cnnfeat.runner import expand

TINY = "cnn:tiny_test/pool?weights=none&batch_size=8"


def _jpeg(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (36, 44, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


COLOURS = {"red": (200, 50, 40), "blue": (40, 60, 200), "green": (40, 190, 60)}


@pytest.fixture
def domain_tree(tmp_path: Path) -> Path:
    """<domain>/<class>/<file>: the class sets the hue, the domain the brightness."""
    root = tmp_path / "shop"
    for d, domain in enumerate(("studio", "phone")):
        for cls, colour in COLOURS.items():
            for i in range(8):
                _jpeg(root / domain / cls / f"{i}.jpg", tuple(int(c * (0.7 + 0.3 * d)) for c in colour), 100 * d + i)  # type: ignore[arg-type]
    return root


def test_folder_trees_read_their_domains_and_splits(tmp_path: Path, domain_tree: Path) -> None:
    flat = tmp_path / "flat"
    for cls, colour in COLOURS.items():
        for i in range(3):
            _jpeg(flat / cls / f"{i}.jpg", colour, i)
    manifest = Manifest.from_folder(flat)
    assert set(manifest.labels) == set(COLOURS) and not any(manifest.domains) and not any(manifest.splits)

    tree = Manifest.from_folder(domain_tree)
    assert set(tree.domains) == {"studio", "phone"} and set(tree.labels) == set(COLOURS)
    assert tree.layout == "labels + domains"

    split_tree = tmp_path / "splits"
    for part in ("train", "Val", "test"):
        for cls, colour in COLOURS.items():
            _jpeg(split_tree / part / cls / "a.jpg", colour, 0)
    by_split = Manifest.from_folder(split_tree)
    assert sorted(set(by_split.splits)) == ["test", "train", "val"] and not any(by_split.domains)


def test_a_user_dataset_has_a_digest_that_follows_its_content(tmp_path: Path, domain_tree: Path) -> None:
    ds = dataset_from_inputs(domain_tree)
    assert ds.name == "shop" and ds.is_user_data and len(ds.manifest) == 48
    assert ds.spec["protocols"]["default"] == "domain_shift_full" and ds.spec["layout"]["domains"] == ["phone", "studio"]
    assert ds.digest == dataset_from_inputs(domain_tree, "again").digest
    _jpeg(domain_tree / "phone" / "red" / "0.jpg", (0, 0, 0), 7)  # one image changed: another digest
    assert ds.digest != dataset_from_inputs(domain_tree).digest
    # records of the changed data are never reused: the digest is part of each run's key
    before = expand(["hog"], ["logreg"], [ds], ["full"], [0])
    after = expand(["hog"], ["logreg"], [dataset_from_inputs(domain_tree)], ["full"], [0])
    assert [r.column for r in before] == ["shop phone->studio", "shop studio->phone"]
    assert {r.key() for r in before}.isdisjoint(r.key() for r in after)


def test_csv_with_a_split_column_runs_the_given_split_once(tmp_path: Path) -> None:
    rows = ["path,label,split"]
    for cls, colour in COLOURS.items():
        for i in range(6):
            _jpeg(tmp_path / "img" / f"{cls}{i}.jpg", colour, i)
            rows.append(f"img/{cls}{i}.jpg,{cls},{'train' if i < 4 else 'test'}")
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    ds = dataset_from_inputs(tmp_path / "mine.csv")
    assert ds.spec["protocols"]["default"] == "official"
    assert len(ds.official_splits["1"]["train"]) == 12 and len(ds.official_splits["1"]["test"]) == 6
    runs = expand(["hog"], ["logreg"], [ds], ["default"], [0, 1, 2])
    assert [(r.protocol, r.seed) for r in runs] == [("official", 0)]  # one split: one run, not three


def test_protocols_the_data_cannot_serve_are_refused_with_the_reason(tmp_path: Path) -> None:
    for cls, colour in COLOURS.items():
        for i in range(5):
            _jpeg(tmp_path / "flat" / cls / f"{i}.jpg", colour, i)
    ds = dataset_from_inputs(tmp_path / "flat")
    assert ds.spec["protocols"]["default"] == "kfold"
    assert [r.protocol for r in expand(["hog"], ["logreg"], [ds], ["default"], [0, 1, 2])] == ["kfold:5"] * 3
    with pytest.raises(ConfigError, match="two or more domains"):
        expand(["hog"], ["logreg"], [ds], ["full"], [0])
    with pytest.raises(ConfigError, match="'split' column"):
        expand(["hog"], ["logreg"], [ds], ["official"], [0])
    (tmp_path / "bad.csv").write_text("path,label,split\nflat/red/0.jpg,red,holdout\nflat/blue/0.jpg,blue,train\n")
    with pytest.raises(DatasetError, match="holdout"):
        dataset_from_inputs(tmp_path / "bad.csv")
    (tmp_path / "nolabel.csv").write_text("path\nflat/red/0.jpg\nflat/blue/0.jpg\n")
    with pytest.raises(DatasetError, match="no label"):
        dataset_from_inputs(tmp_path / "nolabel.csv")


@pytest.mark.slow
def test_benchmark_cli_runs_on_a_domain_tree(tmp_path: Path, domain_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cnnfeat.cli import main

    out = tmp_path / "out"
    argv = ["benchmark", "--data", f"myshop={domain_tree}", "--methods", TINY, "color_hist", "--protocol", "full"]
    assert main([*argv, "--adapt", "none", "coral", "--cache", str(tmp_path / "cache"), "--out", str(out), "--no-progress"]) == 0
    table = (out / "table.md").read_text()
    assert "myshop studio->phone" in table and "myshop phone->studio" in table and "+ coral" in table
    ds = dataset_from_inputs(domain_tree)
    assert f"content sha256 {ds.digest[:16]}" in table and "48 images, 3 classes" in table
    assert (out / "bars_myshop.png").stat().st_size > 1000
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == 2 * 2 * 2 and {r["data"]["digest"] for r in records} == {ds.digest}  # shifts x methods x adapt
    colour = [r for r in records if r["method"] == "color_hist" and r["adapt"] == "none"]
    assert all(r["accuracy"] > 0.9 for r in colour)  # hue separates the classes in both domains
    # the same command again reuses every record (same data, same digest)
    assert main([*argv, "--adapt", "none", "coral", "--cache", str(tmp_path / "cache"), "--out", str(out), "--no-progress",
                 "--skip-existing"]) == 0  # fmt: skip
    assert len(list((out / "records").glob("*.json"))) == 8


def test_benchmark_cli_refuses_what_the_data_lacks_as_a_bad_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnfeat.benchmark import main

    for cls, colour in COLOURS.items():
        for i in range(3):
            _jpeg(tmp_path / "flat" / cls / f"{i}.jpg", colour, i)
    assert main(["--data", str(tmp_path / "flat"), "--protocol", "sampled", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "needs two or more domains" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "flat" / "red" / "page.jpg").write_text("<html>not an image</html>")
    bad = ["--data", str(tmp_path / "flat"), "--adapt", "ot?regularisation=1", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(bad) == 2  # a misspelt hyper-parameter, said before the folder is read
    err = capsys.readouterr().err
    assert "unexpected keyword argument 'regularisation'" in err and "page.jpg" not in err


def test_a_messy_folder_costs_its_bad_files_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # issue 25, item 1: one bad file made every run fail and the table empty (exit 1)
    from cnnfeat.benchmark import main

    root = tmp_path / "photos"
    for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        for i in range(6):
            _jpeg(root / f"class{c}" / f"{i}.jpg", colour, seed=10 * c + i)
    good = (root / "class0" / "0.jpg").read_bytes()
    (root / "class0" / "corrupt.jpg").write_bytes(good[: len(good) // 3])  # a truncated JPEG
    (root / "class1" / "page.jpg").write_text("<!DOCTYPE html><html><body>404</body></html>")  # a saved error page
    (root / "class1" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # macOS AppleDouble: not an image
    (root / "class1" / "notes.txt").write_text("shot on my phone\n")
    _jpeg(root / "class1" / "old.jfif", (40, 40, 200), seed=99)  # read, as a JPEG
    out = tmp_path / "out"
    args = ["--data", str(root), "--methods", TINY, "hog", "--protocol", "kfold:3", "--seeds", "0", "--out", str(out)]
    assert main([*args, "--no-progress", "--cache", str(tmp_path / "c")]) == 3
    err = capsys.readouterr().err
    assert "skipped 2 files that cannot be read" in err
    assert "corrupt.jpg: " in err and "page.jpg: not an image: the file holds an HTML/XML page" in err
    assert "._0.jpg" not in err and "notes.txt" not in err
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert all(r["n_train"] + r["n_test"] == 13 for r in records)  # 12 photos and the .jfif, nothing else
    assert all(sorted(Path(s["path"]).name for s in r["data"]["skipped"]) == ["corrupt.jpg", "page.jpg"] for r in records)
    assert (
        main([*args, "--no-progress", "--cache", str(tmp_path / "c"), "--on-error", "fail", "--out", str(tmp_path / "o2")]) == 1
    )


def test_every_method_is_resolved_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # issue 25, item 2: a typo failed each run separately, after work had started, each error printed three times
    import time

    from cnnfeat.benchmark import main

    root = tmp_path / "photos"
    for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        for i in range(5):
            _jpeg(root / f"class{c}" / f"{i}.jpg", colour, seed=10 * c + i)
    typos = {
        "cnn:tiny_test/block1_pol?weights=none": "has no layer 'block1_pol' (did you mean 'block1_pool'?)",
        "finetune:tiny_test/top1?epoch=3&weights=none": "'epoch' is not a parameter of FineTunedCNN (did you mean 'epochs'?)",
        "cnn:tiny_tset/pool": "unknown backbone 'tiny_tset' (did you mean 'tiny_test'?)",
        "cnn:tiny_test/pool?weights=none&batch_size=0": "The 'batch_size' parameter of CNNFeatures must be",
    }
    for method, message in typos.items():
        started = time.perf_counter()
        out = tmp_path / "out"
        assert main(["--data", str(root), "--methods", method, "--out", str(out), "--no-progress"]) == 2
        assert time.perf_counter() - started < 10
        err = capsys.readouterr().err
        assert message in err and err.count("error:") == 1, err
        assert not list(out.glob("records/*.json"))


def test_protocols_must_fit_the_smallest_class_and_k_fold_runs_every_fold(tmp_path: Path, capsys) -> None:
    # issue 25, item 3: 3 images per class leaked scikit-learn's "n_splits=5 cannot be greater than the number of
    # members in each class", and the default 5-fold ran only folds 0, 1 and 2 (the default seeds)
    from cnnfeat.benchmark import main

    for per_class, name in ((3, "three"), (1, "one"), (5, "five")):
        for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
            for i in range(per_class):
                _jpeg(tmp_path / name / f"class{c}" / f"{i}.jpg", colour, seed=10 * c + i)
    args = ["--methods", TINY, "--no-progress", "--cache", str(tmp_path / "c")]
    assert main(["--data", str(tmp_path / "three"), "--out", str(tmp_path / "o3"), *args]) == 2
    err = capsys.readouterr().err
    assert "smallest class (class0) has 3 images; kfold:5 needs 5 per class" in err and "--protocol kfold:3" in err
    assert "n_splits" not in err and "ValueError" not in err
    assert main(["--data", str(tmp_path / "one"), "--out", str(tmp_path / "o1"), *args, "--protocol", "n_per_class:1"]) == 2
    assert "Every protocol needs at least 2 images per class" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "five"), "--out", str(tmp_path / "o5"), *args]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "o5" / "records").glob("*.json")]
    assert sorted(r["seed"] for r in records) == [0, 1, 2, 3, 4]  # all five folds


def test_a_rerun_from_the_cache_still_shows_the_extraction_speed_measured_then(tmp_path: Path) -> None:
    # issue 25, item 7: the table's extract s/1k img read "cached" after any rerun, so the measured speed disappeared
    from cnnfeat.benchmark import main

    for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        for i in range(5):
            _jpeg(tmp_path / "photos" / f"class{c}" / f"{i}.jpg", colour, seed=10 * c + i)
    args = ["--data", str(tmp_path / "photos"), "--methods", TINY, "--no-progress", "--cache", str(tmp_path / "c")]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    assert main([*args, "--out", str(tmp_path / "again")]) == 0
    first = next(line for line in (tmp_path / "first" / "table.md").read_text().splitlines() if line.startswith("| cnn:"))
    again = next(line for line in (tmp_path / "again" / "table.md").read_text().splitlines() if line.startswith("| cnn:"))
    from cnnfeat.store import FeatureStore

    assert float(first.split(" | ")[2]) > 0 and first.split(" | ")[2][0].isdigit()  # computed in the first run
    (store,) = (tmp_path / "c").glob("tiny_test-*.h5")
    with FeatureStore(store, mode="r") as opened:
        noted = 1000 * opened.measured_speed
    assert again.split(" | ")[2] == f"{noted:.1f} (cached)"  # the rate noted in the store when it was computed
    assert "extraction rate measured when those features were computed" in (tmp_path / "again" / "table.md").read_text()


def test_lines_printed_by_third_parties_during_the_runs_go_to_stderr_not_into_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 25, item 2: Keras' "Downloading data from ..." landed on stdout, inside the table output
    import cnnfeat.runner
    from cnnfeat.benchmark import main

    real = cnnfeat.runner.run_all

    def chatty(*args, **kwargs):  # as keras.utils.get_file prints while a run fetches weights
        print("Downloading data from https://storage.googleapis.com/x.h5")
        return real(*args, **kwargs)

    monkeypatch.setattr(cnnfeat.runner, "run_all", chatty)
    for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        for i in range(5):
            _jpeg(tmp_path / "photos" / f"class{c}" / f"{i}.jpg", colour, seed=10 * c + i)
    args = ["--data", str(tmp_path / "photos"), "--methods", TINY, "--no-progress", "--out", str(tmp_path / "o")]
    assert main([*args, "--cache", str(tmp_path / "c")]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("| method |") and "Downloading" not in captured.out
    assert "Downloading data from" in captured.err


def test_weights_that_cannot_be_downloaded_are_said_once_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 25, item 2: a Keras backbone whose weights could not be downloaded failed every run separately
    from keras.src.utils import file_utils  # where keras.applications look get_file up

    from cnnfeat.benchmark import main

    def offline(*args, **kwargs):
        print("Downloading data from https://storage.googleapis.com/x.h5")  # what Keras prints first
        raise OSError("URL fetch failure (this test is offline)")

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # nothing cached there
    for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        for i in range(5):
            _jpeg(tmp_path / "photos" / f"class{c}" / f"{i}.jpg", colour, seed=10 * c + i)
    out = tmp_path / "o"
    assert main(["--data", str(tmp_path / "photos"), "--methods", "cnn:mobilenet/pool", "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("error:") == 1 and "could not get Keras' ImageNet weights for mobilenet" in captured.err
    assert "this test is offline" in captured.err and "Downloading data from" in captured.err
    assert "cnn:mobilenet/<tap>?weights=PATH" in captured.err and "efficientnet_lite0" in captured.err
    assert captured.out == "" and not list(out.glob("records/*.json"))
