"""The teacher request from files (--system-prompt-file, --prefill-file, --user-template-file)."""
import json
from pathlib import Path

import pytest
from authors_fixtures import load_json
from annotate_helpers import API_KEY, FakeTeacher, cli_args, make_dataset, run_annotate

from sicog.annotate.prompts import COD_SYSTEM_PROMPT, CodRequest, cod_messages
from sicog.data.checks import InputError

# The authors' teacher prose is not part of this project; the copy in tests/fixtures carries a
# placeholder in its place. When the shared fixtures are present, their full text is checked too.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "authors" / "prompts.json"
SOURCES = [load_json("prompts.json")["cod_teacher"]]
if SHARED.is_file():
    SOURCES.append(json.loads(SHARED.read_text(encoding="utf-8"))["cod_teacher"])
AUTHORS_USER_TEMPLATE = "Question: <image>\n{question}\n\nOriginal description: {caption}"


def _files(tmp_path, teacher):
    (tmp_path / "system.txt").write_text(teacher["system_prompt"] + "\n", encoding="utf-8")
    (tmp_path / "prefill.txt").write_text(teacher["assistant_prefill"] + "\n", encoding="utf-8")
    (tmp_path / "user.txt").write_text(AUTHORS_USER_TEMPLATE + "\n", encoding="utf-8")
    return tmp_path / "system.txt", tmp_path / "prefill.txt", tmp_path / "user.txt"


@pytest.mark.parametrize("teacher", SOURCES, ids=["fixture-copy", "shared"][:len(SOURCES)])
def test_files_reproduce_the_authors_request(tmp_path, teacher):
    request = CodRequest.from_files(*_files(tmp_path, teacher))
    ex = teacher["example"]
    question = ex["question"].removeprefix("<image>\n")
    url = teacher["user_image_part_template"]["image_url"]["url"].replace("{base64}", ex["image_base64"])
    assert request.messages(question, ex["caption"], url) == ex["messages"]
    assert teacher["user_text_template"] == "Question: {question}\n\nOriginal description: {caption}"


def test_default_request_is_ours():
    msgs = cod_messages("Q?", "A cap.", "data:image/png;base64,AA")
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == COD_SYSTEM_PROMPT
    assert msgs[1]["content"][0]["text"] == "Question: Q?\n\nOriginal description: A cap."


def test_bad_request_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        CodRequest.from_files(system=tmp_path / "missing.txt")
    (tmp_path / "u.txt").write_text("Question only: {question}")
    with pytest.raises(ValueError, match=r"\{caption\} exactly once"):
        CodRequest.from_files(user_template=tmp_path / "u.txt")


def test_annotate_sends_the_request_from_files(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    make_dataset(tmp_path, 2)
    system, prefill, user = _files(tmp_path, SOURCES[-1])
    extra = ["--system-prompt-file", str(system), "--prefill-file", str(prefill), "--user-template-file", str(user)]
    with FakeTeacher() as teacher:
        assert run_annotate(cli_args(tmp_path, teacher.url, *extra)) == 0
    msgs = next(r["body"]["messages"] for r in teacher.requests if r["id"] == "item-0")
    assert msgs[0] == {"role": "system", "content": SOURCES[-1]["system_prompt"]}
    assert msgs[1]["content"][0]["text"] == "Question: <image>\nWhat is in item-0?\n\nOriginal description: A red square numbered 0."
    assert msgs[2] == {"role": "assistant", "content": SOURCES[-1]["assistant_prefill"]}
    with pytest.raises(InputError, match="prompt file not found"):
        run_annotate(cli_args(tmp_path, "http://127.0.0.1:9", "--prefill-file", str(tmp_path / "nope.txt")))
