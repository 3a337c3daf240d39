"""Next-word language models on human numbers (lesson 7, fastbook ch. 12): the data made as fastai's HUMAN_NUMBERS,
the book's stream of sequences, every model YAML, one tiny run shared by the end-to-end checks, and the lesson's
preset (slow: about 10 s)."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from conftest import assert_one_line_error, newest_run, run_fxp, summary
from fxp import config
from fxp.tasks import word_lm


def test_numbers_are_written_as_human_numbers(tmp_path):
    assert [word_lm.in_words(n) for n in (1, 13, 20, 45, 100, 110, 1000, 8123, 9999)] == [
        "one", "thirteen", "twenty", "forty five", "one hundred", "one hundred ten", "one thousand",
        "eight thousand one hundred twenty three", "nine thousand nine hundred ninety nine"]
    folder = word_lm.human_numbers(tmp_path)
    train, valid = ((folder / f).read_text().splitlines() for f in word_lm.FILES)
    assert (len(train), len(valid)) == (8000, 1999)
    assert (train[0], train[-1], valid[0]) == ("one ", "eight thousand ", "eight thousand one ")
    words = word_lm.read_words(folder)
    assert words[0][:5] == ["one", ".", "two", ".", "three"]
    assert len(set(words[0] + words[1])) == 30  # fastbook ch. 12: len(vocab) == 30


def test_each_batch_row_goes_on_from_the_batch_before():
    ids = torch.arange(1000)
    bs, sl = 8, 5
    x, y = word_lm.sequences(ids, sl, bs)
    assert torch.equal(y, x + 1)  # targets: the next word
    first, second = x[:bs], x[bs:2 * bs]
    assert torch.equal(second[:, 0], first[:, -1] + 1)  # row j of batch 2 starts where row j of batch 1 ended


LM_MODELS = [m for m in config.choices("model") if m.startswith("lm")]


@pytest.mark.parametrize("name", LM_MODELS)
def test_every_language_model_predicts_the_next_words(name):
    from hydra.utils import instantiate

    node = OmegaConf.load(config.conf_dir() / "model" / f"{name}.yaml").net
    net = instantiate(node, vocab_sz=30)
    x = torch.randint(0, 30, (4, 3))
    out = net(x)
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape in ((4, 30), (4, 3, 30))
    word_lm.next_word_loss(out, x).backward()  # every output shape meets its targets
    assert len(LM_MODELS) == 9


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "One epoch of the lesson's GRU on the generated human numbers, with big batches, no plots: about a second."
    cwd = tmp_path_factory.mktemp("word_lm")
    r = run_fxp("train", "task=human_numbers", "trainer.epochs=1", "trainer.bs=128", "trainer.plots=false", cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd)


@pytest.mark.slow
def test_a_run_learns_beyond_the_majority_word(run):
    s = summary(run)
    assert s["status"] == "completed" and s["items_train"] > 1000
    assert s["final_metrics"]["accuracy"] > s["baselines"]["accuracy"]["value"] + 0.2, s
    assert (run / "data" / "train.txt").read_text().startswith("one \ntwo \n")  # the data it was made from


@pytest.mark.slow
def test_predict_gives_the_next_word(run, tmp_path):
    r = run_fxp("predict", run, "one hundred twenty", "--json", cwd=tmp_path)
    assert r.returncode == 0, r
    (row,) = json.loads(r.stdout)
    assert row["input"] == "one hundred twenty" and row["next_word"] in word_lm.read_words(run / "data")[0]
    assert 0 < row["probability"] <= 1
    assert_one_line_error(run_fxp("predict", run, "one and two", cwd=tmp_path), "'and' is not a word", "thousand")


@pytest.mark.slow
def test_val_reads_the_numbers_the_run_was_trained_on(run, tmp_path):
    "The run's own generated data (RUN/data), not a new copy in the working directory: the metrics it recorded."
    r = run_fxp("val", run, "--json", cwd=tmp_path)
    assert r.returncode == 0, r
    result = json.loads(r.stdout)
    assert result["metrics"] == pytest.approx(result["trained"], abs=1e-5) and result["trained"]
    assert list(tmp_path.iterdir()) == []
