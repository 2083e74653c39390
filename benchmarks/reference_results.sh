#!/usr/bin/env bash
# The commands that made the reference results under results/ (README tables).
# Usage: bash benchmarks/reference_results.sh [DATA_ROOT]   (default ../shared/datasets)
# Each command caches features under ~/.cache/cnnfeat (or $CNNFEAT_CACHE); rerun with --skip-existing to resume.
set -euo pipefail
DATA="${1:-../shared/datasets}"
# every table below up to the path solver's section was made with scikit-learn's solver, before the path
# solver existed and became the default: --solver lbfgs reproduces them (their footers' commands predate the flag)
# and every one with Keras computing the CNN features, before runtime auto became the default: --runtime keras
BENCH=(python -m cnnfeat.benchmark --data-root "$DATA" --no-progress --solver lbfgs --runtime keras)
PATH_BENCH=(python -m cnnfeat.benchmark --data-root "$DATA" --no-progress --runtime keras)
LITE0=cnn:efficientnet_lite0/pool
LITE2=cnn:efficientnet_lite2/pool

# 15-Scene (Lazebnik): 100 train per class, 5 splits; CNN vs HOG vs SIFT bag of words, both probes
"${BENCH[@]}" --datasets scene15 --methods "$LITE0" hog sift_bovw --probes logreg svm --seeds 0 1 2 3 4 --out results/scene15
# ... and EfficientNet-Lite2 on the same splits, into the same table (5 minutes)
"${BENCH[@]}" --datasets scene15 --methods "$LITE2" --probes logreg svm --seeds 0 1 2 3 4 --out results/scene15
"${BENCH[@]}" --tables-only --out results/scene15
# DeCAF's dropout on the features, measured against the same probe without it
"${BENCH[@]}" --datasets scene15 --methods "$LITE0" --probes logreg logreg+dropout --seeds 0 1 2 3 4 --out results/scene15_dropout
# Office-31, full protocol: the benchmark's defaults when it was made (Lite0 and HOG, logistic regression, source
# only; its footer's command has no --methods) ...
"${BENCH[@]}" --datasets office31 --protocol full --methods "$LITE0" hog --out results/office31_full
# ... the same command on another CPU (a 2-core Intel Xeon with AVX-512; the one above ran on an AMD EPYC)
"${BENCH[@]}" --datasets office31 --protocol full --methods "$LITE0" hog --out results/office31_full_xeon
# ... and Lite0 with CORAL and subspace alignment, then Lite2 source only and with CORAL (6 minutes), in one table
"${BENCH[@]}" --datasets office31 --protocol full --methods "$LITE0" --probes logreg --adapt none coral sa --out results/office31_full_adapt
"${BENCH[@]}" --datasets office31 --protocol full --methods "$LITE2" --probes logreg --adapt none coral --out results/office31_full_adapt
"${BENCH[@]}" --tables-only --out results/office31_full_adapt
# ... and SIFT bag of words (a codebook per shift, learned on the source images; 15 minutes)
"${BENCH[@]}" --datasets office31 --protocol full --methods sift_bovw --probes logreg --out results/office31_full_sift
# Oxford-17 flowers: 40/20/20 per class, 3 splits
"${BENCH[@]}" --datasets flowers17 --methods "$LITE0" hog sift_bovw color_hist --probes logreg svm --seeds 0 1 2 --out results/flowers17
"${BENCH[@]}" --datasets flowers17 --methods "$LITE2" --probes logreg svm --seeds 0 1 2 --out results/flowers17
"${BENCH[@]}" --tables-only --out results/flowers17
# accuracy per layer and t-SNE of an early and a late tap (15-Scene, 3 splits; 8 minutes)
"${BENCH[@]}" --suite layers --out results/scene15_layers
# few-shot curve (15-Scene, 1-30 per class, 3 splits)
"${BENCH[@]}" --datasets scene15 --protocol few_shot --methods "$LITE0" "$LITE2" hog --probes logreg --seeds 0 1 2 \
    --out results/scene15_fewshot
# Office-31, sampled protocol (Saenko / DeCAF): S and ST, 5 splits, linear SVM as in DeCAF
"${BENCH[@]}" --datasets office31 --protocol sampled sampled_st --methods "$LITE0" --probes svm --adapt none coral augment \
    --seeds 0 1 2 3 4 --out results/office31_sampled
"${BENCH[@]}" --datasets office31 --protocol sampled sampled_st --methods "$LITE2" --probes svm --seeds 0 1 2 3 4 \
    --out results/office31_sampled
# ... and the hand-crafted baselines on the same S and ST splits, into the same table (50 and 60 minutes; SIFT
# learns a codebook per split; CORAL does not apply to chi2-mapped histograms)
"${BENCH[@]}" --datasets office31 --protocol sampled --methods hog sift_bovw --probes svm --seeds 0 1 2 3 4 \
    --out results/office31_sampled
"${BENCH[@]}" --datasets office31 --protocol sampled_st --methods hog sift_bovw --probes svm --seeds 0 1 2 3 4 \
    --out results/office31_sampled
"${BENCH[@]}" --tables-only --out results/office31_sampled   # one table from the four commands' records
# the same Lite0 features from each runtime and precision (Keras, the exported graph in ONNX Runtime and OpenVINO,
# OpenVINO bf16): 15-Scene, 5 splits, and Office-31 full protocol, 6 shifts (about 15 and 25 minutes)
RUNTIMES=("$LITE0" "$LITE0?runtime=onnxruntime" "$LITE0?runtime=openvino" "$LITE0?runtime=openvino&precision=bf16")
"${BENCH[@]}" --datasets scene15 --methods "${RUNTIMES[@]}" --probes logreg --seeds 0 1 2 3 4 --out results/scene15_runtimes
"${BENCH[@]}" --datasets office31 --protocol full --methods "${RUNTIMES[@]}" --probes logreg --out results/office31_full_runtimes
# ... and int8 (ONNX Runtime, calibrated on 64 images drawn from the dataset itself), into the same tables
"${BENCH[@]}" --datasets scene15 --methods "$LITE0?runtime=onnxruntime&precision=int8&calibration=$DATA/scene15" \
    --probes logreg --seeds 0 1 2 3 4 --out results/scene15_runtimes
"${BENCH[@]}" --datasets office31 --protocol full --methods "$LITE0?runtime=onnxruntime&precision=int8&calibration=$DATA/office31" \
    --probes logreg --out results/office31_full_runtimes
"${BENCH[@]}" --tables-only --out results/scene15_runtimes
"${BENCH[@]}" --tables-only --out results/office31_full_runtimes
# recipes (issue 19, first steps): the k-NN probe and two taps of one network concatenated (15-Scene, 5 splits; 8 minutes)
"${BENCH[@]}" --datasets scene15 --methods "$LITE0" "cnn:efficientnet_lite0/block6d_add,pool" --probes logreg knn \
    --seeds 0 1 2 3 4 --out results/scene15_recipes
"${BENCH[@]}" --datasets scene15 --methods "cnn:efficientnet_lite0/block6d_add,pool@center+flip" --normalize power+l2 \
    --probes logreg --seeds 0 1 2 3 4 --out results/scene15_recipes
"${BENCH[@]}" --tables-only --out results/scene15_recipes
# Balanced Distribution Adaptation (JDA at mu=0.5) on Lite0, Office-31 full protocol (4 minutes with the features cached)
"${BENCH[@]}" --datasets office31 --protocol full --methods "$LITE0" --probes logreg --adapt none bda --out results/office31_full_bda
# fine-tuning next to the linear probe (issue 17): Lite0's pooled features + logistic regression, an MLP head on
# them, and top2 (the last two blocks, the top conv and a new head, on the cached maps before them); 15-Scene,
# 5 splits; Oxford-17, its 3 official splits; Office-31 full protocol, fine-tuned on the source only
FINETUNE=("finetune:efficientnet_lite0/head?head=mlp" "finetune:efficientnet_lite0/top2")
"${BENCH[@]}" --datasets scene15 --methods "$LITE0" "${FINETUNE[@]}" --probes logreg --seeds 0 1 2 3 4 --out results/scene15_finetune
"${BENCH[@]}" --datasets flowers17 --methods "$LITE0" "${FINETUNE[@]}" --probes logreg --out results/flowers17_finetune
"${BENCH[@]}" --datasets office31 --protocol full --methods "$LITE0" "${FINETUNE[@]}" --probes logreg \
    --out results/office31_full_finetune
# the decision chart: accuracy against training images per class, near ImageNet (flowers) and far (scenes)
"${BENCH[@]}" --datasets flowers17 scene15 --protocol few_shot --methods "$LITE0" "${FINETUNE[@]}" --probes logreg \
    --seeds 0 1 --out results/finetune_fewshot
# the recipe search (issue 19): every candidate recipe on every split, and the row of the one chosen on training-side
# data only (cnnfeat/recipes.py); a cache of its own, so that each table's extraction cost is measured, not read back
BEST=("${BENCH[@]}" --suite best --cache "${CNNFEAT_CACHE:-$HOME/.cache/cnnfeat}/recipes")
"${BEST[@]}" --datasets scene15 --out results/scene15_best                                    # 5 splits
"${BEST[@]}" --datasets flowers17 --probes logreg svm knn --seeds 0 1 2 --out results/flowers17_best   # its 3 splits
"${BEST[@]}" --datasets office31 --probes logreg --normalize none --select clusters \
    --out results/office31_full_best    # six shifts; the adaptation chosen by the clusters selector (issue 29)
# S and ST, 5 splits: the two networks' features, the adaptation chosen per split (two probes at once: --jobs 2)
"${BEST[@]}" --datasets office31 --protocol sampled sampled_st --probes logreg --normalize none --jobs 2 \
    --methods "cnn:efficientnet_lite0/block6d_add,pool+cnn:efficientnet_lite2/block6e_add,pool" \
    --out results/office31_sampled_best
# leave one domain out (multi-source domain generalisation; no target image seen): the same search, one run per held-out domain
"${BEST[@]}" --datasets office31 --protocol lodo --dg-validation training-domain --out results/office31_lodo_best
# the choice of adaptation without target labels (issue 29): every selector's scores of the candidates, sampled
# protocol, with the path solver; benchmarks/selector_regret.py turns these records and the full protocol's into regrets
"${PATH_BENCH[@]}" --suite best --cache "${CNNFEAT_CACHE:-$HOME/.cache/cnnfeat}/recipes" --datasets office31 \
    --protocol sampled sampled_st --probes logreg --normalize none --select clusters --seeds 0 1 2 \
    --methods "cnn:efficientnet_lite0/block6d_add,pool+cnn:efficientnet_lite2/block6e_add,pool" \
    --out results/office31_sampled_select
# ... with hyper-parameters among the candidates (each setting fixed before any ran), full protocol
"${PATH_BENCH[@]}" --cache "${CNNFEAT_CACHE:-$HOME/.cache/cnnfeat}/recipes" --datasets office31 --protocol full \
    --methods "cnn:efficientnet_lite0/block6d_add,pool+cnn:efficientnet_lite2/block6e_add,pool" --probes logreg \
    --normalize none --choose-recipe --adapt none coral "coral?regularization=10" \
    "ot?regularization=0.1" ot "ot?regularization=10" spl "spl?n_components=64" --out results/office31_full_hyper_select
# ... and on a small source cut from Office-31 (8 images of 5 classes per domain), where SPL collapses
python benchmarks/small_source.py --data-root "$DATA" --out results/office31_small_source
# the path solver (issue 26): two committed tables remade with it (the tables above were made with --solver lbfgs,
# scikit-learn's, before it existed); benchmarks/compare_solvers.py compares them run by run
"${PATH_BENCH[@]}" --datasets scene15 --methods "$LITE0" hog --probes logreg --seeds 0 1 2 3 4 --out results/scene15_path
"${PATH_BENCH[@]}" --datasets office31 --protocol full --methods "$LITE0" hog --out results/office31_full_path
# the built-in default (issue 28): `cnnfeat benchmark` with no arguments, on the eurosat_mini photos that ship with
# cnnfeat; no data root needed (80 s wall on 2 cores from an empty cache, weight conversion included)
python -m cnnfeat.benchmark --no-progress --runtime keras --out results/eurosat_mini
