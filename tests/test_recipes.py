"""Choosing a recipe without test labels: the choice per split, and --suite best end to end (selectors: test_selection)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cnnfeat.recipes import (
    CHOSEN_ROW,
    choices,
    choose,
    cross_validation,
    needing_cross_validation,
    needing_selection,
    validation_score,
)
from cnnfeat.runner import Record
from cnnfeat.selection import DEFAULT_SELECTOR
from tests.support import make_image, translated_domains

X, y, is_source = translated_domains(1)


def test_validation_score_is_the_probes_own_at_its_chosen_value() -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    from cnnfeat.probes import KNNProbe, SweptLinearClassifier

    swept = make_pipeline(Normalizer(), SweptLinearClassifier(penalties=[1e-2, 1.0, 1e2])).fit(X, y)
    inner = swept.steps[-1][1]
    assert validation_score(swept) == inner.val_scores_[inner.C_] == max(inner.val_scores_.values())
    knn = KNNProbe(ks=(1, 5)).fit(X, y)
    assert validation_score(knn) == knn.val_scores_[knn.k_]
    assert validation_score(LogisticRegression().fit(X, y)) is None


def test_cross_validation_fixes_the_chosen_c_or_k_and_uses_the_same_folds_for_every_candidate() -> None:
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    from cnnfeat.probes import KNNProbe, SweptLinearClassifier

    probe = make_pipeline(Normalizer(), SweptLinearClassifier())
    score = cross_validation(probe, {"C": 0.5, "k": None}, X, y)
    assert probe.steps[-1][1].get_params()["search"] == "fixed" and probe.steps[-1][1].C == 0.5
    by_hand = []
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        model = LogisticRegression(C=0.5, max_iter=1000, tol=1e-4).fit(Normalizer().transform(X[fit]), y[fit])
        by_hand.append(model.score(Normalizer().transform(X[held]), y[held]))
    assert score == pytest.approx(np.mean(by_hand), abs=0.01)
    knn = KNNProbe()
    assert 0 < cross_validation(knn, {"C": None, "k": 7}, X, y) <= 1 and knn.ks == (7,)
    assert cross_validation(KNNProbe(), {"k": 7}, X[:5], np.array([0, 0, 1, 1, 2])) is None  # class 2 has one image


def _record(method: str, score: float, accuracy: float, seed: int = 0, width: int = 10, **extra: Any) -> Record:
    fields = {"recipe_search": True, "dataset": "d", "protocol": "kfold:5", "seed": seed, "method": method}
    fields |= {"probe": "logreg", "row": method, "validation_score": score, "accuracy": accuracy, "n_features": width}
    return Record(**(fields | {"probe_seconds": 1.0} | extra))


def test_the_choice_follows_validation_never_the_test_accuracy() -> None:
    runs = [_record("a", 0.9, 0.70), _record("b", 0.8, 0.99), _record("c", 0.9, 0.60, width=5)]
    runs += [_record("a", 0.5, 0.50, seed=1), _record("b", 0.6, 0.40, seed=1)]
    runs += [_record("x", 1.0, 1.0, recipe_search=False)]  # not a candidate of the search
    chosen = {r.seed: r for r in choose(runs)}
    assert chosen[0].chosen == "c" and chosen[0].accuracy == 0.60  # a tie goes to the narrower features
    assert chosen[1].chosen == "b" and chosen[1].row == CHOSEN_ROW
    assert chosen[0].candidates == 3 and chosen[0].probe_seconds == 3.0  # the search's cost, not the winner's
    assert [c["chosen"] for c in choices(runs)] == ["c", "b"]
    assert choose([_record("a", 0.9, 0.7)]) == []  # one candidate: nothing was chosen
    assert [r.row for r in needing_cross_validation(runs)] == []  # no C or k recorded: nothing to refit
    for r, folds in zip(runs[:3], (0.80, 0.85, 0.70)):
        r.C, r.cross_validation, r.n_train = 1.0, folds, 300
    assert choose(runs)[0].chosen == "b"  # cross-validation outranks the single validation split
    runs[0].cross_validation, runs[0].n_features = 0.835, 8  # within one error of b's 0.85 (0.021), and narrower
    assert choose(runs)[0].chosen == "a"
    runs[0].n_features = 10  # as wide as b: as costly, so the better score
    assert choose(runs)[0].chosen == "b"
    runs[0].n_features = 8
    runs[0].cross_validation = 0.825  # more than one standard error below: b
    assert choose(runs)[0].chosen == "b"
    runs[2].cross_validation = None  # one candidate could not be folded: the validation scores decide
    assert choose(runs)[0].chosen == "c"


def test_the_cheapest_within_one_standard_error_is_chosen_by_measured_seconds_where_known() -> None:
    from cnnfeat.runner import FeatureProvenance

    def timed(method: str, folds: float, seconds: float, width: int) -> Record:
        features = FeatureProvenance(fingerprint=method, n_computed=1000, n_cached=0, seconds=seconds)
        return _record(method, 0.9, 0.9, width=width, C=1.0, cross_validation=folds, n_train=100, features=features)

    runs = [timed("big", 0.90, 60.0, 1280), timed("small", 0.88, 20.0, 1280), timed("poor", 0.80, 1.0, 64)]
    assert choose(runs)[0].chosen == "small"  # 2 points below on 100 images is within one error (3 points), 3x cheaper
    runs[1].cross_validation = 0.86
    assert choose(runs)[0].chosen == "big"  # 4 points below is not


def test_on_a_shift_records_without_a_selector_choose_the_adaptation_by_their_reverse_validation() -> None:
    shift = {"protocol": "full:amazon->webcam"}
    runs = [
        _record("a", 0.90, 0.70, adapt="none", **shift),
        _record("a", 0.99, 0.75, adapt="spl", row="a + spl", **shift),  # validated on its own pseudo labels
        _record("b", 0.95, 0.72, adapt="none", **shift),
        _record("b", 0.80, 0.90, adapt="spl", row="b + spl", **shift),
        _record("b", 0.80, 0.74, adapt="coral", row="b + coral", **shift),
    ]
    assert [r.row for r in needing_selection(runs)] == ["b", "b + spl", "b + coral"]
    assert choose(runs) == [] and choices(runs)[0]["chosen"] is None  # not scored yet: nothing is chosen
    for row, score in (("b", 0.6), ("b + spl", 0.8), ("b + coral", 0.7)):
        next(r for r in runs if r.row == row).reverse_validation = score
    assert needing_selection(runs) == []
    assert choose(runs)[0].chosen == "b + spl" and choose(runs)[0].accuracy == 0.90
    (entry,) = choices(runs)
    assert entry["features_chosen_on_source_validation"] == "b" and entry["selector"] == "reverse"
    assert entry["adaptation_scores"] == {"b": 0.6, "b + spl": 0.8, "b + coral": 0.7}


def test_on_a_shift_the_adaptation_is_the_one_the_searchs_selector_scores_highest() -> None:
    shift = {"protocol": "full:amazon->webcam", "selector": "clusters"}
    runs = [
        _record("b", 0.95, 0.72, adapt="none", **shift),
        _record("b", 0.80, 0.90, adapt="spl", row="b + spl", **shift),
        _record("b", 0.80, 0.74, adapt="coral", row="b + coral", **shift),
    ]
    for row, reverse, clusters in (("b", 0.9, 0.5), ("b + spl", 0.7, 0.8), ("b + coral", 0.8, None)):
        next(r for r in runs if r.row == row).selection = {"reverse": reverse, "clusters": clusters}
    assert needing_selection(runs) == []
    assert choose(runs)[0].chosen == "b + spl"  # reverse validation would have taken "b"
    runs[1].selection = None  # one candidate not scored yet: no choice
    assert choose(runs) == [] and [r.row for r in needing_selection(runs)] == ["b + spl"]
    runs[1].selection_error = "ValueError: no"  # a candidate that cannot be scored is not a candidate
    assert choose(runs)[0].chosen == "b"


@pytest.fixture
def domain_tree(tmp_path: Path) -> Path:
    """``<domain>/<class>/<file>``: the class sets the hue, the domain the brightness."""
    from PIL import Image

    root = tmp_path / "shifted"
    rng = np.random.default_rng(0)
    for d, domain in enumerate(("day", "night")):
        for c, cls in enumerate(("red", "blue")):
            for i in range(12):
                colour = np.array([200, 60, 40] if c == 0 else [40, 60, 200]) * (1.0 - 0.5 * d)
                pixels = np.clip(colour + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype(np.uint8)
                (root / domain / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / domain / cls / f"{i}.jpg")
    return root


@pytest.mark.slow
def test_suite_best_on_a_users_domain_tree_scores_the_adaptations_without_target_labels_and_adds_the_chosen_row(
    domain_tree: Path, tmp_path: Path
) -> None:
    from cnnfeat.benchmark import main

    tiny = "cnn:tiny_test/{}?weights=none&batch_size=8"
    methods = [tiny.format("pool"), tiny.format("block2_conv,pool")]
    out = tmp_path / "best"
    args = ["--suite", "best", "--data", str(domain_tree), "--methods", *methods, "--probes", "logreg"]
    args += [
        "--normalize",
        "none",
        "--adapt",
        "none",
        "coral",
        "--out",
        str(out),
        "--no-progress",
        "--cache",
        str(tmp_path / "c"),
    ]
    assert main(args) == 0
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == 2 * 2 * 2 and all(r["recipe_search"] for r in records)  # shifts x methods x adaptations
    chosen = json.loads((out / "recipes.json").read_text())
    assert [c["protocol"] for c in chosen] == ["full:day->night", "full:night->day"]
    for c in chosen:
        mine = [r for r in records if r["protocol"] == c["protocol"]]
        plain = [r for r in mine if r["adapt"] == "none"]
        assert c["features_chosen_on_source_validation"] in {r["row"] for r in plain}
        family = [
            r
            for r in mine
            if r["method"] == next(p for p in plain if p["row"] == c["features_chosen_on_source_validation"])["method"]
        ]
        assert {r["row"] for r in family} == set(c["adaptation_scores"]) and len(family) == 2
        assert c["selector"] == DEFAULT_SELECTOR and all(r["selector"] == DEFAULT_SELECTOR for r in mine)
        assert all(0 <= r["selection"]["reverse"] <= 1 and r["selection_seconds"] > 0 for r in family)
        assert all("selection" not in r for r in mine if r not in family)  # only the chosen features' runs
        assert c["chosen"] == max(family, key=lambda r: (r["selection"][DEFAULT_SELECTOR], r["adapt"] == "none"))["row"]
    table = (out / "table.md").read_text()
    assert f"| {CHOSEN_ROW} |" in table and "extract s/1k img" in table
    assert f"by the selector `{DEFAULT_SELECTOR}`" in table
    # another selector: the same records, every score kept, nothing fitted again
    before = {p.name: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    assert main([*args, "--select", "reverse", "--skip-existing"]) == 0
    after = {p.name: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    assert all(after[n]["selector"] == "reverse" and "--select reverse" in after[n]["command"] for n in after)
    assert all(after[n].get("selection") == before[n].get("selection") for n in after)
    assert all(after[n]["probe_seconds"] == before[n]["probe_seconds"] for n in after)
    assert all(c["selector"] == "reverse" for c in json.loads((out / "recipes.json").read_text()))
    assert "by the selector `reverse`" in (out / "table.md").read_text()


@pytest.mark.slow
def test_a_search_without_a_shift_scores_by_the_probes_validation_and_a_rerun_reuses_its_records(tmp_path: Path) -> None:
    from cnnfeat.benchmark import main

    for c, name in enumerate(("cat", "dog", "owl")):
        for k in range(10):
            make_image(tmp_path / "pets" / name / f"{k}.jpg", seed=10 * c + k)
    tiny = "cnn:tiny_test/{}?weights=none&batch_size=8"
    out = tmp_path / "best"
    args = ["--suite", "best", "--data", str(tmp_path / "pets"), "--methods", tiny.format("pool"), tiny.format("block2_conv")]
    args += ["--probes", "logreg", "knn", "--normalize", "none", "power+l2", "--protocol", "kfold:2", "--seeds", "0"]
    args += ["--out", str(out), "--no-progress", "--cache", str(tmp_path / "c")]
    assert main(args) == 0
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert len(records) == 2 * 2 * 2 and all(0 <= r["validation_score"] <= 1 for r in records)
    assert all(0 <= r["cross_validation"] <= 1 and r["cross_validation_seconds"] > 0 for r in records)
    assert {r["normalize"] for r in records} == {"none", "power+l2"}
    (chosen,) = json.loads((out / "recipes.json").read_text())
    best = max(r["cross_validation"] for r in records)  # within one binomial error of the best, on 15 training images
    assert chosen["cross_validation"][chosen["chosen"]] >= best - (best * (1 - best) / 15) ** 0.5
    before = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    assert main([*args, "--skip-existing"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")} == before
    # a plain run chooses nothing; a search does not reuse its records, which were not scored for one
    plain = [*args, "--out", str(tmp_path / "plain")]  # the later --out wins
    assert main([*plain, "--no-choose-recipe"]) == 0 and not (tmp_path / "plain" / "recipes.json").exists()
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "plain" / "records").glob("*.json")}
    assert main([*plain, "--skip-existing"]) == 0 and (tmp_path / "plain" / "recipes.json").is_file()
    rerun = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "plain" / "records").glob("*.json")}
    assert rerun.keys() == first.keys() and all(rerun[k] > first[k] for k in first)
    # the scoring after the runs reports its progress
    from cnnfeat.catalog import dataset_from_inputs
    from cnnfeat.runner import expand, run_all

    pets = dataset_from_inputs(tmp_path / "pets")
    runs = expand([tiny.format("pool"), tiny.format("block2_conv")], ["logreg"], [pets], ["kfold:2"], [0])
    seen: list[tuple[str, int, int]] = []
    run_all(runs, tmp_path / "scored", cache=tmp_path / "c", loaded=[pets], choose_recipe=True,
            on_score=lambda what, done, total: seen.append((what, done, total)))  # fmt: skip
    assert seen == [("cross-validation of the candidates", d, 2) for d in range(3)]  # 2 methods, fold 0


def test_under_leave_one_domain_out_the_named_rule_chooses_the_features() -> None:
    from cnnfeat.recipes import dg_rule_of, features_rule_choices

    lodo = {"protocol": "lodo:amazon", "n_train": 1000, "C": 1.0, "cross_validation_seconds": 1.0}
    runs = [
        _record("a", 0.9, 0.60, cross_validation=0.95, domain_validation=0.70, **lodo),
        _record("b", 0.9, 0.70, cross_validation=0.90, domain_validation=0.80, **lodo),
    ]
    assert dg_rule_of(runs) == "training-domain" and choose(runs)[0].chosen == "a"  # records without a rule
    for r in runs:
        r.dg_validation = "leave-one-domain-out"
    assert choose(runs)[0].chosen == "b"
    (entry,) = choices(runs)
    assert entry["dg_validation"] == "leave-one-domain-out" and entry["domain_validation"] == {"a": 0.70, "b": 0.80}
    (rules,) = features_rule_choices(runs)
    assert rules.oracle == 0.70 and rules.by_selector == {"training-domain": 0.60, "leave-one-domain-out": 0.70}
    runs[1].domain_validation = None  # a run the new rule has not scored: scored again, not chosen around
    assert [r.row for r in needing_cross_validation(runs)] == ["b"] and features_rule_choices(runs) == []


def test_leave_one_domain_out_validation_scores_each_domain_with_the_others() -> None:
    from cnnfeat.probes import SweptLinearClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4))
    labels = (X[:, 0] > 0).astype(int)
    domains = np.repeat(["a", "b", "c"], 30)
    X[domains == "c", 0] *= -1  # domain c has its classes the other way round: the others cannot predict it
    score = cross_validation(SweptLinearClassifier(), {"C": 1.0}, X, labels, groups=domains)
    pooled = cross_validation(SweptLinearClassifier(), {"C": 1.0}, X, labels)
    assert score is not None and pooled is not None and score < 0.5 < pooled
    assert cross_validation(SweptLinearClassifier(), {"C": 1.0}, X, labels, groups=np.full(90, "a")) is None
