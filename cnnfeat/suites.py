"""Named benchmark grids: what ``cnnfeat benchmark --suite NAME`` runs (its flags override each part)."""

from __future__ import annotations

from cnnfeat.hints import JSONObject

__all__ = ["FINETUNE_QUICK", "LITE0", "LITE0_TAPS", "RECIPES", "SUITES"]

LITE0 = "cnn:efficientnet_lite0/pool"
#: a cheap fine-tuning row for the default grid: the last block and a new head, trained on the cached maps of the
#: frozen front (10 head epochs, then 5 with the block unfrozen)
FINETUNE_QUICK = "finetune:efficientnet_lite0/top1?epochs=10&fine_tune_epochs=5"
#: the end of each stage of EfficientNet-Lite0, early to late, for the accuracy-per-layer curve
LITE0_TAPS = ["stem_activation", "block1a_project_bn", "block2b_add", "block3b_add", "block4c_add"]
LITE0_TAPS += ["block5c_add", "block6d_add", "block7a_project_bn", "pool"]
_LITE0_TWO_TAPS = "cnn:efficientnet_lite0/block6d_add,pool"
_LITE2_TWO_TAPS = "cnn:efficientnet_lite2/block6e_add,pool"
#: the recipe search's candidate features, cheapest first: one network's last two stages, two networks, and their
#: horizontally flipped views averaged in (Razavian's augmentation, the part that is not a crop)
RECIPES = [
    LITE0,
    _LITE0_TWO_TAPS,
    _LITE2_TWO_TAPS,
    f"{_LITE0_TWO_TAPS}+{_LITE2_TWO_TAPS}",
    f"{_LITE0_TWO_TAPS}@center+flip+{_LITE2_TWO_TAPS}@center+flip",
]
SUITES: dict[str, JSONObject] = {
    # the three questions on the built-in satellite photos: how far (the CNN against HOG), how fast (the cost
    # columns), and would fine-tuning do better
    "default": {
        "datasets": ["eurosat_mini"],
        "methods": [LITE0, "hog", FINETUNE_QUICK],
        "probes": ["logreg"],
        "protocols": ["default"],
        "seeds": [0, 1, 2],
    },
    "quick": {
        "datasets": ["eurosat_mini"],
        "methods": [LITE0, "hog"],
        "probes": ["logreg"],
        "protocols": ["default"],
        "seeds": [0],
    },
    "layers": {
        "datasets": ["scene15"],
        "methods": [f"cnn:efficientnet_lite0/{tap}" for tap in LITE0_TAPS],
        "probes": ["logreg"],
        "protocols": ["default"],
        "seeds": [0, 1, 2],
    },
    "best": {  # every candidate on every split; the row chosen on validation (cnnfeat.recipes) is the answer
        "datasets": ["scene15", "flowers17", "office31"],
        "methods": RECIPES,
        "probes": ["logreg", "knn"],
        "normalize": ["none", "power+l2"],
        "protocols": ["default"],
        "adapt": ["none", "coral", "ot", "spl"],
        "seeds": [0, 1, 2, 3, 4],
        "choose_recipe": True,
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
