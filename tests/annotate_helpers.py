"""Shared by the annotation tests: a fake OpenAI-compatible teacher on loopback, records and images."""
from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import time
from collections import Counter
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

from sicog.annotate import cod
from sicog.data.formats import COD_HEADINGS, format_steps


API_KEY = "sk-test-7f3a9c1e5b2d4f60SECRET"
ID_RE = re.compile(r"\bitem-\d+\b")


def gold_caption(rid: str, caption: str, layout: str = "exact") -> str:
    bodies = [f"Key elements of {rid}.", "Fine details.", "Spatial layout.", "Nothing at the margins.",
              f"A detailed description of {rid}: {caption}"]
    if layout == "exact":
        return format_steps(COD_HEADINGS, bodies)
    # A markdown variant the client must normalise.
    return "Sure!\n\n" + "\n\n".join(f"**Step {k}**: {h}\n{b}" for k, (h, b) in enumerate(zip(COD_HEADINGS, bodies), 1))


class FakeTeacher:
    """An OpenAI chat-completions endpoint on loopback.

    `faults` maps a record id (found in the user text) to the actions of its successive requests;
    once they are used up the answer is a valid CoD caption. Actions: ok, variant, 429, 429date,
    500, slow, badjson, html, nochoices, badformat, truncated, drop, 400, 401.
    """

    def __init__(self, faults: dict[str, list[str]] | None = None, slow_s: float = 1.0, retry_after: str = "0",
                 delay_s: float = 0.0):
        self.faults = faults or {}
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.requests: list[dict] = []
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                text = next(p["text"] for p in user if p["type"] == "text")
                m = ID_RE.search(text)
                rid = m.group(0) if m else "?"
                with teacher.lock:
                    n = teacher.attempts[rid]
                    teacher.attempts[rid] += 1
                    teacher.requests.append({"id": rid, "path": self.path, "auth": self.headers.get("Authorization"),
                                             "body": body})
                plan = teacher.faults.get(rid, [])
                action = plan[n] if n < len(plan) else "ok"
                teacher.respond(self, action, rid, text, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def respond(self, h, action, rid, text, body):
        def send(status, payload, headers=()):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                h.send_header(k, v)
            h.end_headers()
            try:
                h.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

        def completion(content, finish="stop"):
            return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": finish,
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}}

        caption = text.split("Original description: ", 1)[-1]
        time.sleep(self.delay_s)
        if action == "slow":
            time.sleep(self.slow_s)
            action = "ok"
        if action == "drop":
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if action in ("ok", "variant"):
            send(200, completion(gold_caption(rid, caption, "exact" if action == "ok" else "variant")))
        elif action == "429":
            send(429, {"error": {"message": "Rate limit reached", "type": "rate_limit"}}, [("Retry-After", self.retry_after)])
        elif action == "429date":
            when = datetime.now(timezone.utc) + timedelta(seconds=1)
            send(429, {"error": {"message": "Rate limit reached"}}, [("Retry-After", format_datetime(when, usegmt=True))])
        elif action == "500":
            send(500, {"error": {"message": "Internal server error: upstream exploded"}})
        elif action == "badjson":
            send(200, b'{"id": "chatcmpl-1", "choices": [')
        elif action == "html":  # a proxy's error page with a 200
            data = b"<html>upstream proxy error</html>"
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        elif action == "nochoices":
            send(200, {"id": "x", "choices": None})
        elif action == "badformat":
            send(200, completion("Here is a nice caption without any steps."))
        elif action == "truncated":
            send(200, completion(gold_caption(rid, caption)[:200], finish="length"))
        elif action == "400":
            send(400, {"error": {"message": f"Invalid image content (auth {h.headers.get('Authorization')})",
                                 "type": "invalid_request_error"}})
        elif action == "401":
            send(401, {"error": {"message": f"Incorrect API key provided: {h.headers.get('Authorization')}"}})
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
