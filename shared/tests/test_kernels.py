"""``rs_shared.kernels``: the dispatch rule, the PyTorch references against their formulas, input checks, and that
CPU users never import Triton. The Triton kernels themselves are compared with these references under Triton's
interpreter by ``test_kernels_triton.py``."""

import math
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from rs_shared.kernels import (
    ce_dice_loss,
    ce_dice_loss_reference,
    differential_attention,
    differential_attention_map,
    differential_attention_reference,
    dispatch,
    grouped_info_nce,
    grouped_info_nce_reference,
    soft_dice_loss,
    use_triton,
)

CUDA_TENSOR = SimpleNamespace(is_cuda=True)  # stands in for a CUDA tensor: the rule only reads .is_cuda


# --- dispatch ------------------------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch):
    """No override, no interpreter, and Triton "installed" without importing it in this process."""
    monkeypatch.delenv("RS_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    return monkeypatch


def test_cpu_tensors_use_the_reference_and_cuda_tensors_triton(env):
    assert not use_triton(torch.zeros(2), torch.zeros(3))
    assert use_triton(CUDA_TENSOR, CUDA_TENSOR)
    assert not use_triton(CUDA_TENSOR, torch.zeros(1))  # all tensors must be on CUDA
    env.setattr(dispatch, "triton_available", lambda: False)
    assert not use_triton(CUDA_TENSOR)  # no triton: the reference, silently


def test_env_override(env):
    env.setenv("RS_KERNELS", "reference")
    assert not use_triton(CUDA_TENSOR)
    env.setenv("RS_KERNELS", "Triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        use_triton(torch.zeros(1))
    env.setenv("TRITON_INTERPRET", "1")
    assert use_triton(torch.zeros(1))
    env.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="not installed"):
        use_triton(CUDA_TENSOR)
    env.setenv("RS_KERNELS", "cuda")
    with pytest.raises(ValueError, match=r"RS_KERNELS='cuda'.*'reference'"):
        use_triton(torch.zeros(1))


def test_cpu_users_never_import_triton():
    script = textwrap.dedent("""
        import sys
        import torch
        from rs_shared.kernels import ce_dice_loss, differential_attention, grouped_info_nce
        q = torch.randn(1, 1, 3, 4, requires_grad=True)
        differential_attention(q, torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 2), torch.ones(1, 2),
                               torch.tensor([0.5]), 0.5).sum().backward()
        ce_dice_loss(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), (1.0, 1.0), 0.1)
        grouped_info_nce(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 1, 1]), 2.0)
        assert "triton" not in sys.modules, "triton was imported"
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("RS_KERNELS", "TRITON_INTERPRET")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


# --- differential cross-attention ----------------------------------------------------------------------------


def attention_inputs(B=2, h=2, P=5, T=4, d=3, e=6, real=(4, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, h, n, dim, generator=g) for n, dim in ((P, 2 * d), (T, 2 * d), (T, e)))
    mask = torch.zeros(B, T)
    for b, n in enumerate(real):
        mask[b, :n] = 1
    return q, k, v, mask, torch.tensor([0.7, -0.2])[:h]


def test_differential_attention_reference_is_the_formula():
    q, k, v, mask, lam = attention_inputs()
    out = differential_attention(q, k, v, mask, lam, 0.4)
    assert out.grad_fn is None and torch.equal(out, differential_attention_reference(q, k, v, mask, lam, 0.4))
    for b in range(2):
        real = int(mask[b].sum())
        for head in range(2):
            q1, q2 = q[b, head, :, :3], q[b, head, :, 3:]
            k1, k2 = k[b, head, :real, :3], k[b, head, :real, 3:]
            a = (0.4 * q1 @ k1.T).softmax(-1) - lam[head] * (0.4 * q2 @ k2.T).softmax(-1)  # real keys only
            torch.testing.assert_close(out[b, head], a @ v[b, head, :real])


def test_differential_attention_map_rows_and_all_padding():
    q, k, v, mask, lam = attention_inputs(B=3, real=(4, 1, 0))
    k = k * mask[:, None, :, None]  # as BIF does: padded keys are zero, so an all-padding row scores −1e4 everywhere
    attn = differential_attention_map(q, k, mask, lam, 0.4)
    assert attn.shape == (3, 2, 5, 4) and attn.dtype == torch.float32
    torch.testing.assert_close(attn.sum(-1), (1 - lam).view(1, 2, 1).expand(3, 2, 5))  # each softmax sums to 1
    assert (attn[1, :, :, 1:].abs() < 1e-30).all()  # one real key: the padded ones get exp(−1e4) = 0
    torch.testing.assert_close(attn[2], (1 - lam).view(2, 1, 1).expand(2, 5, 4) / 4)  # no real key: uniform


def test_differential_attention_gradients_reach_lambda():
    q, k, v, mask, lam = attention_inputs()
    lam.requires_grad_()
    differential_attention(q, k, v, mask, lam, 0.4).sum().backward()
    assert lam.grad.shape == (2,) and (lam.grad != 0).all()


def test_differential_attention_rejects_bad_shapes():
    q, k, v, mask, lam = attention_inputs()
    with pytest.raises(ValueError, match="even last axis"):
        differential_attention(q[..., :5], k[..., :5], v, mask, lam, 1.0)
    with pytest.raises(ValueError, match=r"v must be \(B, h, T, e\)"):
        differential_attention(q, k, v[:, :, :3], mask, lam, 1.0)
    with pytest.raises(ValueError, match="key_mask"):
        differential_attention(q, k, v, mask[:, :3], lam, 1.0)
    with pytest.raises(ValueError, match="one value per head"):
        differential_attention(q, k, v, mask, lam[:1], 1.0)
    with pytest.raises(ValueError, match="at least one key"):
        differential_attention(q, k[:, :, :0], v[:, :, :0], mask[:, :0], lam, 1.0)


# --- weighted cross-entropy + Dice ---------------------------------------------------------------------------


def test_ce_dice_reference_is_the_formula():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[1] = 0  # classes 1 and 2 absent from sample 1: the Dice edge case (d = ε / (Σp + ε))
    weights = torch.tensor([0.5, 1.0, 2.0])
    p = logits.softmax(1)
    w = weights[target]
    nll = -p.log().gather(1, target[:, None])[:, 0]
    ce = (w * nll).sum() / w.sum()
    dice = 0.0
    for b in range(2):
        for c in range(3):
            t = (target[b] == c).float()
            dice += 1 - (2 * (p[b, c] * t).sum() + 1e-6) / (p[b, c].sum() + t.sum() + 1e-6)
    loss = ce_dice_loss(logits, target, weights, 0.3)
    assert torch.equal(loss, ce_dice_loss_reference(logits, target, weights, 0.3))
    torch.testing.assert_close(loss, 0.7 * ce + 0.3 * dice)
    torch.testing.assert_close(soft_dice_loss(logits, target), dice)


def test_ce_dice_loss_rejects_bad_shapes():
    logits, target = torch.zeros(2, 2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected logits \(B, C, H, W\)"):
        ce_dice_loss(logits, target[:, :3], (1.0, 1.0), 0.1)
    with pytest.raises(ValueError, match="one weight per class"):
        ce_dice_loss(logits, target, (1.0, 1.0, 1.0), 0.1)


# --- grouped InfoNCE -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("include_positive", [False, True])
def test_grouped_info_nce_reference_is_the_formula(include_positive):
    g = torch.Generator().manual_seed(2)
    queries, keys = torch.randn(3, 4, generator=g), torch.randn(6, 4, generator=g)
    owner = torch.tensor([0, 0, 2, 2, 2, 0])  # query 1 owns nothing: its keys-side loss is absent
    loss = grouped_info_nce(queries, keys, owner, torch.tensor(3.0), include_positive)
    assert torch.equal(loss, grouped_info_nce_reference(queries, keys, owner, torch.tensor(3.0), include_positive))
    for t in range(6):
        i = int(owner[t])
        sims = [3.0 * float(queries[i] @ keys[u]) for u in range(6)]
        denominator = [math.exp(sims[u]) for u in range(6) if owner[u] != i]
        if include_positive:
            denominator.append(math.exp(sims[t]))
        assert loss[t].item() == pytest.approx(math.log(sum(denominator)) - sims[t], rel=1e-5)


def test_grouped_info_nce_rejects_bad_input():
    queries, keys = torch.randn(2, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match="must share E"):
        grouped_info_nce(queries, keys[:, :3], torch.tensor([0, 1, 1]), 1.0)
    with pytest.raises(ValueError, match="owner must be int64 of shape"):
        grouped_info_nce(queries, keys, torch.tensor([0, 1]), 1.0)
    with pytest.raises(ValueError, match="owner must be int64"):
        grouped_info_nce(queries, keys, torch.tensor([0.0, 1.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match="scale must be a scalar"):
        grouped_info_nce(queries, keys, torch.tensor([0, 1, 1]), torch.ones(2))


def test_grouped_info_nce_is_differentiable_in_the_scale():
    queries = F.normalize(torch.randn(3, 4), dim=-1)
    scale = torch.tensor(5.0, requires_grad=True)
    grouped_info_nce(queries, queries, torch.arange(3), scale).sum().backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)
