"""`fxp card RUN`: MODEL_CARD.md beside the model, its numbers those of the run folder (the session's digits run)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import copy_exported, run_fxp, summary


def table(card: str, heading: str) -> list[list[str]]:
    "The rows (cells) of the markdown table under `heading`."
    section = card.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_the_cards_numbers_are_summary_jsons(digits_run, tmp_path):
    "Metrics, baselines, split sizes, class counts, epochs, seed and versions parsed back equal the run's own."
    run = Path(shutil.copytree(digits_run, tmp_path / "run"))
    r = run_fxp("card", run, cwd=tmp_path)
    assert r.returncode == 0, r
    card, s = (run / "MODEL_CARD.md").read_text(), summary(run)
    rows = table(card, "## Metrics")
    assert [row[0] for row in rows] == list(s["final_metrics"])
    for name, final, best, base, by in rows:
        assert json.loads(final) == s["final_metrics"][name] and json.loads(best) == s["best_metrics"][name]
        if name in s["baselines"]:
            assert json.loads(base) == s["baselines"][name]["value"] and by == s["baselines"][name]["by"]
        else:
            assert (base, by) == ("-", "-")
    sizes = re.search(r"split sizes: train (\d+), valid (\d+)", card)
    assert (int(sizes[1]), int(sizes[2])) == (s["items_train"], s["items_valid"])
    counts = table(card, "split sizes")
    assert len(counts) == 10 and sum(int(valid) for _, _, valid in counts) == s["items_valid"]
    assert {c: int(v) for c, _, v in counts} == {c: v["support"] for c, v in s["per_class"].items()}
    assert f"- epochs: {s['epochs']}, seed: {s['seed']}," in card
    assert ", ".join(f"{k} {v}" for k, v in s["versions"].items()) in card
    assert f"**{s['diagnosis']['verdict']}**: {s['diagnosis']['advice']}" in card
    assert "none (in-memory items)" in card and re.search(r"listing hash .*`[0-9a-f]{64}`", card)


def test_a_card_without_summary_or_data_still_says_what_it_knows(tmp_path):
    "A run folder moved without its data (the fixture's config points at /absent/...): the card names why."
    run = copy_exported(tmp_path, "classification") / "classification"
    r = run_fxp("card", run, cwd=tmp_path)
    assert r.returncode == 0, r
    card = (run / "MODEL_CARD.md").read_text()
    assert "fingerprint: the data could not be read" in card and "/absent/" in card
    assert "No summary.json metrics in this run folder." in card
