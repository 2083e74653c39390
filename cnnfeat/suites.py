"""Named benchmark grids: what ``cnnfeat benchmark --suite NAME`` runs (its flags override each part)."""

from __future__ import annotations

from typing import Any

__all__ = ["LITE0", "LITE0_TAPS", "SUITES"]

LITE0 = "cnn:efficientnet_lite0/pool"
#: the end of each stage of EfficientNet-Lite0, early to late, for the accuracy-per-layer curve
LITE0_TAPS = ["stem_activation", "block1a_project_bn", "block2b_add", "block3b_add", "block4c_add"]
LITE0_TAPS += ["block5c_add", "block6d_add", "block7a_project_bn", "pool"]
SUITES: dict[str, dict[str, Any]] = {
    "default": {
        "datasets": ["digits"],
        "methods": [LITE0, "hog"],
        "probes": ["logreg"],
        "protocols": ["default"],
        "seeds": [0, 1, 2],
    },
    "quick": {"datasets": ["digits"], "methods": [LITE0, "hog"], "probes": ["logreg"], "protocols": ["default"], "seeds": [0]},
    "layers": {
        "datasets": ["scene15"],
        "methods": [f"cnn:efficientnet_lite0/{tap}" for tap in LITE0_TAPS],
        "probes": ["logreg"],
        "protocols": ["default"],
        "seeds": [0, 1, 2],
    },
    "decaf": {
        "datasets": ["caltech101", "office31", "scene15", "flowers17"],
        "methods": [LITE0, "hog", "sift_bovw"],
        "probes": ["logreg", "svm"],
        "protocols": ["default", "sampled", "sampled_st"],
        "adapt": ["none", "coral", "sa"],
        "seeds": [0, 1, 2, 3, 4],
    },
}
