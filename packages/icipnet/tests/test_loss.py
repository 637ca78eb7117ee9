"""The ICIPNet loss: 0.9 · weighted CE + 0.1 · Dice (sum reduction), spec §4 and §9."""

import pytest
import torch
import torch.nn.functional as F

from icipnet.loss import dice_loss, icipnet_loss


def _hard_logits(classes: torch.Tensor, margin: float = 50.0) -> torch.Tensor:
    """Logits ``(B, 2, H, W)`` whose softmax is (numerically) one-hot on ``classes``."""
    return F.one_hot(classes, 2).permute(0, 3, 1, 2).float() * margin


@pytest.fixture
def target():
    t = torch.zeros(4, 16, 16, dtype=torch.long)
    t[0, 2:9, 3:12] = 1
    t[1] = 1  # all foreground
    t[3, :, 8:] = 1  # sample 2 all background
    return t


def test_dice_is_zero_when_every_pixel_is_right_and_about_2b_when_every_pixel_is_wrong(target):
    assert dice_loss(_hard_logits(target), target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(_hard_logits(1 - target), target).item() == pytest.approx(8.0, abs=1e-5)  # B = 4, 2 classes
    assert dice_loss(_hard_logits(1 - target[:1]), target[:1]).item() == pytest.approx(2.0, abs=1e-5)


def test_dice_matches_the_per_sample_per_class_formula(target):
    logits = torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    p = logits.softmax(dim=1)
    expected = 0.0
    for b in range(4):
        for c in range(2):
            t = (target[b] == c).float()
            d = (2 * (p[b, c] * t).sum() + 1e-6) / (p[b, c].sum() + t.sum() + 1e-6)
            expected += 1 - d.item()
    assert dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_cross_entropy_is_the_weighted_mean_of_pytorch(target):
    logits = torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    ce = icipnet_loss(logits, target, ce_weights=(0.9, 1.1), dice_weight=0.0)
    reference = F.cross_entropy(logits, target, weight=torch.tensor([0.9, 1.1]))
    assert ce.item() == pytest.approx(reference.item(), rel=1e-6)
    w = torch.tensor([0.9, 1.1])[target]
    nll = -logits.log_softmax(dim=1).gather(1, target[:, None])[:, 0]
    assert ce.item() == pytest.approx(((w * nll).sum() / w.sum()).item(), rel=1e-6)
    assert ce.item() != pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-4)  # the weights matter


def test_total_loss_mixes_ce_and_dice_with_the_dice_weight(target):
    logits = torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(2))
    ce = F.cross_entropy(logits, target, weight=torch.tensor([0.9, 1.1]))
    total = icipnet_loss(logits, target)
    assert total.ndim == 0
    assert total.item() == pytest.approx(0.9 * ce.item() + 0.1 * dice_loss(logits, target).item(), rel=1e-6)
    custom = icipnet_loss(logits, target, ce_weights=(1.0, 1.0), dice_weight=0.5)
    assert custom.item() == pytest.approx(0.5 * F.cross_entropy(logits, target).item()
                                          + 0.5 * dice_loss(logits, target).item(), rel=1e-6)


def test_gradient_is_finite_and_low_precision_logits_are_computed_in_fp32(target):
    logits = (torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(3)) * 30).requires_grad_()
    loss = icipnet_loss(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    low = icipnet_loss(logits.detach().bfloat16(), target)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(icipnet_loss(logits.detach().bfloat16().float(), target).item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = icipnet_loss(logits.detach(), target)
    assert autocast.dtype == torch.float32 and autocast.item() == pytest.approx(loss.item(), rel=1e-6)


def test_shape_and_weight_mismatches_are_refused(target):
    logits = torch.zeros(4, 2, 16, 16)
    with pytest.raises(ValueError, match="expected logits"):
        icipnet_loss(logits, target[:, :8])
    with pytest.raises(ValueError, match="ce_weights has 3 entries for 2 classes"):
        icipnet_loss(logits, target, ce_weights=(1.0, 1.0, 1.0))
