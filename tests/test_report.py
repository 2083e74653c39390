"""report.html: the answer with its uncertainty, self-contained, checked in a real headless browser (issue 25)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cnnfeat.answer import answer, describe
from cnnfeat.runner import Record, load_records

ROOT = Path(__file__).resolve().parents[1]


def _records(rows: dict[str, tuple[list[float], float]], dataset: str = "d") -> list[Record]:
    return [
        Record.from_dict({"row": row, "method": row.split(" + ")[0], "dataset": dataset, "protocol": "kfold:5", "seed": s,
         "accuracy": a, "mean_per_class_accuracy": a, "n_train": 80, "n_test": 20, "probe_seconds": t, "probe": "logreg",
         "features": {"n_computed": 100, "n_cached": 0, "seconds": 0.1}})
        for row, (accs, t) in rows.items() for s, a in enumerate(accs)
    ]  # fmt: skip


def test_the_answer_is_the_cheapest_row_not_distinguishable_from_the_best_on_the_same_splits() -> None:
    records = _records({
        "cnn:big/pool + logreg": ([0.91, 0.80, 0.86, 0.88, 0.83], 20.0),
        "cnn:small/pool + logreg": ([0.90, 0.79, 0.86, 0.87, 0.84], 2.0),  # within noise of big, 10x cheaper
        "hog + chi2 + logreg": ([0.55, 0.45, 0.50, 0.52, 0.48], 1.0),  # cheaper still, but far below
        "cnn:noisy/pool + logreg": ([0.895, 0.78, 0.845, 0.86, 0.815], 1.5),  # a little below on every split
    })  # fmt: skip
    (found,) = answer(records)
    assert found.best == "cnn:big/pool + logreg" and found.use == "cnn:small/pool + logreg"
    assert "hog + chi2 + logreg" not in found.indistinguishable and found.p_values["hog + chi2 + logreg"] < 0.001
    assert "cnn:noisy/pool + logreg" not in found.indistinguishable  # 1.5 points below on every split: a real gap
    text = describe(found)
    assert text.startswith("d (5-fold): use cnn:small/pool + logreg: 85.20 ± ") and "at 0.1× its cost" in text
    assert "paired t-test over 5 splits" in text
    one_split = answer(_records({"a + logreg": ([0.8], 1.0), "b + logreg": ([0.7], 1.0)}))[0]
    assert "one split: no test" in describe(one_split)


def test_fine_tuning_is_judged_against_the_best_frozen_row_beyond_noise_and_by_cost() -> None:
    (found,) = answer(load_records(ROOT / "results" / "eurosat_mini"))
    assert found.finetune.startswith("fine-tuning +0.86 points against the best frozen features (within noise")
    assert found.use == "cnn:efficientnet_lite0/pool + logreg"  # not distinguishable from fine-tuning, and cheaper


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.slow
def test_the_report_loads_in_a_real_browser_with_every_figure_shown_and_no_console_error(tmp_path: Path) -> None:
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Chromium and its driver (apt-get install chromium chromium-driver)")
        pytest.skip("no Chromium here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cnnfeat.report import write_report

    out = tmp_path / "results"
    (out / "records").mkdir(parents=True)
    for record in (ROOT / "results" / "eurosat_mini" / "records").glob("*.json"):
        shutil.copy(record, out / "records" / record.name)
    write_report(load_records(out), out)
    page = out / "report.html"
    assert b"http://" not in page.read_bytes() and b"https://" not in page.read_bytes()  # nothing fetched: offline
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        browser.get(page.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.getBoundingClientRect().width])"
        )
        assert {alt for alt, *_ in images} == {p.stem for p in out.glob("*.png")}
        assert all(complete and natural > 300 and shown > 300 for _, complete, natural, shown in images), images
        assert "use A (cnn:efficientnet_lite0/pool + logreg)" in browser.find_element("css selector", ".answer").text
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        artefacts = ROOT / "build" / "test-artifacts"
        artefacts.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(artefacts / "report.png"))  # kept for a person to look at
        assert (artefacts / "report.png").stat().st_size > 20_000
    finally:
        browser.quit()
