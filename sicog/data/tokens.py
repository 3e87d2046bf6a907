"""The special tokens and the ChatML chat template: one definition for the tokenizer, the template
renderer, the processor and the model.

Qwen2's ChatML (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`) plus LLaVA's `<image>`, and the
default system prompt SPEC section 2 fixes.
"""
from __future__ import annotations

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS: list[str] = [ENDOFTEXT, IM_START, IM_END, IMAGE_TOKEN]
SYSTEM_PROMPT = "You are a helpful assistant."

# The same ChatML as a Jinja chat template (what `tokenizer.apply_chat_template` renders), as Qwen2
# ships it; `sicog.data.template.render` writes the same text.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    f"{{{{ '{IM_START}system\\n{SYSTEM_PROMPT}{IM_END}\\n' }}}}"
    "{% endif %}"
    f"{{{{ '{IM_START}' + message['role'] + '\\n' + message['content'] + '{IM_END}' + '\\n' }}}}"
    "{% endfor %}"
    f"{{% if add_generation_prompt %}}{{{{ '{IM_START}assistant\\n' }}}}{{% endif %}}"
)
