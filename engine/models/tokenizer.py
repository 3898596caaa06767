"""The CLIP tokenizer, generated offline from the BPE file that ships inside `open-clip-torch`.

No hub is reachable, so HF's `vocab.json` / `merges.txt` are rebuilt from OpenAI's
`bpe_simple_vocab_16e6.txt.gz` (MIT). The vocabulary order is the one OpenAI CLIP's
`SimpleTokenizer` builds, so the ids equal OpenAI CLIP's (e.g. "a photo of a cat" →
49406 320 1125 539 320 2368 49407). SD1 pads with "<|endoftext|>", SD2 (OpenCLIP) with "!".
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.models.paths import configs_root

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
SD1_PAD, SD2_PAD = EOS, "!"
MAX_LENGTH = 77
VOCAB_SIZE = 49408
N_MERGES = 49152 - 256 - 2  # what SimpleTokenizer keeps of the file: 48,894 merges
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def find_bpe_file() -> Path:
    """Locate open_clip's BPE file without importing open_clip (its import takes seconds)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "open-clip-torch is not installed; it ships the CLIP BPE vocabulary (pip install it)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BPE_FILE
        if candidate.is_file():
            return candidate
    raise RuntimeError(f"{BPE_FILE} not found inside the installed open_clip package")


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte → printable-char table, in SimpleTokenizer's order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values, chars = printable[:], printable[:]
    extra = 0
    for b in range(256):
        if b not in byte_values:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[str, ...]]:
    """(token → id, merges as "a b" strings), built exactly like OpenAI CLIP's SimpleTokenizer."""
    lines = gzip.open(find_bpe_file(), "rt", encoding="utf-8").read().split("\n")
    merges = tuple(lines[1 : N_MERGES + 1])  # line 0 is the file's version header
    byte_chars = _bytes_to_unicode()
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m.split(" ")) for m in merges]
    tokens += [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or len(merges) != N_MERGES:
        raise RuntimeError(f"unexpected BPE file: {len(vocab)} tokens, {len(merges)} merges")
    return vocab, merges


def _tokenizer_config(pad_token: str) -> dict[str, Any]:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": pad_token,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": True,
    }


def write_tokenizer_files(folder: Path, pad_token: str = SD1_PAD) -> Path:
    """Write the HF tokenizer files into `folder` (atomically: a half-written folder is never seen)."""
    vocab, merges = clip_vocab_and_merges()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        config = _tokenizer_config(pad_token)
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        (tmp / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _tokenizer_files_present(folder):  # another process may have won the race
            raise
    return folder


def _tokenizer_files_present(folder: Path) -> bool:
    return all((folder / name).is_file() for name in TOKENIZER_FILES)


def ensure_tokenizer_dir(folder: Path | None = None, pad_token: str | None = None) -> Path:
    """A folder holding the generated tokenizer files, written on first use.

    The default is `models/configs/tokenizer/` (git-ignored); if the app folder is read-only it
    falls back to the temp dir. With `pad_token` given, an existing folder with another pad token
    is rewritten (the SD2 config folders need "!").
    """
    if folder is None:
        try:
            return ensure_tokenizer_dir(configs_root() / "tokenizer", pad_token)
        except OSError:
            folder = Path(tempfile.gettempdir()) / "atelier-clip-tokenizer"
    if _tokenizer_files_present(folder):
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        if pad_token is None or config.get("pad_token") == pad_token:
            return folder
    return write_tokenizer_files(folder, pad_token or SD1_PAD)


def load_clip_tokenizer(pad_token: str = SD1_PAD, folder: Path | None = None) -> Any:
    """A `CLIPTokenizer` with OpenAI CLIP's ids and `model_max_length=77` (without it pipelines overflow).

    Loaded from the generated files rather than built from Python dicts: `from_pretrained` on
    vocab.json/merges.txt takes ~0.06 s, the in-memory constructor ~0.8 s.
    """
    from transformers import CLIPTokenizer

    folder = ensure_tokenizer_dir(folder)
    return CLIPTokenizer.from_pretrained(
        str(folder), pad_token=pad_token, model_max_length=MAX_LENGTH, local_files_only=True
    )


def tokenizer_folder(text_encoder: str) -> str:
    """The diffusers folder of a text encoder's tokenizer: text_encoder_2 → tokenizer_2."""
    return "tokenizer" + text_encoder.removeprefix("text_encoder")


def load_t5_tokenizer(folder: Path, model_label: str) -> Any:
    """The T5 tokenizer in `folder` (a diffusers folder's `tokenizer_3/`, or one the user put
    beside the text encoder). T5's vocabulary cannot be rebuilt offline as CLIP's can, so it
    comes with the user's files; without it the message names the folder to put it in."""
    from transformers import T5TokenizerFast

    if not (folder / "tokenizer.json").is_file() and not (folder / "spiece.model").is_file():
        raise ValueError(
            f"{model_label} needs the T5 tokenizer: put its tokenizer.json (with tokenizer_config.json "
            f"and special_tokens_map.json, as the model's download has them) in {folder}"
        )
    try:
        return T5TokenizerFast.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"the T5 tokenizer in {folder} cannot be read: {exc}") from exc
