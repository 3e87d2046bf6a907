"""The world's teacher over real HTTP with the openai client: gold CoD captions and injected faults."""
from __future__ import annotations

import io
import subprocess
import sys
import time

import openai
import pytest
from PIL import Image

from sicog.annotate.media import image_data_url
from sicog.annotate.prompts import cod_messages
from sicog.data import formats
from sicog.data.records import read_records
from sicog.world.build import build_world
from sicog.world.teacher import FaultConfig, start_teacher
from sicog.world.texts import cod_caption


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "world"
    build_world(out, "micro", 1)
    return out


@pytest.fixture(scope="module")
def raw(world):
    return read_records(world / "data/cod_seed_raw.jsonl")


def scene_of(world, image: str) -> dict:
    return next(s for s in read_records(world / "world.jsonl") if s["image"] == image)


def ask(client, world, rec, url: str | None = None):
    question = formats.strip_image_token(rec["conversations"][0]["value"])
    return client.chat.completions.create(
        model="teacher", temperature=0.2, max_tokens=2048,
        messages=cod_messages(question, rec["caption"], url or image_data_url(world / rec["image"])),
    )


@pytest.fixture()
def serve(world):
    servers = []

    def _start(faults=None, max_retries=0, timeout=10.0):
        server = start_teacher(world, faults=faults)
        servers.append(server)
        return server, openai.OpenAI(base_url=server.url, api_key="unused", max_retries=max_retries, timeout=timeout)

    yield _start
    for s in servers:
        s.stop()


def test_answers_the_gold_caption_of_the_image_sent(world, raw, serve):
    server, client = serve()
    for rec in raw[:3]:
        resp = ask(client, world, rec)
        content = resp.choices[0].message.content
        assert content == cod_caption(scene_of(world, rec["image"]))
        assert formats.check_steps(content, formats.COD_HEADINGS) is None
        assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
    assert [m.id for m in client.models.list().data] == ["sicog-world-teacher"]
    assert server.stats["ok"] == 3


def test_re_encoded_image_still_matches_and_unknown_image_is_refused(world, raw, serve):
    import base64

    _, client = serve()
    rec = raw[0]
    buf = io.BytesIO()
    Image.open(world / rec["image"]).convert("RGB").save(buf, format="JPEG", quality=85)
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    assert ask(client, world, rec, url).choices[0].message.content == cod_caption(scene_of(world, rec["image"]))

    buf = io.BytesIO()
    img = Image.open(world / rec["image"])
    img.resize((img.width * 2, img.height * 2), Image.Resampling.BILINEAR).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert ask(client, world, rec, url).choices[0].message.content == cod_caption(scene_of(world, rec["image"]))

    buf = io.BytesIO()
    Image.new("RGB", (112, 112), (10, 200, 10)).save(buf, format="PNG")
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, world, rec, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    assert e.value.status_code == 400 and e.value.code == "unknown_image"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="teacher", messages=[{"role": "user", "content": "hello"}])
    assert e.value.code == "missing_image"


@pytest.mark.parametrize("kind", ["rate_limit", "server_error", "malformed", "wrong_format"])
def test_each_fault_kind_on_the_first_attempt_then_the_gold_caption(world, raw, serve, kind):
    server, client = serve(FaultConfig(fail_first=1, fail_first_kind=kind))
    rec = raw[1]
    gold = cod_caption(scene_of(world, rec["image"]))
    if kind == "rate_limit":
        with pytest.raises(openai.RateLimitError) as e:
            ask(client, world, rec)
        assert float(e.value.response.headers["retry-after"]) > 0
    elif kind == "server_error":
        with pytest.raises(openai.InternalServerError) as e:
            ask(client, world, rec)
        assert e.value.status_code == 500
    elif kind == "malformed":
        with pytest.raises((openai.APIResponseValidationError, ValueError)):  # the body is not JSON
            ask(client, world, rec)
    else:
        content = ask(client, world, rec).choices[0].message.content
        assert formats.check_steps(content, formats.COD_HEADINGS) is not None
        assert len(formats.parse_steps(content)) == 4
    assert ask(client, world, rec).choices[0].message.content == gold
    assert server.stats[kind] == 1 and server.stats["ok"] == 1


def test_client_retries_through_rate_limits_and_delays_time_out(world, raw, serve):
    server, client = serve(FaultConfig(fail_first=2, fail_first_kind="rate_limit", retry_after_s=0.01), max_retries=3)
    assert formats.check_steps(ask(client, world, raw[2]).choices[0].message.content, formats.COD_HEADINGS) is None
    assert server.stats["rate_limit"] == 2 and server.stats["ok"] == 1

    server, client = serve(FaultConfig(delay=1.0, delay_s=0.4), timeout=0.1)
    with pytest.raises(openai.APITimeoutError):
        ask(client, world, raw[2])
    t0 = time.time()
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=5)
    assert ask(client, world, raw[2]).choices[0].message.content
    assert time.time() - t0 >= 0.4


def outcomes(serve, world, raw, faults) -> list[str]:
    _, client = serve(faults)
    seen = []
    for rec in raw[:6] * 2:
        try:
            content = ask(client, world, rec).choices[0].message.content
            seen.append("ok" if formats.check_steps(content, formats.COD_HEADINGS) is None else "wrong_format")
        except (openai.APIError, ValueError) as e:
            seen.append(type(e).__name__)
    return seen


def test_rate_based_faults_are_deterministic_from_the_seed(world, raw, serve):
    faults = dict(rate_limit=0.2, server_error=0.2, malformed=0.2, wrong_format=0.2)
    first = outcomes(serve, world, raw, FaultConfig(seed=7, **faults))
    assert first == outcomes(serve, world, raw, FaultConfig(seed=7, **faults))
    assert len(set(first)) >= 3  # several kinds actually happened
    assert first != outcomes(serve, world, raw, FaultConfig(seed=8, **faults))


def test_bad_fault_config_is_refused():
    with pytest.raises(ValueError, match="rate_limit"):
        FaultConfig(rate_limit=1.5)
    with pytest.raises(ValueError, match="fail_first_kind"):
        FaultConfig(fail_first_kind="explode")


def test_cli_serves_with_fault_flags_until_stopped(world, raw):
    proc = subprocess.Popen([sys.executable, "-m", "sicog", "world", "teacher", "--world", str(world), "--port", "0",
                             "--fail-first", "1", "--fail-first-kind", "server_error"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "teacher serving" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.strip().rsplit(" at ", 1)[1]
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert client.models.list().data[0].id == "sicog-world-teacher"
        with pytest.raises(openai.InternalServerError):
            ask(client, world, raw[0])
        assert ask(client, world, raw[0]).choices[0].message.content == cod_caption(scene_of(world, raw[0]["image"]))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
