"""The DDPM forward process (cosine schedule) and DDIM sampling."""

from __future__ import annotations

import pytest
import torch

from nfields.errors import NfieldsError
from nfields.generative.diffusion import Diffusion, cosine_alpha_bars


def test_cosine_schedule_runs_from_signal_to_noise():
    a = cosine_alpha_bars(1000)
    assert a.shape == (1000,) and (a[1:] < a[:-1]).all()
    assert 0.999 < a[0] < 1 and a[-1] < 1e-4
    assert abs(float(a[499]) - 0.5) < 0.02  # the cosine schedule is half signal at mid-way
    with pytest.raises(NfieldsError):
        cosine_alpha_bars(0)


@pytest.mark.parametrize("step", [0, 250, 600, 999])
def test_forward_process_has_the_stated_mean_and_variance(step):
    torch.manual_seed(0)
    diffusion = Diffusion(1000)
    a = float(diffusion.alpha_bars[step])
    t = torch.full((200_000,), step)
    unit = diffusion.q_sample(torch.randn(200_000, 1), t)  # x0 ~ N(0, 1): the marginal variance stays 1
    assert abs(float(unit.var()) - 1) < 0.02
    constant = diffusion.q_sample(torch.full((200_000, 1), 2.0), t)  # x0 = 2: N(2 sqrt(a), 1 - a)
    assert abs(float(constant.mean()) - 2 * a ** 0.5) < 0.01
    assert abs(float(constant.var()) - (1 - a)) < 0.01 + 0.01 * (1 - a)


def test_ddim_with_the_exact_denoiser_lands_on_the_data():
    """Data: the points -1 and +1 with equal weight; E[x0 | x_t] = tanh(sqrt(a) x_t / (1 - a))."""
    diffusion = Diffusion(1000)

    def denoiser(x, t, condition):
        a = diffusion.alpha_bars[t].view(-1, 1)
        return torch.tanh(a.sqrt() * x / (1 - a))

    samples = diffusion.sample(denoiser, (2000, 1), sampling_steps=100, generator=torch.Generator().manual_seed(0))
    assert (samples.abs() - 1).abs().max() < 1e-3
    assert 0.4 < float((samples > 0).float().mean()) < 0.6
    with pytest.raises(NfieldsError):
        diffusion.sample(denoiser, (2, 1), sampling_steps=0)


def test_x0_loss_is_zero_for_a_perfect_denoiser_of_one_point():
    diffusion = Diffusion(100)
    point = torch.tensor([[0.3, -0.7]])
    loss = diffusion.loss(lambda x, t, c: point.expand_as(x), point.expand(8, -1))
    assert float(loss) == 0.0
