"""``cnnfeat``: one command for everything (``python -m cnnfeat`` is the same).

Subcommands ``extract``, ``benchmark`` and ``data`` are the commands that also run
as ``python -m cnnfeat.<name>``; ``info`` and ``export`` read a feature store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cnnfeat.console import setup

EXAMPLES = """\
commands:
  extract     features of image files into an HDF5 feature store      (cnnfeat extract --help)
  benchmark   methods x probes x datasets x protocols x seeds -> tables (cnnfeat benchmark --help)
  data        the dataset catalog: list, download, verify, layouts      (cnnfeat data --help)
  report      rebuild a results folder's tables, figures and report.html
  train       fit a method on your images into a model file             (cnnfeat train --help)
  predict     classify images with a model file, into a CSV             (cnnfeat predict --help)
  info        what a feature store holds
  export      a feature store as .npz, .parquet or .csv

examples:
  cnnfeat extract ~/photos --layers pool --output photos.h5
  cnnfeat info photos.h5
  cnnfeat info photos.h5 --check                                      # every chunk through its checksum
  cnnfeat export photos.h5 --format parquet --output photos.parquet   # pandas.read_parquet / polars.read_parquet
  cnnfeat benchmark --data ~/photos                                   # Lite0 vs HOG on your images, 5-fold
  cnnfeat train --data ~/photos --output photos.cnnfeat-model         # then: cnnfeat predict MODEL IMAGES...
  cnnfeat data list --data-root ~/data

Exit status: 0 success, 1 error, 2 bad command line, 3 done but some images skipped.
"""


def _report(argv: Sequence[str], prog: str) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Rebuild a results folder's tables, figures and report.html from its records (no run is redone).",
    )
    parser.add_argument("out", type=Path, help="a folder written by cnnfeat benchmark (it holds records/)")
    parser.add_argument("--data-root", type=Path, help="where the datasets are, for figures that read features")
    args = parser.parse_args(list(argv))
    from cnnfeat.benchmark import main as benchmark

    extra = ["--data-root", str(args.data_root)] if args.data_root else []
    code = benchmark(["--tables-only", "--out", str(args.out), *extra], prog=prog)
    if code == 0:
        print(f"report: {args.out / 'report.html'}", file=sys.stderr)
    return code


def _info(argv: Sequence[str], prog: str) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="What a feature store holds: rows, taps and widths, dtype, size, configuration.",
        epilog="examples:\n  cnnfeat info photos.h5\n  cnnfeat info photos.h5 --json | jq .config.backbone\n"
        "  cnnfeat info photos.h5 --check    # exit status 1 if any chunk fails its checksum",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", help="an HDF5 feature store written by cnnfeat")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    parser.add_argument(
        "--check", action="store_true", help="read every chunk through its checksum; exit 1 if anything is damaged"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup(args.verbose)
    from cnnfeat.export import store_info

    if args.check:
        return _check(args.store)
    info = store_info(args.store)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    config = info["config"]
    print(f"file:        {info['file']} ({info['bytes'] / 1e6:.1f} MB)")
    print(f"rows:        {info['rows']}")
    print("taps:        " + ", ".join(f"{t} ({d})" for t, d in info["taps"].items()) + f"; stored as {info['dtype']}")
    backbone, image = config.get("backbone"), config.get("image") or {}
    what = [f"backbone {backbone['name']}"] if isinstance(backbone, dict) else []
    what += [f"{k} {config[k]}" for k in ("weights", "pooling", "precision") if k in config]
    what += [f"{k} {image[k]}" for k in ("size", "resize", "views") if k in image]
    print(f"extractor:   {config.get('extractor', '?')}" + (f" ({', '.join(what)})" if what else ""))
    print(f"fingerprint: {info['fingerprint']}")
    attrs = info["attrs"]
    written = f"cnnfeat {attrs.get('cnnfeat_version', '?')}, format {attrs.get('format_version')}"
    print(f"written by:  {written}, {attrs.get('created', '')}")
    if "index" in info:
        index = info["index"]
        print(f"last run:    {index['inputs']} inputs, {index['skipped']} skipped; index columns {', '.join(index['columns'])}")
    if "journal_bytes" in info:
        print(f"journal:     {info['journal_bytes']} bytes not yet merged (the next writer merges them)")
    return 0


def _check(path: str) -> int:
    from cnnfeat.exceptions import row_spans
    from cnnfeat.store import check_store

    damage = check_store(path)
    if not damage:
        print(f"{path}: intact (every chunk matches its checksum, every string column its digest)")
        return 0
    for dataset, rows in damage.items():
        print(f"{path}: /{dataset} damaged: " + (f"rows {row_spans(rows)}" if rows else "its digest differs (rows unknown)"))
    print("extract again (healing is on by default) to drop and recompute the damaged rows from the images")
    return 1


def _export(argv: Sequence[str], prog: str) -> int:
    from cnnfeat.export import EXPORT_FORMATS

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write a feature store's features, with path, label and key columns, in the order of its index.",
        epilog="examples:\n"
        "  cnnfeat export photos.h5 --format parquet --output photos.parquet\n"
        "  cnnfeat export vgg.h5 --tap fc1 --format npz --output fc1.npz\n"
        "  cnnfeat export photos.h5 --output photos.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", help="an HDF5 feature store written by cnnfeat")
    parser.add_argument("--format", choices=EXPORT_FORMATS, help="default: from --output's suffix")
    parser.add_argument("-o", "--output", help="the file to write (default: the store's name with the format's suffix)")
    parser.add_argument("--tap", action="append", help="taps to export, comma-separated or repeated (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup(args.verbose)
    from pathlib import Path

    from cnnfeat.export import export_features

    if not args.format and not args.output:
        parser.error("give --format or an --output with a suffix (.npz, .parquet, .csv)")
    output = Path(args.output) if args.output else Path(args.store).with_suffix(f".{args.format}")
    if args.format is None and output.suffix.lstrip(".").lower() not in EXPORT_FORMATS:
        parser.error(f"cannot tell the format from {output.name!r}; give --format")
    taps = [t for value in args.tap or [] for t in value.split(",") if t.strip()] or None
    n = export_features(args.store, output, format=args.format, taps=taps)
    print(f"{n} rows -> {output}", file=sys.stderr)
    return 0


def _delegate(module: str) -> Callable[[Sequence[str], str], int]:
    def run(argv: Sequence[str], prog: str) -> int:
        import importlib

        return int(importlib.import_module(module).main(list(argv), prog=prog))

    return run


COMMANDS: dict[str, Callable[[Sequence[str], str], int]] = {
    "extract": _delegate("cnnfeat.extract"),
    "benchmark": _delegate("cnnfeat.benchmark"),
    "data": _delegate("cnnfeat.data"),
    "report": _report,
    "train": _delegate("cnnfeat.train"),
    "predict": _delegate("cnnfeat.predict"),
    "info": _info,
    "export": _export,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cnnfeat`` console script."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # the reader went away (`cnnfeat info f.h5 | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the final flush is quiet too
        return 0


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: cnnfeat <command> [options]\n\n" + EXAMPLES)
        return 0 if argv else 2
    if argv[0] == "--version":
        from cnnfeat import __version__

        print(f"cnnfeat {__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        from cnnfeat.exceptions import did_you_mean

        print(f"cnnfeat: unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)}; see cnnfeat --help", file=sys.stderr)
        return 2
    from cnnfeat.exceptions import CnnfeatError

    try:
        return command(argv[1:], f"cnnfeat {argv[0]}")
    except CnnfeatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
