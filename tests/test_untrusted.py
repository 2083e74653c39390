"""Untrusted files: archives that try to escape, downloads that do not match, paths outside the data root."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from cnnfeat.download import download, safe_extract
from cnnfeat.exceptions import DownloadError, InputListError, UnsafeArchiveError
from cnnfeat.inputs import Manifest, load_inputs
from tests.support import make_unsafe_archives


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_unsafe_archives_are_refused_and_write_nothing(tmp_path: Path) -> None:
    cases = make_unsafe_archives(tmp_path / "archives")
    assert len(cases) >= 9
    for kind, archive in cases.items():
        target = tmp_path / "out" / archive.stem
        with pytest.raises(UnsafeArchiveError):
            safe_extract(archive, target)
        assert not any(target.rglob("*")), f"{kind}: an unsafe archive left files behind"
    assert not list(tmp_path.rglob("pwned.txt")) and not Path("/tmp/cnnfeat_pwned").exists()


def test_safe_archives_extract(tmp_path: Path) -> None:
    z = _zip(tmp_path / "ok.zip", {"jpg/image_0001.jpg": b"a", "jpg/image_0002.jpg": b"b"})
    assert sorted(p.name for p in safe_extract(z, tmp_path / "z")) == ["image_0001.jpg", "image_0002.jpg"]
    t = tmp_path / "ok.tar"
    with tarfile.open(t, "w") as archive:
        info = tarfile.TarInfo("jpg/image_0001.jpg")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"a"))
        link = tarfile.TarInfo("jpg/alias.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "image_0001.jpg"
        archive.addfile(link)
    safe_extract(t, tmp_path / "t")
    assert (tmp_path / "t/jpg/alias.jpg").read_bytes() == b"a" and not (tmp_path / "t/jpg/alias.jpg").is_symlink()


def test_download_verifies_sha256_before_keeping_the_file(tmp_path: Path) -> None:
    payload = b"dataset bytes"
    source = tmp_path / "remote.tgz"
    source.write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    dest = download(source.as_uri(), tmp_path / "dl" / "data.tgz", good)
    assert dest.read_bytes() == payload
    with pytest.raises(DownloadError, match="expected"):
        download(source.as_uri(), tmp_path / "dl2" / "data.tgz", "0" * 64)
    assert not list((tmp_path / "dl2").iterdir()), "a file with the wrong checksum was kept"


def test_download_offline_says_where_to_put_the_file(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"place it at .*data\.tgz"):
        download("http://127.0.0.1:9/none.tgz", tmp_path / "data.tgz", "0" * 64, timeout=5)


def test_csv_paths_outside_the_data_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "ok.csv").write_text("path,label\nimg/a.jpg,x\n")
    assert Manifest.from_csv(root / "ok.csv").paths == [str(root / "img/a.jpg")]
    (root / "escape.csv").write_text("path,label\n../secret.jpg,x\n")
    with pytest.raises(InputListError, match=r"escape\.csv, line 2: .*outside the data root"):
        Manifest.from_csv(root / "escape.csv")
    (root / "absolute.txt").write_text("/etc/passwd\n")
    with pytest.raises(InputListError, match="outside the data root"):
        load_inputs(root / "absolute.txt")
    assert load_inputs(root / "absolute.txt", allow_outside=True).paths == ["/etc/passwd"]
    assert Manifest.from_csv(root / "escape.csv", root=tmp_path).paths == [str(root / "../secret.jpg")]


def test_a_download_without_a_checksum_is_refused_unless_trusted_and_bounded(tmp_path: Path) -> None:
    # issue 27, finding 9: MIT-67 came over plain HTTP with no checksum; an intercepting proxy's 300 MB arrived unchecked
    source = tmp_path / "remote.tar"
    source.write_bytes(b"x" * 3000)
    with pytest.raises(DownloadError, match=r"no published or pinned checksum.*--trust-unverified"):
        download(source.as_uri(), tmp_path / "dl" / "data.tar")
    assert not (tmp_path / "dl").exists()  # refused before anything was fetched
    assert download(source.as_uri(), tmp_path / "dl" / "data.tar", trust_unverified=True).stat().st_size == 3000
    with pytest.raises(DownloadError, match="more than 1,000 bytes arrived"):
        download(source.as_uri(), tmp_path / "big" / "data.tar", hashlib.sha256(b"x" * 3000).hexdigest(), max_bytes=1000)
    assert not list((tmp_path / "big").iterdir())


def test_the_data_command_fetches_no_unverifiable_file_without_consent(tmp_path: Path, capsys) -> None:
    from cnnfeat.data import main

    assert main(["download", "mit67", "--data-root", str(tmp_path), "--no-progress"]) == 1
    assert "indoorCVPR_09.tar: no published or pinned checksum" in capsys.readouterr().err
    assert not (tmp_path / "mit67" / "downloads" / "indoorCVPR_09.tar").exists()


def test_archive_bombs_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    # finding 9: safe_extract had no size limit (a 300 KB zip became 300 MB)
    from cnnfeat.download import ExtractionLimits

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.jpg", b"\0" * (300 << 20))
    assert bomb.stat().st_size < 400_000
    with pytest.raises(UnsafeArchiveError, match=r"over the limit of .* possible archive bomb"):
        safe_extract(bomb, tmp_path / "out")
    assert not any((tmp_path / "out").rglob("*"))
    many = _zip(tmp_path / "many.zip", {f"{i}.jpg": b"a" for i in range(50)})
    with pytest.raises(UnsafeArchiveError, match="50 members, over the limit of 10"):
        safe_extract(many, tmp_path / "m", limits=ExtractionLimits(max_members=10))
    tar = tmp_path / "big.tar"
    with tarfile.open(tar, "w") as archive:
        info = tarfile.TarInfo("a.jpg")
        info.size = 5000
        archive.addfile(info, io.BytesIO(b"a" * 5000))
    with pytest.raises(UnsafeArchiveError, match="would unpack to 5,000 bytes"):
        safe_extract(tar, tmp_path / "t", limits=ExtractionLimits(max_bytes=4000))
    assert len(safe_extract(tar, tmp_path / "t2")) == 1  # within the defaults
