"""`sicog annotate-cod` against a real HTTP server on loopback that injects faults."""
from __future__ import annotations

import base64
import json
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from annotate_helpers import API_KEY, FakeTeacher, all_text, cli_args, jsonl, make_dataset, make_image, run_annotate
from sicog.annotate import cod
from sicog.annotate.cod_records import accept_cod
from sicog.annotate.client import RetryPolicy, TeacherClient, TeacherFailed, parse_retry_after
from sicog.annotate.media import sniff_image_mime
from sicog.data.checks import InputError
from sicog.data.formats import COD_ANNOTATION_SUFFIX, COD_HEADINGS, check_steps, format_steps, parse_steps


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
