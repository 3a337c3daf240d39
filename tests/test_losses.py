"""Lesson 7's feature loss (fxp.losses) on random tensors, with a random feature network (no weights offline): its
terms, its gradients, its blocks, and what model.pkl keeps of it."""
import pickle

import pytest
import torch

from fxp.errors import FxpError
from fxp.losses import FeatureLoss, backbone, blocks

KEY = "task.feature_net"


@pytest.fixture(scope="module")
def vgg_loss():
    "The notebook's loss (VGG16_bn, blocks 2-4, weights 5, 15, 2, Gram x5e3) on random weights."
    return FeatureLoss("vgg16_bn", False, [2, 3, 4], [5.0, 15.0, 2.0], 5e3, key=KEY)


def images(seed: int, n: int = 2, px: int = 32):
    return torch.randn(n, 3, px, px, generator=torch.Generator().manual_seed(seed))


def test_terms_are_recorded_non_negative_and_sum_to_the_loss(vgg_loss):
    loss = vgg_loss(images(0), images(1))
    terms = [getattr(vgg_loss, n) for n in vgg_loss.names]
    assert vgg_loss.names == ["pixel_loss", "feat_loss_0", "feat_loss_1", "feat_loss_2", "gram_loss_0",
                              "gram_loss_1", "gram_loss_2"]
    assert all(t.item() > 0 for t in terms), terms  # two different images differ in every term
    assert loss.item() == pytest.approx(sum(t.item() for t in terms), rel=1e-5)


def test_identical_images_cost_nothing(vgg_loss):
    x = images(2)
    assert vgg_loss(x, x.clone()).item() == 0
    assert all(getattr(vgg_loss, n).item() == 0 for n in vgg_loss.names)


def test_gradients_reach_the_image_not_the_frozen_network(vgg_loss):
    x = images(3).requires_grad_()
    vgg_loss(x, images(4)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in vgg_loss.body.parameters())


def test_vgg16_bn_blocks_end_before_each_max_pool():
    "The notebook's `[i-1 for i, o in enumerate(vgg_m) if isinstance(o, nn.MaxPool2d)]`: [5, 12, 22, 32, 42]."
    mods = backbone("vgg16_bn", False)
    ends = blocks(mods)
    pools = [i - 1 for i, m in enumerate(mods) if isinstance(m, torch.nn.MaxPool2d)]
    assert ends[:5] == pools == [5, 12, 22, 32, 42]


def test_model_pkl_keeps_the_loss_without_its_network(vgg_loss):
    "Pickled: the settings only (kB, not VGG's 60 MB); loaded: the same random network is made again on first use."
    x, y = images(5), images(6)
    before = vgg_loss(x, y).item()
    data = pickle.dumps(vgg_loss)
    assert len(data) < 100_000
    loaded = pickle.loads(data)
    assert loaded.body is None
    assert loaded(x, y).item() == pytest.approx(before, rel=1e-6)


def test_a_layer_the_network_lacks_is_one_line():
    with pytest.raises(FxpError, match=r"task.feature_net.layers=\[1, 9\]: resnet18 has 5 blocks"):
        FeatureLoss("resnet18", False, [1, 9], [1.0, 1.0], 5e3, key=KEY)


def test_an_unknown_network_is_one_line():
    with pytest.raises(FxpError, match="'vgg17' is not a torchvision image classification model.*vgg16_bn"):
        FeatureLoss("vgg17", False, [0], [1.0], 5e3, key=KEY)


def test_no_weights_offline_says_how_to_get_them(monkeypatch, tmp_path):
    "No network and no cached weights: one line with the way out, as model.pretrained's."
    import urllib.request

    from conftest import NO_NET

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(k, NO_NET)
    urllib.request.install_opener(None)  # urllib reads the proxies once per opener
    try:
        way_out = "connect once to download them, or use random features .* task.feature_net.pretrained=false"
        with pytest.raises(FxpError, match="pretrained weights for resnet18 are not available.*" + way_out):
            FeatureLoss("resnet18", True, [0], [1.0], 5e3, key=KEY)
    finally:
        monkeypatch.undo()
        urllib.request.install_opener(None)
