"""Reading and writing LLaVA-format records: JSON or JSONL, atomic final files, resumable appends."""
from __future__ import annotations

import glob
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from sicog.data.checks import InputError, check_input_file


def read_records(path: str | os.PathLike) -> list[dict]:
    """Records from a JSON list or a JSONL file (blank lines ignored). Raises ValueError naming the bad line."""
    return list(iter_records(path))


def iter_records(path: str | os.PathLike) -> Iterator[dict]:
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder, not a data file")
    if not p.exists():
        raise FileNotFoundError(f"no such data file: {p}")
    with p.open("rb") as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        f.seek(0)
        if head == b"[":
            data = f.read()
            try:
                items = json.loads(_decode(data, p, 0))
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(items, list):
                raise ValueError(f"{p}: expected a JSON list of records")
            for i, rec in enumerate(items):
                if not isinstance(rec, dict):
                    raise ValueError(f"{p}: item {i} is not an object")
                yield rec
            return
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw, p, lineno)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{p}:{lineno}: not a JSON object")
            yield rec


def _decode(data: bytes, path: Path, lineno: int) -> str:
    """UTF-8 text; ValueError naming the file and line (`lineno` 0: count it in `data`) when it is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = lineno or data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                         "convert the file to UTF-8") from None


def read_appended(path: str | os.PathLike, strict: bool = False) -> list[dict]:
    """The JSON objects of a JSONL file that a writer may still be appending to, or that a killed
    writer left behind.

    A last line without its newline is unfinished and ignored (`JsonlAppender` cuts it on open and
    that record is written again). A complete line that is not a JSON object - a line cut by a kill
    that a later writer appended after - is skipped, or with `strict` a ValueError naming the file
    and line. Blank lines are ignored; a missing file reads as no records.
    """
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_bytes().split(b"\n")[:-1]  # the piece after the last newline is unfinished
    out = []
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if strict:
                raise ValueError(f"{p}:{lineno}: invalid JSON ({getattr(e, 'msg', e)})") from None
            continue
        if isinstance(rec, dict):
            out.append(rec)
        elif strict:
            raise ValueError(f"{p}:{lineno}: not a JSON object")
    return out


def read_input_records(path: str | os.PathLike, arg: str) -> list[dict]:
    """The records of the input file given as `arg`.

    InputError naming `arg` when the file is missing, a folder, not UTF-8, malformed or empty:
    a stage run on no records would otherwise report a success that did nothing.
    """
    p = check_input_file(path, arg)
    try:
        records = read_records(p)
    except (OSError, ValueError) as e:
        raise InputError(f"{arg}: {e}") from None
    if not records:
        raise InputError(f"{arg} {p} holds no records (an empty file)")
    return records


def record_id(record: dict, index: int | None = None) -> str:
    """The record's id as a string; falls back to its index when it has none."""
    rid = record.get("id")
    if rid is None or rid == "":
        if index is None:
            raise ValueError("record has no id")
        return str(index)
    return str(rid)


def _tmp_prefix(p: Path) -> str:
    return f".{p.name}.{socket.gethostname()}-"


def _clear_dead_temporaries(p: Path) -> None:
    """Remove the temporary files of `p` left by killed writers on this host (their pid no longer runs)."""
    prefix = _tmp_prefix(p)
    for tmp in p.parent.glob(f".{glob.escape(p.name)}.*.tmp"):
        rest = tmp.name[len(prefix):] if tmp.name.startswith(prefix) else ""
        pid = rest.split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:  # another user's live process
            pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place: `path` is whole or absent.

    The temporary is named after the final file, this host and this pid; those of killed writers are
    removed the next time the file is written, so a killed run leaves no litter once it is rerun."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _clear_dead_temporaries(p)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f"{_tmp_prefix(p)}{os.getpid()}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the final file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dumps(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=False)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records as JSONL atomically; returns the count."""
    lines = [dumps(r) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


class JsonlAppender:
    """Append-only JSONL writer for resumable stages.

    On open, a partial last line left by a killed writer is cut off, so that appending resumes on
    a clean line. `done_ids` are the ids already present. Each record is flushed (and fsynced when
    `fsync`) as soon as it is written.
    """

    def __init__(self, path: str | os.PathLike, id_key: str = "id", fsync: bool = True):
        self.path = Path(path)
        self.id_key = id_key
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done_ids: set[str] = set()
        self.count = 0
        if self.path.exists():
            self._recover()
        self._f = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut != len(data):
            with self.path.open("r+b") as f:
                f.truncate(cut)
        for rec in read_appended(self.path):
            if rec.get(self.id_key) is not None:
                self.done_ids.add(str(rec[self.id_key]))
                self.count += 1

    def write(self, record: dict) -> None:
        self._f.write(dumps(record) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        if record.get(self.id_key) is not None:
            self.done_ids.add(str(record[self.id_key]))
        self.count += 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
