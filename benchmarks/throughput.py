"""Extraction throughput, files in -> features on disk, side by side with what users would use instead.

Contenders, on the same JPEGs, network and batch size:

- ``cnnfeat``: ``CNNFeatures.extract`` into a fresh HDF5 store (read, hash, decode,
  resize + centre crop, forward pass, commit), the network in Keras (the ``cnnfeat_*`` contenders: the other runtimes);
- ``keras_dataset``: the current tutorial recipe, ``keras.utils.image_dataset_from_directory``
  (tf.data, decoding in parallel with the forward pass) + ``model.predict`` + ``np.save``,
  with the same Keras model;
- ``keras_generator``: the older recipe still in most tutorials,
  ``tf.keras.preprocessing.image.ImageDataGenerator().flow_from_directory`` (PIL) +
  ``model.predict`` + ``np.save``;
- ``bare_model``: ``predict_on_batch`` on uint8 tensors already in memory: the ceiling;
- ``torch_dataloader``: a PyTorch model of the same architecture (ResNet-50 and VGG16 in
  plain torch, EfficientNet-Lite0 from ``efficientnet_lite_pytorch``; random weights) fed by
  a ``DataLoader`` with 2 workers decoding and transforming with PIL, then ``np.save``. It
  runs in the Python given by ``--torch-python`` (a benchmark-only environment with torch,
  pillow, numpy and efficientnet_lite_pytorch); skipped without it.

The images are Office-31 webcam JPEGs (640 x 480) when ``../shared/datasets`` is present;
otherwise, or with ``--generate N``, N photo-like JPEGs of 300-800 px a side are written first.

Every contender runs in its own fresh process (its own thread pools; model building and a
warm-up batch are not timed), and the rounds interleave the contenders because shared
machines are noisy; the best round of each is reported, with the ratios.

Usage::

    python benchmarks/throughput.py --torch-python /path/to/venv-with-torch/bin/python \\
        --networks efficientnet_lite0 resnet50 vgg16 --rounds 2 --json benchmarks/throughput.json
    # the profile: how much of (c) the input side leaves to (a) when both share the cores
    python benchmarks/throughput.py --networks efficientnet_lite0 --contenders cnnfeat bare_model decode_only --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support module, which is not shipped

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "office31" / "webcam" / "images"
CONTENDERS = ("cnnfeat", "keras_dataset", "keras_generator", "bare_model", "torch_dataloader")
#: cnnfeat on each runtime, end to end, and each runtime's bare exported graph on tensors in memory
RUNTIME_CONTENDERS = (
    "cnnfeat_auto", "cnnfeat_onnxruntime", "cnnfeat_openvino", "cnnfeat_openvino_bf16", "cnnfeat_onnxruntime_int8",
    "bare_onnxruntime", "bare_openvino", "bare_openvino_bf16", "bare_onnxruntime_int8",
)  # fmt: skip
#: not a contender: the input side alone, for the profile of (a) against (c)
EXTRA = ("decode_only", *RUNTIME_CONTENDERS)
#: images per network: VGG16 is 38x the multiply-adds of Lite0
DEFAULT_LIMITS = {"efficientnet_lite0": 480, "resnet50": 192, "vgg16": 64}


# --- workers: each runs in a fresh process and prints one JSON line -------------------------------


def _keras_model(network: str):  # type: ignore[no-untyped-def]
    from cnnfeat import build_backbone

    weights = "imagenet" if network.startswith("efficientnet_lite") else None
    return build_backbone(network, weights=weights, taps=("pool",))


def _extractor(
    network: str, batch: int, cache: Path | None, runtime: str = "keras", precision: str = "float32", paths: list[str] = ()
) -> Any:
    from cnnfeat import CNNFeatures

    weights = "imagenet" if network.startswith("efficientnet_lite") else None
    calibration = os.path.commonpath(paths) if precision == "int8" else None  # int8 calibrates on the timed images' folder
    return CNNFeatures(
        backbone=network, weights=weights, batch_size=batch, cache=cache, runtime=runtime, precision=precision,
        calibration=calibration,
    )  # fmt: skip


def worker_cnnfeat(
    paths: list[str], network: str, batch: int, tmp: Path, runtime: str = "keras", precision: str = "float32"
) -> float:
    extractor = _extractor(network, batch, tmp / "features.h5", runtime, precision, paths)
    size = extractor.image_transform().size
    warm = np.zeros((batch, size, size, 3), np.uint8)
    if extractor.resolved_runtime()[0] == "keras":  # built (and traced) outside the timing, like the other contenders
        extractor.network().model.predict_on_batch(warm)
    else:  # the exported graph loaded (or made, once per machine) and run once, outside the timing
        extractor.session()[1].run(warm)
    started = time.perf_counter()
    _, report = extractor.extract(paths, return_features=False)
    seconds = time.perf_counter() - started
    if report.n_computed != len(set(report.keys)):
        raise RuntimeError(f"computed {report.n_computed} of {len(paths)}")
    return seconds


def _class_folder(paths: list[str], tmp: Path) -> Path:
    """The recipes want class folders: link the files into one."""
    folder = tmp / "tree"
    for i, path in enumerate(paths):
        link = folder / "images" / f"{i:05d}{Path(path).suffix}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.abspath(path))
    return folder


def _keras_recipe(paths: list[str], network: str, batch: int, tmp: Path, batches: Callable[[Path, int], Any]) -> float:
    """Link the files into a class folder, then ``model.predict(batches(folder, size))`` + ``np.save``."""
    built = _keras_model(network)
    size = built.spec.input_size
    built.model.predict_on_batch(np.zeros((batch, size, size, 3), np.uint8))
    folder = _class_folder(paths, tmp)
    started = time.perf_counter()
    features = built.model.predict(batches(folder, size), verbose=0)
    np.save(tmp / "features.npy", features["pool"] if isinstance(features, dict) else features)
    return time.perf_counter() - started


def worker_keras_dataset(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    import keras

    def batches(folder: Path, size: int) -> Any:
        return keras.utils.image_dataset_from_directory(
            folder, labels=None, image_size=(size, size), batch_size=batch, shuffle=False, verbose=False
        )

    return _keras_recipe(paths, network, batch, tmp, batches)


def worker_keras_generator(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    def batches(folder: Path, size: int) -> Any:
        return ImageDataGenerator().flow_from_directory(
            folder, target_size=(size, size), batch_size=batch, class_mode=None, shuffle=False
        )

    return _keras_recipe(paths, network, batch, tmp, batches)


def worker_bare_model(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    built = _keras_model(network)
    size = built.spec.input_size
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    built.model.predict_on_batch(x)
    n_batches = max(1, len(paths) // batch)
    started = time.perf_counter()
    for _ in range(n_batches):
        built.model.predict_on_batch(x)
    return (time.perf_counter() - started) * len(paths) / (n_batches * batch)


def worker_cnnfeat_auto(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    return worker_cnnfeat(paths, network, batch, tmp, "auto")


def worker_cnnfeat_onnxruntime(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    return worker_cnnfeat(paths, network, batch, tmp, "onnxruntime")


def worker_cnnfeat_openvino(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    return worker_cnnfeat(paths, network, batch, tmp, "openvino")


def worker_cnnfeat_openvino_bf16(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    return worker_cnnfeat(paths, network, batch, tmp, "openvino", "bf16")


def worker_cnnfeat_onnxruntime_int8(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    return worker_cnnfeat(paths, network, batch, tmp, "onnxruntime", "int8")


def _bare_graph(paths: list[str], network: str, batch: int, runtime: str, precision: str = "float32") -> float:
    """The exported graph in one runtime, on one batch of tensors in memory, as ``bare_model`` runs Keras."""
    extractor = _extractor(network, batch, None, runtime, precision, paths)
    session = extractor.session()[1]
    size = extractor.image_transform().size
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    session.run(x)
    n_batches = max(1, len(paths) // batch)
    started = time.perf_counter()
    for _ in range(n_batches):
        session.run(x)
    return (time.perf_counter() - started) * len(paths) / (n_batches * batch)


def worker_bare_onnxruntime(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    return _bare_graph(paths, network, batch, "onnxruntime")


def worker_bare_openvino(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    return _bare_graph(paths, network, batch, "openvino")


def worker_bare_openvino_bf16(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    return _bare_graph(paths, network, batch, "openvino", "bf16")


def worker_bare_onnxruntime_int8(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    return _bare_graph(paths, network, batch, "onnxruntime", "int8")


def worker_decode_only(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    """cnnfeat's input side alone (read, hash, decode, resize + crop, on its thread pool): no network."""
    import hashlib

    from cnnfeat import CNNFeatures
    from cnnfeat.images import map_ordered

    transform = CNNFeatures(backbone=network).image_transform()

    def load(path: str) -> np.ndarray:
        data = Path(path).read_bytes()
        hashlib.sha256(data).digest()
        return transform.load(data, path)

    started = time.perf_counter()
    with contextlib.closing(map_ordered(load, paths, workers=os.cpu_count() or 1, max_ahead=4 * batch)) as loaded:
        for _, _, error in loaded:
            if error is not None:
                raise error
    return time.perf_counter() - started


def _torch_network(network: str):  # type: ignore[no-untyped-def]
    """Random-weight PyTorch networks of the same architectures, ending in the pooled features.

    torchvision's PyPI wheels do not load with the CPU-only torch this benchmark installs, so
    ResNet-50 and VGG16 are written out here (the standard definitions); Lite0 comes from the
    ``efficientnet_lite_pytorch`` package.
    """
    import torch
    from torch import nn

    if network == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        class Lite0Features(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = EfficientNet.from_name("efficientnet-lite0")

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net.extract_features(x)

        return nn.Sequential(Lite0Features(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if network == "vgg16":
        layers: list[nn.Module] = []
        channels = 3
        for width, repeats in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
            for _ in range(repeats):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = 4 * width
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )  # fmt: skip
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    blocks: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for width, repeats, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(repeats):
            blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = 4 * width
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def worker_torch_dataloader(paths: list[str], network: str, batch: int, tmp: Path) -> float:
    import torch
    from PIL import Image

    torch.set_num_threads(os.cpu_count() or 1)
    model = _torch_network(network).eval()
    size = 224
    mean = np.array([0.485, 0.456, 0.406], np.float32) * 255
    std = np.array([0.229, 0.224, 0.225], np.float32) * 255

    class Files(torch.utils.data.Dataset):
        """torchvision's Resize(256) + CenterCrop(224) + ToTensor + Normalize, in PIL and NumPy."""

        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            with Image.open(paths[i]) as image:
                image = image.convert("RGB")
                scale = int(size / 0.875) / min(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
                left, top = (image.width - size) // 2, (image.height - size) // 2
                pixels = np.asarray(image.crop((left, top, left + size, top + size)), np.float32)
            return torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1).copy())

    with torch.inference_mode():
        model(torch.zeros(batch, 3, size, size))
        started = time.perf_counter()
        loader = torch.utils.data.DataLoader(Files(), batch_size=batch, num_workers=2, shuffle=False)
        features = np.concatenate([model(x).numpy() for x in loader])
        np.save(tmp / "features.npy", features)
        return time.perf_counter() - started


def run_worker(args: argparse.Namespace) -> int:
    paths = Path(args.list).read_text().splitlines()
    with tempfile.TemporaryDirectory(prefix="cnnfeat-throughput-") as tmp:
        seconds = globals()[f"worker_{args.worker}"](paths, args.network, args.batch_size, Path(tmp))
    print(json.dumps({"images_per_s": len(paths) / seconds, "n": len(paths), "seconds": seconds}))
    return 0


# --- the parent: rounds x contenders, each in a fresh process ----------------------------------------


def _measure(contender: str, network: str, list_file: Path, batch: int, torch_python: str | None) -> float | None:
    python = torch_python if contender == "torch_dataloader" else sys.executable
    if python is None:
        return None
    cmd = [python, __file__, "--worker", contender, "--network", network, "--list", str(list_file), "--batch-size", str(batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"  {contender} on {network} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return float(json.loads(lines[-1])["images_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of JPEGs (default: Office-31 webcam)")
    parser.add_argument("--networks", nargs="+", default=list(DEFAULT_LIMITS))
    parser.add_argument("--limit", type=int, help="images per network (default: 480 Lite0, 192 ResNet50, 64 VGG16)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--torch-python", help="a Python with torch and efficientnet_lite_pytorch, for the PyTorch contender")
    parser.add_argument("--generate", type=int, default=0, help="use N generated JPEGs instead of --images")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS + EXTRA, default=list(CONTENDERS))
    parser.add_argument("--worker", choices=CONTENDERS + EXTRA, help=argparse.SUPPRESS)
    parser.add_argument("--network", help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)

    results: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="cnnfeat-throughput-") as tmp:
        if args.generate or not args.images.is_dir():
            from tests.support import make_photos

            n = args.generate or max(DEFAULT_LIMITS.values())
            print(f"{args.images} not used: writing {n} photo-like JPEGs of 300-800 px", file=sys.stderr)
            args.images = Path(tmp, "generated")
            make_photos(args.images, n, size=None)
        everything = sorted(str(p) for p in args.images.rglob("*.jpg"))
        for network in args.networks:
            paths = everything[: args.limit or DEFAULT_LIMITS.get(network, 256)]
            list_file = Path(tmp, f"{network}.txt")
            list_file.write_text("\n".join(paths))
            best: dict[str, float | None] = dict.fromkeys(args.contenders)
            for round_ in range(args.rounds):
                first = round_ % len(args.contenders)  # rotate who goes first
                for contender in args.contenders[first:] + args.contenders[:first]:
                    rate = _measure(contender, network, list_file, args.batch_size, args.torch_python)
                    if rate is not None:
                        best[contender] = max(best[contender] or 0.0, rate)
                print(
                    f"{network} round {round_ + 1}: " + ", ".join(f"{k} {v or 0:.1f}" for k, v in best.items()), file=sys.stderr
                )
            results[network] = {**best, "n_images": len(paths)}

    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    print(table(results))
    print(f"\nimages/s, best of {args.rounds} interleaved rounds, batch {args.batch_size}; {args.images}; {machine}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "batch_size": args.batch_size, "results": results}, indent=1))
    return 0


def table(results: dict[str, dict[str, float | None]]) -> str:
    """Markdown: images/s of each contender, and cnnfeat's ratio to each of the others.

    With ``decode_only`` measured, a second table gives the bound that sharing the cores
    puts on (a): decoding and the forward pass each need all the cores, so at best
    1 / (1/c + 1/decode) images/s.
    """

    def ratio(x: float | None, y: float | None) -> str:
        return f"{x / y:.2f}" if x and y else "—"

    def rate(v: float | None) -> str:
        return f"{v:.1f}" if v else "—"

    lines = [
        "| network | images | (a) cnnfeat | (b1) keras dataset recipe | (b2) keras generator recipe | (c) bare model "
        "| (d) torch DataLoader | a/c | a/b1 | a/b2 | a/d |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for network, r in results.items():
        a, b1, b2, c, d = (r.get(k) for k in CONTENDERS)
        cells = [rate(v) for v in (a, b1, b2, c, d)] + [ratio(a, other) for other in (c, b1, b2, d)]
        lines.append(f"| {network} | {r['n_images']} | " + " | ".join(cells) + " |")
    measured = [k for k in ("cnnfeat", *RUNTIME_CONTENDERS) if any(r.get(k) for r in results.values())]
    if any(k in RUNTIME_CONTENDERS for k in measured):
        lines += ["", "| network | (c) bare Keras model | " + " | ".join(measured) + " |"]
        lines.append("|---|---|" + "---|" * len(measured))
        for network, r in results.items():
            cells = [f"{rate(r.get(k))} ({ratio(r.get(k), r.get('bare_model'))}×)" for k in measured]
            lines.append(f"| {network} | {rate(r.get('bare_model'))} | " + " | ".join(cells) + " |")
    profiled = {network: r for network, r in results.items() if r.get("decode_only") and r.get("bare_model")}
    if profiled:
        lines += ["", "| network | (c) bare model | decode only | bound 1/(1/c + 1/decode) | (a) cnnfeat | a/bound |"]
        lines.append("|---|---|---|---|---|---|")
        for network, r in profiled.items():
            a, c, decode = r.get("cnnfeat"), r["bare_model"], r["decode_only"]
            bound = 1 / (1 / c + 1 / decode)  # type: ignore[operator]
            lines.append(f"| {network} | {rate(c)} | {rate(decode)} | {rate(bound)} | {rate(a)} | {ratio(a, bound)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
