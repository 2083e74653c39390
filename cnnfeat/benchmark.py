"""cnnfeat benchmark: methods x probes x datasets x protocols x seeds -> records, tables, figures.

With no arguments it runs the built-in default offline on ``eurosat_mini``, 1,000
satellite photos that ship with cnnfeat (EfficientNet-Lite0 features against HOG,
a swept logistic regression, one cheap fine-tuning row, 30 training images per
class, 3 splits), plus every catalog dataset present under ``--data-root`` /
``$CNNFEAT_DATA`` when one is given. ``--data`` runs the same grid on your own images instead: a
folder tree ``<class>/<file>``, a domain tree ``<domain>/<class>/<file>``, a split
tree ``<train|val|test>/<class>/<file>`` or a CSV ``path,label[,split,domain]``.
It prints the table and writes ``results/benchmark/``: ``records/*.json`` (one
per run), ``table.md``/``.csv``/``.json`` and PNG figures.

Examples::

    cnnfeat benchmark
    cnnfeat benchmark --data ~/photos/by_class                   # your images, stratified 5-fold
    cnnfeat benchmark --data shop=~/shop.csv --protocol n_per_class:10 kfold:5
    cnnfeat benchmark --data ~/office --protocol full --adapt none coral   # a domain tree: every shift
    cnnfeat benchmark --datasets office31 --protocol full --data-root ~/data
    cnnfeat benchmark --suite decaf --data-root ~/data --out results/decaf
    cnnfeat benchmark --datasets scene15 --methods cnn:efficientnet_lite0/pool hog sift_bovw \\
        --probes logreg svm --seeds 0 1 2 3 4 --data-root ~/data
    cnnfeat benchmark --suite decaf --data-root ~/data --jobs 2   # two probes at once
    cnnfeat benchmark --suite best --data ~/photos/by_class      # search the recipes, choose on validation
    cnnfeat benchmark --data /shared/photos --engine ray --ray-address auto  # on a Ray cluster
    cnnfeat benchmark --tables-only --out results/decaf     # rebuild tables and figures from records
    cnnfeat benchmark --list-datasets

Exit status: 0 every run succeeded, 1 some run failed (see its record), 2 bad command line, 3 every run
succeeded but some files of your data were skipped (``--on-error skip``, the default).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnfeat.adaptation import ADAPTATIONS
from cnnfeat.console import parse_command, plain_text
from cnnfeat.engines import ENGINES
from cnnfeat.exceptions import CnnfeatError
from cnnfeat.hints import JSONObject
from cnnfeat.logistic_path import SOLVERS
from cnnfeat.normalize import NORMALIZER_STEPS
from cnnfeat.probes import PROBES
from cnnfeat.protocols import PROTOCOLS
from cnnfeat.recipes import DG_RULES
from cnnfeat.runner import FINETUNE, Record, RecordStore, RunSpec
from cnnfeat.runner.records import run_identity
from cnnfeat.runner.spec import LEGACY_SOLVER
from cnnfeat.runtimes import RUNTIMES
from cnnfeat.selection import DEFAULT_SELECTOR, SELECTORS
from cnnfeat.suites import SUITES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnfeat benchmark", description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--suite", choices=sorted(SUITES), default="default", help="a named grid; the flags below override its parts")
    p.add_argument("--datasets", nargs="+", help="catalog names (see --list-datasets)")
    p.add_argument(
        "--data",
        action="append",
        metavar="[NAME=]PATH",
        help="your own images: a folder tree, a domain or split tree, or a CSV path,label[,split,domain] (repeatable; "
        "NAME defaults to the folder's or file's name)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        help="cnn:<backbone>/<tap>[@views][?param=value&...] (several networks: joined by +, each part a cnn: method), "
        "finetune:<backbone>/<head|top<k>|after:<layer>|all>[?param=value&...], hog, sift_bovw, color_hist",
    )
    p.add_argument("--probes", nargs="+", help=PROBES.describe())
    p.add_argument("--protocol", nargs="+", dest="protocols", help=PROTOCOLS.describe())
    p.add_argument(
        "--adapt",
        nargs="+",
        help="domain adaptation on domain-shift protocols, each NAME or NAME?<param>=<value>&... (a hyper-parameter "
        "setting, a candidate of its own for --select): " + ADAPTATIONS.describe(),
    )
    p.add_argument(
        "--normalize",
        nargs="+",
        help="feature normalisation(s) for every method: none, or steps joined by + (e.g. power+l2) from "
        + NORMALIZER_STEPS.describe()
        + " (default: per method)",
    )
    p.add_argument(
        "--solver",
        choices=SOLVERS,
        default="path",
        help="logistic regression's solver: path (every C solved to a certified gap along the regularisation path; "
        "default) or lbfgs (scikit-learn's at tol 1e-4, as the tables committed before it were made)",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="what runs the CNNs: the fastest installed runtime whose features match Keras', measured once on this "
        "machine (auto, the default), Keras itself, or its exported graph in ONNX Runtime or OpenVINO; a method's own "
        "?runtime= wins. A table's footer names the runtime that made it: pass it here to reproduce its last digits",
    )
    p.add_argument(
        "--choose-recipe",
        action=argparse.BooleanOptionalAction,
        help="treat the runs as a recipe search: score each without test labels and add the row of the recipe chosen "
        "per split, and recipes.json (on in --suite best)",
    )
    p.add_argument(
        "--select",
        choices=SELECTORS.names(),
        default=DEFAULT_SELECTOR,
        help="a recipe search on a domain shift: how the adaptation is chosen without target labels: "
        + SELECTORS.describe()
        + " (default: %(default)s, the lowest measured regret)",
    )
    p.add_argument(
        "--dg-validation",
        choices=DG_RULES.names(),
        default="training-domain",
        help="a recipe search under leave-one-domain-out: how the features are chosen (DomainBed's names): "
        + DG_RULES.describe()
        + " (default: %(default)s)",
    )
    p.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="your own data (--data): skip images that cannot be read, once, before any split is made, and list them "
        "(exit 3), or stop at the first (default: %(default)s)",
    )
    p.add_argument("--seeds", nargs="+", type=int, help="split seeds (default: the suite's)")
    p.add_argument("--data-root", type=Path, help="folder with one sub-folder per dataset (default: $CNNFEAT_DATA)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/benchmark"),
        help="folder for records, tables and figures (default: %(default)s)",
    )
    p.add_argument("--cache", type=Path, help="feature cache folder (default: the user cache)")
    p.add_argument("--skip-existing", action=argparse.BooleanOptionalAction, default=False, help="reuse finished runs' records")
    p.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse a dataset whose image counts differ from the official ones (--no-strict: run and record the differences)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="probes fitted at once: processes here (default 1), Ray tasks with --engine ray (default: the cluster's CPUs)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="extract features with actors on a Ray cluster and fit the probes as Ray tasks (default: %(default)s)",
    )
    p.add_argument("--ray-address", help="'auto' joins the cluster `ray start` made (default: start a local one)")
    p.add_argument("--tables-only", action="store_true", help="rebuild tables and figures from the records in --out")
    p.add_argument("--list-datasets", action="store_true", help="the catalog's datasets, and exit")
    p.add_argument("--list-methods", action="store_true", help="the method grammar and the probes, and exit")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the library does (and TensorFlow's start-up)")
    return p


def _user_datasets(values: list[str], screen: bool = True) -> list[Any]:
    """``--data [NAME=]PATH`` values, loaded and (``screen``) rid of unreadable images; a name must not be given twice."""
    from cnnfeat.catalog import dataset_from_inputs
    from cnnfeat.exceptions import ConfigError

    loaded: JSONObject = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or "/" in name or os.sep in name:
            name, path = "", value
        dataset = dataset_from_inputs(Path(path).expanduser(), name or None, screen=screen)
        if dataset.name in loaded:
            raise ConfigError(f"--data: two data sets are named {dataset.name!r}; name them with NAME=PATH")
        loaded[dataset.name] = dataset
        print(
            f"{dataset.name}: {len(dataset.manifest)} images, {len(dataset.manifest.classes)} classes, "
            f"{dataset.manifest.layout} ({dataset.layout} {path}); default protocol: {dataset.spec['protocols']['default']}",
            file=sys.stderr,
        )
        if dataset.skipped:
            print(f"{dataset.name}: skipped {len(dataset.skipped)} files that cannot be read:", file=sys.stderr)
            for skipped_path, reason in dataset.skipped:
                print(f"  {skipped_path}: {reason}", file=sys.stderr)
    return list(loaded.values())


def solver_mismatch(runs: Sequence[RunSpec], existing: Sequence[Record]) -> str | None:
    """Why ``--skip-existing`` reuses no record when the records of these runs exist with another solver, else None."""
    keys = {run.key() for run in runs}
    if not existing or any(r.key in keys for r in existing):
        return None
    wanted = {run_identity(run) for run in runs}
    other = sorted({r.solver or LEGACY_SOLVER for r in existing if run_identity(r) in wanted and r.probe != FINETUNE})
    if not other or runs[0].solver in other:
        return None
    return (
        f"the records here were made with --solver {' or '.join(other)}, this command fits with --solver "
        f"{runs[0].solver}, so none is reused (add --solver {other[0]} to resume them)"
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_command(_parser(), argv, prog)
    from cnnfeat.catalog import configured_data_root, dataset_spec, list_datasets, present_folder
    from cnnfeat.methods import METHOD_PATTERNS
    from cnnfeat.report import write_report
    from cnnfeat.runner import expand, load_records, run_all

    if args.list_datasets:
        for name in list_datasets():
            spec = dataset_spec(name)
            print(f"{name:<18} {spec['task']:<34} {spec['title']}")
        return 0
    if args.list_methods:
        print("methods: " + ", ".join(METHOD_PATTERNS) + "\nprobes: " + ", ".join(PROBES))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    data_root = configured_data_root(args.data_root)
    if args.tables_only:
        records = load_records(args.out)
        if not records:
            print(f"no records in {args.out / 'records'}", file=sys.stderr)
            return 1
        print(write_report(records, args.out))
        return 0

    suite = dict(SUITES[args.suite])
    datasets: list[Any] = args.datasets or ([] if args.data else suite["datasets"])
    if not args.datasets and not args.data:
        present = [n for n in list_datasets() if data_root and present_folder(n, data_root)]
        if args.suite == "default":
            datasets = datasets + present
        else:  # a named suite runs the datasets of its list that are present
            datasets = [d for d in datasets if d in present or not dataset_spec(d)["files"]]
    grid = {
        "methods": args.methods or suite["methods"],
        "probes": args.probes or suite["probes"],
        "protocols": args.protocols or suite["protocols"],
        "seeds": args.seeds if args.seeds is not None else suite["seeds"],
        "adapt": args.adapt or suite.get("adapt", ["none"]),
        "normalize": args.normalize or suite.get("normalize"),
        "solver": args.solver,
        "all_folds": args.seeds is None,  # k-fold runs all its folds unless seeds are named
    }
    try:
        expand(datasets=[], **grid)  # the probes', adaptations' and methods' names checked before a file is read
        loaded = _user_datasets(args.data or [], screen=args.on_error == "skip")
        datasets = datasets + loaded
        runs = expand(datasets=datasets, **grid)
        from cnnfeat.methods import Method

        with contextlib.redirect_stdout(sys.stderr):  # Keras prints its download line: stdout is for the table
            for method in dict.fromkeys(run.method for run in runs):  # every name resolved before any work
                Method.parse(method).check()
    except CnnfeatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not runs:
        print("error: nothing to run (no dataset present, or no protocol applies)", file=sys.stderr)
        return 2
    names = [getattr(d, "name", d) for d in datasets]
    print(f"{len(runs)} runs on {', '.join(names)} -> {args.out}", file=sys.stderr)
    # nothing to resume: the folder's records may say why (read only then; a resumed run reads its own)
    nothing_to_resume = args.skip_existing and not any(RecordStore(args.out).path(run.key()).is_file() for run in runs)
    if nothing_to_resume and (note := solver_mismatch(runs, load_records(args.out))):
        print(f"note: {note}", file=sys.stderr)

    from tqdm import tqdm

    bar = tqdm(total=len(runs), unit="run", disable=not args.progress, file=sys.stderr)

    def on_score(what: str, done: int, total: int) -> None:  # the search's scoring, after the runs
        if done == 0:
            bar.reset(total=total)
            bar.set_description(what)
        else:
            bar.update(1)

    def on_run(spec: RunSpec, record: Record) -> None:
        score = f"{100 * record.metric('mean_per_class_accuracy'):.1f}" if record.ok else "FAILED"
        bar.set_postfix_str(f"{spec.dataset} {spec.protocol} {spec.method} {spec.probe}: {score}")
        bar.update(1)

    from cnnfeat.console import quiet_ray
    from cnnfeat.engines import make_engine

    try:
        engine = make_engine(args.engine, address=args.ray_address)
    except CnnfeatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if engine.distributed:
        quiet_ray(args.verbose)
        print(engine.describe(), file=sys.stderr)
    # shell-quoted, so that the footer's command reruns when pasted (a method's ?a=1&b=2 would background at &)
    command = shlex.join([*(prog or "cnnfeat benchmark").split(), *(argv if argv is not None else sys.argv[1:])])
    # third-party lines printed while the runs work (Keras' "Downloading data from ...") go to stderr: stdout is the table
    with contextlib.redirect_stdout(sys.stderr):
        records = run_all(
            runs,
            args.out,
            data_root=data_root,
            cache=args.cache,
            skip_existing=args.skip_existing,
            strict=args.strict,
            command=command,
            on_run=on_run,
            on_score=on_score,
            loaded=loaded,
            engine=engine,
            jobs=args.jobs or (None if engine.distributed else 1),  # on a cluster: as many as it has CPUs
            choose_recipe=args.choose_recipe if args.choose_recipe is not None else suite.get("choose_recipe", False),
            selector=args.select,
            dg_validation=args.dg_validation,
            runtime=args.runtime,
        )
    bar.close()
    engine.close()
    # the tables hold this suite's runs only, not older records left in --out
    print(write_report(records, args.out))
    failed = [r for r in records if not r.ok]
    for r in failed[:10]:
        print(f"FAILED {r.row} on {r.column} seed {r.seed}: {r.error}", file=sys.stderr)
    skipped = sum(len(d.skipped) for d in loaded)
    if skipped:
        print(f"skipped {skipped} unreadable files (listed above and in every record's data.skipped)", file=sys.stderr)
    return 1 if failed else 3 if skipped else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; finished runs are in their records (rerun with --skip-existing to resume)", file=sys.stderr)
        sys.exit(130)
