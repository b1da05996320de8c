"""What one server accepts (docs/FORMATS.md §12): every bound a request or the queue is held to."""

from dataclasses import dataclass

from ..errors import PxglError
from ..generation import MAX_NEW_TOKENS

KiB, MiB = 1 << 10, 1 << 20
MIN_QUEUE = 64
MIN_CONNECTIONS = 8
MAX_TIMEOUT_S = 3600
MAX_SLOTS = 256


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * MiB
    """A request body past this is refused (413) before it is all read."""
    max_prompt_bytes: int = 64 * KiB
    """One prompt's UTF-8 text, or 2 bytes per token id of a prompt given as ids."""
    max_prompts: int = 64
    """Prompts in one completions request."""
    max_tokens: int = 1024
    """`max_tokens` of one completion."""
    max_stops: int = 4
    max_stop_bytes: int = 256
    max_logprobs: int = 5
    """Top alternatives per token (OpenAI's own bound)."""
    max_texture_pixels: int = 1 << 22
    """Pixels of a token texture sent to /v1/predict, checked in the PNG header before inflating."""
    max_header_bytes: int = 16 * KiB
    """A request's target and header lines (names and values); past it, 431 and the connection closed."""
    header_timeout_s: float = 10.0
    """From a connection's start, or a request's first byte, to the end of its headers; past it, 408 and the
    connection closed."""
    body_timeout_s: float = 60.0
    """From the end of a request's headers to the end of its body (4 MiB at 70 KB/s), and each stall of its
    answer (a client taking none of it); past it, 408 (the answer not begun) and the connection closed."""
    max_connections: int = 1024
    """Open connections; one more is answered 503 and closed at once."""
    slots: int = 8
    """Version 2: KV-cache slots of each model, the prompts generating at once (§12's continuous batching)."""
    max_batch: int = 256
    """Prompts in one GPU batch (1: every request runs alone)."""
    queue: int = 512
    """Requests one model's engine holds, waiting or running; past it a request gets 503."""
    batch_wait_s: float = 0.0005
    """How long the first request of a batch waits for others to join it, when the last batch held more than
    one request (under load); a request arriving alone runs at once. Under load, requests gather while the
    GPU runs the batch before: on the H200, 256 clients got 1,723 requests/s with 0.5 ms, 1,188 with 2."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= MAX_NEW_TOKENS:
            raise PxglError(f"--max-tokens must lie in 1..{MAX_NEW_TOKENS}, got {self.max_tokens}")
        if not 1 <= self.slots <= MAX_SLOTS:
            raise PxglError(f"--slots must lie in 1..{MAX_SLOTS}, got {self.slots}")
        if self.max_batch < 1:
            raise PxglError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.queue < MIN_QUEUE:
            raise PxglError(f"--queue must be at least {MIN_QUEUE}, got {self.queue}")
        for option, seconds in (("--header-timeout", self.header_timeout_s), ("--body-timeout", self.body_timeout_s)):
            if not 0 < seconds <= MAX_TIMEOUT_S:
                raise PxglError(f"{option} must lie in (0, {MAX_TIMEOUT_S}] seconds, got {seconds:g}")
        if self.max_connections < MIN_CONNECTIONS:
            raise PxglError(f"--max-connections must be at least {MIN_CONNECTIONS}, got {self.max_connections}")
        if not 0 <= self.batch_wait_s <= 1:
            raise PxglError(f"--batch-wait-ms must lie in 0..1000, got {self.batch_wait_s * 1000:g}")
