"""A1111 'parameters' text (infotext) <-> GenerationParams.

The text has the prompt line(s), an optional `Negative prompt: …` part, and one last line of
`Key: value` pairs, e.g. `Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512`.
Keys come from the schema (`json_schema_extra={"infotext": …}` on GenerationParams fields), so a
new labelled field is written and read back with no change here. Fields that share a label are
one composed value joined with "x" (Size = width x height), as A1111 writes them.

Parsing never raises: infotexts come from arbitrary PNGs found on the internet.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.schema.params import GenerationParams
from engine.schema.sampler_params import ROWS as SAMPLER_ROWS

log = logging.getLogger(__name__)

ATELIER_VERSION = "0.1.0"
NEGATIVE_PREFIX = "Negative prompt:"

# A1111 1.10's order for the keys it writes before its extra params. It only ranks keys; which
# keys exist comes from the schema. Labelled fields not listed here follow, in schema order.
_A1111_ORDER = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration",
    "Size", "Model hash", "Model", "Batch size", "Batch pos", "VAE hash", "VAE", "Variation seed",
    "Variation seed strength", "Seed resize from", "Denoising strength", "Clip skip", "ENSD", "RNG",
    "Tiling",
)  # fmt: skip

# One `key: value` pair of the params line; a value is a JSON string or runs to the next comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_MIN_PARAMS_ON_LAST_LINE = 3  # fewer pairs: the last line is part of the prompt (A1111's rule)
_COMPOSED_SEPARATOR = "x"
# The prompts are not `key: value` pairs but the parser files them under these keys.
_PROMPT_FIELDS = {"Prompt": "prompt", "Negative prompt": "negative_prompt"}


@cache
def labelled_fields(cls: type[GenerationParams] = GenerationParams) -> dict[str, tuple[str, ...]]:
    """Infotext key -> the fields of `cls` (GenerationParams or a subclass) written under it, in
    schema order."""
    groups: dict[str, list[str]] = {}
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        label = extra.get("infotext")
        if isinstance(label, str) and label:
            groups.setdefault(label, []).append(name)
    return {label: tuple(names) for label, names in groups.items()}


def _extra(cls: type[GenerationParams], name: str) -> dict[str, Any]:
    extra = cls.model_fields[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _is_unwritten_default(
    cls: type[GenerationParams], params: GenerationParams, names: tuple[str, ...], parts: list[object]
) -> bool:
    """Values at A1111's default are left out of the infotext, as A1111 does (sampler parameters,
    "Noise multiplier: 1", "Masked content: original", "Hires resize: 0x0", ...), and so are
    fields of a feature that is off (`infotext_when`: the hires-fix keys without hires fix)."""
    extras = [_extra(cls, name) for name in names]
    when = extras[0].get("infotext_when")
    if when and not getattr(params, when):
        return True
    return all(
        "infotext_default" in e and part == e["infotext_default"]
        for e, part in zip(extras, parts, strict=True)
    )


def _field_text(cls: type[GenerationParams], name: str, value: object) -> str:
    """A field's infotext spelling: a choice field (an A1111 API number) is written by its name."""
    choices = _extra(cls, name).get("choices")
    if choices is not None and isinstance(value, int) and 0 <= value < len(choices):
        return choices[value]
    return _format_value(value)


def _format_value(value: object) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # A1111 shows CFG 7.0 as "7"
    return str(value)


def _quote(text: str) -> str:
    """JSON-quote values the params line could not hold bare (A1111's rule, plus quotes/edges)."""
    if any(ch in text for ch in ',:"\n\r') or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    return text


def build_infotext(
    params: GenerationParams,
    *,
    seed: int,
    model_name: str | None,
    model_hash: str | None,
    batch_pos: int | None = None,
    extra: dict[str, object] | None = None,
) -> str:
    """A1111's 'parameters' text for one image of a job."""
    cls = type(params)
    labels = labelled_fields(cls)
    values: dict[str, object] = {}
    for label, names in labels.items():
        parts = [getattr(params, name) for name in names]
        if any(part is None for part in parts) or _is_unwritten_default(cls, params, names, parts):
            continue
        values[label] = _COMPOSED_SEPARATOR.join(
            _field_text(cls, n, p) for n, p in zip(names, parts, strict=True)
        )
    values["Seed"] = seed  # the image's resolved seed, never the request's -1
    if model_name is not None:
        values["Model"] = model_name  # what was actually loaded wins over the request
    values["Model hash"] = model_hash
    if params.batch_size > 1:
        values["Batch pos"] = batch_pos
    else:
        # A1111 writes batch size and position only for real batches.
        values.pop("Batch size", None)

    schema_order = {label: i for i, label in enumerate(labels)}
    rank = {key: i for i, key in enumerate(_A1111_ORDER)}
    ordered = sorted(values, key=lambda k: (rank.get(k, len(rank)), schema_order.get(k, len(labels))))
    entries: dict[str, object] = {key: values[key] for key in ordered}
    for key, value in (extra or {}).items():
        entries[key] = value  # like dict.update: a known key keeps its place, new ones append
    entries["Version"] = f"atelier-{ATELIER_VERSION}"

    negative = f"\n{NEGATIVE_PREFIX} {params.negative_prompt}" if params.negative_prompt else ""
    return f"{params.prompt}{negative}\n{params_text(entries)}".strip()


def params_text(entries: dict[str, object]) -> str:
    """`Key: value, Key: value` as A1111 writes them (values quoted where needed, None skipped)."""
    pairs = []
    for key, value in entries.items():
        if value is None:
            continue
        text = _format_value(value)
        # A1111 writes flag-like extras whose value equals the key as the bare key.
        pairs.append(key if text == key else f"{key}: {_quote(text)}")
    return ", ".join(pairs)


def override_entries(params: GenerationParams) -> list[str]:
    """A job's explicitly set sampler parameters as A1111's "Override settings" entries, spelled
    as in the infotext ("Eta: 0.5", "UniPC variant: bh2"): what txt2img shows after a paste."""
    return [
        f"{row.infotext}: {_format_value(value)}"
        for row in SAMPLER_ROWS
        if (value := getattr(params, row.name)) is not None
    ]


def parse_infotext(text: str) -> dict[str, str]:
    """Split an infotext into "Prompt", "Negative prompt" and the raw params keys (values unquoted)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = str(text or "").replace("\r\n", "\n").strip()
    *lines, last = text.split("\n")
    pairs = _PARAM_RE.findall(last)
    if len(pairs) < _MIN_PARAMS_ON_LAST_LINE:
        lines.append(last)
        pairs = []

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if not negative_lines and line.startswith(NEGATIVE_PREFIX):
            # The writer puts exactly one space after the colon; keep anything beyond it.
            rest = line[len(NEGATIVE_PREFIX) :]
            negative_lines.append(rest.removeprefix(" "))
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)

    result: dict[str, str] = {}
    for key, value in pairs:
        result[key.strip()] = _unquote(value)
    # The prompt lines are authoritative; a stray "Prompt:" pair must not replace them.
    result["Prompt"] = "\n".join(prompt_lines)
    result["Negative prompt"] = "\n".join(negative_lines)
    return result


def _try_update(
    cls: type[GenerationParams], current: dict[str, Any], update: dict[str, Any]
) -> dict[str, Any] | None:
    try:
        return cls.model_validate({**current, **update}).model_dump()
    except (ValidationError, ValueError, TypeError):
        return None


def params_from_infotext(
    text: str, base: GenerationParams | None = None
) -> tuple[GenerationParams, dict[str, str]]:
    """GenerationParams from an infotext, starting from `base` (defaults when None).

    The second value holds every key that was not applied: keys the schema does not know
    (Model hash, Version, extension params, …) and known keys whose value was rejected, with
    their raw text. A rejected value keeps the base value for its field; nothing here raises.
    """
    base = base or GenerationParams()
    cls = type(base)
    try:
        parsed = parse_infotext(text)
    except Exception:  # defensive: input is untrusted; a parse bug must not break a page
        log.exception("cannot parse infotext")
        return base, {}

    current = base.model_dump()
    leftovers: dict[str, str] = {}
    labels = labelled_fields(cls)
    present = [label for label in labels if label in parsed]
    # The schedule goes before the sampler so that a legacy sampler name ("DPM++ 2M Karras")
    # is split against the text's own schedule type, or against Automatic when it has none.
    present.sort(key=lambda label: "scheduler" not in labels[label])
    schedule_applied = False
    for label in ["Prompt", "Negative prompt", *present]:
        raw = parsed.pop(label)
        names = labels.get(label) or (_PROMPT_FIELDS[label],)
        values = [raw] if len(names) == 1 else raw.split(_COMPOSED_SEPARATOR)
        update: dict[str, Any] = dict(zip(names, values, strict=False))
        if "sampler_name" in update and "scheduler" not in update:
            update["scheduler"] = current["scheduler"] if schedule_applied else "Automatic"
        validated = _try_update(cls, current, update) if len(values) == len(names) else None
        if validated is None:
            log.info("infotext: ignoring bad value for %s: %r", label, raw[:200])
            leftovers[label] = raw
            continue
        current = validated
        schedule_applied = schedule_applied or "scheduler" in names
    leftovers.update(parsed)
    if any(key in labels and labels[key][0].startswith("hr_") for key in parse_infotext(text)):
        current["enable_hr"] = True  # A1111's rule: a `Hires …` key means hires fix was on
    return cls.model_validate(current), leftovers


def read_png_parameters(path_or_image: Any) -> str | None:
    """The 'parameters' text of an image file or PIL image: PNG text chunk, else EXIF UserComment."""
    from PIL import Image

    try:
        if isinstance(path_or_image, (str, Path)):
            with Image.open(path_or_image) as image:
                return _parameters_of(image)
        return _parameters_of(path_or_image)
    except Exception:  # untrusted files: truncated, not an image, decompression bomb, …
        log.info("cannot read parameters from %r", path_or_image, exc_info=True)
        return None


def _parameters_of(image: Any) -> str | None:
    text = image.info.get("parameters")
    if text is None and image.format == "PNG":
        image.load()  # text chunks after the image data are read only on load
        text = image.info.get("parameters")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if isinstance(text, str):
        return text
    comment = image.getexif().get_ifd(0x8769).get(0x9286)  # Exif IFD -> UserComment
    return _decode_user_comment(comment) if comment else None


def _decode_user_comment(comment: bytes | str) -> str | None:
    if isinstance(comment, str):
        return comment
    prefix, payload = comment[:8], comment[8:]
    if prefix == b"UNICODE\0":
        # piexif (used by A1111) writes UTF-16 big-endian; some tools write little-endian.
        little = len(payload) >= 2 and payload[0] != 0 and payload[1] == 0
        text = payload.decode("utf-16-le" if little else "utf-16-be", errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8):
        text = payload.decode("utf-8", errors="replace")
    else:
        text = comment.decode("utf-8", errors="replace")
    return text.rstrip("\0") or None
