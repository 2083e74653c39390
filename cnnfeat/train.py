"""cnnfeat train: fit a method on all of your images and save it as a model file that is safe to share.

Examples:

    cnnfeat train --data ~/photos --output photos.cnnfeat-model
    cnnfeat train --data ~/photos --method cnn:efficientnet_lite0/block6d_add --normalize power+l2 --output m.cnnfeat-model
    cnnfeat train --data ~/photos --recipe results/best/recipes.json --output m.cnnfeat-model

The model is the method's features, the normalisation and a logistic regression whose C is
chosen on a validation split of the images (as the benchmark's probe does), refitted on all of
them. cnnfeat predict MODEL IMAGES... uses it; cnnfeat.load_model gives the scikit-learn pipeline.

Exit status: 0 saved; 1 error; 2 bad command line; 3 saved, but some images were skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from cnnfeat.console import parse_command, plain_text
from cnnfeat.hints import JSONObject

DEFAULT_METHOD = "cnn:efficientnet_lite0/pool"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnfeat train", description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, type=Path, help="your images: a folder tree <class>/<file> or a CSV path,label")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--method", help=f"the features (default: {DEFAULT_METHOD})")
    how.add_argument("--recipe", type=Path, help="a recipes.json of `cnnfeat benchmark --suite best`: its most chosen recipe")
    p.add_argument("--normalize", default="none", help="none, l2, power, power+l2 or chi2 (default: none; hog: chi2)")
    p.add_argument("--output", required=True, type=Path, help="the model file to write")
    p.add_argument("--cache", type=Path, help="feature cache folder (default: the user cache)")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip", help="unreadable images (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    return p


def _from_recipe(path: Path) -> tuple[str, str, str]:
    """``(method, normalize, what)`` of the recipe chosen on most splits of a recipe search."""
    from cnnfeat.exceptions import ConfigError

    try:
        chosen = Counter(entry["chosen"] for entry in json.loads(path.read_text()) if entry.get("chosen"))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: not a recipes.json of a recipe search ({exc})") from None
    if not chosen:
        raise ConfigError(f"{path}: no recipe was chosen on any split")
    (row, count), total = chosen.most_common(1)[0], sum(chosen.values())
    parts = row.split(" + ")
    if parts[-1] != "logreg" or len(parts) > 3:
        raise ConfigError(f"{path}: the chosen recipe {row!r} is not features [+ normalisation] + logreg")
    return parts[0], parts[1] if len(parts) == 3 else "none", f"recipe {row!r}, chosen on {count} of {total} splits"


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_command(_parser(), argv, prog)
    from cnnfeat.exceptions import CnnfeatError, ConfigError
    from cnnfeat.model_file import check_trainable

    try:
        if args.recipe:
            method, normalize, chosen_by = _from_recipe(args.recipe)
        else:
            method = args.method or DEFAULT_METHOD
            normalize = "chi2" if method == "hog" and args.normalize == "none" else args.normalize
            chosen_by = "given"
        parsed = check_trainable(method, normalize)
        parsed.check()
    except (CnnfeatError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _train(args, method, normalize, chosen_by)
    except CnnfeatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _train(args: argparse.Namespace, method: str, normalize: str, chosen_by: str) -> int:
    import time

    import numpy as np
    from sklearn.pipeline import make_pipeline

    from cnnfeat.catalog import dataset_from_inputs
    from cnnfeat.config import cache_dir
    from cnnfeat.methods import Method
    from cnnfeat.model_file import ModelCard, save_model
    from cnnfeat.normalize import make_normalizer
    from cnnfeat.probes import SweptLinearClassifier

    started = time.perf_counter()
    dataset = dataset_from_inputs(args.data, screen=args.on_error == "skip")
    for path, reason in dataset.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    paths, labels = dataset.manifest.paths, np.asarray(dataset.manifest.labels, dtype=object)
    print(f"{len(paths)} images, {len(dataset.manifest.classes)} classes from {args.data}; {method}", file=sys.stderr)
    features = Method.parse(method).make_features(args.cache or cache_dir() / "features")
    X = features.transform(paths)
    probe = make_pipeline(make_normalizer(normalize), SweptLinearClassifier()).fit(X, labels)
    swept = probe[-1]
    measured: JSONObject = {
        "validation_accuracy": float(swept.val_scores_[swept.C_]),
        "validation": "20 % of the images held out to choose C, then refitted on all",
        "C": float(swept.C_),
        "images": len(paths),
        "chosen_by": chosen_by,
    }
    card = ModelCard(
        method=method,
        normalize=normalize,
        classes=[str(c) for c in swept.classes_],
        data_digest=dataset.digest,
        data=str(args.data),
        measured=measured,
    )
    save_model(args.output, probe, card)
    print(
        f"saved {args.output}: {method}"
        + (f" + {normalize}" if normalize != "none" else "")
        + f" + logreg (C {swept.C_:.3g}, validation accuracy {100 * measured['validation_accuracy']:.1f} %), "
        f"{len(card.classes)} classes; {time.perf_counter() - started:.1f} s"
    )
    return 3 if dataset.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
