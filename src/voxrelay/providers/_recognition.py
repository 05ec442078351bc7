"""Speech recognition for the ``local`` provider: pocketsphinx decoders in child
processes (``_asr_worker``), pooled, each lent to one utterance at a time and
spoken to from ``asr_executor()``'s threads."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from voxrelay.audio import SAMPLE_WIDTH
from voxrelay.providers._speech import INPUT_RATE
from voxrelay.providers._synthesis import synthesize_blocking

log = logging.getLogger(__name__)

# A fresh decoder's cepstral mean starts from a generic prior, which costs the
# first streamed utterance words. The mean after one synthetic utterance is
# closer to real speech (measured on the recordings in shared/data/speech: 72%
# -> 76-78% of words right on a first utterance); it is measured once per
# process, every provider starts from it and then keeps its own.
_WARM_UP_TEXT = "Hello. How are you today?"
_PARTIAL_EVERY = INPUT_RATE * 3 // 10 * SAMPLE_WIDTH  # a partial hypothesis per 300 ms
_START_SECONDS = 60.0  # to start a decoder process and load the model
_REPLY_SECONDS = 60.0  # for any one answer of a decoder process
_QUIT_SECONDS = 2.0


# The worker imports voxrelay as this process does (it may run from a source
# tree that is not installed: that path goes last, never before the stdlib).
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER_MAIN = (
    f"import sys; sys.path.append({_SOURCE_ROOT!r}); "
    "from voxrelay.providers._asr_worker import main; main()"
)


class RecognitionError(Exception):
    """A decoder process failed or went away."""


class DecoderProcess:
    """A pocketsphinx decoder in a child process (see ``_asr_worker``).

    Its methods block on the pipe (without the GIL): call them off the loop,
    from one thread at a time.
    """

    def __init__(self) -> None:
        # A fresh interpreter, not multiprocessing: "fork" is unsafe in a threaded
        # server and "spawn" would re-run the parent's unguarded main module.
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-c", _WORKER_MAIN, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        try:
            self.cmn: str = self._reply(_START_SECONDS)
        except BaseException:
            self.close()
            raise

    def call(self, *request: Any) -> Any:
        try:
            self._conn.send(request)
        except (OSError, ValueError) as error:
            self.close()
            raise RecognitionError(f"the speech decoder went away: {error!r}") from error
        return self._reply(_REPLY_SECONDS)

    def _reply(self, timeout: float) -> Any:
        try:
            if not self._conn.poll(timeout):
                raise RecognitionError("the speech decoder did not answer")
            status, value = self._conn.recv()
        except (EOFError, OSError) as error:
            self.close()
            raise RecognitionError(f"the speech decoder went away: {error!r}") from error
        except RecognitionError:
            self.close()
            raise
        if status != "ok":
            raise RecognitionError(str(value))
        return value

    @property
    def alive(self) -> bool:
        return self._process.poll() is None and not self._conn.closed

    def close(self) -> None:
        if not self._conn.closed:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("quit",))
            self._conn.close()
        try:
            self._process.wait(_QUIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(_QUIT_SECONDS)


class DecoderPool:
    """Idle decoder processes, shared by every provider of the server process."""

    def __init__(self, keep: int | None = None) -> None:
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # one model load at a time
        self._idle: list[DecoderProcess] = []
        self._keep = keep if keep is not None else max(2, os.cpu_count() or 2)
        self.created = 0
        self.initial_cmn: str | None = None

    def take(self) -> DecoderProcess:
        """An idle decoder, or a new one (blocks ~1 s while it starts)."""
        decoder = self._idle_one()
        if decoder is not None:
            return decoder
        with self._load_lock:
            decoder = self._idle_one()
            return decoder if decoder is not None else self._create()

    def give(self, decoder: DecoderProcess) -> None:
        with self._lock:
            if decoder.alive and len(self._idle) < self._keep:
                self._idle.append(decoder)
                return
        decoder.close()

    def prewarm(self) -> None:
        """Start the first decoder ahead of the first utterance."""
        with self._load_lock:
            if self.created == 0:
                self.give(self._create())  # before an utterance waiting for it looks

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for decoder in idle:
            decoder.close()

    def _idle_one(self) -> DecoderProcess | None:
        with self._lock:
            while self._idle:
                decoder = self._idle.pop()
                if decoder.alive:
                    return decoder
        return None

    def _create(self) -> DecoderProcess:
        decoder = DecoderProcess()
        if self.initial_cmn is None:
            try:
                warm_up = synthesize_blocking(_WARM_UP_TEXT, "en-US", None, rate=INPUT_RATE)
                self.initial_cmn = str(decoder.call("cepstral_mean", warm_up))
            except Exception:
                log.warning("could not warm up the speech decoder", exc_info=True)
                self.initial_cmn = decoder.cmn
        with self._lock:
            self.created += 1
        return decoder


_pool = DecoderPool()
atexit.register(_pool.close)


def decoder_pool() -> DecoderPool:
    return _pool


class Recognizer:
    """One provider's utterances, streamed through a decoder borrowed per utterance.

    Every method blocks: call them off the event loop. A lock serialises them,
    so a job still running after its caller gave up cannot overlap the next.
    """

    def __init__(self, pool: DecoderPool | None = None) -> None:
        self._pool = pool or _pool
        self._lock = threading.Lock()
        self._decoder: DecoderProcess | None = None
        self._since_partial = 0
        # This speaker's cepstral mean, carried from one utterance to the next.
        self.cmn: str | None = None

    def start(self) -> None:
        with self._lock:
            self._end(keep=False)
            decoder = self._pool.take()
            self._decoder = decoder
            self._since_partial = 0
            self._call("start", self.cmn or self._pool.initial_cmn)

    def feed(self, pcm: bytes) -> str | None:
        """Decode more of the utterance; now and then return the partial hypothesis."""
        with self._lock:
            if self._decoder is None:
                return None
            self._since_partial += len(pcm)
            partial = self._since_partial >= _PARTIAL_EVERY
            if partial:
                self._since_partial = 0
            value = self._call("feed", pcm, partial)
            return str(value) if partial and value is not None else None

    def finish(self) -> str:
        """End the utterance: its final transcript ("" when nothing was recognised)."""
        with self._lock:
            return self._end(keep=True)

    def close(self) -> None:
        with self._lock:
            self._end(keep=False)

    def _call(self, *request: Any) -> Any:
        assert self._decoder is not None
        try:
            return self._decoder.call(*request)
        except RecognitionError:
            decoder, self._decoder = self._decoder, None
            self._pool.give(decoder)  # closed and dropped if it died
            raise

    def _end(self, *, keep: bool) -> str:
        if self._decoder is None:
            return ""
        try:
            if not keep:
                self._call("abort")
                return ""
            text, self.cmn = self._call("finish")
            return str(text)
        finally:
            if self._decoder is not None:
                self._pool.give(self._decoder)
                self._decoder = None
