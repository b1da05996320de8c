"""A conversation's prompt ids (docs/FORMATS.md §16.1): the template rendered with the tokenizer's BOS and EOS
texts, encoded with special tokens matched as themselves, BOS put first once where the tokenizer asks for it."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PxglError
from ..reading import decode_utf8, read_bounded
from .template import MAX_SOURCE_BYTES, ChatTemplate, ChatTemplateError

if TYPE_CHECKING:
    from ..text_tokenizer import TextTokenizer
    from ..tokenizer import Tokenizer

Message = dict[str, str]


def read_template(path: Path) -> ChatTemplate:
    """A --template FILE: UTF-8 text of at most MAX_SOURCE_BYTES, compiled."""
    data = read_bounded(path, "chat template", MAX_SOURCE_BYTES)
    return ChatTemplate(decode_utf8(data, f"{path}: cannot read the chat template as UTF-8 text"), str(path))


def model_template(tokenizer: "Tokenizer | TextTokenizer", where: str, option: str = "--template") -> ChatTemplate:
    """The tokenizer's own template; a tokenizer without one is one line naming the `option` that gives one."""
    source = tokenizer.chat_template
    if not source:
        raise PxglError(
            f"{where}: this model's tokenizer has no chat template; give one with {option} FILE "
            "(a Jinja chat template, as a Hugging Face tokenizer_config.json's chat_template holds)"
        )
    return ChatTemplate(source, f"{where}'s chat template")


@dataclass(frozen=True)
class ChatFormat:
    """How a model's conversations become prompt ids."""

    template: ChatTemplate
    tokenizer: "Tokenizer | TextTokenizer"
    """Tokenizer.load's (§6, §6.1)."""

    @staticmethod
    def of(tokenizer: "Tokenizer | TextTokenizer", where: str, template_file: Path | None = None) -> "ChatFormat":
        template = read_template(template_file) if template_file is not None else model_template(tokenizer, where)
        return ChatFormat(template, tokenizer)

    def text(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        tokenizer = self.tokenizer
        return self.template.render(list(messages), add_generation_prompt, tokenizer.bos_token, tokenizer.eos_token)

    def ids(self, messages: Sequence[Message]) -> list[int]:
        """The ids the model runs for `messages`, its answer to come next."""
        ids = self.tokenizer.encode(self.text(messages), special=True)
        bos = self.tokenizer.bos_id
        if self.tokenizer.add_bos and bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        if not ids:
            raise ChatTemplateError(
                f"{self.template.where}: it renders no text for these messages (a prompt needs at least one token)"
            )
        return ids
