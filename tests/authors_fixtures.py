"""Paths and loaders of the authors' golden fixtures (tests/fixtures/authors/, see its README)."""
from __future__ import annotations

import json
from pathlib import Path

AUTHORS = Path(__file__).parent / "fixtures" / "authors"


def load_json(rel: str):
    return json.loads((AUTHORS / rel).read_text(encoding="utf-8"))


def load_jsonl(rel: str) -> list[dict]:
    return [json.loads(line) for line in (AUTHORS / rel).read_text(encoding="utf-8").split("\n") if line.strip()]
