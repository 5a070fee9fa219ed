"""Cedar policy text as a list of statements, each with its line number and @id, so that errors
reported by Cedar for "policy3" can be shown next to the right line of the user's text."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANNOTATION = re.compile(r'@(\w+)\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)')
_ESCAPE = re.compile(r'\\([\\"\'ntr0])')
_ESCAPED = {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}


def _unescape(value: str) -> str:
    # Annotation values are Cedar strings: a message saying `"hi"` is written `\"hi\"`.
    return _ESCAPE.sub(lambda match: _ESCAPED.get(match.group(1), match.group(1)), value)


@dataclass(frozen=True)
class Statement:
    text: str
    line: int  # 1-based line of the statement's first non-blank character
    annotations: dict[str, str]

    @property
    def policy_id(self) -> str:
        return self.annotations.get("id", "")

    @property
    def message(self) -> str:
        return self.annotations.get("message", "")


def split_statements(text: str, *, first_line: int = 1) -> list[Statement]:
    """Split on the `;` that ends each policy, ignoring those inside strings and comments."""
    statements: list[Statement] = []
    start = 0
    i = 0
    in_string = False
    length = len(text)
    while i < length:
        char = text[i]
        if in_string:
            if char == "\\":
                i += 2
                continue
            if char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "/" and text.startswith("//", i):
            newline = text.find("\n", i)
            i = length if newline == -1 else newline
            continue
        elif char == ";":
            _append(statements, text, start, i + 1, first_line)
            start = i + 1
        i += 1
    _append(statements, text, start, length, first_line)
    return statements


def _strip_comments(chunk: str) -> str:
    return "\n".join(
        line.split("//", 1)[0] if '"' not in line else line for line in chunk.splitlines()
    )


def _append(statements: list[Statement], text: str, start: int, end: int, first_line: int) -> None:
    chunk = text[start:end]
    if not _strip_comments(chunk).strip():
        return
    offset = start + (len(chunk) - len(chunk.lstrip()))
    # Skip leading comment lines so the line points at the policy itself.
    body = chunk.lstrip()
    while body.startswith("//"):
        newline = body.find("\n")
        if newline == -1:
            return
        offset += newline + 1
        stripped = body[newline + 1 :]
        offset += len(stripped) - len(stripped.lstrip())
        body = stripped.lstrip()
    if not body:
        return  # only comments (one with a quote in it escapes the emptiness check above)
    line = first_line + text.count("\n", 0, offset)
    annotations = {
        match.group(1): _unescape(match.group(2)) for match in _ANNOTATION.finditer(body)
    }
    statements.append(Statement(text=body, line=line, annotations=annotations))
