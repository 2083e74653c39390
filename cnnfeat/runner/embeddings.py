"""2-D t-SNE maps of a network's earliest and latest tap, made when the runs are, from the features they used.

Where a suite probes one network at three or more taps, :func:`write_layer_maps` embeds up
to 1,500 of the dataset's images at the first and the last tap and writes the coordinates
to ``<out>/embeddings/tsne_<dataset>_<backbone>.json``; the report draws them
(:func:`cnnfeat.plots.tsne_map`) without reading a feature again.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cnnfeat.files import atomic_write
from cnnfeat.methods import Method
from cnnfeat.runner.features import FeatureBank
from cnnfeat.runner.records import Record

__all__ = ["LayerMaps", "embed_2d", "load_layer_maps", "probed_at_several_taps", "write_layer_maps"]

#: images per map: t-SNE's cost grows with their square
MAX_POINTS = 1500


@dataclass(frozen=True)
class LayerMaps:
    """A network's t-SNE maps on one dataset: per tap, each image's 2-D coordinates; the images' labels."""

    dataset: str
    backbone: str
    labels: list[str]
    maps: dict[str, list[list[float]]]

    @property
    def name(self) -> str:
        return f"tsne_{self.dataset}_{self.backbone}"


def embed_2d(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE embedding of standardised rows (PCA to 50 dimensions first where they are wider)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler().fit_transform(X)
    if X.shape[1] > 50:
        X = PCA(n_components=50, random_state=seed).fit_transform(X)
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, max(5, len(X) // 10)))
    return np.asarray(tsne.fit_transform(X))


def probed_at_several_taps(records: Sequence[Record]) -> dict[tuple[str, str], Record]:
    """Per (dataset, backbone): a record of a network probed at three or more taps."""
    groups: dict[tuple[str, str], Record] = {}
    for r in records:
        method = Method.parse(r.method) if r.ok else None
        if method is not None and method.kind == "cnn" and len(r.features.taps) >= 3:
            groups.setdefault((r.dataset, method.backbone), r)
    return groups


def write_layer_maps(bank: FeatureBank, records: Sequence[Record], out: str | os.PathLike[str]) -> list[Path]:
    """The maps of every network the records probe at three or more taps, unless written before; returns their files."""
    written = []
    for (dataset_name, backbone), record in probed_at_several_taps(records).items():
        path = Path(out) / "embeddings" / f"tsne_{dataset_name}_{backbone}.json"
        if path.is_file():
            continue
        dataset = bank.dataset(dataset_name)
        blocks, _ = bank.network(Method.parse(record.method), dataset)  # the features the runs used
        taps = record.features.taps
        rows = np.random.default_rng(0).permutation(len(dataset.manifest))[:MAX_POINTS]
        maps = {tap: embed_2d(blocks[tap][rows]).round(3).tolist() for tap in (taps[0], taps[-1])}
        found = LayerMaps(dataset_name, backbone, [str(dataset.manifest.labels[i]) for i in rows], maps)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, functools.partial(_write_text, text=json.dumps(asdict(found))))
        written.append(path)
    return written


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def load_layer_maps(out: str | os.PathLike[str]) -> list[LayerMaps]:
    """The maps written into a results folder, by file name."""
    return [LayerMaps(**json.loads(p.read_text())) for p in sorted((Path(out) / "embeddings").glob("tsne_*.json"))]
