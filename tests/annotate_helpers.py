"""Shared by the annotation tests: a fake OpenAI-compatible teacher on loopback, records and images."""
from __future__ import annotations

import argparse
import json
import re
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

from PIL import Image

from sicog.annotate import cod
from sicog.data.formats import COD_HEADINGS, format_steps
from sicog.world.teacher import ChatCompletionsHandler, ChatCompletionsServer, completion_body


API_KEY = "sk-test-7f3a9c1e5b2d4f60SECRET"
ID_RE = re.compile(r"\bitem-\d+\b")


def gold_caption(rid: str, caption: str, layout: str = "exact") -> str:
    bodies = [f"Key elements of {rid}.", "Fine details.", "Spatial layout.", "Nothing at the margins.",
              f"A detailed description of {rid}: {caption}"]
    if layout == "exact":
        return format_steps(COD_HEADINGS, bodies)
    # A markdown variant the client must normalise.
    return "Sure!\n\n" + "\n\n".join(f"**Step {k}**: {h}\n{b}" for k, (h, b) in enumerate(zip(COD_HEADINGS, bodies), 1))


class FakeTeacher(ChatCompletionsServer):
    """The world teacher's OpenAI chat-completions endpoint (sicog.world.teacher) on loopback, answering
    records by the id in their user text instead of images, with scripted faults.

    `faults` maps a record id (found in the user text) to the actions of its successive requests;
    once they are used up the answer is a valid CoD caption. Actions: ok, variant, 429, 429date,
    500, slow, badjson, html, nochoices, badformat, truncated, drop, 400, 401. `requests` holds every
    request (id, path, Authorization header, body), `attempts` the count per id.
    """

    def __init__(self, faults: dict[str, list[str]] | None = None, slow_s: float = 1.0, retry_after: str = "0",
                 delay_s: float = 0.0):
        self.faults = faults or {}
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.requests: list[dict] = []
        super().__init__(_FakeHandler)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _FakeHandler(ChatCompletionsHandler):
    server: FakeTeacher

    def send_body(self, *args, **kwargs) -> None:
        try:
            super().send_body(*args, **kwargs)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def answer(self, body: dict) -> None:
        teacher = self.server
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        text = next(p["text"] for p in user if p["type"] == "text")
        m = ID_RE.search(text)
        rid = m.group(0) if m else "?"
        n = teacher.next_attempt(rid)
        teacher.requests.append({"id": rid, "path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        plan = teacher.faults.get(rid, [])
        self.act(plan[n] if n < len(plan) else "ok", rid, text.split("Original description: ", 1)[-1], body["model"])

    def act(self, action: str, rid: str, caption: str, model: str) -> None:
        def completion(content, finish="stop"):
            self.send_body(200, json.dumps(completion_body(content, model, 100, 50, finish)).encode())

        time.sleep(self.server.delay_s)
        if action == "slow":
            time.sleep(self.server.slow_s)
            action = "ok"
        if action == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif action in ("ok", "variant"):
            completion(gold_caption(rid, caption, "exact" if action == "ok" else "variant"))
        elif action == "429":
            self.send_error_body(429, "Rate limit reached", "rate_limit", "requests",
                                 {"Retry-After": self.server.retry_after})
        elif action == "429date":
            when = datetime.now(timezone.utc) + timedelta(seconds=1)
            self.send_error_body(429, "Rate limit reached", "rate_limit", "requests",
                                 {"Retry-After": format_datetime(when, usegmt=True)})
        elif action == "500":
            self.send_error_body(500, "Internal server error: upstream exploded", "server_error", "server_error")
        elif action == "badjson":
            self.send_body(200, b'{"id": "chatcmpl-1", "choices": [')
        elif action == "html":  # a proxy's error page with a 200
            self.send_body(200, b"<html>upstream proxy error</html>", content_type="text/html")
        elif action == "nochoices":
            self.send_body(200, json.dumps({"id": "x", "choices": None}).encode())
        elif action == "badformat":
            completion("Here is a nice caption without any steps.")
        elif action == "truncated":
            completion(gold_caption(rid, caption)[:200], finish="length")
        elif action == "400":
            self.send_error_body(400, f"Invalid image content (auth {self.headers.get('Authorization')})",
                                 "invalid_image", "invalid_request_error")
        elif action == "401":
            self.send_error_body(401, f"Incorrect API key provided: {self.headers.get('Authorization')}",
                                 "invalid_api_key", "invalid_request_error")
        else:
            raise AssertionError(f"unknown action {action}")


# ---------------------------------------------------------------- helpers

def make_image(path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (200, 30, 30)).save(path, format=fmt)


def make_dataset(root: Path, n: int, *, jsonl: bool = True) -> Path:
    """n records item-0..item-{n-1}; even ones PNG files named .jpg, odd ones JPEG files named .png."""
    records = []
    for i in range(n):
        rid = f"item-{i}"
        name = f"img/{rid}.jpg" if i % 2 == 0 else f"img/{rid}.png"
        make_image(root / "images" / name, "PNG" if i % 2 == 0 else "JPEG")
        records.append({"id": rid, "image": name, "caption": f"A red square numbered {i}.",
                        "conversations": [{"from": "human", "value": f"<image>\nWhat is in {rid}?"},
                                          {"from": "gpt", "value": "ignored when a caption field exists"}]})
    path = root / ("records.jsonl" if jsonl else "records.json")
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def cli_args(root: Path, url: str, *extra: str) -> list[str]:
    return ["--input", str(root / "records.jsonl"), "--image-folder", str(root / "images"),
            "--output-cod-dir", str(root / "cod"), "--output-dd-dir", str(root / "dd"),
            "--base-url", url, "--teacher", "teacher-test", "--concurrency", "4", "--timeout", "0.4",
            "--max-attempts", "4", "--backoff-base", "0.01", "--backoff-cap", "0.05",
            "--retry-after-cap", "0.2", *extra]


def run_annotate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cod.add_arguments(parser)
    return cod.run(parser.parse_args(argv))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def all_text(root: Path) -> str:
    return "\n".join(p.read_text() for p in root.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json"))


# LLaVA-CoT records (convert-cot)
PARTS = {"SUMMARY": "I will count the circles.", "CAPTION": "Three red circles on grey.",
         "REASONING": "There are 3 circles, all red.", "CONCLUSION": "3"}


def tagged(parts=PARTS, order=("SUMMARY", "CAPTION", "REASONING", "CONCLUSION"), sep="\n\n") -> str:
    return sep.join(f"<{t}> {parts[t]} </{t}>" for t in order)


def rec(rid, answer, question="<image>\nHow many circles? Answer the question using a single word or phrase."):
    return {"id": rid, "image": f"{rid}.png",
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
