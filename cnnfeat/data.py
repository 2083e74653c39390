"""``python -m cnnfeat.data``: list, download and verify the benchmark datasets of the catalog.

Examples::

    python -m cnnfeat.data list
    python -m cnnfeat.data download flowers102 --data-root ~/data
    python -m cnnfeat.data verify office31 scene15 --data-root ../shared/datasets --content

Exit status: 0 all good, 1 a download or verification failed, 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnfeat.catalog import DatasetError, dataset_spec, list_datasets, resolve_data_root, verify_dataset
from cnnfeat.download import DownloadError, UnsafeArchiveError, download, safe_extract


def _list(root: Path) -> int:
    print(f"{'name':<18} {'images':>8} {'classes':>8}  {'present':<8} title")
    for name in list_datasets():
        spec = dataset_spec(name)
        present = "built in" if not spec["files"] else "yes" if (root / spec["folder"]).is_dir() else "-"
        print(f"{name:<18} {spec['expected']['images']:>8} {spec['expected']['classes']:>8}  {present:<8} {spec['title']}")
    print(f"\ndata root: {root}")
    return 0


def _download(name: str, root: Path, progress: bool) -> bool:
    spec = dataset_spec(name)
    folder = root / spec["folder"]
    ok = True
    for entry in spec["files"]:
        dest = folder / "downloads" / entry["filename"] if entry["unpack"] else folder / entry["filename"]
        urls = entry["urls"]
        if not urls and not dest.exists():
            print(f"{name}: {entry['filename']} has no direct download ({entry.get('note', '')}); see {spec['homepage']} "
                  f"and place it at {dest}", file=sys.stderr)  # fmt: skip
            ok = ok and bool(entry.get("optional"))
            continue
        for url in urls or [""]:
            try:
                bar = _progress_bar(entry["filename"]) if progress and url else None
                download(url, dest, md5=entry["md5"], progress=bar)
                break
            except DownloadError as exc:
                print(f"{name}: {exc}", file=sys.stderr)
        else:
            ok = ok and bool(entry.get("optional"))
            continue
        try:
            if entry["unpack"]:
                safe_extract(dest, folder)
        except (UnsafeArchiveError, OSError) as exc:
            print(f"{name}: cannot unpack {dest}: {exc}", file=sys.stderr)
            ok = False
    return ok


def _progress_bar(label: str):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="B", unit_scale=True, file=sys.stderr)

    def update(done: int, total: int | None) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnfeat.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-root", type=Path, help="folder holding one sub-folder per dataset (default: $CNNFEAT_DATA or the cache)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="the catalog, and which datasets are present")
    get = sub.add_parser("download", help="download (checksum verified before unpacking) and unpack")
    get.add_argument("names", nargs="+", choices=list_datasets(), metavar="NAME")
    get.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    check = sub.add_parser("verify", help="check layout, image and class counts and official splits")
    check.add_argument("names", nargs="+", choices=list_datasets(), metavar="NAME")
    check.add_argument("--content", action=argparse.BooleanOptionalAction, default=False, help="also compare the content digest")
    for p in (listing, get, check):
        p.add_argument("--data-root", type=Path, default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = resolve_data_root(args.data_root)
    if args.command == "list":
        return _list(root)
    failed = False
    for name in args.names:
        if args.command == "download" and not _download(name, root, args.progress):
            failed = True
            continue
        try:
            problems = verify_dataset(name, root, content=getattr(args, "content", False))
        except DatasetError as exc:
            problems = [str(exc)]
        print(f"{name}: " + ("verified" if not problems else "PROBLEMS\n  " + "\n  ".join(problems)))
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
