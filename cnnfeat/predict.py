"""cnnfeat predict: classify images with a model file from cnnfeat train, into a CSV of labels and probabilities.

Examples:

    cnnfeat predict photos.cnnfeat-model new/*.jpg --output predictions.csv
    cnnfeat predict photos.cnnfeat-model held_out/ --output predictions.csv --top-k 3

A folder tree <class>/<file> whose classes are the model's also gets its accuracy reported.
The CSV has path, predicted, probability, then the next top-k labels and their probabilities,
and an error column for images that could not be read (skipped).

Exit status: 0 done; 1 error (a damaged or tampered model file); 2 bad command line; 3 done, but some
images were skipped.
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from pathlib import Path

from cnnfeat.console import parse_command, plain_text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnfeat predict", description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", type=Path, help="a model file written by cnnfeat train")
    p.add_argument("images", nargs="+", type=Path, help="image files, folders (trees) or CSV/text lists of paths")
    p.add_argument("--output", required=True, type=Path, help="the CSV to write")
    p.add_argument("--top-k", type=int, default=3, help="labels (with probabilities) per image (default: %(default)s)")
    p.add_argument("--cache", type=Path, help="feature cache folder (default: the user cache)")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip", help="unreadable images (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = _parser()
    args = parse_command(parser, argv, prog)
    if args.top_k < 1:
        parser.error("--top-k must be >= 1")
    from cnnfeat.exceptions import CnnfeatError

    try:
        return _predict(args)
    except CnnfeatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from cnnfeat.exceptions import SkippedImageWarning
    from cnnfeat.inputs import load_inputs
    from cnnfeat.model_file import load_model

    model = load_model(args.model, cache=args.cache)
    paths: list[str] = []
    labels: list[str] = []
    for source in args.images:
        manifest = load_inputs(source)
        paths += manifest.paths
        labels += manifest.labels
    model[0].set_params(on_error=args.on_error)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        X = model[0].transform(paths)
    skipped = dict(model[0].last_report_.skipped)
    ok = np.isfinite(X).all(axis=1)
    proba = np.full((len(paths), len(model.classes_)), np.nan)
    if ok.any():
        proba[ok] = model[1:].predict_proba(X[ok])
    classes = np.asarray(model.classes_, dtype=object)
    k = min(args.top_k, len(classes))
    header = ["path", "predicted", "probability"] + [
        f"top{i}{suffix}" for i in range(2, k + 1) for suffix in ("", "_probability")
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.writer(f)
        writer.writerow([*header, "error"])
        for i, path in enumerate(paths):
            if not ok[i]:
                writer.writerow([path] + [""] * (len(header) - 1) + [skipped.get(path, "could not be read")])
                continue
            order = np.argsort(-proba[i])[:k]
            cells = [c for j in order for c in (classes[j], f"{proba[i, j]:.4f}")]
            writer.writerow([path, *cells, ""])
    predicted = classes[np.nanargmax(np.where(ok[:, None], proba, -1), axis=1)]
    known = [i for i in range(len(paths)) if ok[i] and labels[i] in set(classes)]
    print(f"{int(ok.sum())} images classified, {len(paths) - int(ok.sum())} skipped -> {args.output}")
    if known:
        accuracy = float(np.mean([predicted[i] == labels[i] for i in known]))
        print(f"accuracy on the {len(known)} images whose folder names a class of the model: {100 * accuracy:.1f} %")
    for path, reason in skipped.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 3 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
