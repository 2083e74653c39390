"""The regret of each way of choosing an adaptation without target labels, from a recipe search's records.

For every shift (and seed) of the given results folders, the recipe search's chosen features' adaptations are
the candidates; the oracle is the best of them on the target's test labels. A selector's regret on a split is
the oracle's accuracy minus that of the candidate the selector scores highest; a fixed adaptation's is the
oracle's minus its own. Reported per protocol (full, sampled S, sampled ST): the mean and the worst regret over
the splits, in points, the mean accuracy, and the most the rule fell below no adaptation on any split (a
rule that never falls far below it is safe to use on data nobody has measured). Nothing is refitted: the scores are in the records
(``cnnfeat benchmark --choose-recipe`` computes every selector's).

Under leave-one-domain-out, where nothing is adapted, the rules that choose the features are compared the same
way (DomainBed's training-domain and leave-one-domain-out validation).

    python benchmarks/selector_regret.py results/office31_full_best results/office31_sampled_select \\
        results/office31_lodo_best --per-shift
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from cnnfeat.recipes import RuleChoices, features_rule_choices, rule_choices
from cnnfeat.runner import load_records
from cnnfeat.selection import DEFAULT_SELECTOR, SELECTORS


def _group(folder: str, choice: RuleChoices) -> str:
    name = choice.protocol.split(":")[0]
    return f"`{folder}` " + {"full": "full", "sampled": "sampled S", "sampled_st": "sampled ST"}.get(name, name)


def regret_table(choices: list[tuple[str, RuleChoices]]) -> str:
    """Markdown: a row per rule, per results folder and protocol its mean regret, worst regret and mean accuracy."""
    groups: dict[str, list[RuleChoices]] = defaultdict(list)
    for folder, c in choices:
        groups[_group(folder, c)].append(c)
    groups["all"] = [c for _, c in choices]
    rules = [f"selector `{s}`" + (" (default)" if s == DEFAULT_SELECTOR else "") for s in SELECTORS]
    adaptations = sorted({a for _, c in choices for a in c.fixed}, key=lambda a: (a != "none", a))
    rules += [f"always `{a}`" for a in adaptations]

    def accuracy(c: RuleChoices, rule: str) -> float | None:
        name = rule.split("`")[1]
        return c.by_selector.get(name) if rule.startswith("selector") else c.fixed.get(name)

    header = "| rule | " + " | ".join(f"{g} ({len(cs)} splits)" for g, cs in groups.items()) + " |"
    lines = [header, "|---|" + "---|" * len(groups)]
    for rule in rules:
        cells = []
        for cs in groups.values():
            pairs = [(c.oracle, a) for c in cs if (a := accuracy(c, rule)) is not None]
            if not pairs:
                cells.append("")
                continue
            regrets = [100 * (o - a) for o, a in pairs]
            below = [100 * (c.fixed["none"] - a) for c in cs if "none" in c.fixed and (a := accuracy(c, rule)) is not None]
            cells.append(
                f"{statistics.mean(regrets):.2f} / {max(regrets):.2f}, {100 * statistics.mean(a for _, a in pairs):.2f}"
                + (f", {max(below):+.2f}" if below else "")
            )
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    oracle = [f"{100 * statistics.mean(c.oracle for c in cs):.2f}" for cs in groups.values()]
    lines.append("| oracle (test labels) | " + " | ".join(f"0 / 0, {o}" for o in oracle) + " |")
    lines.append("")
    lines.append(
        "Each cell: mean regret / worst regret over the splits (points below the best candidate on the test labels), "
        "mean accuracy, and the most the rule's choice fell below no adaptation on one split (+: below)."
    )
    return "\n".join(lines)


def per_shift_table(choices: list[RuleChoices], selector: str = DEFAULT_SELECTOR, fixed: str = "spl") -> str:
    """Markdown: per split, the accuracy of the selector's choice, of ``fixed`` and of no adaptation, and the oracle."""
    lines = [f"| split | chosen by `{selector}` | always `{fixed}` | no adaptation | oracle |", "|---|---|---|---|---|"]
    for c in sorted(choices, key=lambda c: (c.protocol, c.seed)):
        cells = [c.by_selector.get(selector), c.fixed.get(fixed), c.fixed.get("none"), c.oracle]
        lines.append(f"| {c.protocol} seed {c.seed} | " + " | ".join("" if v is None else f"{100 * v:.2f}" for v in cells) + " |")
    return "\n".join(lines)


def features_table(choices: list[RuleChoices]) -> str:
    """Markdown: under leave-one-domain-out, each rule's choice of features per held-out domain, and its regret."""
    rules = sorted({rule for c in choices for rule in c.by_selector})
    lines = ["| held-out domain | " + " | ".join(f"`{r}` validation" for r in rules) + " | oracle |"]
    lines.append("|---|" + "---|" * (len(rules) + 1))
    for c in choices:
        cells = [f"{100 * c.by_selector[r]:.2f}" for r in rules] + [f"{100 * c.oracle:.2f}"]
        lines.append(f"| {c.protocol} | " + " | ".join(cells) + " |")
    regrets = {r: [100 * (c.oracle - c.by_selector[r]) for c in choices] for r in rules}
    lines.append(
        "| mean / worst regret | "
        + " | ".join(f"{statistics.mean(v):.2f} / {max(v):.2f}" for v in regrets.values())
        + " | 0 / 0 |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="results folders of recipe searches on domain shifts")
    parser.add_argument("--per-shift", action="store_true", help="also each split's choice of the default selector, per folder")
    args = parser.parse_args(argv)
    records = {folder.name: load_records(folder) for folder in args.folders}
    choices = [(name, c) for name, found in records.items() for c in rule_choices(found, list(SELECTORS))]
    features = [c for found in records.values() for c in features_rule_choices(found)]
    if not choices and not features:
        parser.error("no split of these folders has every rule's scores (run the search with --choose-recipe)")
    if choices:
        print(regret_table(choices))
    for name in dict.fromkeys(n for n, _ in choices) if args.per_shift else ():
        print(f"\n`{name}`:\n")
        print(per_shift_table([c for n, c in choices if n == name]))
    if features:
        print()
        print(features_table(features))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
