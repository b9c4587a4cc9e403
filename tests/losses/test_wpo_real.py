"""WPO's aligned weight on a real vocabulary (SmolLM2's 49,152 tokens): O(1), not ~V^{−2}.

The policy is a tiny Llama over the real tokenizer with random weights (a near-uniform
next-token distribution), scoring 4 UltraFeedback pairs. The raw weight ``exp(c̄ + r̄)`` is then
about ``V^{−2} ≈ 4e−10``; dividing each token's probability by ``Σ_v p(v)²`` (≈ 1/V here)
brings it to about 1.
"""

import pytest
import torch
from transformers import LlamaForCausalLM

from lit_align.logps import naive_response_logps
from lit_align.losses import DPO
from lit_align.losses.margin import wpo_weights
from lit_align.losses.stability import Setup, load_batches, tiny_llama
from lit_align.scorer import CausalLMScorer

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def scored(real_tokenizer, ultrafeedback):
    torch.manual_seed(0)
    setup = Setup(pairs=4, batch_size=4, max_length=48, hidden_size=16, layers=1)
    batch = load_batches(ultrafeedback / "train.jsonl", real_tokenizer, setup, 4)[0]
    scorer = CausalLMScorer(LlamaForCausalLM(tiny_llama(len(real_tokenizer), setup)))
    loss = DPO(wpo=True)
    with torch.no_grad():  # the flags the training module passes for this loss
        logps = scorer(batch, loss.needs_token_logps, loss.needs_token_entropy)
    return scorer, batch, logps


def test_aligned_weight_is_order_one_where_the_raw_one_vanishes(scored):
    _, _, logps = scored
    chosen, rejected = logps.mean.chunk(2)
    assert torch.exp(chosen + rejected).max().item() < 1e-8
    weights = wpo_weights(logps)
    assert 0.5 < weights.mean().item() <= 1.0, weights


def test_log_expected_prob_matches_full_logits(scored):
    scorer, batch, logps = scored
    decoder = scorer.model.get_decoder()
    with torch.no_grad():
        hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        full = naive_response_logps(
            hidden.last_hidden_state,
            scorer.model.get_output_embeddings(),
            batch.input_ids,
            batch.response_mask,
            with_entropy=True,
        )
    torch.testing.assert_close(logps.token_log_expected_prob, full.token_log_expected_prob)
