"""lit_align's chunked response log-probs on SmolLM2 and real text (UltraFeedback) equal a plain
transformers forward + ``log_softmax`` + gather in float32, padded and packed.

The plain computation scores each sequence alone (no padding, no packing) from full logits.
The tolerance is float32's resolution at SmolLM2's logits (up to ~40, whose spacing is 3.8e-6):
the plain float32 computation is itself 1.2e-5 from the same model run in float64, and from
the same logits ``log_softmax`` and ``logit - logsumexp`` differ by 1.7e-5; a bound of 1e-5
cannot hold between any two float32 implementations here. Measured: 1.6e-5 padded, 1.8e-5
packed.
"""

import pytest
import torch

from lit_align.data.collate import PreferenceCollator
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.data.packing import pack
from lit_align.scorer import CausalLMScorer

pytestmark = pytest.mark.real

TOLERANCE = 3e-5


@pytest.fixture(scope="module")
def batch(real_model_dir, ultrafeedback, tmp_path_factory):
    """4 real pairs (max_length 96), rejected responses cut to 9-30 tokens: uneven lengths."""
    dm = PreferenceDataModule(
        dataset=str(ultrafeedback / "heldout.jsonl"),
        tokenizer=str(real_model_dir),
        max_length=96,
        on_bad_rows="skip",  # the excerpt has an identical pair
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    dm.setup("fit")
    rows = [dict(dm.train_data[i]) for i in range(4)]
    for i, row in enumerate(rows):
        row["rejected_ids"] = row["rejected_ids"][: 9 + 7 * i]
    return PreferenceCollator(dm.tokenizer.pad_token_id)(rows)


def _plain_token_logps(model, batch) -> torch.Tensor:
    """``(N, T)`` log-probs of the response tokens, each sequence alone through the model."""
    out = torch.zeros(batch.input_ids.shape)
    for row in range(batch.input_ids.shape[0]):
        n = int(batch.attention_mask[row].sum())
        ids = batch.input_ids[row, :n]
        with torch.no_grad():
            logp = model(input_ids=ids[None]).logits[0].float().log_softmax(-1)  # (n, V)
        token = logp[:-1].gather(-1, ids[1:, None]).squeeze(-1)  # (n-1,): token t from t-1
        out[row, 1:n] = token * batch.response_mask[row, 1:n]
    return out


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_chunked_logps_equal_a_plain_forward(layout, batch, real_model):
    want = _plain_token_logps(real_model, batch)
    scorer = CausalLMScorer(real_model, chunk_size=37)  # chunks that split sequences
    with torch.no_grad():
        got = scorer(pack(batch) if layout == "packed" else batch, with_token_logps=True)
    token_diff = (got.token_logps - want).abs().max().item()
    sum_diff = (got.sum - want.sum(1)).abs().max().item()
    print(f"\n{layout}: max |dlogp| per token {token_diff:.2e}, per sequence sum {sum_diff:.2e}")
    assert batch.attention_mask.sum(1).unique().numel() > 4  # padding really present
    assert token_diff <= TOLERANCE
    assert sum_diff <= TOLERANCE * batch.response_mask.sum(1).max()
    assert torch.equal(got.count, batch.response_mask[:, 1:].sum(1).float())
