"""A model's chat template rendered as `transformers`' apply_chat_template renders it (docs/FORMATS.md §16.1):
Jinja2's immutable sandbox with transformers' globals and filter, bounded in output, time and the size of what
one operation makes, since a template is untrusted input."""

import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from types import FrameType
from typing import Any, ClassVar

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import PxglError

MAX_SOURCE_BYTES = 1 << 20
MAX_ITEMS = 4 << 20
"""Characters of the rendered text, and characters or items any one operation of the template may make."""
MAX_RENDER_S = 2.0
MAX_EXPONENT = 4096
MAX_INT_BITS = 1 << 16
TEMPLATE_FILE = "<template>"
"""The file name Jinja gives a template's compiled code: the frames whose lines the time bound counts."""
CLOCK_EVERY = 256
"""Template lines run between two looks at the clock."""
LONG_NUMBER = re.compile(r"\d{8}")
"""A width or precision of 8 digits or more in a format string: a format that would make 10⁷+ characters."""


class ChatTemplateError(PxglError):
    def __init__(self, what: str) -> None:
        super().__init__(f"chat template: {what}")


def raise_exception(message: Any) -> None:
    raise jinja2.exceptions.TemplateError(str(message))


def tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class TemplateDict:
    """`dict` as a template sees it: a call and fromkeys, nothing to climb out of."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class TemplateNamespace(jinja2.utils.Namespace):
    """Jinja's namespace refusing attribute names that begin with `_`."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's signature trick: namespace(self=…) still works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            TemplateNamespace.check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        TemplateNamespace.check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a namespace attribute may not begin with '_': {name!r}")


class GenerationTag(jinja2.ext.Extension):
    """`{% generation %}…{% endgeneration %}` (transformers' assistant-mask tag): its body, unchanged."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


def too_large(value: Any) -> bool:
    if isinstance(value, str | list | tuple | dict | bytes):
        return len(value) > MAX_ITEMS
    return isinstance(value, int) and abs(value).bit_length() > MAX_INT_BITS


def check_result(value: Any, what: str) -> Any:
    if too_large(value):
        raise jinja2.exceptions.SecurityError(f"{what} makes a value past {MAX_ITEMS:,} items")
    return value


def check_arguments(args: tuple, kwargs: Mapping[str, Any], what: str) -> None:
    """Refuse a call given an integer past MAX_ITEMS (a width, a count: what it makes would be as large)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ITEMS:
            raise jinja2.exceptions.SecurityError(f"{what} is given {value}, past {MAX_ITEMS:,}")


def replaced_size(text: Any, old: Any, new: Any) -> int:
    if not all(isinstance(v, str) for v in (text, old, new)):
        return 0
    return len(text) + (len(text) + 1 if old == "" else text.count(old)) * len(new)


def bounded_filter(name: str, function: Callable) -> Callable:
    @wraps(function)  # keeps jinja's pass_context marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        check_arguments(args, kwargs, f"the filter {name}")
        if name == "replace" and replaced_size(*args[-3:]) > MAX_ITEMS:
            raise jinja2.exceptions.SecurityError(f"the filter replace would make past {MAX_ITEMS:,} characters")
        return check_result(function(*args, **kwargs), f"the filter {name}")

    return bounded


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with every operation that can make a large value checked (FORMATS §16.1's bounds)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            count, items = (left, right) if isinstance(left, int) else (right, left)
            if isinstance(count, int) and isinstance(items, str | list | tuple) and count * len(items) > MAX_ITEMS:
                raise jinja2.exceptions.SecurityError(f"'*' would make {count * len(items):,} items")
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise jinja2.exceptions.SecurityError(f"'**' with the exponent {right}, past {MAX_EXPONENT}")
        if operator == "%" and isinstance(left, str) and LONG_NUMBER.search(left):
            raise jinja2.exceptions.SecurityError("a '%' format with a width or precision of 8 digits or more")
        return check_result(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        what = f"the call of {getattr(__obj, '__name__', type(__obj).__name__)}"
        check_arguments(args, kwargs, what)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and __obj.__name__ == "replace" and replaced_size(owner, *args[:2]) > MAX_ITEMS:
            raise jinja2.exceptions.SecurityError(f"replace would make past {MAX_ITEMS:,} characters")
        return check_result(super().call(__context, __obj, *args, **kwargs), what)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`'…'.format` as the sandbox wraps it, refused where the format string holds a long width."""
        owner = getattr(value, "__self__", None)
        is_format = getattr(value, "__name__", "") in ("format", "format_map")
        if isinstance(owner, str) and is_format and LONG_NUMBER.search(owner):
            raise jinja2.exceptions.SecurityError("a format with a width or precision of 8 digits or more")
        return super().wrap_str_format(value)

    def joined(self, parts: tuple) -> str:
        """`a ~ b`: Jinja's string join, its result bounded."""
        return check_result("".join(map(str, parts)), "'~'")


class BoundedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


BoundedEnvironment.code_generator_class = BoundedCodeGenerator


def environment() -> BoundedEnvironment:
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.filters = {name: bounded_filter(name, f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env


class Deadline:
    """A trace function counting the template's own lines (its compiled code, nothing else) and ending the
    render once MAX_RENDER_S has passed: a loop that renders nothing is stopped too."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.lines = 0

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        return self.line if frame.f_code.co_filename == TEMPLATE_FILE else None

    def line(self, frame: FrameType, event: str, arg: Any) -> Any:
        self.lines += 1
        if self.lines % CLOCK_EVERY == 0 and time.monotonic() > self.end:
            raise jinja2.exceptions.SecurityError(f"the render ran past {MAX_RENDER_S:g} seconds")
        return self.line


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    where: str
    """What the source is, for errors: the model's tokenizer, or a --template file."""

    def __post_init__(self) -> None:
        if len(self.source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
            raise ChatTemplateError(f"{self.where}: the template is past {MAX_SOURCE_BYTES:,} bytes")
        try:
            compiled = environment().from_string(self.source)
        except jinja2.exceptions.TemplateSyntaxError as e:
            raise ChatTemplateError(f"{self.where}: line {e.lineno}: {e.message}") from None
        object.__setattr__(self, "compiled", compiled)

    def render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        bos_token: str | None = None,
        eos_token: str | None = None,
    ) -> str:
        """The prompt text of `messages` (role and content strings), or one ChatTemplateError."""
        variables: dict[str, Any] = {
            "messages": [{key: value for key, value in m.items() if value is not None} for m in messages],
            "tools": None,
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
        }
        variables |= {name: token for name, token in (("bos_token", bos_token), ("eos_token", eos_token)) if token}
        parts: list[str] = []
        size = 0
        previous = sys.gettrace()
        sys.settrace(Deadline(MAX_RENDER_S))
        try:
            stream = self.compiled.generate(**variables)  # type: ignore[attr-defined]
            for part in stream:
                size += len(part)
                if size > MAX_ITEMS:
                    stream.close()
                    raise ChatTemplateError(f"{self.where}: the rendered text passes {MAX_ITEMS:,} characters")
                parts.append(part)
        except ChatTemplateError:
            raise
        except jinja2.exceptions.TemplateError as e:
            raise ChatTemplateError(f"{self.where}: {e.message or type(e).__name__}") from None
        except (RecursionError, MemoryError, OverflowError) as e:
            raise ChatTemplateError(f"{self.where}: {type(e).__name__}: {e}") from None
        except Exception as e:  # the template's own mistake (a TypeError of its code, say): the template's fault
            raise ChatTemplateError(f"{self.where}: {type(e).__name__}: {e}") from None
        finally:
            sys.settrace(previous)
        return "".join(parts)
