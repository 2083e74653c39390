"""A small domain tree cut from Office-31, where selective pseudo-labelling can collapse: the selectors' hard case.

The first 8 images (in name order) of 5 classes in each of the three domains, 120 images, written as a user's
folder (``<domain>/<class>/<file>``), then a recipe search over its six shifts with every adaptation of
``--suite best``. With 8 labelled source images per class, SPL's pseudo-labels can fall to chance, where no
adaptation is the right answer: a selector must not follow them.

    python benchmarks/small_source.py --data-root ../shared/datasets --out results/office31_small_source
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

CLASSES = ("back_pack", "bike", "calculator", "headphones", "mug")
DOMAINS = ("amazon", "dslr", "webcam")
PER_CLASS = 8


def make_folder(office31: Path, folder: Path) -> Path:
    """Copy the first ``PER_CLASS`` images of each class and domain into ``folder`` (made anew)."""
    shutil.rmtree(folder, ignore_errors=True)
    for domain in DOMAINS:
        for cls in CLASSES:
            (folder / domain / cls).mkdir(parents=True)
            for image in sorted((office31 / domain / "images" / cls).iterdir())[:PER_CLASS]:
                shutil.copyfile(image, folder / domain / cls / image.name)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/office31_small"), help="where the cut folder is written")
    parser.add_argument("--out", type=Path, default=Path("results/office31_small_source"))
    args = parser.parse_args(argv)
    from cnnfeat.benchmark import main as benchmark

    folder = make_folder(args.data_root / "office31", args.folder)
    command = [
        "--data", f"office31_small={folder}", "--protocol", "full", "--methods", "cnn:efficientnet_lite0/pool",
        "--probes", "logreg", "--normalize", "none", "--adapt", "none", "coral", "ot", "spl", "--choose-recipe",
        "--runtime", "keras", "--no-progress", "--skip-existing", "--out", str(args.out),
    ]  # fmt: skip
    return benchmark(command, prog="cnnfeat benchmark")


if __name__ == "__main__":
    sys.exit(main())
