"""Losses on hand-computed cases (spec §7 points 4, 5, 6)."""

import math

import pytest
import torch
import torch.nn.functional as F
from clvnet.losses import (
    cross_modal_contrastive_loss,
    mask_bce,
    mask_dice,
    relation_consistency_loss,
)

# --- mask losses (§1.5, §7.6) -----------------------------------------------------------------------------


def test_perfect_logits_give_zero_bce_and_dice():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[0, 2:5, 1:7] = True
    target[1, :, :3] = True
    logits = torch.where(target, 100.0, -100.0)
    assert torch.allclose(mask_bce(logits, target), torch.zeros(2), atol=1e-30)
    assert torch.allclose(mask_dice(logits, target), torch.zeros(2), atol=1e-6)


def test_zero_logits_give_bce_ln2():
    target = torch.rand(3, 5, 7) > 0.5
    assert torch.allclose(mask_bce(torch.zeros(3, 5, 7), target), torch.full((3,), math.log(2)))


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_dice_at_half_probability(fraction):
    target = torch.zeros(1, 800, 800)
    target[0, : int(800 * fraction)] = 1  # whole rows: the target covers `fraction` of the pixels
    dice = mask_dice(torch.zeros(1, 800, 800), target).item()
    assert dice == pytest.approx(1 - fraction / (0.5 + fraction), abs=1e-6)  # the 1e-6 terms are negligible here
    if fraction == 0.5:
        assert dice == pytest.approx(0.5, abs=1e-6)
    # on a 20 × 20 mask the 1e-6 terms show: 1 − (a·400/1000 + 1e-6) / ((0.5 + a)·400/1000 + 1e-6)
    small = torch.zeros(1, 20, 20)
    small[0, : int(20 * fraction)] = 1
    exact = 1 - (fraction * 0.4 + 1e-6) / ((0.5 + fraction) * 0.4 + 1e-6)
    assert mask_dice(torch.zeros(1, 20, 20), small).item() == pytest.approx(exact, abs=1e-7)


def test_dice_empty_target_limits():
    empty = torch.zeros(1, 800, 800, dtype=torch.bool)
    assert mask_dice(torch.full((1, 800, 800), -100.0), empty).item() == pytest.approx(0.0, abs=1e-6)
    # all 640 000 pixels predicted: 1 − 1e-6 / (640 + 1e-6) ≈ 1
    positive = mask_dice(torch.full((1, 800, 800), 100.0), empty).item()
    assert positive == pytest.approx(1.0, abs=1e-6)


def test_dice_matches_formula_on_random_input():
    logits, target = torch.randn(2, 6, 6), torch.rand(2, 6, 6) > 0.3
    p, t = logits.sigmoid().flatten(1), target.float().flatten(1)
    expected = 1 - (2 * (p * t).sum(1) / 1000 + 1e-6) / (p.sum(1) / 1000 + t.sum(1) / 1000 + 1e-6)
    assert torch.allclose(mask_dice(logits, target), expected)


def test_mask_losses_backpropagate():
    logits = torch.randn(2, 9, 9, requires_grad=True)
    target = torch.rand(2, 9, 9) > 0.5
    (mask_bce(logits, target).mean() + mask_dice(logits, target).mean()).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_mask_losses_reject_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        mask_bce(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        mask_dice(torch.zeros(4, 4), torch.zeros(4, 4))


# --- L_rec (§1.4 eq. 11, §7.4) --------------------------------------------------------------------------


def _log_rows(logits):
    return logits.log_softmax(-1)


def test_rec_zero_for_identical_and_single_object():
    log_r = _log_rows(torch.randn(5, 5))
    assert relation_consistency_loss(log_r, log_r).item() == 0.0
    assert relation_consistency_loss(_log_rows(torch.randn(1, 1)), _log_rows(torch.randn(1, 1))).item() == 0.0


def test_rec_positive_symmetric_and_equal_to_kl_sum():
    torch.manual_seed(0)
    log_r = _log_rows(torch.randn(5, 5))
    log_u = torch.full((5, 5), -math.log(5))  # the uniform matrix U
    loss = relation_consistency_loss(log_r, log_u)
    assert loss.item() > 0
    assert loss.item() == pytest.approx(relation_consistency_loss(log_u, log_r).item(), rel=1e-6)
    r, u = log_r.exp(), log_u.exp()
    expected = 0.5 * ((r * (r / u).log()).sum() + (u * (u / r).log()).sum())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for _ in range(5):  # ≥ 0 for any pair
        a, b = _log_rows(3 * torch.randn(4, 4)), _log_rows(3 * torch.randn(4, 4))
        assert relation_consistency_loss(a, b).item() >= 0


def test_rec_hand_computed_two_objects():
    # R^t rows (0.5, 0.5), (0.5, 0.5); R^v rows (0.75, 0.25), (0.25, 0.75)
    r_t, r_v = torch.full((2, 2), 0.5), torch.tensor([[0.75, 0.25], [0.25, 0.75]])
    # ½ Σ_ij (R^t − R^v)(log R^t − log R^v): two diagonal entries 0.25·log(0.75/0.5), two off-diagonal 0.25·log 2
    expected = 0.5 * 2 * (0.25 * math.log(0.75 / 0.5) + 0.25 * math.log(0.5 / 0.25))
    assert relation_consistency_loss(r_t.log(), r_v.log()).item() == pytest.approx(expected, rel=1e-6)


def test_rec_gradients_reach_both_sides():
    a, b = torch.randn(3, 3, requires_grad=True), torch.randn(3, 3, requires_grad=True)
    relation_consistency_loss(_log_rows(a), _log_rows(b)).backward()
    for x in (a, b):
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_rec_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, N\)"):
        relation_consistency_loss(torch.zeros(2, 3), torch.zeros(2, 3))


# --- L_csc (§1.4 eq. 10, §7.5) --------------------------------------------------------------------------


def test_csc_two_orthogonal_objects():
    # m_i = e_i, S_i⁺ = {e_i}, 1/τ = 1: each of the 4 terms is −log(e¹ / e⁰) = −1
    masks = torch.eye(2)
    words = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    scale = torch.tensor(1.0)
    assert cross_modal_contrastive_loss(masks, words, scale, "sum").item() == pytest.approx(-4.0)
    assert cross_modal_contrastive_loss(masks, words, scale).item() == pytest.approx(-2.0)
    # with the positive in the denominators: −log(e / (e + 1)) per term
    with_positive = cross_modal_contrastive_loss(masks, words, scale, "sum", include_positive=True).item()
    assert with_positive == pytest.approx(4 * math.log(1 + math.exp(-1)))


def test_csc_hand_computed_multi_word():
    masks = torch.eye(2)
    words = [torch.tensor([[1.0, 0.0], [0.6, 0.8]]), torch.tensor([[0.0, 1.0]])]
    scale = torch.tensor(2.0)
    forward_1 = -(2.0 + 1.2) / 2  # positives 2·1 and 2·0.6; the one negative 2·0 → log-denominator 0
    forward_2 = -(2.0 - math.log(math.exp(0.0) + math.exp(1.6)))  # negatives 2·0 and 2·0.8
    reverse_1 = -(4 / math.sqrt(5) - 2 / math.sqrt(5))  # s_1 = (2, 1)/√5
    reverse_2 = -(2.0 - 0.0)
    expected = forward_1 + forward_2 + reverse_1 + reverse_2
    assert cross_modal_contrastive_loss(masks, words, scale, "sum").item() == pytest.approx(expected, rel=1e-6)
    assert cross_modal_contrastive_loss(masks, words, scale, "mean").item() == pytest.approx(expected / 2, rel=1e-6)


def test_csc_three_objects_matches_direct_formula():
    torch.manual_seed(1)
    masks = F.normalize(torch.randn(3, 4), dim=-1)
    words = [F.normalize(torch.randn(k, 4), dim=-1) for k in (1, 3, 2)]
    scale = torch.tensor(1 / 0.07)
    expected = 0.0
    for i in range(3):
        negatives = torch.cat([w for j, w in enumerate(words) if j != i])
        log_den = torch.logsumexp(scale * negatives @ masks[i], 0)
        expected += -(scale * words[i] @ masks[i] - log_den).mean().item()
        s_i = F.normalize(words[i].mean(0), dim=0)
        others = torch.stack([masks[j] for j in range(3) if j != i])
        expected += -(scale * s_i @ masks[i] - torch.logsumexp(scale * others @ s_i, 0)).item()
    loss = cross_modal_contrastive_loss(masks, words, scale, "sum")
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_csc_skipped_below_two_objects_but_keeps_graph():
    mask = F.normalize(torch.randn(1, 4), dim=-1).requires_grad_()
    scale = torch.tensor(10.0, requires_grad=True)
    loss = cross_modal_contrastive_loss(mask, [F.normalize(torch.randn(2, 4), dim=-1)], scale)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(mask.grad, torch.zeros_like(mask)) and scale.grad.item() == 0.0


def test_csc_gradients_flow_and_are_finite():
    masks = torch.randn(3, 8, requires_grad=True)
    raw_words = [torch.randn(k, 8, requires_grad=True) for k in (2, 1, 4)]
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss = cross_modal_contrastive_loss(F.normalize(masks, dim=-1), [F.normalize(w, dim=-1) for w in raw_words],
                                        log_scale.exp())
    loss.backward()
    for x in (masks, log_scale, *raw_words):
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_csc_rejects_bad_input():
    masks, words, scale = torch.eye(2), [torch.eye(2)[:1], torch.eye(2)[1:]], torch.tensor(1.0)
    with pytest.raises(ValueError, match="reduction"):
        cross_modal_contrastive_loss(masks, words, scale, "max")
    with pytest.raises(ValueError, match="1 word sets for 2"):
        cross_modal_contrastive_loss(masks, words[:1], scale)
    with pytest.raises(ValueError, match="word set 1"):
        cross_modal_contrastive_loss(masks, [words[0], torch.zeros(0, 2)], scale)
