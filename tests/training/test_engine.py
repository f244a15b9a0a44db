"""Tests for usdcm.training.engine: the loop with every recipe key off, mixing, clipping, EMA."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from usdcm.runtime.device import to_channels_last
from usdcm.training.engine import BatchMixer, Mix, make_ema, mixed_loss, train_one_epoch


def _batches(n_batches: int = 3, size: int = 6, seed: int = 0) -> list[dict[str, Any]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.randn(size, 1, 8, 8, generator=generator),
            "label": torch.randint(0, 2, (size,), generator=generator),
        }
        for _ in range(n_batches)
    ]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def _run(model: nn.Module, batches: list[dict[str, Any]], **options: Any) -> float:
    optimizer = options.pop("optimizer", None) or torch.optim.AdamW(model.parameters(), lr=0.01)
    loss_fn = options.pop("loss_fn", None) or nn.CrossEntropyLoss()
    torch.manual_seed(123)  # dropout
    return train_one_epoch(
        model,
        batches,
        loss_fn=loss_fn,
        optimizer=optimizer,
        device=torch.device("cpu"),
        autocast=contextlib.nullcontext,
        **options,
    )


def _reference_epoch(model: nn.Module, batches: list[dict[str, Any]]) -> float:
    """The loop as it was before the recipe keys existed: forward, loss, backward, step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    torch.manual_seed(123)
    model.train()
    total, count = 0.0, 0
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(batch["image"]).float(), batch["label"])
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(batch["label"])
        count += len(batch["label"])
    return total / count


def test_with_every_key_off_the_loop_is_the_old_loop_bit_for_bit() -> None:
    batches = _batches()
    model, reference = _model(), _model()
    loss = _run(model, batches, grad_clip=0.0, ema=None, mixer=None)
    assert loss == _reference_epoch(reference, batches)
    for (name, value), other in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), name


# --- mixup and cutmix ----------------------------------------------------------------------


def test_mixup_blends_each_sample_with_its_partner() -> None:
    images = torch.randn(5, 1, 6, 6)
    mixed, mix = BatchMixer(0.4, 0.0, np.random.default_rng(3))(images, torch.zeros(5))
    assert mix.kind == "mixup" and 0 < mix.lam < 1
    assert sorted(mix.partner.tolist()) == [0, 1, 2, 3, 4]
    expected = images * mix.lam + images[mix.partner] * (1 - mix.lam)
    torch.testing.assert_close(mixed, expected)


def test_cutmix_pastes_a_box_and_lam_is_the_kept_area() -> None:
    images = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 2, 10, 12).contiguous()
    before = images.clone()
    for seed in range(20):
        mixed, mix = BatchMixer(0.0, 1.0, np.random.default_rng(seed))(images, torch.zeros(4))
        assert mix.kind == "cutmix" and mix.box is not None
        w0, w1, h0, h1 = mix.box
        for i in range(4):
            pasted = mixed[i] != images[i]
            own = float(images[i, 0, 0, 0])
            partner = float(images[mix.partner[i], 0, 0, 0])
            kept = (mixed[i] == own).float().mean().item()
            if own != partner:  # a sample paired with itself cannot show its box
                assert kept == pytest.approx(mix.lam)
                assert pasted[:, w0:w1, h0:h1].all()
                assert (mixed[i][:, w0:w1, h0:h1] == partner).all()
    assert torch.equal(images, before)  # the input batch is left alone


def test_mixing_is_reproducible_from_the_generator_alone() -> None:
    images = torch.randn(8, 1, 6, 6)

    def draws(seed: int) -> list[tuple[str, float, list[int]]]:
        mixer = BatchMixer(0.4, 1.0, np.random.default_rng(seed))
        out = []
        for _ in range(40):
            _, mix = mixer(images, torch.zeros(8))
            out.append((mix.kind, mix.lam, mix.partner.tolist()))
        return out

    torch.manual_seed(0)
    first = draws(7)
    torch.manual_seed(99)  # torch's global stream plays no part
    assert draws(7) == first
    assert draws(8) != first
    kinds = [kind for kind, _, _ in first]
    assert 10 <= kinds.count("cutmix") <= 30 and 10 <= kinds.count("mixup") <= 30


def test_a_mixer_with_both_alphas_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="mixup_alpha or cutmix_alpha"):
        BatchMixer(0.0, 0.0, np.random.default_rng(0))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_mixed_loss_is_the_weighted_smoothed_soft_target_cross_entropy(
    smoothing: float, weighted: bool
) -> None:
    generator = torch.Generator().manual_seed(0)
    n, n_classes = 7, 3
    logits = torch.randn(n, n_classes, generator=generator)
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    weight = torch.tensor([0.4, 1.9, 0.7]) if weighted else torch.ones(n_classes)
    partner = torch.tensor([3, 5, 0, 6, 2, 1, 4])
    lam = 0.3
    loss_fn = nn.CrossEntropyLoss(weight=weight if weighted else None, label_smoothing=smoothing)

    loss = mixed_loss(loss_fn, logits, labels, Mix(partner, lam, "mixup"))

    def smoothed(y: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(y, n_classes).float() * (1 - smoothing) + smoothing / n_classes

    targets = smoothed(labels) * lam + smoothed(labels[partner]) * (1 - lam)
    log_p = torch.log_softmax(logits, dim=1)
    expected = -(targets * weight * log_p).sum() / weight[labels].sum()
    torch.testing.assert_close(loss, expected)
    assert torch.equal(mixed_loss(loss_fn, logits, labels, None), loss_fn(logits, labels))


def test_training_with_a_mixer_mixes_the_batches() -> None:
    batches = _batches()
    plain = _run(_model(), batches)
    mixer = BatchMixer(0.4, 0.0, np.random.default_rng(0))
    mixed = _run(_model(), batches, mixer=mixer)
    again = _run(_model(), batches, mixer=BatchMixer(0.4, 0.0, np.random.default_rng(0)))
    assert mixed != plain
    assert mixed == again


# --- gradient clipping ------------------------------------------------------------------


def _one_sgd_step(grad_clip: float, scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """Parameter change of one plain SGD step (lr 1) on a loss with a large gradient."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    batch = {"image": torch.full((3, 4), 50.0), "label": torch.tensor([0, 1, 1])}
    train_one_epoch(
        model,
        [batch],
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        device=torch.device("cpu"),
        autocast=contextlib.nullcontext,
        scaler=scaler,
        grad_clip=grad_clip,
    )
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - before


def test_grad_clip_bounds_the_step_norm() -> None:
    unclipped = _one_sgd_step(0.0, None).norm().item()
    assert unclipped > 5
    assert _one_sgd_step(0.5, None).norm().item() == pytest.approx(0.5, rel=1e-4)


def test_grad_clip_clips_the_unscaled_gradients_of_a_grad_scaler() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    assert scaler.is_enabled()
    # clipping the scaled gradients would leave a step of 0.5 / 1024 after unscaling
    assert _one_sgd_step(0.5, scaler).norm().item() == pytest.approx(0.5, rel=1e-4)
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    unclipped = _one_sgd_step(0.0, fresh).norm().item()
    assert unclipped == pytest.approx(_one_sgd_step(0.0, None).norm().item(), rel=1e-4)


# --- EMA ----------------------------------------------------------------------------------


def test_ema_follows_every_optimizer_step_with_its_decay() -> None:
    batches = _batches(n_batches=4)
    model = _model()
    ema = make_ema(model, decay=0.9)
    snapshots: list[dict[str, torch.Tensor]] = []

    class _Recording(torch.optim.AdamW):
        def step(self, closure: Any = None) -> Any:
            result = super().step(closure)
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            return result

    _run(model, batches, ema=ema, optimizer=_Recording(model.parameters(), lr=0.01))
    assert len(snapshots) == 4 and int(ema.n_averaged) == 4

    expected = {k: v.clone() for k, v in snapshots[0].items()}  # the first update copies
    for snapshot in snapshots[1:]:
        for key, value in snapshot.items():
            if value.is_floating_point():
                expected[key] = 0.9 * expected[key] + 0.1 * value
    averaged = ema.module.state_dict()
    for key, value in expected.items():
        if value.is_floating_point():  # weights and batch-norm statistics
            torch.testing.assert_close(averaged[key], value, rtol=1e-5, atol=1e-6)
    # the trained model differs from its average
    weight = "0.weight"
    assert not torch.allclose(model.state_dict()[weight], averaged[weight])


def test_ema_updates_from_the_bare_model_under_a_wrapper() -> None:
    class _Wrapper(nn.Module):  # what torch.compile does: the model under _orig_mod
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self._orig_mod = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._orig_mod(x)  # type: ignore[no-any-return]

    batches = _batches(n_batches=2)
    bare, wrapped_bare = _model(), _model()
    ema, wrapped_ema = make_ema(bare, 0.5), make_ema(wrapped_bare, 0.5)
    _run(bare, batches, ema=ema)
    _run(_Wrapper(wrapped_bare), batches, ema=wrapped_ema)
    for key, value in ema.module.state_dict().items():
        assert torch.equal(value, wrapped_ema.module.state_dict()[key]), key


def test_ema_with_channels_last_and_bfloat16_autocast() -> None:
    batches = _batches(n_batches=2)
    model = to_channels_last(_model(), True)
    ema = make_ema(model, decay=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    start = copy.deepcopy(ema.module.state_dict())
    train_one_epoch(
        model,
        batches,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        device=torch.device("cpu"),
        autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16),
        channels_last=True,
        ema=ema,
        mixer=BatchMixer(0.0, 1.0, np.random.default_rng(0)),
        grad_clip=1.0,
    )
    assert int(ema.n_averaged) == 2
    averaged = ema.module.state_dict()["0.weight"]
    assert averaged.dtype == torch.float32
    assert averaged.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(ema.module.state_dict()["0.weight"], start["0.weight"])
