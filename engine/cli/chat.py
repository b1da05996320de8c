"""`pxgl chat`: an interactive chat with a version-2 model (docs/FORMATS.md §16.4), the conversation kept in one
KV-cache slot between turns. Ctrl-C ends an answer (or discards the line typed), Ctrl-D ends the chat."""

import signal
import sys
from codecs import IncrementalDecoder, getincrementaldecoder
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import PxglError
from .app import app
from .generate import SeedOption, StopOption, TemperatureOption, TopKOption, TopPOption
from .options import DeviceOption, ExecutorOption, ModelOption, one_device
from .predict import single_blas_thread
from .transformer import RepeatPenaltyOption, is_transformer

if TYPE_CHECKING:
    from rich.console import Console

    from ..chat.session import ChatSession

PROMPT = ">>> "


class Interrupt:
    """SIGINT noted, not raised, while the chat runs: an answer asks `seen` between its steps and ends (the
    GPU's state stays whole); only while a line is read is it Python's KeyboardInterrupt (the line discarded)."""

    def __init__(self) -> None:
        self.seen = False

    def __enter__(self) -> "Interrupt":
        self.previous = signal.signal(signal.SIGINT, self.note)
        return self

    def note(self, signum: int, frame: object) -> None:
        self.seen = True

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def read_line(self, interactive: bool) -> str | None:
        """The next line typed (None: end of input); Ctrl-C at the prompt discards the line and asks again."""
        while True:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                return input(PROMPT) if interactive else input()
            except EOFError:
                if interactive:  # Ctrl-D at the prompt: the shell's prompt comes on a line of its own
                    sys.stdout.write("\n")
                return None
            except KeyboardInterrupt:
                sys.stdout.write("\n")
            finally:
                signal.signal(signal.SIGINT, self.note)
                self.seen = False


@app.command()
def chat(
    model: ModelOption = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message opening the chat.")] = None,
    template: Annotated[
        Path | None, typer.Option("--template", help="A Jinja chat template in place of the tokenizer's.")
    ] = None,
    tokens: Annotated[int, typer.Option("-n", "--tokens", help="Most tokens of one answer (1..4096).")] = 512,
    temperature: TemperatureOption = 0.0,
    top_k: TopKOption = None,
    top_p: TopPOption = 1.0,
    seed: SeedOption = 0,
    stop: StopOption = None,
    repeat_penalty: RepeatPenaltyOption = 1.0,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
) -> None:
    """Chat with a version-2 model through its chat template: each line you type is a message, the answer
    streams as it is generated. Ctrl-C ends an answer, Ctrl-D ends the chat."""
    single_blas_thread()  # no OpenBLAS threads: every thread but the GL driver's is this one
    try:
        from ..chat.prompt import ChatFormat
        from ..chat.session import ChatSession, executor_of
    except ImportError as e:
        from ..extras import install_command

        raise PxglError(f"pxgl chat needs its extra ({e.name} is missing): {install_command('chat')}") from None
    from ..generation import check_steps, check_stops
    from ..loading import open_model
    from ..transformer.engine import TransformerEngine
    from ..transformer.gpu import Choice

    check_steps(tokens)
    stops = check_stops(stop or [])
    sampler = Choice(temperature, top_k or 0, top_p, seed, 0, repeat_penalty)
    sampler.check()
    gpu = one_device(device)
    runnable = open_model(model, executor)
    if not is_transformer(runnable):
        raise PxglError(f"{runnable.model.source}: pxgl chat needs a version-2 model (§14) with a chat template")
    chat_format = ChatFormat.of(runnable.model.tokenizer, runnable.model.source, template)
    interactive = sys.stdin.isatty()
    if interactive:
        with suppress(ImportError):
            import readline  # noqa: F401 (input() gains line editing and history)
    notices = notice_console()
    spec = runnable.model.spec
    with TransformerEngine(runnable, device=gpu, slots=1) as engine:
        session = ChatSession(
            executor_of(engine),
            chat_format,
            spec.architecture.context_length,
            spec.bos,
            sampler,
            tokens,
            stops,
            [{"role": "system", "content": system}] if system else [],
        )
        if interactive:
            notices.print(f"[dim]pxgl chat with {runnable.model.source}: Ctrl-C ends an answer, Ctrl-D the chat[/dim]")
        converse(session, interactive, notices)


def notice_console() -> "Console":
    """Where the chat's notices go: stderr, each notice one line however long (rich wraps at 80 columns where
    stderr is no terminal)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def converse(session: "ChatSession", interactive: bool, notices: "Console") -> None:
    """Turns until the end of input: each line typed answered as it streams; a message past the context alone
    is one red line, and the chat goes on; a template failing ends it (one line, exit 2)."""
    from ..chat.template import ChatTemplateError
    from ..gl import gl_errors

    with Interrupt() as interrupt:
        while (line := interrupt.read_line(interactive)) is not None:
            if not line.strip():
                continue
            text = getincrementaldecoder("utf-8")(errors="replace")
            try:
                ids, dropped = session.fitted(line)
            except ChatTemplateError:
                raise  # the template failed on a conversation that alternates as every template expects
            except PxglError as e:
                notices.print(f"[red]{e}[/red]")
                continue
            for _ in range(dropped):
                notices.print(
                    f"[dim](the oldest turn was dropped: the conversation passed the context of "
                    f"{session.context_length} positions)[/dim]"
                )
            with gl_errors("the answer"):
                turn = session.answer(ids, partial(shown, text), lambda: interrupt.seen)
            show(text.decode(b"", final=True) + "\n")
            if turn.interrupted:
                notices.print("[dim](answer interrupted)[/dim]")


def shown(decoder: IncrementalDecoder, data: bytes) -> None:
    show(decoder.decode(data))


def show(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
