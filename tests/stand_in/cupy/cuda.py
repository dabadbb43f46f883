"""The stand-in's ``cupy.cuda``: streams, events, page-locked memory, the device, the runtime.

Nothing runs asynchronously here: every copy and kernel is done when it is issued. What is
kept is the ORDER a program asks for, so that a test can tell whether it asked for enough:

- ``LOG`` lists every stream, event, copy, wait and synchronisation, in order, as tuples
  (``("copy", "stream1", 3)``: the third item issued on stream1 was a host->device copy).
- An array written by a copy on stream S carries ``pending = (S, item)``; reading it on
  another stream R raises StreamOrderError unless R waited on an event recorded on S after
  the copy (``R.wait_event``), the host waited for it, or R is the legacy default stream
  and S a blocking stream (which the default stream waits for). On a GPU such a read may
  see the batch before it arrived. The host waits for a stream's work through
  ``Event``/``Stream``/``Device.synchronize()`` and through a device->host copy (``get``,
  ``float()`` of a 0-d array, ...), which waits for its stream, and through the streams
  that stream waited on (an event synchronised after a wait covers what was waited for).
- Page-locked memory (``alloc_pinned_memory``) remembers the copies that read it; a new copy
  from it while an earlier one was not synchronised on the host raises StreamOrderError: on
  a GPU the host may have overwritten the buffer while the earlier copy was still reading.
"""

from __future__ import annotations

import itertools
import threading

LOG: list[tuple] = []
_names = itertools.count(1)
_local = threading.local()   # CuPy's current stream is per thread
#: stream -> the last item of it the host has waited for
_host_done: dict = {}
_streams: list = []


class StreamOrderError(RuntimeError):
    """Device memory used before the work that writes it is known to be done (see above)."""


class Stream:
    """A stream: a counter of issued items, and what it has waited for on other streams."""

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False):
        self.null, self.non_blocking = null, non_blocking
        self.name = "null" if null else f"stream{next(_names)}"
        self.issued = 0
        self.waited: dict = {}   # other stream -> the last of its items this one waits for
        self.waits: list[tuple[int, Stream, int]] = []   # (own items before, stream, item)
        _streams.append(self)
        LOG.append(("Stream", self.name, non_blocking))

    def __repr__(self):
        return f"<stand-in Stream {self.name}>"

    def __enter__(self):
        _stack().append(self)
        return self

    def __exit__(self, *exc):
        _stack().pop()
        return False

    def issue(self, what: str) -> int:
        """One more item on this stream (a copy or a kernel); its number."""
        self.issued += 1
        LOG.append((what, self.name, self.issued))
        return self.issued

    def record(self, event: Event | None = None) -> Event:
        event = Event() if event is None else event
        event.stream, event.item = self, self.issued
        LOG.append(("record", event.name, self.name, self.issued))
        return event

    def wait_event(self, event: Event) -> None:
        if event.stream is not None:
            done = self.waited.get(event.stream, 0)
            self.waited[event.stream] = max(done, event.item)
            self.waits.append((self.issued, event.stream, event.item))
        LOG.append(("wait_event", self.name, event.name))

    def synchronize(self) -> None:
        host_waited(self)
        LOG.append(("synchronize", self.name))


Stream.null = Stream(null=True)


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False):
        self.name = f"event{next(_names)}"
        self.stream, self.item = None, 0

    def record(self, stream: Stream | None = None) -> None:
        (get_current_stream() if stream is None else stream).record(self)

    def synchronize(self) -> None:
        if self.stream is not None:
            host_waited(self.stream, self.item)
        LOG.append(("synchronize", self.name))

    @property
    def done(self) -> bool:
        return True


def _stack() -> list:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def get_current_stream() -> Stream:
    stack = _stack()
    return stack[-1] if stack else Stream.null


def host_waited(stream: Stream, item: int | None = None) -> None:
    """The host knows ``stream``'s items up to ``item`` (None: all of it, and the waits after
    its last item) done, and so what they waited for on other streams."""
    last = stream.issued if item is None else item
    _host_done[stream] = max(_host_done.get(stream, 0), last)
    for before, other, other_item in stream.waits:
        if before < last or item is None:
            if _host_done.get(other, 0) < other_item:
                host_waited(other, other_item)


def check_read(array) -> None:
    """StreamOrderError when ``array`` was written by a copy the current stream may not see."""
    if array.pending is None:
        return
    writer, item = array.pending
    reader = get_current_stream()
    if (reader is writer or _host_done.get(writer, 0) >= item
            or reader.waited.get(writer, 0) >= item
            or (reader.null and not writer.non_blocking)):
        array.pending = None
        return
    raise StreamOrderError(
        f"a device array written by a copy on {writer.name} (its item {item}) is used on "
        f"{reader.name}, which has not waited for it: record an event on {writer.name} "
        f"after the copy and {reader.name}.wait_event(it) first (or synchronise it)")


class PinnedMemory(bytearray):
    """Page-locked host memory (a buffer np.frombuffer takes), with the copies reading it."""

    def __init__(self, size: int):
        super().__init__(size)
        self.in_flight: list[tuple[Stream, int]] = []

    def start_copy(self, stream: Stream, item: int) -> None:
        """A copy from this memory issued as ``item`` of ``stream``; StreamOrderError if an
        earlier copy from it is not known on the host to be done."""
        for writer, earlier in self.in_flight:
            if _host_done.get(writer, 0) < earlier:
                raise StreamOrderError(
                    f"page-locked memory refilled for a new copy while an earlier copy from it "
                    f"({writer.name}, item {earlier}) may still be reading it: synchronise an "
                    f"event recorded after that copy before writing the buffer again")
        self.in_flight = [(stream, item)]


def alloc_pinned_memory(size: int) -> PinnedMemory:
    LOG.append(("alloc_pinned_memory", int(size)))
    return PinnedMemory(int(size))


def pinned_owner(array) -> PinnedMemory | None:
    """The page-locked memory a NumPy array is a view of, if any."""
    base = array
    while base is not None:
        if isinstance(base, PinnedMemory):
            return base
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return None


class Device:
    def __init__(self, device: int | None = None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise runtime.CUDARuntimeError(f"cudaErrorInvalidDevice: the stand-in has device 0 "
                                           f"only, not {self.id}")

    def synchronize(self) -> None:
        for stream in _streams:
            host_waited(stream)
        LOG.append(("synchronize", "device"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class runtime:  # cupy.cuda.runtime is a module; a class is enough for its few functions
    """One device, named so that no report can mistake it for a GPU."""

    class CUDARuntimeError(RuntimeError):
        pass

    @staticmethod
    def getDeviceCount() -> int:
        return 1

    @staticmethod
    def getDeviceProperties(device: int) -> dict:
        Device(device)
        return {"name": b"CuPy stand-in (host C++, tests/stand_in; not a GPU)",
                "totalGlobalMem": 0, "multiProcessorCount": 0}

    @staticmethod
    def deviceSynchronize() -> None:
        Device().synchronize()
