"""The attention kernel on hand-built tensors: SDPA output plus the kept rows' weights must equal the
eager reference that computes every row (grouped-query heads, a causal mask, softcap)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rag.generate.attention import AttentionReducer, eager_segment_attention, segment_attention


def causal_mask(Q: int, K: int) -> torch.Tensor:
    """(1, 1, Q, K) additive mask: query row i (the last Q of K positions) sees keys 0..K-Q+i."""
    allowed = torch.arange(K)[None, :] <= torch.arange(K - Q, K)[:, None]
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]


def run(kernel, q, k, v, mask, rows: slice, softcap: float | None = None):
    H, Q, K, L, S = q.shape[1], q.shape[2], k.shape[2], 2, 3
    membership = torch.nn.functional.one_hot(torch.arange(K) % S, S).float()
    reducer = AttentionReducer(membership, n_layers=L, prompt_len=K)
    R = len(range(Q)[rows])
    out_masses, out_tokens = torch.zeros(R, L, H, S), torch.zeros(R, K)
    reducer.target(rows, out_masses, out_tokens)
    outputs = [kernel(SimpleNamespace(layer_idx=layer), q, k, v, mask, softcap=softcap,
                      attention_reducer=reducer)[0] for layer in range(L)]
    return outputs[0], out_masses, out_tokens


@pytest.mark.parametrize("rows", [slice(-1, None), slice(None), slice(2, 5)])
@pytest.mark.parametrize("heads", [(4, 4), (6, 2)])  # (query heads, KV heads): plain and grouped
def test_sdpa_with_kept_rows_equals_eager(rows: slice, heads: tuple[int, int]) -> None:
    torch.manual_seed(0)
    H, kvH = heads
    Q, K, D = 7, 11, 16
    q, k, v = torch.randn(1, H, Q, D), torch.randn(1, kvH, K, D), torch.randn(1, kvH, K, D)
    mask = causal_mask(Q, K)
    out, masses, tokens = run(segment_attention, q, k, v, mask, rows)
    ref_out, ref_masses, ref_tokens = run(eager_segment_attention, q, k, v, mask, rows)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(masses, ref_masses, atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens, ref_tokens, atol=1e-5, rtol=0)
    # each kept row is a softmax over what it may see: masses sum to one, masked keys get nothing
    torch.testing.assert_close(masses.sum(-1), torch.ones_like(masses.sum(-1)), atol=1e-5, rtol=0)


def test_softcap_falls_back_to_eager() -> None:
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 2, 3, 8) * 10, torch.randn(1, 2, 5, 8) * 10, torch.randn(1, 2, 5, 8)
    mask = causal_mask(3, 5)
    out, masses, _ = run(segment_attention, q, k, v, mask, slice(None), softcap=5.0)
    ref_out, ref_masses, _ = run(eager_segment_attention, q, k, v, mask, slice(None), softcap=5.0)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(masses, ref_masses)
    uncapped, _, _ = run(segment_attention, q, k, v, mask, slice(None))
    assert not torch.allclose(out, uncapped, atol=1e-3)  # the cap changed the result
