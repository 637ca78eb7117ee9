"""CGFormer (spec §1.3 eqs. 6–9, §7 points 1 and 3): shapes, hand-computed forward, the adjacency rules."""

import math

import pytest
import torch

from clvnet.cgformer import CGFormer

D, HEADS, K = 16, 2, 4


def make(seed: int = 0, **kwargs) -> CGFormer:
    torch.manual_seed(seed)
    return CGFormer(D, HEADS, **kwargs).eval()


def inputs(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=generator), torch.randn(K, D, generator=generator)


def reference(module: CGFormer, f_h: torch.Tensor, f_r: torch.Tensor, threshold: float | None = None,
              norm: bool = False) -> dict[str, torch.Tensor]:
    """Eqs. 6–9 written out with the module's weights (A_o·f_e aggregation, Norm = softmax(logits / √D))."""
    attended, _ = module.cross_attention(f_h[None], f_r[None], f_r[None])
    f_o = module.phi_o(f_h + attended[0])  # eq. 6
    relation = torch.softmax(module.phi_h(f_o) @ module.phi_v(f_o).T / math.sqrt(D), dim=-1)  # eq. 7
    f_e = module.phi_e((relation + torch.eye(len(f_h))) @ f_o)  # eq. 8
    adjacency = (relation > (1 / len(f_h) if threshold is None else threshold)).float()
    neighbours = adjacency / adjacency.sum(-1, keepdim=True).clamp(min=1) if norm else adjacency
    f_g = module.psi(f_o + module.phi_g(neighbours @ f_e))  # eq. 9
    return {"f_o": f_o, "relation": relation, "adjacency": adjacency, "f_g": f_g}


@torch.no_grad()
def test_shapes_and_relation_rows():
    f_h, f_r = inputs(5)
    out = make()(f_h, f_r)
    assert out.object_states.shape == out.grounded.shape == (5, D)  # f_o, f_g (N, D)
    assert out.relation_logits.shape == out.relation.shape == out.adjacency.shape == (5, 5)
    assert (out.relation > 0).all()
    torch.testing.assert_close(out.relation.sum(-1), torch.ones(5))
    assert set(out.adjacency.unique().tolist()) <= {0.0, 1.0}
    assert out.adjacency.sum() > 0  # random weights: some entry beats the uniform 1/N


@torch.no_grad()
def test_forward_matches_the_equations():
    f_h, f_r = inputs(4)
    module = make()
    out, ref = module(f_h, f_r), reference(module, f_h, f_r)
    torch.testing.assert_close(out.object_states, ref["f_o"])
    torch.testing.assert_close(out.relation, ref["relation"])
    assert torch.equal(out.adjacency, ref["adjacency"])
    torch.testing.assert_close(out.grounded, ref["f_g"])


@torch.no_grad()
def test_single_object_has_no_neighbour():
    out = make()(*inputs(1))
    assert out.relation.tolist() == [[1.0]]
    assert out.adjacency.tolist() == [[0.0]]  # R_e = 1 is not > τ_A = 1/1 (§7 point 3)


@pytest.mark.parametrize("n", [2, 3, 4, 7])
@torch.no_grad()
def test_uniform_relation_gives_empty_adjacency(n):
    module = make()
    module.phi_h.weight.zero_()
    module.phi_h.bias.zero_()  # φ_h(f_o) = 0 → all logits 0 → R_e exactly uniform
    out = module(*inputs(n))
    assert torch.equal(out.relation, torch.full((n, n), 1.0 / n))
    assert not out.adjacency.any()
    # A_o = 0 → f_g = ψ(f_o + φ_g(0)), and φ_g(0) is φ_g's bias, not zero (§7 point 3)
    assert module.phi_g.bias.abs().sum() > 0
    torch.testing.assert_close(out.grounded, module.psi(out.object_states + module.phi_g.bias))


@torch.no_grad()
def test_adjacency_threshold_option():
    f_h, f_r = inputs(5)
    everything, nothing, middle = make(adjacency_threshold=0.0), make(adjacency_threshold=1.0), \
        make(adjacency_threshold=0.25)
    assert everything(f_h, f_r).adjacency.all()  # softmax entries are > 0
    assert not nothing(f_h, f_r).adjacency.any()  # and < 1 for N > 1
    out = middle(f_h, f_r)
    assert torch.equal(out.adjacency, (out.relation > 0.25).float())
    torch.testing.assert_close(out.grounded, reference(middle, f_h, f_r, threshold=0.25)["f_g"])


@torch.no_grad()
def test_adjacency_norm_divides_rows_by_degree():
    f_h, f_r = inputs(5)
    literal, normed = make(adjacency_threshold=0.0), make(adjacency_threshold=0.0, adjacency_norm=True)
    out_literal, out_normed = literal(f_h, f_r), normed(f_h, f_r)
    assert torch.equal(out_literal.adjacency, out_normed.adjacency)  # A_o itself stays binary
    torch.testing.assert_close(out_normed.object_states, out_literal.object_states)
    # every row has degree 5: the normalised path aggregates the mean of f_e instead of its sum
    ref = reference(normed, f_h, f_r, threshold=0.0, norm=True)
    torch.testing.assert_close(out_normed.grounded, ref["f_g"])
    assert not torch.allclose(out_normed.grounded, out_literal.grounded)
    # rows without neighbours stay zero (max(1, degree)), so with an empty A_o both paths agree
    empty_literal, empty_normed = make(adjacency_threshold=1.0), make(adjacency_threshold=1.0, adjacency_norm=True)
    torch.testing.assert_close(empty_normed(f_h, f_r).grounded, empty_literal(f_h, f_r).grounded)


def test_layernorm_option_and_gradients():
    plain, normed = make(), make(layernorm=True)
    assert isinstance(normed.norm_o, torch.nn.LayerNorm) and isinstance(normed.norm_e, torch.nn.LayerNorm)
    assert isinstance(plain.norm_o, torch.nn.Identity)
    f_h, f_r = inputs(3)
    f_h.requires_grad_(True)
    out = normed(f_h, f_r)
    assert not out.adjacency.requires_grad  # A_o carries no gradient
    out.grounded.sum().backward()
    for name, p in normed.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert f_h.grad.abs().sum() > 0
