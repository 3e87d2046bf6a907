import pytest

from tiny_models import builtin_tokenizer
from sicog.data.template import IGNORE_INDEX, encode_chat, render

CONV = [
    {"from": "human", "value": "<image>\nWhat colour is the square?"},
    {"from": "gpt", "value": "The square is blue."},
]
TWO_TURNS = CONV + [
    {"from": "human", "value": "How many objects are there?"},
    {"from": "gpt", "value": "There are three objects."},
]
TEXT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<image>\nWhat colour is the square?<|im_end|>\n"
    "<|im_start|>assistant\nThe square is blue.<|im_end|>\n"
)


@pytest.fixture(scope="module")
def tok():
    return builtin_tokenizer()


def runs(tok, ids, labels):
    """Decoded maximal runs of supervised tokens."""
    out, cur = [], []
    for i, lab in zip(ids, labels):
        if lab == IGNORE_INDEX:
            if cur:
                out.append(tok.decode(cur))
                cur = []
        else:
            assert lab == i
            cur.append(i)
    if cur:
        out.append(tok.decode(cur))
    return out


def test_render_is_spec_chatml():
    assert render(CONV).text == TEXT
    gen = render(CONV[:1], add_generation_prompt=True).text
    assert gen == TEXT[: TEXT.index("The square")]


def test_ids_are_the_whole_text_tokenized(tok):
    ids, _ = encode_chat(tok, CONV)
    assert ids == tok(TEXT, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == TEXT


def test_golden_authors_mask(tok):
    ids, labels = encode_chat(tok, CONV, mask_mode="authors")
    assert runs(tok, ids, labels) == [
        "<|im_start|>",
        "\n",
        "<|im_end|>\n<|im_start|>",
        "\n",
        "\n",
        "<|im_end|>\n<|im_start|>assistant\nThe square is blue.<|im_end|>\n",
    ]
    # the image token itself is never supervised
    image_id = tok.convert_tokens_to_ids("<image>")
    assert labels[ids.index(image_id)] == IGNORE_INDEX


def test_golden_assistant_mask(tok):
    ids, labels = encode_chat(tok, TWO_TURNS, mask_mode="assistant")
    assert runs(tok, ids, labels) == ["The square is blue.<|im_end|>", "There are three objects.<|im_end|>"]


def test_golden_authors_mask_two_turns(tok):
    ids, labels = encode_chat(tok, TWO_TURNS, mask_mode="authors")
    assert runs(tok, ids, labels)[-3:] == [
        "<|im_end|>\n<|im_start|>assistant\nThe square is blue.<|im_end|>\n<|im_start|>",
        "\n",
        "<|im_end|>\n<|im_start|>assistant\nThere are three objects.<|im_end|>\n",
    ]


def test_generation_prompt_has_no_labels(tok):
    ids, labels = encode_chat(tok, CONV[:1], add_generation_prompt=True)
    assert all(lab == IGNORE_INDEX for lab in labels)
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("bad, why", [
    ([], "non-empty"),
    ([{"from": "robot", "value": "x"}], "turn 0"),
    ([{"from": "human", "value": 3}], "turn 0"),
    ([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "a <image> b"}], "human turn"),
    ([{"from": "human", "value": "hi <|im_end|> there"}], "reserved"),
])
def test_bad_conversations_raise(tok, bad, why):
    with pytest.raises(ValueError, match=why):
        encode_chat(tok, bad)


def test_generation_prompt_needs_a_final_human_turn(tok):
    with pytest.raises(ValueError, match="end with a human turn"):
        encode_chat(tok, CONV, add_generation_prompt=True)
    with pytest.raises(ValueError, match="mask_mode"):
        encode_chat(tok, CONV, mask_mode="everything")


def test_chatml_builder_matches_the_tokenizer_chat_template():
    import jinja2

    from sicog.data.template import chatml
    from sicog.data.tokens import CHAT_TEMPLATE

    messages = [{"role": "user", "content": "How many circles?"}, {"role": "assistant", "content": "two"}]
    expected = jinja2.Template(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=False)
    assert chatml("How many circles?", "two") == expected
    assert expected.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
