"""The tiny model the tests build from a config: a 2-layer Llama with hidden size 32.

Used with the embedded task's character tokenizer (``builtin:sort``); importable from any test
module because ``tests/`` (home of the root ``conftest.py``) is on ``sys.path``.
"""

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
