"""The Triton kernels of ``rs_shared.kernels`` against their PyTorch references, values and gradients, on CPU.

Triton's interpreter must be switched on before ``triton`` is first imported, so this file is not collected by the
normal test run (its name does not start with ``test_``): ``test_kernels_triton.py`` runs it in a child pytest with
``TRITON_INTERPRET=1 RS_KERNELS=triton``. Run it alone with ``uv run pytest shared/tests/kernels_interpreter_cases.py``
(the two variables are set below when absent). Shapes are small and odd: every interpreted program costs ~10 ms.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("RS_KERNELS", "triton")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rs_shared.kernels import (  # noqa: E402
    ce_dice_loss,
    ce_dice_loss_reference,
    differential_attention,
    differential_attention_reference,
    grouped_info_nce,
    grouped_info_nce_reference,
    use_triton,
)

CLOSE = {"rtol": 1e-4, "atol": 1e-5}


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def test_the_dispatch_picks_triton_for_cpu_tensors_here():
    assert os.environ["TRITON_INTERPRET"] == "1" and os.environ["RS_KERNELS"] == "triton"
    assert use_triton(torch.zeros(1))


# --- differential cross-attention ----------------------------------------------------------------------------


@pytest.mark.parametrize(("B", "h", "P", "T", "d", "e", "real"), [
    (2, 2, 17, 5, 24, 48, (5, 2)),  # odd sizes, head dim 24
    (1, 1, 70, 33, 72, 40, (1,)),  # batch 1, all keys but one padded, several query blocks and head-dim chunks
    (3, 1, 9, 4, 8, 8, (4, 1, 0)),  # a sample whose keys are all padding (uniform softmax, as the reference)
])
def test_differential_attention_matches_reference(B, h, P, T, d, e, real):
    g = torch.Generator().manual_seed(P)
    q, k, v = (torch.randn(B, h, n, dim, generator=g) for n, dim in ((P, 2 * d), (T, 2 * d), (T, e)))
    lam = torch.rand(h, generator=g) * 2 - 0.5
    mask = torch.zeros(B, T)
    for b, n in enumerate(real):
        mask[b, :n] = 1
    # padded keys and values are zero, as BIF makes them (random scores next to the −1e4 bias would be rounded
    # to the bias's fp32 spacing of ~1e-3, differently for any two summation orders)
    k, v = k * mask[:, None, :, None], v * mask[:, None, :, None]
    scale = d ** -0.5
    grad_out = torch.randn(B, h, P, e, generator=g)

    inputs = leaves(q, k, v, lam)
    out = differential_attention(inputs[0], inputs[1], inputs[2], mask, inputs[3], scale)
    assert type(out.grad_fn).__name__ == "DifferentialAttentionFunctionBackward"
    grads = torch.autograd.grad(out, inputs, grad_out)
    ref_inputs = leaves(q, k, v, lam)
    ref = differential_attention_reference(ref_inputs[0], ref_inputs[1], ref_inputs[2], mask, ref_inputs[3], scale)
    ref_grads = torch.autograd.grad(ref, ref_inputs, grad_out)

    assert out.dtype == torch.float32 and out.shape == (B, h, P, e)
    torch.testing.assert_close(out, ref, **CLOSE)
    for name, got, expected in zip(("q", "k", "v", "lam"), grads, ref_grads):
        torch.testing.assert_close(got, expected, **CLOSE, msg=lambda m, name=name: f"d{name}: {m}")


def test_differential_attention_low_precision_inputs():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 1, n, 16, generator=g).bfloat16() for n in (11, 6, 6))
    mask = torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3])
    lam = torch.tensor([0.8])
    inputs = leaves(q, k, v)
    out = differential_attention(*inputs, mask, lam, 0.25)
    torch.testing.assert_close(out, differential_attention_reference(q, k, v, mask, lam, 0.25), **CLOSE)
    out.sum().backward()
    assert [t.grad.dtype for t in inputs] == [torch.bfloat16] * 3


# --- weighted cross-entropy + Dice ---------------------------------------------------------------------------


@pytest.mark.parametrize(("B", "C", "H", "W", "dice_weight"), [
    (2, 2, 7, 9, 0.1),  # the ICIPNet setting on odd H×W; sample 0 has no foreground, sample 1 no background
    (1, 3, 33, 37, 0.5),  # batch 1, three classes, two pixel blocks
    (2, 5, 5, 6, 1.0),  # Dice only
])
def test_ce_dice_loss_matches_reference(B, C, H, W, dice_weight):
    g = torch.Generator().manual_seed(H)
    logits = 3 * torch.randn(B, C, H, W, generator=g)
    target = torch.randint(0, C, (B, H, W), generator=g)
    if B == 2:
        target[0], target[1] = 0, C - 1
    weights = torch.rand(C, generator=g) + 0.5

    (x,) = leaves(logits)
    loss = ce_dice_loss(x, target, weights, dice_weight)
    assert type(loss.grad_fn).__name__ == "CeDiceLossFunctionBackward"
    (grad,) = torch.autograd.grad(1.7 * loss, x)
    (x_ref,) = leaves(logits)
    ref = ce_dice_loss_reference(x_ref, target, weights, dice_weight)
    (ref_grad,) = torch.autograd.grad(1.7 * ref, x_ref)

    assert loss.shape == () and loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, **CLOSE)
    torch.testing.assert_close(grad, ref_grad, **CLOSE)


def test_ce_dice_loss_perfect_and_bf16_logits():
    target = torch.zeros(1, 5, 7, dtype=torch.long)
    target[0, 1:4, 2:6] = 1
    perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert ce_dice_loss(perfect, target, (0.9, 1.1), 0.1).item() == pytest.approx(0.0, abs=1e-6)

    logits = torch.randn(1, 2, 5, 7, generator=torch.Generator().manual_seed(1)).bfloat16().requires_grad_()
    loss = ce_dice_loss(logits, target, (0.9, 1.1), 0.1)
    torch.testing.assert_close(loss, ce_dice_loss_reference(logits, target, torch.tensor([0.9, 1.1]), 0.1), **CLOSE)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


# --- grouped InfoNCE -----------------------------------------------------------------------------------------


def owners_with_gaps(n, t, g):
    """Sorted random owners: queries 0 and 2 own keys (so every row has negatives), query 1 owns none."""
    owner = torch.cat([torch.tensor([0, 2]), torch.randint(0, n, (t - 2,), generator=g)])
    owner[owner == 1] = 0
    return owner.sort().values


@pytest.mark.parametrize("include_positive", [False, True])
@pytest.mark.parametrize(("N", "T", "E", "owner_kind"), [
    (3, 7, 24, "random"),  # mask → words with a query that owns no word
    (5, 5, 16, "diagonal"),  # words → mask: phrase i owns mask i
    (40, 70, 20, "random"),  # several query and key blocks
])
def test_grouped_info_nce_matches_reference(N, T, E, owner_kind, include_positive):
    g = torch.Generator().manual_seed(T)
    queries = F.normalize(torch.randn(N, E, generator=g), dim=-1)
    keys = F.normalize(torch.randn(T, E, generator=g), dim=-1)
    owner = torch.arange(N) if owner_kind == "diagonal" else owners_with_gaps(N, T, g)
    scale = torch.tensor(14.3)
    grad_out = torch.randn(T, generator=g)

    inputs = leaves(queries, keys, scale)
    loss = grouped_info_nce(inputs[0], inputs[1], owner, inputs[2], include_positive)
    assert type(loss.grad_fn).__name__ == "GroupedInfoNceFunctionBackward"
    grads = torch.autograd.grad(loss, inputs, grad_out)
    ref_inputs = leaves(queries, keys, scale)
    ref = grouped_info_nce_reference(ref_inputs[0], ref_inputs[1], owner, ref_inputs[2], include_positive)
    ref_grads = torch.autograd.grad(ref, ref_inputs, grad_out)

    torch.testing.assert_close(loss, ref, **CLOSE)
    for name, got, expected in zip(("queries", "keys", "scale"), grads, ref_grads):
        torch.testing.assert_close(got, expected, **CLOSE, msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")  # the interpreter's numpy
def test_grouped_info_nce_without_negatives_and_float_scale():
    keys = F.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(2)), dim=-1).requires_grad_()
    queries = torch.eye(2, 16)
    owner = torch.zeros(3, dtype=torch.long)  # query 0 owns every key: only the positive is in the denominator
    loss = grouped_info_nce(queries, keys, owner, 10.0, include_positive=True)
    torch.testing.assert_close(loss, torch.zeros(3), **CLOSE)
    loss.sum().backward()
    torch.testing.assert_close(keys.grad, torch.zeros_like(keys), **CLOSE)
