"""cnnfeat data: list, download and verify the benchmark datasets of the catalog.

Examples::

    cnnfeat data list
    cnnfeat data download flowers102 --data-root ~/data
    cnnfeat data verify office31 scene15 --data-root ~/data --content
    cnnfeat data layouts pacs      # the official layout and the download scripts' layouts accepted

Exit status: 0 all good, 1 a download or verification failed, 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from cnnfeat.catalog import (
    check_dataset,
    dataset_spec,
    layouts_of,
    list_datasets,
    load_dataset,
    present_folder,
    resolve_data_root,
)
from cnnfeat.console import plain_text, setup
from cnnfeat.download import download, safe_extract
from cnnfeat.exceptions import DatasetError, DownloadError, UnsafeArchiveError


def _list(root: Path) -> int:
    print(f"{'name':<18} {'images':>8} {'classes':>8}  {'present':<8} title")
    for name in list_datasets():
        spec = dataset_spec(name)
        present = "built in" if not spec["files"] else "yes" if present_folder(name, root) else "-"
        print(f"{name:<18} {spec['expected']['images']:>8} {spec['expected']['classes']:>8}  {present:<8} {spec['title']}")
    print(f"\ndata root: {root}")
    return 0


def _layouts(name: str) -> None:
    for layout_name, folder, layout in layouts_of(dataset_spec(name)):
        note = f"  ({layout['note']})" if layout.get("note") and layout_name != "official archive" else ""
        print(f"{name}: {layout_name}: <data root>/{folder}/{layout['pattern']}{note}")


def _verify(name: str, root: Path, content: bool) -> bool:
    try:
        dataset = load_dataset(name, root, strict=False)
        problems = check_dataset(dataset, content=content)
        where = f" ({dataset.layout} layout, {dataset.root})"
    except DatasetError as exc:
        problems, where = [str(exc)], ""
    print(f"{name}: " + (f"verified{where}" if not problems else f"PROBLEMS{where}\n  " + "\n  ".join(problems)))
    return not problems


def _download(name: str, root: Path, progress: bool, trust_unverified: bool = False) -> bool:
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
                # an archive with no checksum of its own is still pinned where the catalog has the unpacked
                # content's digest: `download` then verifies that (--content) after unpacking
                pinned = trust_unverified or bool(spec.get("content_sha256"))
                download(url, dest, md5=entry["md5"], progress=bar, trust_unverified=pinned)
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


def _progress_bar(label: str) -> Callable[[int, int | None], None]:
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="B", unit_scale=True, file=sys.stderr)

    def update(done: int, total: int | None) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "cnnfeat data", description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-root", type=Path, help="folder holding one sub-folder per dataset (default: $CNNFEAT_DATA or the cache)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="the catalog, and which datasets are present")
    get = sub.add_parser("download", help="download (checksum verified before unpacking) and unpack")
    get.add_argument("names", nargs="+", choices=list_datasets(), metavar="NAME")
    get.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    get.add_argument(
        "--trust-unverified",
        action="store_true",
        help="also fetch files that have no published or pinned checksum (their sha256 is logged)",
    )
    check = sub.add_parser("verify", help="check layout, image and class counts and official splits")
    check.add_argument("names", nargs="+", choices=list_datasets(), metavar="NAME")
    check.add_argument("--content", action=argparse.BooleanOptionalAction, default=False, help="also compare the content digest")
    shapes = sub.add_parser("layouts", help="the folder layouts each dataset is accepted in")
    shapes.add_argument("names", nargs="*", choices=list_datasets(), metavar="NAME")
    for p in (listing, get, check, shapes):
        p.add_argument("--data-root", type=Path, default=argparse.SUPPRESS, help="as above, after the subcommand")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    args = parser.parse_args(argv)
    setup(args.verbose)
    root = resolve_data_root(args.data_root)
    if args.command == "list":
        return _list(root)
    if args.command == "layouts":
        for name in args.names or list_datasets():
            _layouts(name)
        return 0
    failed = False
    for name in args.names:
        if args.command == "download" and not _download(name, root, args.progress, args.trust_unverified):
            failed = True
            continue
        content = getattr(args, "content", False) or args.command == "download"  # a download is checked to the byte
        failed = not _verify(name, root, content) or failed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
