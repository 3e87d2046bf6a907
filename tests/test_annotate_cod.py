"""`sicog annotate-cod` against a real HTTP server on loopback that injects faults."""
from __future__ import annotations

import argparse
import base64
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

import pytest
from PIL import Image

from sicog.annotate import cod
from sicog.annotate.cod_records import accept_cod
from sicog.annotate.client import RetryPolicy, TeacherClient, TeacherFailed, parse_retry_after
from sicog.annotate.media import sniff_image_mime
from sicog.data.checks import InputError
from sicog.data.formats import COD_ANNOTATION_SUFFIX, COD_HEADINGS, check_steps, format_steps, parse_steps

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


# ---------------------------------------------------------------- units

def test_mime_comes_from_bytes(tmp_path):
    make_image(tmp_path / "a.jpg", "PNG")
    make_image(tmp_path / "b.png", "JPEG")
    make_image(tmp_path / "c.bin", "WEBP")
    assert sniff_image_mime((tmp_path / "a.jpg").read_bytes()) == "image/png"
    assert sniff_image_mime((tmp_path / "b.png").read_bytes()) == "image/jpeg"
    assert sniff_image_mime((tmp_path / "c.bin").read_bytes()) == "image/webp"
    assert sniff_image_mime(b"not an image at all") is None


def test_parse_retry_after():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == 30.0
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_exponential_jittered_and_capped():
    import random
    policy = RetryPolicy(max_attempts=10, backoff_base=1.0, backoff_cap=8.0, retry_after_cap=30.0)
    rng = random.Random(0)
    for n, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)]:
        delays = [policy.delay(n, None, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert policy.delay(1, 12.0, rng) == 12.0
    assert policy.delay(1, 500.0, rng) == 30.0


@pytest.mark.parametrize("action, expected", [("429", 7.0), ("429date", None)])
def test_client_honours_retry_after(action, expected):
    sleeps: list[float] = []
    with FakeTeacher({"item-1": [action]}, retry_after="7") as t:
        client = TeacherClient(model="m", api_key=API_KEY, base_url=t.url, timeout=2.0, sleep=sleeps.append,
                               policy=RetryPolicy(max_attempts=2, backoff_base=100.0, backoff_cap=100.0))
        done = client.complete([{"role": "system", "content": "s"},
                                {"role": "user", "content": [{"type": "text", "text": "Question: item-1\n\n"
                                                              "Original description: x"}]}], accept_cod)
    assert done.attempts == 2 and check_steps(done.text, COD_HEADINGS) is None
    assert len(sleeps) == 1
    if expected is not None:
        assert sleeps[0] == expected
    else:  # an HTTP date one second ahead (whole seconds): far below the 100 s backoff it replaces
        assert 0.0 <= sleeps[0] <= 1.5


def test_client_gives_up_with_reason():
    with FakeTeacher({"item-2": ["500", "500"]}) as t:
        client = TeacherClient(model="m", api_key=API_KEY, base_url=t.url, sleep=lambda s: None,
                               policy=RetryPolicy(max_attempts=2))
        with pytest.raises(TeacherFailed) as info:
            client.complete([{"role": "user", "content": [{"type": "text", "text": "Question: item-2"}]}],
                            accept_cod)
    assert info.value.attempts == 2 and info.value.error.status_code == 500
    assert API_KEY not in repr(client)
    assert info.value.error.reason == "http 500"


# ---------------------------------------------------------------- end to end

FAULTS = {
    "item-1": ["429", "500"],          # recovers on the third attempt
    "item-2": ["slow"],                # beyond the client timeout, then fine
    "item-3": ["badjson"],
    "item-4": ["badformat"] * 4,       # never in the five-step format: final failure
    "item-5": ["variant"],             # markdown step markers, normalised
    "item-6": ["400"],                 # not retryable
    "item-7": ["truncated"],
    "item-8": ["drop", "html", "nochoices"],  # no answer, then 200s that are not completions
    "item-9": ["500"] * 4,             # 5xx until the attempts run out
}


def test_annotate_end_to_end_with_faults(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    make_dataset(tmp_path, 15)
    records = jsonl(tmp_path / "records.jsonl")
    (tmp_path / "images" / "img" / "notes.png").write_text("not an image")
    records[14]["image"] = "img/notes.png"             # not image bytes
    records[10]["image"] = "img/does-not-exist.png"  # missing file
    del records[11]["caption"]                         # falls back to the gpt turn
    records[12]["caption"] = "  "
    records[12]["conversations"] = records[12]["conversations"][:1]   # no caption at all
    records[13]["conversations"] = []                                 # no question
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    caplog.set_level("DEBUG")

    with FakeTeacher(FAULTS, slow_s=0.8) as teacher:
        assert run_annotate(cli_args(tmp_path, teacher.url)) == 0
        seen_ids = {r["id"] for r in teacher.requests}

    cods = jsonl(tmp_path / "cod" / "cod.jsonl")
    dds = jsonl(tmp_path / "dd" / "dd.jsonl")
    failures = jsonl(tmp_path / "cod" / "annotate_failures.jsonl")
    ok_ids = [r["id"] for r in cods]
    failed_ids = [r["id"] for r in failures]
    # Every record exactly once, in the outputs or in the failures file.
    assert sorted(ok_ids + failed_ids) == sorted(r["id"] for r in records)
    assert set(failed_ids) == {"item-4", "item-6", "item-9", "item-10", "item-12", "item-13", "item-14"}
    assert ok_ids == [r["id"] for r in records if r["id"] in set(ok_ids)]  # input order
    by_id = {f["id"]: f for f in failures}
    assert by_id["item-4"]["reason"] == "wrong format" and by_id["item-4"]["attempts"] == 4
    assert by_id["item-6"]["status_code"] == 400 and by_id["item-6"]["attempts"] == 1
    assert "Invalid image content (auth Bearer ***)" in by_id["item-6"]["message"]  # echoed key masked
    assert by_id["item-9"]["reason"] == "http 500" and by_id["item-9"]["error_class"] == "InternalServerError"
    assert by_id["item-10"]["reason"] == "missing image"
    assert by_id["item-12"]["reason"] == "no caption" and by_id["item-13"]["reason"] == "no question"
    assert by_id["item-14"]["reason"] == "unreadable image" and "not a PNG, JPEG" in by_id["item-14"]["message"]
    assert not seen_ids & {"item-10", "item-12", "item-13", "item-14"}  # no API call for bad input

    for rec, dd in zip(cods, dds):
        human, gpt = rec["conversations"]
        assert human["value"] == f"<image>\nWhat is in {rec['id']}?{COD_ANNOTATION_SUFFIX}"
        assert check_steps(gpt["value"], COD_HEADINGS) is None
        assert gpt["value"] == format_steps(COD_HEADINGS, [b for _, b in parse_steps(gpt["value"]).values()])
        assert dd["id"] == rec["id"] and dd["image"] == rec["image"]
        assert dd["conversations"][0]["value"] == f"<image>\nWhat is in {rec['id']}?"
        assert dd["conversations"][1]["value"] == f"A detailed description of {rec['id']}: " + (
            "ignored when a caption field exists" if rec["id"] == "item-11" else
            f"A red square numbered {rec['id'].split('-')[1]}.")
    outputs = (tmp_path / "cod" / "cod.jsonl").read_text() + (tmp_path / "dd" / "dd.jsonl").read_text()
    assert teacher.attempts["item-8"] == 4 and teacher.attempts["item-1"] == 3 and teacher.attempts["item-2"] == 2
    # Ours are the only retries (the openai client's own are off): exactly --max-attempts requests.
    assert teacher.attempts["item-9"] == 4 and teacher.attempts["item-6"] == 1
    for error_text in ("Rate limit", "Internal server", "Error code", "Expecting", "timed out", "Sure!", "**",
                       "proxy error", "html"):
        assert error_text not in outputs

    # The image travelled as a data URL of its real type, whatever its extension.
    for req in teacher.requests:
        url = req["body"]["messages"][1]["content"][1]["image_url"]["url"]
        i = int(req["id"].split("-")[1])
        expected = "image/png" if i % 2 == 0 else "image/jpeg"
        assert url.startswith(f"data:{expected};base64,")
        raw = base64.b64decode(url.split(",", 1)[1])
        assert raw == (tmp_path / "images" / records[i]["image"]).read_bytes()
        assert req["body"]["temperature"] == 0.2 and req["body"]["max_tokens"] == 2048
        assert req["body"]["model"] == "teacher-test" and req["path"] == "/v1/chat/completions"
        system, user = req["body"]["messages"]
        assert system["role"] == "system" and all(f"Step {k}: {h}" in system["content"]
                                                  for k, h in enumerate(COD_HEADINGS, 1))
        caption = "ignored when a caption field exists" if i == 11 else f"A red square numbered {i}."
        assert user["content"][0] == {"type": "text",
                                      "text": f"Question: What is in {req['id']}?\n\nOriginal description: {caption}"}

    summary = json.loads((tmp_path / "cod" / "annotate_summary.json").read_text())
    assert summary["annotated"] == len(cods) == 8 and summary["failed"] == 7 and summary["pending"] == 0
    # 100 prompt / 50 completion tokens per answered 200: 8 accepted + 4 wrong-format + 1 truncated.
    assert summary["this_run"]["prompt_tokens"] == 100 * 13
    assert summary["this_run"]["completion_tokens"] == 50 * 13
    assert summary["this_run"]["estimated_cost_usd"] == pytest.approx((1300 * 2.5 + 650 * 10.0) / 1e6)

    # The key reached the server but nowhere else: not in files, logs or console.
    assert all(r["auth"] == f"Bearer {API_KEY}" for r in teacher.requests)
    assert API_KEY not in all_text(tmp_path)
    assert API_KEY not in caplog.text
    out = capsys.readouterr()
    assert API_KEY not in out.out + out.err


def test_rerun_skips_done_and_retry_failures_moves_them(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    make_dataset(tmp_path, 6)
    with FakeTeacher({"item-2": ["500"] * 4, "item-4": ["badformat"] * 4}) as teacher:
        assert run_annotate(cli_args(tmp_path, teacher.url)) == 0
        first = len(teacher.requests)
    cod_before = (tmp_path / "cod" / "cod.jsonl").read_bytes()
    assert {f["id"] for f in jsonl(tmp_path / "cod" / "annotate_failures.jsonl")} == {"item-2", "item-4"}

    with FakeTeacher() as teacher:  # a healthy server: a plain rerun still skips the failures
        assert run_annotate(cli_args(tmp_path, teacher.url)) == 0
        assert teacher.requests == []
    assert (tmp_path / "cod" / "cod.jsonl").read_bytes() == cod_before

    with FakeTeacher() as teacher:
        assert run_annotate(cli_args(tmp_path, teacher.url, "--retry-failures")) == 0
        assert sorted(r["id"] for r in teacher.requests) == ["item-2", "item-4"]
    assert jsonl(tmp_path / "cod" / "annotate_failures.jsonl") == []
    history = jsonl(tmp_path / "cod" / "annotate_retried_failures.jsonl")
    assert sorted((h["id"], h["reason"]) for h in history) == [("item-2", "http 500"), ("item-4", "wrong format")]
    ids = [r["id"] for r in jsonl(tmp_path / "cod" / "cod.jsonl")]
    assert ids == [f"item-{i}" for i in range(6)]
    progress_ids = [r["id"] for r in jsonl(tmp_path / "cod" / "annotate_progress.jsonl")]
    assert sorted(progress_ids) == sorted(set(progress_ids)) == ids
    summary = json.loads((tmp_path / "cod" / "annotate_summary.json").read_text())
    assert summary["total"]["prompt_tokens"] == 100 * (6 + 4)  # 6 accepted answers + 4 rejected formats


def test_rejected_key_stops_the_run_and_keeps_records_pending(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    make_dataset(tmp_path, 5)
    faults = {f"item-{i}": ["401"] * 10 for i in range(5)}
    with FakeTeacher(faults) as teacher:
        assert run_annotate(cli_args(tmp_path, teacher.url, "--concurrency", "1")) == 1
        assert len(teacher.requests) <= 2  # stopped at once, not one call per record
    assert jsonl(tmp_path / "cod" / "annotate_failures.jsonl") == []
    summary = json.loads((tmp_path / "cod" / "annotate_summary.json").read_text())
    assert summary["pending"] == 5
    assert "check OPENAI_API_KEY" in caplog.text
    assert API_KEY not in caplog.text and API_KEY not in all_text(tmp_path)


def test_bad_input_file_gives_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    make_dataset(tmp_path, 2)
    rec = jsonl(tmp_path / "records.jsonl")
    (tmp_path / "records.jsonl").write_text(json.dumps(rec[0]) + "\n" + json.dumps(rec[0]) + "\n")
    with pytest.raises(InputError, match="appears at records 0 and 1"):
        run_annotate(cli_args(tmp_path, "http://127.0.0.1:9/v1"))
    (tmp_path / "records.jsonl").write_text("{broken\n")
    with pytest.raises(InputError, match="records.jsonl:1: invalid JSON"):
        run_annotate(cli_args(tmp_path, "http://127.0.0.1:9/v1"))
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(InputError, match="OPENAI_API_KEY is not set"):
        run_annotate(cli_args(tmp_path, "http://127.0.0.1:9/v1"))
