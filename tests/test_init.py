"""model.init (fxp.init): LSUV leaves every conv and linear layer's output at unit variance on its batch, kaiming draws
He's weights, the batch leaves the run's random states as they were, a pretrained model is refused in one line, and a
run records each layer's scale in summary.json."""
import pytest
import torch
from torch import nn

from conftest import newest_run, summary
from fxp import config, precheck
from fxp.errors import ConfigError
from fxp.init import LAYERS, TOL, initialize, kaiming, lsuv
from fxp.models import plain_cnn


def batch(n: int = 32, seed: int = 0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def outputs(model, x) -> list:
    "(mean, std) of every conv and linear layer's output on `x`, in order."
    seen, hooks = [], [m.register_forward_hook(lambda m, i, o: seen.append((o.mean().item(), o.std().item())))
                       for m in model.modules() if isinstance(m, LAYERS)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_lsuv_gives_every_layer_unit_variance_on_its_batch():
    torch.manual_seed(0)
    model, x = plain_cnn(depth=12, width=16), batch()
    before = outputs(model, x)
    assert max(std for _, std in before[1:]) < 0.2  # PyTorch's default init: each layer shrinks its inputs
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYERS)]
    record = lsuv(model, layers, (x,))
    after = outputs(model, x)
    assert len(after) == len(record) == 12
    assert all(abs(std - 1) <= TOL and abs(mean) <= TOL for mean, std in after), after
    assert record[0]["layer"] == "0.0 Conv2d" and all(r["std"] == pytest.approx(1, abs=TOL) for r in record)
    assert all(r["scale"] > 2 for r in record)  # each layer's weights grew: PyTorch's shrink about 3x a layer


def test_kaiming_draws_he_weights_and_zero_biases():
    torch.manual_seed(0)
    model = plain_cnn(depth=4, width=64)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYERS)]
    kaiming(layers)
    conv = layers[1][1]  # 64 in, 3x3: fan_in 576, std sqrt(2/576) = 0.059
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    assert all(m.bias.abs().sum() == 0 for _, m in layers)


def learner(seed: int):
    "A fastai learner on a shuffled, augmented-free synthetic set: its first training batch depends on the seed."
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.torch_core import set_seed

    set_seed(seed, reproducible=True)
    xs, ys = batch(64, seed=1), torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    items = list(zip(xs, ys))
    dls = DataLoaders.from_dsets(items[:48], items[48:], bs=8, shuffle=True)
    return Learner(dls, plain_cnn(depth=6, width=8), loss_func=nn.CrossEntropyLoss())


def test_the_init_batch_leaves_the_training_order_as_it_was():
    "A run with model.init=lsuv sees the same batches in the same order as one without: no random state moved."
    import random

    import numpy as np

    plain = learner(7)
    assert initialize(plain, "default") == {}
    expected = plain.dls.train.one_batch()[0]
    initialised = learner(7)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    record = initialize(initialised, "lsuv")
    assert record["init"]["method"] == "lsuv" and len(record["init"]["layers"]) == 6
    assert torch.equal(torch.get_rng_state(), states[0]) and (np.random.get_state()[1] == states[1]).all()
    assert random.getstate() == states[2]
    assert torch.equal(initialised.dls.train.one_batch()[0], expected)


def test_a_pretrained_model_with_init_is_one_line():
    with pytest.raises(ConfigError, match="model.init=lsuv re-initialises the model, but model.pretrained=true"):
        config.validate(precheck.compose(["task=pets", "model.init=lsuv"]))


@pytest.mark.slow
def test_a_run_records_each_layers_scale(fxp, tmp_path):
    r = fxp("train", "model.init=lsuv", "model.net.bn=false", "trainer.epochs=1")
    assert r.returncode == 0, r
    init = summary(newest_run(tmp_path))["init"]
    assert init["method"] == "lsuv" and [layer["layer"] for layer in init["layers"]] == [
        "0.0 Conv2d", "1.0 Conv2d", "2.0 Conv2d", "5 Linear"]
    assert all(layer["std"] == pytest.approx(1, abs=TOL) and layer["scale"] > 0 for layer in init["layers"])
