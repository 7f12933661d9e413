"""The turn schema in a chat template: `chat_format` cuts a tokenizer's template into pieces and
`make_layout(AgentConfig(chat=True))` frames system, user observations and assistant segments with them."""

import pytest

from jarl import envs
from jarl.agent import AgentConfig, ChatFormat, Segment, chat_format, make_layout
from jarl.tokenizer import ByteTokenizer


def text(tokenizer, toks) -> str:
  return tokenizer.decode([int(i) for i in toks.ids[:int(toks.length)]], skip_special=False)


def test_chat_format_of_chatml():
  assert chat_format(ByteTokenizer()) == ChatFormat(
      "<|im_start|>system\n", "<|im_end|>", "\n<|im_start|>user\n", "\n<|im_start|>assistant\n")


def test_chat_layout_renders_the_template_conversation():
  """Prompt, then per turn: the assistant's segments (each ended by <|im_end|>) and the next user message."""
  tok = ByteTokenizer()
  env = envs.make("frozenlake", tokenizer=tok, size=4, max_turns=2)
  agent = AgentConfig(chat=True, system="{instructions}", act_header="", plan_budget=3, critique_budget=2)
  layout = make_layout(agent, env)
  assert text(tok, layout.system) == f"<|im_start|>system\n{env.instructions}<|im_end|>"
  assert text(tok, layout.feedback_header) == "\n<|im_start|>user\n"
  headers = {s: text(tok, h) for s, h in layout.headers.items()}
  assert headers == {Segment.PLAN: "<|im_end|>\n<|im_start|>assistant\nplan: ",  # closes the user message
                     Segment.ACT: "\n<|im_start|>assistant\n",  # follows PLAN's <|im_end|>
                     Segment.CRITIQUE: "\n<|im_start|>assistant\ncheck: ",
                     Segment.VERDICT: "\n<|im_start|>assistant\nok? ",
                     Segment.REVISE: "<|im_end|>\n<|im_start|>assistant\nrevise: "}  # closes the verdict's message
  assert layout.stop_id == tok.special_to_id["<|im_end|>"]
  # The same conversation as the template renders it: system, user, then assistant.
  obs = "OBS"
  rendered = tok.apply_chat_template([{"role": "system", "content": env.instructions},
                                      {"role": "user", "content": obs}])
  assert text(tok, layout.system) + text(tok, layout.feedback_header) + obs + "<|im_end|>\n<|im_start|>assistant\n" \
      == rendered


def test_chat_requests_are_user_messages_before_their_segments():
  """A critique asked for in words: user message, then the assistant's critique, verdict and revision."""
  tok = ByteTokenizer()
  env = envs.make("frozenlake", tokenizer=tok, size=4, max_turns=2)
  agent = AgentConfig(chat=True, system="{instructions}", act_header="", critique_budget=2, critique_header="",
                      verdict_header="", revise_header="", critique_request="Check it.", verdict_request="Right?",
                      revise_request="Fix it.")
  headers = {s: text(tok, h) for s, h in make_layout(agent, env).headers.items()}
  assert headers == {Segment.ACT: "<|im_end|>\n<|im_start|>assistant\n",
                     Segment.CRITIQUE: "\n<|im_start|>user\nCheck it.<|im_end|>\n<|im_start|>assistant\n",
                     Segment.VERDICT: "\n<|im_start|>user\nRight?<|im_end|>\n<|im_start|>assistant\n",
                     Segment.REVISE: "<|im_end|>\n<|im_start|>user\nFix it.<|im_end|>\n<|im_start|>assistant\n"}
  with pytest.raises(ValueError, match="critique_request .*needs chat=True"):
    AgentConfig(critique_budget=2, critique_request="Check it.")


class Template(ByteTokenizer):
  def __init__(self, render):
    super().__init__()
    self.render = render

  def apply_chat_template(self, messages, add_generation_prompt=True):
    return self.render(messages)


@pytest.mark.parametrize("render, problem", [
    (lambda ms: "".join(f"{m['role']}: {m['content']}\n" for m in ms), "not closed by a special token"),
    (lambda ms: "".join(f"<|im_start|>{m['content']}<|im_end|>" for m in ms if m["role"] != "system"),
     "does not render the messages"),
    (lambda ms: "<|im_start|>" + "".join(f"{m['content']}<|im_end|>{'<pad>' if m['role'] == 'system' else ''}"
                                         for m in ms), "opens differently"),
])
def test_chat_format_refuses_templates_it_cannot_frame(render, problem):
  with pytest.raises(ValueError, match=problem):
    chat_format(Template(render))
