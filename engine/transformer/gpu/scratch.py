"""Scratch storage buffers by name, shared by the version-2 GPU executors and the token chooser."""

from ...gl import Buffer, GLBackend


class Scratches:
    """One buffer per name, grown (never shrunk) when a run needs more than it holds; `close` frees them."""

    def __init__(self, gpu: GLBackend) -> None:
        self.gpu = gpu
        self._buffers: dict[str, Buffer] = {}

    def __call__(self, what: str, size: int) -> Buffer:
        """A buffer of at least `size` bytes (and 4: GL binds no empty buffer) named `what`."""
        buffer = self._buffers.get(what)
        if buffer is None or buffer.size < size:
            if buffer is not None:
                self.gpu.release_storage(buffer)
            buffer = self._buffers[what] = self.gpu.storage_buffer(max(size, 4), f"{what} scratch")
        return buffer

    def close(self) -> None:
        for buffer in self._buffers.values():
            self.gpu.release_storage(buffer)
        self._buffers.clear()
