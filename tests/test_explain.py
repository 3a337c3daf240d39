"""`fxp explain`: CAM and Grad-CAM heatmaps of image (and audio) classifiers, word occlusion of text classifiers,
permutation importance of tabular models; `fxp report` showing the top losses' heatmaps.

Mostly no training: the runs are the exported learners of tests/fixtures/exported (an mnist_tiny small CNN that
reaches 0.97, a planet small CNN, ...), copied once per module; their configs point at /absent, so the validation
items come from data.path=. One tiny mnist run is trained here to explain a run as today's fxp writes it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import assert_one_line_error, copy_exported, mnist_subset, need_data, newest_run, run_fxp
from fxp.runs import read_explained


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return copy_exported(tmp_path_factory.mktemp("explain"), "classification", "multilabel", "text", "tabular",
                         "segmentation")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    "40 mnist_tiny images of each class and split: the validation items of the exported mnist run."
    return mnist_subset(tmp_path_factory.mktemp("digits"), n=40)


def explained(run: Path) -> tuple[Path, list[dict]]:
    "The newest explain folder of `run` and the rows of its explained.csv (as fxp report finds them)."
    return read_explained(run)


# --- images: the heatmap lies on what the model looks at --------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_digits(runs, digits):
    "The exported mnist learner with its validation digits (inputs as the model sees them: 0..1, ink bright)."
    import torch

    from fxp import heatmaps, saved

    run = saved.open_run(runs / "classification", "test")
    cpu = torch.device("cpu")
    learn = saved.labelled(run.learner(cpu), run.kind, run.config([f"data.path={digits}"]), "valid", cpu, run.path)
    return learn, heatmaps.gathered(learn.dls.valid, list(range(len(learn.dls.valid_ds)))).as_subclass(torch.Tensor)


@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_the_heat_lies_on_the_digit_and_on_what_the_model_needs(valid_digits, method):
    """On at least 90% of the 80 validation digits the mean heat on the ink (pixels above 0.5) exceeds the mean off
    it (measured: gradcam 100%, cam 97.5%). A constant or inverted map fails that, but a map turned upside down passes
    it, and so do an untrained net's maps now and then (its activations follow the ink too); so the second check
    asks more: blanking the 40 hottest pixels costs the predicted class at least 0.03 of probability on average
    (measured 0.065) and 3 times what 40 random pixels cost (0.006). The map turned upside down costs 0.014, random
    small CNNs' maps 0.0003 to 0.012 (on all 699 validation digits)."""
    import torch

    from fxp import heatmaps

    learn, x = valid_digits
    probs = heatmaps.probabilities(learn.model, x, multi=False)
    cls = probs.argmax(1)
    heat = heatmaps.heat(learn.model, x, cls.tolist(), method)
    assert heat.shape == (len(x), 28, 28) and heat.min() >= 0 and heat.max() <= 1
    ink = x[:, 0] > 0.5
    on = (heat * ink).flatten(1).sum(1) / ink.flatten(1).sum(1)
    off = (heat * ~ink).flatten(1).sum(1) / (~ink).flatten(1).sum(1)
    assert (on > off).float().mean() >= 0.9

    def cost(pixels):
        blank = x.flatten(1).scatter(1, pixels, 0.0).view_as(x)
        kept = heatmaps.probabilities(learn.model, blank, multi=False)
        return float((probs - kept)[torch.arange(len(x)), cls].mean())

    rand = torch.stack([torch.randperm(28 * 28, generator=torch.Generator().manual_seed(i))[:40]
                        for i in range(len(x))])
    hottest, random = cost(heat.flatten(1).topk(40, 1).indices), cost(rand)
    assert hottest >= 0.03 and hottest >= 3 * random, (hottest, random)


@pytest.mark.slow  # trains (about 10 s with the two explains and the report)
def test_explain_writes_a_heatmap_per_item_for_a_run_trained_now(tmp_path):
    """`fxp train task=mnist ...` then `fxp explain RUN`: validation items spread over the split and top losses, one
    PNG each, for both methods, listed in explained.csv with their label, probability and true label."""
    data = mnist_subset(tmp_path / "data", n=8)
    r = run_fxp("train", "task=mnist", f"data.path={data}", "trainer.epochs=1", "trainer.bs=8", "trainer.plots=false",
                cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    for method in ("gradcam", "cam"):
        r = run_fxp("explain", run, "--method", method, cwd=tmp_path)
        assert r.returncode == 0, r
        dest, rows = explained(run)
        assert f"written to {dest}" in r.stdout.replace("\n", "")
        assert [row["why"] for row in rows] == ["valid"] * 4 + ["top loss"] * 4
        assert {row["true"] for row in rows} == {"3", "7"} and {row["label"] for row in rows} <= {"3", "7"}
        assert sorted(p.name for p in dest.glob("*.png")) == sorted(row["heatmap"] for row in rows)
        assert all(re.fullmatch(r"\d+_[37](-\d+)?\.png", row["heatmap"]) for row in rows)
        assert all(0 < float(row["probability"]) <= 1 for row in rows)
    r = run_fxp("report", run, cwd=tmp_path)  # the report shows the newest explain's top losses
    assert r.returncode == 0, r
    page = (run / "report.html").read_text()
    assert "Where the model looks at its top losses" in page and page.count('style="display:inline-block') == 4


def test_given_files_are_explained_for_the_class_asked(runs, fxp):
    run = runs / "classification"
    r = fxp("explain", run, run / "3.png", run / "7.png", "--target", "7", "--json")
    assert r.returncode == 0, r
    dest, rows = explained(run)
    assert [(row["input"], row["why"], row["label"], row["heatmap"]) for row in rows] == [
        ("3", "input", "7", "3_7.png"), ("7", "input", "7", "7_7.png")]
    assert float(rows[0]["probability"]) < 0.5 < float(rows[1]["probability"])  # a 3 is no 7
    assert (dest / "3_7.png").stat().st_size > 1000


def test_multilabel_gets_a_gradcam_per_predicted_tag(runs, fxp):
    "One heatmap per tag over the run's threshold (task.thresh 0.2), each tag's probability as the learner gives it."
    run = runs / "multilabel"
    files = sorted(run.glob("train_*.jpg"))[:1]  # its one-epoch model puts most of the 16 tags over 0.2
    r = fxp("explain", run, *files)
    assert r.returncode == 0, r
    dest, rows = explained(run)
    from fxp import saved

    learn = saved.open_run(run, "test").learn
    probs, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    for f, p in zip(files, probs):
        tags = {str(learn.dls.vocab[j]) for j in (p > 0.2).nonzero().flatten().tolist()}
        mine = {row["label"]: float(row["probability"]) for row in rows if row["input"] == f.stem}
        assert tags and set(mine) == tags
        assert all(mine[t] == pytest.approx(float(p[learn.dls.vocab.o2i[t]]), abs=1e-3) for t in tags)
        assert all((dest / f"{f.stem}_{t}.png").is_file() for t in tags)


# --- bad input: one line, exit 2 --------------------------------------------------------------------------------------


def test_a_layer_or_target_that_is_not_there_is_one_line(runs, fxp):
    run = runs / "classification"
    line = assert_one_line_error(fxp("explain", run, run / "3.png", "--layer", "conv9"), "--layer 'conv9'")
    assert "1.0, 2.0" in line  # a few of the model's layers to pick from
    assert_one_line_error(fxp("explain", run, run / "3.png", "--target", "8"), "--target '8'", "3, 7")
    assert_one_line_error(fxp("explain", run, run / "3.png", "--method", "cam", "--layer", "2.0"),
                          "--method gradcam with --layer")
    assert not (run / "explain").exists() or all((d / "explained.csv").is_file() for d in (run / "explain").iterdir())


def test_gradcam_at_a_chosen_layer(runs, fxp):
    run = runs / "classification"
    r = fxp("explain", run, run / "7.png", "--layer", "1")
    assert r.returncode == 0, r
    assert_one_line_error(fxp("explain", run, run / "7.png", "--layer", "5"), "--layer 5 gives (1, 2)",
                          "not feature maps")


def test_cam_needs_body_pool_linear():
    "A vision_learner head (pool, BatchNorm, Linear, ReLU, ...) has no CAM: one line saying so; Grad-CAM works."
    import torch
    from fastai.vision.learner import create_head
    from torch import nn

    from fxp import heatmaps
    from fxp.errors import FxpError

    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU()), create_head(8, 2))
    with pytest.raises(FxpError, match=r"after its pooling layer 1\.0 comes 1\.\d \(ReLU\).*--method gradcam"):
        heatmaps.cam_parts(model)
    assert heatmaps.default_layer(model) == "0.1"  # the body's output
    assert heatmaps.heat(model, torch.rand(2, 3, 16, 16), [0, 1]).shape == (2, 16, 16)


def test_kinds_without_an_explanation_say_which_have_one(runs, fxp):
    assert_one_line_error(fxp("explain", runs / "segmentation"), "segmentation runs have no explanation",
                          "classification", "multilabel", "text", "tabular", "audio")
    assert_one_line_error(fxp("explain", runs / "text", "good", "--layer", "1"), "--layer is not an option of text")


# --- text and tables --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # fastai's text pipeline (tokenizer) loads in seconds
def test_text_gets_its_words_highlighted_by_occlusion(runs, fxp, tmp_path):
    """A page per text: each word on a background for how much the probability of the class drops without it (the
    page's tooltips), which is what the model gives the text with that word replaced by xxunk."""
    import torch

    from fxp import saved

    run, text = runs / "text", "A wonderful film, I loved every minute"
    (tmp_path / "review.txt").write_text(text)
    r = fxp("explain", run, text, tmp_path / "review.txt", "--target", "positive")
    assert r.returncode == 0, r
    dest, rows = explained(run)
    assert [(row["input"], row["label"], row["page"]) for row in rows] == [
        ("text_1", "positive", "text_1.html"), ("review", "positive", "review.html")]
    page = (dest / "text_1.html").read_text()
    words = re.findall(r'<span title="([-+]\d\.\d{4})"[^>]*>([^<]*)</span>', page)
    assert [w for _, w in words] == ["a", "wonderful", "film", ",", "i", "loved", "every", "minute"]  # fastai: A → a
    learn = saved.open_run(run, "test").learn
    ids = learn.dls.test_dl([text]).one_batch()[0].cpu()
    at = (ids[0] == learn.dls.vocab[0].index("wonderful")).nonzero().item()
    occluded = ids.clone()
    occluded[0, at] = learn.dls.vocab[0].index("xxunk")
    model = learn.model.eval()
    p = []
    for x in (ids, occluded):
        model.reset()
        with torch.no_grad():
            p.append(float(torch.softmax(model(x)[0], 1)[0, 1]))
    assert float(dict((w, v) for v, w in words)["wonderful"]) == pytest.approx(p[0] - p[1], abs=2e-4)


@pytest.mark.slow  # reads the whole adult sample and validates once per column (about 5 s)
def test_tabular_runs_get_the_permutation_importance(runs, fxp):
    run, adult = runs / "tabular", need_data("adult_sample")
    r = fxp("explain", run, f"data.path={adult}")
    assert r.returncode == 0, r
    dest, rows = explained(run)
    assert list(rows[0]) == ["column", "accuracy worse by"]
    assert {row["column"] for row in rows} >= {"age", "education-num", "marital-status", "occupation"}
    values = [float(row["accuracy worse by"]) for row in rows]
    assert values == sorted(values, reverse=True) and values[0] > 0.01  # the model relies on some column
    assert (dest / "feature_importance.png").stat().st_size > 1000
    assert_one_line_error(fxp("explain", run, "rows.csv"), "permutation importance on labelled rows", "data.path=")


# --- audio: over the spectrogram --------------------------------------------------------------------------------------


@pytest.mark.slow  # the fsdd run trains (shared with tests/test_audio.py)
def test_audio_runs_get_heatmaps_over_their_spectrograms(fsdd_run, fxp):
    r = fxp("explain", fsdd_run, "--method", "cam")
    assert r.returncode == 0, r
    dest, rows = explained(fsdd_run)
    assert [row["why"] for row in rows] == ["valid"] * 4 + ["top loss"] * 4
    assert all((dest / row["heatmap"]).is_file() for row in rows)
    clip = next(Path(need_data("fsdd")).rglob("*.wav"))
    r = fxp("explain", fsdd_run, clip)
    assert r.returncode == 0, r
    _, rows = explained(fsdd_run)
    assert [row["input"] for row in rows] == [clip.stem]
