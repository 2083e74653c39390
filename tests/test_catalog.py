"""The dataset catalog: every manifest loads a synthetic tree in its official layout (labels, counts, splits)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnnfeat.catalog import (
    content_digest,
    dataset_spec,
    list_datasets,
    load_dataset,
    resolve_data_root,
    verify_dataset,
)
from cnnfeat.exceptions import DatasetError

ALL = [
    "caltech101",
    "cub200",
    "digits",
    "eurosat_mini",
    "flowers102",
    "flowers17",
    "mit67",
    "office31",
    "office_caltech10",
    "pacs",
    "scene15",
    "sun397",
]


def touch(path: Path, content: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if content is not None else path.as_posix().encode())
    return path


def test_catalog_lists_every_dataset_with_what_a_user_needs() -> None:
    assert list_datasets() == ALL
    for name in ALL:
        spec = dataset_spec(name)
        assert spec["name"] == name
        for key in ("title", "task", "citation", "license", "homepage", "folder", "files", "layout", "expected"):
            assert spec[key] is not None, (name, key)
        assert spec["expected"]["images"] > 0 and spec["expected"]["classes"] > 1
        for entry in spec["files"]:
            assert set(entry) >= {"filename", "urls", "md5", "unpack"}, name
            assert entry["md5"] is None or len(entry["md5"]) == 32


def test_data_root_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNFEAT_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("CNNFEAT_DATA")
    monkeypatch.setenv("CNNFEAT_CACHE", str(tmp_path / "cache"))
    assert resolve_data_root() == tmp_path / "cache" / "data"


def test_missing_dataset_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"(?s)cnnfeat data download caltech101.*101_ObjectCategories.tar.gz"):
        load_dataset("caltech101", tmp_path)
    assert "does not exist" in verify_dataset("caltech101", tmp_path)[0]
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", tmp_path)


def test_caltech101_keeps_the_background_class(tmp_path: Path) -> None:
    for cls, n in (("BACKGROUND_Google", 3), ("Faces", 2), ("airplanes", 4)):
        for i in range(1, n + 1):
            touch(tmp_path / "caltech101" / "101_ObjectCategories" / cls / f"image_{i:04d}.jpg")
    with pytest.raises(DatasetError, match="9 images, expected 9144"):
        load_dataset("caltech101", tmp_path)
    ds = load_dataset("caltech101", tmp_path, strict=False)
    assert Counter(ds.manifest.labels) == {"BACKGROUND_Google": 3, "Faces": 2, "airplanes": 4}
    assert "class 'Faces' has 2 images, expected 435" in ds.problems


@pytest.mark.parametrize(
    ("name", "domain_dir", "domains"),
    [
        ("office31", "{domain}/images", ["amazon", "dslr", "webcam"]),
        ("office_caltech10", "{domain}", ["amazon", "caltech", "dslr", "webcam"]),
    ],
)
def test_domain_datasets_label_by_folder_and_domain(tmp_path: Path, name: str, domain_dir: str, domains: list[str]) -> None:
    for d, domain in enumerate(domains):
        for cls in ("back_pack", "mug"):
            for i in range(d + 1):
                touch(tmp_path / name / domain_dir.format(domain=domain) / cls / f"frame_{i:04d}.jpg")
    ds = load_dataset(name, tmp_path, strict=False)
    assert Counter(ds.manifest.domains) == {domain: 2 * (d + 1) for d, domain in enumerate(domains)}
    assert ds.manifest.classes == ["back_pack", "mug"]
    assert any(p.startswith(f"domain '{domains[0]}' has 2 images") for p in ds.problems)
    shutil.rmtree(tmp_path / name / domain_dir.format(domain=domains[-1]))
    with pytest.raises(DatasetError, match=f"missing domain '{domains[-1]}'"):
        load_dataset(name, tmp_path, strict=False)


def _official_pacs(root: Path, val: tuple[int, ...] = (2, 5)) -> Path:
    """PACS in its official layout, 4 domains x 2 classes x 3 files: files 0, 1, 3, 4 train, ``val`` cross-validate."""
    for domain in ("art_painting", "cartoon", "photo", "sketch"):
        files = [f"{domain}/{cls}/pic_{i:03d}.jpg" for cls in ("dog", "horse") for i in range(1, 4)]
        for f in files:
            touch(root / "kfold" / f)

        def listing(chosen: list[str]) -> str:
            return "".join(f"{f} {1 + ('horse' in f)}\n" for f in chosen)

        (root / f"{domain}_train_kfold.txt").write_text(listing(files[:2] + files[3:5]))
        (root / f"{domain}_crossval_kfold.txt").write_text(listing([files[i] for i in val]))
        (root / f"{domain}_test_kfold.txt").write_text(listing(files))
    return root


def test_pacs_reads_the_official_kfold_split_files(tmp_path: Path) -> None:
    _official_pacs(tmp_path / "pacs")
    ds = load_dataset("pacs", tmp_path, strict=False)
    assert len(ds.manifest) == 24 and ds.manifest.classes == ["dog", "horse"]
    assert sorted(ds.official_splits) == ["art_painting", "cartoon", "photo", "sketch"]
    photo = ds.official_splits["photo"]
    assert len(photo["train"]) == 4 and len(photo["val"]) == 2 and len(photo["test"]) == 6
    assert {ds.manifest.domains[r] for r in photo["test"]} == {"photo"}
    assert all("pic_003" in ds.manifest.paths[r] for r in photo["val"])


def test_scene15_ignores_files_beside_the_class_folders(tmp_path: Path) -> None:
    for cls in ("bedroom", "MITcoast"):
        for i in range(1, 4):
            touch(tmp_path / "scene15" / cls / f"image_{i:04d}.jpg")
    touch(tmp_path / "scene15" / "preview.jpg")
    ds = load_dataset("scene15", tmp_path, strict=False)
    assert len(ds.manifest) == 6 and ds.manifest.classes == ["MITcoast", "bedroom"]
    assert "class 'store' has 0 images, expected 315" in ds.problems


def test_flowers17_class_is_index_block_of_80_and_datasplits_mat(tmp_path: Path) -> None:
    from scipy.io import savemat

    root = tmp_path / "flowers17"
    for i in range(160, 0, -1):  # created out of order: the loader sorts by number
        touch(root / "jpg" / f"image_{i:04d}.jpg")
    ds = load_dataset("flowers17", tmp_path, strict=False)
    assert ds.manifest.labels[:80] == ["Daffodil"] * 80 and ds.manifest.labels[80:] == ["Snowdrop"] * 80
    assert ds.manifest.paths[0].endswith("image_0001.jpg") and ds.official_splits == {}
    mat = {}
    for k in (1, 2, 3):
        mat |= {f"trn{k}": np.arange(1, 41) + k, f"val{k}": np.arange(81, 101), f"tst{k}": np.arange(141, 161)}
    savemat(root / "datasplits.mat", mat)
    ds = load_dataset("flowers17", tmp_path, strict=False)
    assert sorted(ds.official_splits) == ["1", "2", "3"]
    assert ds.manifest.paths[ds.official_splits["2"]["train"][0]].endswith("image_0003.jpg")
    assert {ds.manifest.labels[r] for r in ds.official_splits["1"]["test"]} == {"Snowdrop"}


def test_flowers102_labels_and_setid_from_the_official_mat_files(tmp_path: Path) -> None:
    from scipy.io import savemat

    root = tmp_path / "flowers102"
    for i in range(1, 11):
        touch(root / "jpg" / f"image_{i:05d}.jpg")
    labels = np.array([[77, 77, 3, 3, 3, 102, 102, 1, 1, 1]])
    savemat(root / "imagelabels.mat", {"labels": labels})
    savemat(
        root / "setid.mat", {"trnid": np.array([[1, 3, 6]]), "valid": np.array([[2, 4]]), "tstid": np.array([[5, 7, 8, 9, 10]])}
    )
    ds = load_dataset("flowers102", tmp_path, strict=False)
    assert ds.manifest.labels[:3] == ["class_077", "class_077", "class_003"] and ds.manifest.labels[5] == "class_102"
    split = ds.official_splits["1"]
    assert split["train"].tolist() == [0, 2, 5] and split["val"].tolist() == [1, 3] and len(split["test"]) == 5
    assert "official train split has 3 images, expected 1020" in ds.problems
    (root / "imagelabels.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match=r"imagelabels\.mat: not a readable MATLAB file"):
        load_dataset("flowers102", tmp_path, strict=False)


def test_cub200_reads_the_id_lists(tmp_path: Path) -> None:
    top = tmp_path / "cub200" / "CUB_200_2011"
    files = ["001.Black_footed_Albatross/a_1.jpg", "001.Black_footed_Albatross/a_2.jpg", "002.Laysan_Albatross/b_1.jpg"]
    for f in files:
        touch(top / "images" / f)
    (top / "images.txt").write_text("".join(f"{i} {f}\n" for i, f in enumerate(files, 1)))
    (top / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n")
    (top / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (top / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    ds = load_dataset("cub200", tmp_path, strict=False)
    assert ds.manifest.labels == ["001.Black_footed_Albatross", "001.Black_footed_Albatross", "002.Laysan_Albatross"]
    assert ds.official_splits["1"]["train"].tolist() == [0, 2] and ds.official_splits["1"]["test"].tolist() == [1]
    (top / "train_test_split.txt").write_text("1 1\n2 0\n")
    with pytest.raises(DatasetError, match="no label or split entry"):
        load_dataset("cub200", tmp_path, strict=False)


def test_sun397_nested_classes_and_ten_partitions(tmp_path: Path) -> None:
    top = tmp_path / "sun397" / "SUN397"
    files = [
        "a/abbey/sun_aa.jpg",
        "a/abbey/sun_ab.jpg",
        "b/bakery/shop/sun_ba.jpg",
        "b/bakery/shop/sun_bb.jpg",
        "s/shop/sun_sa.jpg",
        "s/shop/sun_sb.jpg",
    ]
    for f in files:
        touch(top / f)
    touch(top / "ClassName.txt", b"/a/abbey\n/b/bakery/shop\n/s/shop\n")
    for k in range(1, 11):
        touch(
            tmp_path / "sun397" / "Partitions" / f"Training_{k:02d}.txt", "".join(f"/{f}\n" for f in files[k % 2 :: 2]).encode()
        )
        touch(
            tmp_path / "sun397" / "Partitions" / f"Testing_{k:02d}.txt",
            "".join(f"/{f}\n" for f in files[(k + 1) % 2 :: 2]).encode(),
        )
    ds = load_dataset("sun397", tmp_path, strict=False)
    assert ds.manifest.classes == ["a/abbey", "b/bakery/shop", "s/shop"]  # "shop" twice, told apart by its path
    assert sorted(ds.official_splits, key=int) == [str(k) for k in range(1, 11)]
    assert ds.official_splits["2"]["train"].tolist() == [0, 2, 4] and ds.official_splits["1"]["train"].tolist() == [1, 3, 5]


def test_mit67_train_and_test_lists(tmp_path: Path) -> None:
    root = tmp_path / "mit67"
    for cls in ("kitchen", "bar"):
        for i in range(3):
            touch(root / "Images" / cls / f"{cls}{i}.jpg")
    (root / "TrainImages.txt").write_text("kitchen/kitchen0.jpg\nkitchen/kitchen1.jpg\nbar/bar0.jpg\nbar/bar1.jpg\n")
    (root / "TestImages.txt").write_text("kitchen/kitchen2.jpg\nbar/bar2.jpg\n")
    ds = load_dataset("mit67", tmp_path, strict=False)
    split = ds.official_splits["1"]
    assert len(split["train"]) == 4 and [ds.manifest.labels[r] for r in split["test"]] == ["bar", "kitchen"]
    (root / "TestImages.txt").write_text("kitchen/missing.jpg\n")
    with pytest.raises(DatasetError, match=r"TestImages\.txt: 1 entries name images that are not in the dataset"):
        load_dataset("mit67", tmp_path, strict=False)


def test_digits_are_written_once_as_images_and_verify(tmp_path: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", tmp_path)
    assert not (tmp_path / "digits").exists()  # built in: written to the cache, not into the data root
    assert Path(os.environ["CNNFEAT_CACHE"]) in ds.root.parents
    assert len(ds.manifest) == 1797 and ds.problems == [] and verify_dataset("digits", tmp_path) == []
    first = np.asarray(Image.open(ds.manifest.paths[0]))
    row = int(Path(ds.manifest.paths[0]).stem.split("_")[1])
    np.testing.assert_array_equal(first, (load_digits().images[row] * 16).clip(0, 255).astype(np.uint8))
    assert ds.manifest.labels[0] == str(load_digits().target[row])
    stamp = Path(ds.manifest.paths[0]).stat().st_mtime_ns
    load_dataset("digits", tmp_path)
    assert Path(ds.manifest.paths[0]).stat().st_mtime_ns == stamp


def test_eurosat_mini_ships_inside_the_package_with_its_licence_and_verifies(tmp_path: Path) -> None:
    ds = load_dataset("eurosat_mini", tmp_path)  # no data root needed: it is package data
    assert ds.layout == "built in" and not (tmp_path / "eurosat_mini").exists()
    assert len(ds.manifest) == 1000 and sorted(ds.manifest.classes)[:2] == ["AnnualCrop", "Forest"]
    assert all(n == 100 for n in np.unique(ds.manifest.labels, return_counts=True)[1])
    assert "MIT License" in (ds.root / "LICENSE").read_text() and "Helber" in (ds.root / "README.md").read_text()
    assert verify_dataset("eurosat_mini", tmp_path, content=True) == []
    jpgs = sorted(p.relative_to(ds.root).as_posix() for p in ds.root.rglob("*.jpg"))
    listing = "".join(f"{hashlib.sha256((ds.root / p).read_bytes()).hexdigest()}  ./{p}\n" for p in jpgs)
    # the digest of the EuroSAT files that the shared copy's README publishes: the images are the release's bytes
    assert hashlib.sha256(listing.encode()).hexdigest() == "4ec3a304404778b864cbf660d2eb285b0f28f8639c780f61b3257b5a49e2f7a6"


def test_content_digest_equals_the_documented_shell_pipeline(tmp_path: Path) -> None:
    touch(tmp_path / "b" / "x.jpg", b"one")
    touch(tmp_path / "a" / "y z.jpg", b"two")
    touch(tmp_path / "A.txt", b"three")
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum is not installed")
    shell = subprocess.run(
        "find . -type f | LC_ALL=C sort | tr '\\n' '\\0' | xargs -0 sha256sum | sha256sum",
        shell=True, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert content_digest(tmp_path) == shell.stdout.split()[0]


def test_manifests_are_valid_json_in_the_package() -> None:
    folder = Path(__import__("cnnfeat").__file__).parent / "data_manifests"
    paths = sorted(folder.glob("*.json"))
    assert [p.stem for p in paths] == ALL  # an empty folder (package data left out of a wheel) fails here
    for path in paths:
        spec = json.loads(path.read_text())
        assert spec["name"] == path.stem
        for alternative in spec.get("alternative_layouts", []):
            assert alternative["name"] and alternative["folder"] and alternative.get("pattern", spec["layout"]["pattern"])


def test_data_cli_unpacks_a_manual_download_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tarfile

    from cnnfeat.data import main

    staging = tmp_path / "staging"
    for i in range(1, 81):
        touch(staging / "jpg" / f"image_{i:04d}.jpg")
    archive = tmp_path / "root" / "flowers17" / "downloads" / "17flowers.tgz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "jpg", arcname="jpg")
    # the datasplits.mat download fails offline, but it is optional: the images are unpacked and verified
    assert main(["download", "flowers17", "--data-root", str(tmp_path / "root"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "flowers17: PROBLEMS" in out and "80 images, expected 1360" in out
    assert (tmp_path / "root" / "flowers17" / "jpg" / "image_0080.jpg").is_file()
    assert main(["verify", "scene15", "--data-root", str(tmp_path / "root")]) == 1
    assert main(["list", "--data-root", str(tmp_path / "root")]) == 0
    assert "flowers17" in capsys.readouterr().out


def _domainbed_pacs(data_root: Path, per_domain: dict[str, int], image: Any = None) -> Path:
    """PACS as DomainBed's download script leaves it: <root>/PACS/<domain>/<class>/<file>, no split files."""
    classes = dataset_spec("pacs")["layout"]["classes"]
    for domain, n in per_domain.items():
        for i in range(n):
            path = data_root / "PACS" / domain / classes[i % len(classes)] / f"pic_{i:04d}.jpg"
            if image is None:
                touch(path)
            else:
                image(path, i)
    return data_root / "PACS"


@pytest.mark.slow
def test_a_domainbed_copy_of_pacs_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cnnfeat.data import main

    _domainbed_pacs(tmp_path, dataset_spec("pacs")["expected"]["per_domain"])  # the full 9,991 files
    ds = load_dataset("pacs", tmp_path)  # strict: every count matches
    assert ds.layout.startswith("DomainBed") and ds.root == tmp_path / "PACS" and ds.official_splits == {}
    assert main(["verify", "pacs", "--data-root", str(tmp_path)]) == 0
    assert "pacs: verified (DomainBed" in capsys.readouterr().out
    assert main(["list", "--data-root", str(tmp_path)]) == 0
    assert [line.split()[3] for line in capsys.readouterr().out.splitlines() if line.startswith("pacs ")] == ["yes"]


def test_no_known_layout_lists_what_was_tried_and_found(tmp_path: Path) -> None:
    touch(tmp_path / "pacs" / "readme.txt")
    (tmp_path / "pacs" / "photos").mkdir()
    with pytest.raises(DatasetError) as caught:
        load_dataset("pacs", tmp_path)
    message = str(caught.value)
    assert "official archive:" in message and "kfold/<domain>/<class>/<file>" in message
    assert "DomainBed" in message and f"{tmp_path / 'PACS'} does not exist" in message
    assert "photos/, readme.txt" in message  # what the official folder holds


def test_torchvision_copy_of_flowers102_and_its_single_split(tmp_path: Path) -> None:
    from scipy.io import savemat

    from cnnfeat.runner import expand

    root = tmp_path / "flowers-102"  # torchvision.datasets.Flowers102's folder
    for i in range(1, 7):
        touch(root / "jpg" / f"image_{i:05d}.jpg")
    savemat(root / "imagelabels.mat", {"labels": np.array([[1, 1, 2, 2, 3, 3]])})
    savemat(root / "setid.mat", {"trnid": np.array([[1, 3, 5]]), "valid": np.array([[2]]), "tstid": np.array([[4, 6]])})
    ds = load_dataset("flowers102", tmp_path, strict=False)
    assert ds.layout.startswith("torchvision") and len(ds.official_splits["1"]["test"]) == 2
    # one official split: the default seeds 0 1 2 make one run, not two failures
    assert [(r.protocol, r.seed) for r in expand(["hog"], ["logreg"], ["flowers102"], ["default"], [0, 1, 2])] == [
        ("official", 0)
    ]
    assert len(expand(["hog"], ["logreg"], ["sun397"], ["official"], [0, 1, 2])) == 3  # ten official splits


def test_benchmark_runs_a_domainbed_pacs_and_says_official_needs_split_files(tmp_path: Path) -> None:
    from PIL import Image

    from cnnfeat.benchmark import main

    def image(path: Path, i: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        hue = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200), (40, 200, 200),
                        (120, 120, 120)][i % 7])  # fmt: skip
        Image.fromarray(np.clip(hue + np.random.default_rng(i).normal(0, 15, (24, 24, 3)), 0, 255).astype(np.uint8)).save(path)

    _domainbed_pacs(tmp_path / "data", {"art_painting": 14, "cartoon": 14, "photo": 14, "sketch": 14}, image)
    out = tmp_path / "out"
    common = ["--datasets", "pacs", "--methods", "color_hist", "--data-root", str(tmp_path / "data"), "--no-strict"]
    common += ["--cache", str(tmp_path / "cache"), "--no-progress"]
    assert main([*common, "--protocol", "full", "--out", str(out)]) == 0
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == 12 and all(r["status"] == "ok" for r in records)
    assert {r["data"]["layout"] for r in records} == {"DomainBed (domainbed/scripts/download.py)"}
    assert main([*common, "--protocol", "lodo", "--out", str(tmp_path / "lodo")]) == 0
    table = (tmp_path / "lodo" / "table.md").read_text()
    assert "| method | pacs ->art_painting | pacs ->cartoon | pacs ->photo | pacs ->sketch | average |" in table
    assert main([*common, "--protocol", "official", "--out", str(tmp_path / "official")]) == 1
    failed = [json.loads(p.read_text()) for p in (tmp_path / "official" / "records").glob("*.json")]
    assert failed and all("has no official split files" in r["error"] for r in failed)


def test_leave_one_domain_out_trains_on_the_official_splits_of_the_other_domains(tmp_path: Path) -> None:
    from cnnfeat.runner import RunSpec, expand

    root = _official_pacs(tmp_path / "pacs", val=(2,))  # files[5]: in no official training part
    ds = load_dataset("pacs", tmp_path, strict=False)
    runs = expand(["hog"], ["logreg"], ["pacs"], ["lodo"], [0, 1, 2])
    assert [r.protocol for r in runs] == ["lodo:art_painting", "lodo:cartoon", "lodo:photo", "lodo:sketch"]  # one seed each
    assert runs[2].column == "pacs ->photo"
    split = runs[2].split(ds)
    domains = np.asarray(ds.manifest.domains)
    assert set(domains[split.test]) == {"photo"} and len(split.test) == 6
    assert set(domains[split.train]) == {"art_painting", "cartoon", "sketch"} and len(split.train) == 3 * 5  # train+val
    # without split files (DomainBed's copy), every image of the other domains trains
    for name in root.glob("*_kfold.txt"):
        name.unlink()
    plain = RunSpec("hog", "logreg", "pacs", "lodo:photo", 0).split(load_dataset("pacs", tmp_path, strict=False))
    assert len(plain.train) == 18 and "all their images" in plain.description
