"""Prompt styles in A1111's `styles.csv`: named (prompt, negative prompt) pairs merged into a job's
prompts.

The file has the header `name,prompt,negative_prompt` (A1111's). A style prompt containing
`{prompt}` has the user's prompt put in its place; otherwise it is appended after a comma. A file
that is missing is simply empty; one that cannot be read or lacks a `name` column is reported
(`StyleFile.problem`) and treated as empty, never fatal. Saving writes atomically and never
replaces a style of the same name (the caller asks to overwrite explicitly).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("name", "prompt", "negative_prompt")
PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompt(style_prompt: str, prompt: str) -> str:
    """A1111's rule: fill `{prompt}`, or join the two with ", " (skipping empty ones)."""
    if PLACEHOLDER in style_prompt:
        return style_prompt.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


@dataclass(frozen=True)
class StyleFile:
    """The styles of one file as read now (re-read with `StyleFile.read` to pick up edits)."""

    path: Path
    styles: dict[str, Style]
    problem: str | None = None  # why the file could not be used, for the UI to show

    @classmethod
    def read(cls, path: Path) -> StyleFile:
        if not path.exists():
            return cls(path, {})
        try:
            text = path.read_text(encoding="utf-8-sig")  # Excel writes a BOM
        except (OSError, UnicodeDecodeError) as exc:
            return cls(path, {}, f"cannot read {path.name}: {exc}")
        try:
            reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
            header = [h.strip() for h in reader.fieldnames or []]
            if "name" not in header:
                return cls(path, {}, f"{path.name} has no 'name' column (expected: {', '.join(FIELDS)})")
            styles = {}
            for row in reader:
                row = {(k or "").strip(): (v or "") for k, v in row.items() if isinstance(v, str)}
                name = row.get("name", "").strip()
                if name:
                    styles[name] = Style(name, row.get("prompt", ""), row.get("negative_prompt", ""))
        except csv.Error as exc:
            return cls(path, {}, f"{path.name} is not valid CSV: {exc}")
        return cls(path, styles)

    @property
    def names(self) -> list[str]:
        return list(self.styles)

    def apply(self, prompt: str, negative_prompt: str, names: list[str] | tuple[str, ...]) -> tuple[str, str]:
        """The prompts with the named styles merged in, in the order given."""
        unknown = [n for n in names if n not in self.styles]
        if unknown:
            known = ", ".join(self.styles) or "none"
            raise ValueError(f"unknown style(s) {', '.join(map(repr, unknown))}; styles.csv has: {known}")
        for name in names:
            style = self.styles[name]
            prompt = merge_prompt(style.prompt, prompt)
            negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
        return prompt, negative_prompt

    def save(self, style: Style, *, overwrite: bool = False) -> StyleFile:
        """Write the file with `style` added; returns the new state. Refuses to write over a file
        that could not be read (its contents would be lost) or, unless asked, over a style."""
        name = style.name.strip()
        if not name:
            raise ValueError("a style needs a name")
        if self.problem is not None:
            raise ValueError(f"not saving: {self.problem}; fix or move the file first")
        if name in self.styles and not overwrite:
            raise ValueError(f"a style named {name!r} already exists")
        styles = {**self.styles, name: Style(name, style.prompt, style.negative_prompt)}
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(FIELDS)
        for s in styles.values():
            writer.writerow((s.name, s.prompt, s.negative_prompt))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".styles-", suffix=".csv")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(buffer.getvalue())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StyleFile(self.path, styles)


def with_styles_applied(params, style_file: StyleFile):
    """`params` (GenerationParams) with its `styles` merged into the prompts and cleared."""
    if not params.styles:
        return params
    prompt, negative = style_file.apply(params.prompt, params.negative_prompt, params.styles)
    return params.model_copy(update={"prompt": prompt, "negative_prompt": negative, "styles": ()})
