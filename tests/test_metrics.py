"""fxp's own image metrics (fxp.metrics): SSIM against values known in closed form and against the reference recipe
(Wang et al.'s gaussian window, as scipy's filter computes it), PSNR beside it."""
import math

import numpy as np
import pytest
import torch

from fxp.metrics import psnr, ssim


def test_ssim_of_flat_images_is_its_luminance_term():
    "Flat images have no variance: SSIM is (2ab + C1) / (a² + b² + C1) exactly; the same image scores 1."
    a, b = torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), 0.6)
    c1 = 0.01**2
    assert ssim(a, b).item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), abs=1e-6)  # 0.6001
    noisy = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    assert ssim(noisy, noisy).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_ssim_matches_the_reference_recipe():
    "scipy's gaussian filter (sigma 1.5, 11 taps) over the positions where the window fits: skimage's recipe."
    from scipy.ndimage import gaussian_filter

    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 40, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)

    def reference(a, b) -> float:
        def local(z):
            return gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]

        maps = []
        for ca, cb in zip(a.double().numpy(), b.double().numpy()):
            mu_a, mu_b = local(ca), local(cb)
            var_a, var_b, cov = local(ca * ca) - mu_a**2, local(cb * cb) - mu_b**2, local(ca * cb) - mu_a * mu_b
            luminance = (2 * mu_a * mu_b + 1e-4) / (mu_a**2 + mu_b**2 + 1e-4)
            maps.append(luminance * (2 * cov + 9e-4) / (var_a + var_b + 9e-4))
        return float(np.mean(maps))

    got = ssim(x, y).tolist()
    assert got == pytest.approx([reference(x[i], y[i]) for i in range(2)], abs=1e-5)
    assert 0.9 < got[0] < 0.99  # noise costs structure


def test_psnr_of_a_known_error():
    "A uniform error of 0.1 on [0, 1] pixels: MSE 0.01, PSNR 20 dB."
    x = torch.rand(1, 3, 8, 8)
    assert psnr(x, x + 0.1).item() == pytest.approx(-10 * math.log10(0.01), abs=1e-3)
