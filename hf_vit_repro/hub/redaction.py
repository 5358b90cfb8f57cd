"""Keeping the token out of everything a push writes, prints or uploads.

The token comes from huggingface_hub's usual sources (`active_token`: the `token` argument, else
`HF_TOKEN`, else the login file). Text files are redacted before staging (`redact`, and
`redact_secrets` for recipe values under secret-looking keys), and a staged folder in which a
file still holds the token stops the push (`check_no_token`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Recipe keys whose values are secrets: never shown, never uploaded.
_SECRET_KEY = re.compile(r"(^|[_\-.])(token|secret|password|passwd|api[_-]?key|credentials?)$", re.IGNORECASE)
# What a Hugging Face token looks like, so one is redacted even if it is not the active token.
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{20,}")
REDACTED = "<redacted>"
#: Files staged as text: redacted on copy, searched for token-shaped strings before a push.
TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".md", ".txt", ".py", ".csv"}


def active_token(token: str | None = None) -> str | None:
    """The token a push would use: `token`, else huggingface_hub's usual sources."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def redact(text: str, token: str | None = None) -> str:
    """`text` with `token` and anything shaped like a Hugging Face token replaced by <redacted>."""
    if token:
        text = text.replace(token, REDACTED)
    return _TOKEN_PATTERN.sub(REDACTED, text)


def redact_secrets(value: Any, token: str | None) -> Any:
    """Recipe values under secret-looking keys, and token strings anywhere, -> <redacted>."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) and v is not None else redact_secrets(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v, token) for v in value]
    if isinstance(value, str):
        return redact(value, token)
    return value



def check_no_token(folder: Path, token: str | None) -> None:
    needles = [token.encode()] if token else []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(needle in data for needle in needles) or (path.suffix in TEXT_SUFFIXES and _TOKEN_PATTERN.search(data.decode("utf-8", "replace"))):
            raise ValueError(
                f"{path.relative_to(folder)} contains a Hugging Face token; it will not be published. Remove the token "
                "from the run's files (or leave that file out, e.g. logs without --include-logs) and try again."
            )

