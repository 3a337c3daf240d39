"""See the data first (lesson 1's show_batch, fastbook ch. 5's DataBlock.summary): `fxp show` builds the data only,
and the batch every run draws leaves the training order and augmentations as they were."""
import pytest
import torch
from PIL import Image

from conftest import need_data, run_dirs, run_fxp, summary


@pytest.mark.slow
def test_show_writes_a_batch_and_prints_the_datablock_summary(tmp_path):
    mnist = need_data("mnist_tiny")
    r = run_fxp("show", "task=mnist", f"data.path={mnist}", cwd=tmp_path)
    assert r.returncode == 0, r
    (run,) = run_dirs(tmp_path)
    assert run.parent.name == "mnist"
    with Image.open(run / "plots" / "batch.png") as im:
        assert im.width > 300 and im.height > 300
    text = (run / "datablock.txt").read_text()
    assert "parent_label" in text and "Building one batch" in text and "parent_label" in r.stdout
    assert f"{run}/plots/batch.png" in r.stdout.replace("\n", "")
    s = summary(run)
    assert (s["status"], s["items_train"], s["items_valid"]) == ("completed", 709, 699)
    size = s["model_size"]  # the model built, not trained: its size (fxp.profiling)
    assert size["params"] == size["trainable"] > 10_000 and size["input"] == [1, 28, 28], size
    assert size["macs"] > size["params"] and f"model: {size['params'] / 1e3:.3g}k parameters" in r.stdout
    assert not (run / "model.pkl").exists() and not (run / "metrics.csv").exists()  # nothing trained


def test_drawing_a_batch_leaves_the_training_batches_as_they_were(tmp_path):
    from fastai.torch_core import set_seed
    from fastai.vision.all import ImageDataLoaders, aug_transforms

    from fxp.show import batch_png

    def first_batches(draw: bool):
        set_seed(0)
        dls = ImageDataLoaders.from_folder(need_data("mnist_tiny"), bs=8, batch_tfms=aug_transforms(), device="cpu")
        if draw:
            batch_png(dls, tmp_path / "batch.png")
        return [b for b, _ in zip(dls.train, range(2))]

    drawn, plain = first_batches(True), first_batches(False)
    assert (tmp_path / "batch.png").is_file()
    for (x1, y1), (x2, y2) in zip(drawn, plain):  # same items, same augmentations
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
