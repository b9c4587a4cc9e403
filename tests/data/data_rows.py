"""Helpers of the data tests: files of rows, data modules, and a BPE tokenizer that merges
across the prompt/response boundary."""

import json
import string

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

from lit_align.data.datamodule import PreferenceDataModule

GOOD = {"prompt": "sort: 3 1 2\n", "chosen": "1 2 3", "rejected": "3 2 1"}
BPE_TEMPLATE = (
    "<bos>{% for m in messages %}{{ m['role'] }}:{{ ' ' + m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def write_jsonl(path, rows):
    """Write ``rows`` as JSON Lines to ``path`` and return it."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_module(path, tokenizer="builtin:sort", **kwargs) -> PreferenceDataModule:
    """A set-up data module reading ``path``."""
    dm = PreferenceDataModule(dataset=str(path), tokenizer=tokenizer, **kwargs)
    dm.setup("fit")
    return dm


def build_bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE tokenizer whose merge ``": "`` spans the boundary of its chat template.

    The generation prompt ends with ``"assistant:"`` and the assistant turn starts with a space,
    so tokenising prompt + response as one string yields a ``": "`` token straddling the
    boundary. Its post-processor puts ``<bos>`` before a text; the chat template renders
    ``<bos>`` itself.
    """
    specials = ["<pad>", "<bos>", "<eos>"]
    merges = [(":", " "), ("a", "s"), ("as", "s"), ("ass", "i"), ("s", "t")]
    tokens = specials + list(string.ascii_letters + string.digits + " :\n?+=")
    tokens += ["".join(m) for m in merges]
    backend = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(specials)
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        chat_template=BPE_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
