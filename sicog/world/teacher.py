"""A teacher model for the mini world behind the OpenAI chat-completions protocol, on loopback.

It answers a CoD annotation request (a system prompt and a user turn with text and an image as a
`data:` URL) with the gold five-step caption of the image it was sent. The image is recognised by
content: the sha256 of its bytes, or, when the bytes differ (re-encoded PNG or JPEG, resized), by a
small thumbnail of its pixels. An image that is not in the world gets a 400 with an OpenAI-style
error body.

Faults can be injected for tests, deterministically: each request's fate is drawn from
(seed, image, attempt number for that image), so the same sequence of requests meets the same faults
whatever the thread timing. `fail_first=K` fails the first K attempts for every image with
`fail_first_kind`, then answers normally.

    server = start_teacher(world_dir, faults=FaultConfig(rate_limit=0.3, seed=1))
    client = openai.OpenAI(base_url=server.url, api_key="unused")
    ...
    server.stop()
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sicog.data.records import read_records
from sicog.world.texts import cod_caption

log = logging.getLogger(__name__)

MODEL_NAME = "sicog-world-teacher"
FAULT_KINDS = ("rate_limit", "server_error", "malformed", "wrong_format")
THUMB = 8                      # side of the pixel fingerprint
MAX_THUMB_DISTANCE = 12.0      # mean absolute difference (0-255) accepted as the same image
MAX_ASPECT_DIFFERENCE = 0.08   # |log(aspect ratio)| accepted as the same image


@dataclass
class FaultConfig:
    """Rates (0-1) of each fault per request, and the deterministic first-K failure mode."""

    seed: int = 0
    rate_limit: float = 0.0       # 429 with Retry-After
    server_error: float = 0.0     # 500
    delay: float = 0.0            # answer after `delay_s` seconds
    delay_s: float = 0.5
    malformed: float = 0.0        # 200 with a body that is not valid JSON
    wrong_format: float = 0.0     # a caption with one of the five steps missing
    fail_first: int = 0           # fail the first K attempts for each image ...
    fail_first_kind: str = "server_error"   # ... with this fault
    retry_after_s: float = 0.05

    def __post_init__(self) -> None:
        for name in ("rate_limit", "server_error", "delay", "malformed", "wrong_format"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rate {name}={value} is not within [0, 1]")
        if self.fail_first_kind not in FAULT_KINDS:
            raise ValueError(f"fail_first_kind {self.fail_first_kind!r} is not one of {FAULT_KINDS}")
        if self.fail_first < 0 or self.delay_s < 0 or self.retry_after_s < 0:
            raise ValueError("fail_first, delay_s and retry_after_s must not be negative")

    def fault(self, key: str, attempt: int) -> tuple[str | None, bool]:
        """(fault kind or None, whether to delay) for the `attempt`-th request (0-based) of an image."""
        if attempt < self.fail_first:
            return self.fail_first_kind, False
        rng = random.Random(f"sicog-teacher:{self.seed}:{key}:{attempt}")
        delayed = rng.random() < self.delay
        for kind in FAULT_KINDS:
            if rng.random() < getattr(self, kind):
                return kind, delayed
        return None, delayed


class RequestError(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _thumbnail(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32).ravel()


class ImageIndex:
    """World images by sha256 of their bytes, with a pixel-thumbnail fallback built on first need."""

    def __init__(self, world: Path):
        self.world = world
        self.scenes = {s["image"]: s for s in read_records(world / "world.jsonl")}
        manifest = world / "manifest.json"
        hashes = json.loads(manifest.read_text())["files"] if manifest.exists() else {}
        self.by_sha = {}
        for image in self.scenes:
            sha = hashes.get(image) or hashlib.sha256((world / image).read_bytes()).hexdigest()
            self.by_sha[sha] = image
        self._lock = threading.Lock()
        self._thumbs: np.ndarray | None = None
        self._aspects: np.ndarray | None = None
        self._order: list[str] = []

    def _build_thumbs(self) -> None:
        with self._lock:
            if self._thumbs is not None:
                return
            log.info("building pixel fingerprints of %d images", len(self.scenes))
            thumbs, aspects = [], []
            for image, scene in self.scenes.items():
                with Image.open(self.world / image) as img:
                    thumbs.append(_thumbnail(img))
                aspects.append(np.log(scene["width"] / scene["height"]))
                self._order.append(image)
            self._aspects = np.asarray(aspects)
            self._thumbs = np.stack(thumbs)

    def find(self, data: bytes) -> dict:
        """The scene of the image in `data`; RequestError when it is not a world image."""
        image = self.by_sha.get(hashlib.sha256(data).hexdigest())
        if image:
            return self.scenes[image]
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                thumb, aspect = _thumbnail(img), np.log(img.width / img.height)
        except (UnidentifiedImageError, OSError, ValueError, ZeroDivisionError) as e:
            raise RequestError(400, f"the image could not be decoded: {e}", "invalid_image") from None
        self._build_thumbs()
        distance = np.abs(self._thumbs - thumb).mean(axis=1)
        distance[np.abs(self._aspects - aspect) > MAX_ASPECT_DIFFERENCE] = np.inf
        best = int(np.argmin(distance))
        if distance[best] > MAX_THUMB_DISTANCE:
            raise RequestError(400, "the image is not an image of this world", "unknown_image")
        return self.scenes[self._order[best]]


def _image_bytes(payload: dict) -> bytes:
    """The bytes of the (single) image in the request's messages."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list", "invalid_request")
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = part.get("image_url", {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
                if not url.startswith("data:") or ";base64," not in url:
                    raise RequestError(400, "images must be sent as base64 data URLs", "invalid_image")
                try:
                    return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
                except (binascii.Error, ValueError):
                    raise RequestError(400, "the image data URL is not valid base64", "invalid_image") from None
    raise RequestError(400, "the request carries no image (a user content part of type image_url)", "missing_image")


def _count_tokens(text: str) -> int:
    return len(text.split())


def _drop_a_step(caption: str, rng: random.Random) -> str:
    parts = caption.split("\n\n")  # one part per step: step bodies hold no blank lines
    del parts[rng.randrange(len(parts))]
    return "\n\n".join(parts)


def completion_body(content: str, model: str, prompt_tokens: int, completion_tokens: int,
                    finish_reason: str = "stop") -> dict:
    """An OpenAI `chat.completion` object answering with `content`."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class ChatCompletionsServer(ThreadingHTTPServer):
    """An OpenAI-compatible endpoint on loopback, served from a background thread by `start()`;
    what it answers is its handler's (a ChatCompletionsHandler) `answer`."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0,
                 model: str = MODEL_NAME):
        self.model = model
        self.attempts: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), handler)

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client (`.../v1`)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def next_attempt(self, key: str) -> int:
        with self._lock:
            attempt = self.attempts[key]
            self.attempts[key] += 1
            return attempt

    def count(self, outcome: str) -> None:
        with self._lock:
            self.stats[outcome] += 1

    def start(self) -> "ChatCompletionsServer":
        self._thread = threading.Thread(target=self.serve_forever, name="sicog-teacher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class ChatCompletionsHandler(BaseHTTPRequestHandler):
    """The OpenAI protocol: `GET /v1/models`, and `POST /v1/chat/completions` whose JSON object body
    goes to `answer(payload)`, which sends the reply (`send_body`, `send_error_body`); a RequestError
    it raises before sending becomes an OpenAI-style error."""

    server: ChatCompletionsServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args) -> None:  # route through logging, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def send_body(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_error_body(self, status: int, message: str, code: str, kind: str,
                        headers: dict[str, str] | None = None) -> None:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        self.send_body(status, json.dumps(body).encode(), headers)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": self.server.model, "object": "model", "created": 0, "owned_by": "sicog"}]
            self.send_body(200, json.dumps({"object": "list", "data": data}).encode())
        else:
            self.send_error_body(404, f"no route {self.path}", "not_found", "invalid_request_error")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_error_body(404, f"no route {self.path}", "not_found", "invalid_request_error")
            return
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise RequestError(400, "the request body must be a JSON object", "invalid_request")
            self.answer(payload)
        except json.JSONDecodeError:
            self.server.count("bad_request")
            self.send_error_body(400, "the request body is not valid JSON", "invalid_json", "invalid_request_error")
        except RequestError as e:
            self.server.count("bad_request")
            self.send_error_body(e.status, e.message, e.code, "invalid_request_error")

    def answer(self, payload: dict) -> None:
        raise NotImplementedError


class TeacherServer(ChatCompletionsServer):
    """The world's teacher: the gold CoD caption of the image it is sent, with `faults` injected."""

    def __init__(self, world: str | Path, host: str = "127.0.0.1", port: int = 0,
                 faults: FaultConfig | None = None, model: str = MODEL_NAME):
        self.world = Path(world)
        self.index = ImageIndex(self.world)
        self.faults = faults or FaultConfig()
        super().__init__(_Handler, host, port, model)


class _Handler(ChatCompletionsHandler):
    server: TeacherServer

    def answer(self, payload: dict) -> None:
        scene = self.server.index.find(_image_bytes(payload))  # RequestError when no world image
        server = self.server
        attempt = server.next_attempt(scene["id"])
        fault, delayed = server.faults.fault(scene["id"], attempt)
        if delayed:
            time.sleep(server.faults.delay_s)
        server.count(fault or "ok")
        if fault == "rate_limit":
            wait = server.faults.retry_after_s
            self.send_error_body(429, "rate limit reached, retry later", "rate_limit_exceeded", "requests",
                                 {"Retry-After": f"{wait:g}", "retry-after-ms": f"{wait * 1000:g}"})
            return
        if fault == "server_error":
            self.send_error_body(500, "the teacher failed on this request", "server_error", "server_error")
            return
        caption = cod_caption(scene)
        if fault == "wrong_format":
            caption = _drop_a_step(caption, random.Random(f"sicog-teacher-drop:{server.faults.seed}:{scene['id']}:{attempt}"))
        prompt_text = " ".join(
            c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            for c in (m.get("content", "") for m in payload.get("messages", []) if isinstance(m, dict))
        )
        body = completion_body(caption, str(payload.get("model") or server.model), _count_tokens(prompt_text),
                               _count_tokens(caption))
        data = json.dumps(body).encode()
        if fault == "malformed":
            data = data[: len(data) // 2]
        self.send_body(200, data)


def start_teacher(world_dir: str | Path, port: int = 0, host: str = "127.0.0.1",
                  faults: FaultConfig | None = None, model: str = MODEL_NAME) -> TeacherServer:
    """Start the teacher in a background thread; `.url` is the OpenAI base URL, `.stop()` ends it."""
    return TeacherServer(world_dir, host=host, port=port, faults=faults, model=model).start()


def add_arguments(parser) -> None:
    parser.add_argument("--world", required=True, help="a built world folder")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model-name", default=MODEL_NAME)
    g = parser.add_argument_group("fault injection (for tests; all off by default)")
    defaults = FaultConfig()
    helps = {
        "seed": "seed of the fault draws", "rate_limit": "rate of 429 answers (with Retry-After)",
        "server_error": "rate of 500 answers", "delay": "rate of delayed answers", "delay_s": "seconds of a delay",
        "malformed": "rate of bodies that are not valid JSON", "wrong_format": "rate of captions missing a step",
        "fail_first": "fail the first K attempts for every image", "fail_first_kind": "the fault of those attempts",
        "retry_after_s": "seconds sent in Retry-After",
    }
    for f in fields(FaultConfig):
        flag = "--fault-seed" if f.name == "seed" else "--" + f.name.replace("_", "-")
        kwargs = {"choices": FAULT_KINDS} if f.name == "fail_first_kind" else {"metavar": "X"}
        g.add_argument(flag, dest=f"fault_{f.name}", type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name), help=f"{helps[f.name]} (default %(default)s)", **kwargs)


def run(args) -> int:
    from sicog.data.checks import check_world

    world = check_world(args.world, "--world")
    faults = FaultConfig(**{f.name: getattr(args, f"fault_{f.name}") for f in fields(FaultConfig)})
    server = TeacherServer(world, host=args.host, port=args.port, faults=faults, model=args.model_name)
    print(f"teacher serving {len(server.index.scenes)} images of {world} at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
