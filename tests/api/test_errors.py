"""The error catalogue: each code named once, and the only place an API error is built."""

from __future__ import annotations

import ast
from pathlib import Path

from file_uploader.api import errors
from file_uploader.api.errors import CATALOGUE, Error

API = Path(errors.__file__).parent


def test_each_code_is_named_once():
    entries = [value for value in vars(errors).values() if isinstance(value, Error)]
    assert len(entries) == len(CATALOGUE)


def test_an_entry_fills_its_template_and_keeps_its_status_and_headers():
    error = errors.TOO_MANY_UPLOADS(detail="all 4 upload slots are taken")
    assert (error.status, error.code, error.message) == (
        429,
        "too_many_uploads",
        "all 4 upload slots are taken",
    )
    assert error.headers == {"Retry-After": errors.RETRY_AFTER_SECONDS}


def test_handlers_name_errors_from_the_catalogue_and_build_none_inline():
    builders = []
    for path in sorted(API.glob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ApiError":
                builders.append(f"{path.name}:{node.lineno}")
    assert builders == []
