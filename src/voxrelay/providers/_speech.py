"""Offline speech for the ``local`` provider, and what its parts share: turn
detection (webrtcvad, ``_turn_detection``), recognition (pocketsphinx, bundled
en-US model, ``_recognition``) and synthesis (espeak-ng, ``_synthesis``).

Where the work runs: voice activity detection costs microseconds per 20 ms
frame and runs on the event loop. pocketsphinx keeps the GIL while it loads
and decodes, so each decoder lives in a child process (``_asr_worker``); the
processes are pooled and lent to one utterance at a time, and the server
talks to them from threads that only wait on a pipe. espeak-ng is one
process-global library (ctypes releases the GIL while it speaks), so every
call into it runs on its own single worker thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

INPUT_RATE = 16000  # what webrtcvad and the pocketsphinx model want

_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def _executor(name: str, workers: int) -> ThreadPoolExecutor:
    with _executors_lock:
        executor = _executors.get(name)
        if executor is None:
            executor = ThreadPoolExecutor(workers, thread_name_prefix=f"voxrelay-{name}")
            _executors[name] = executor
        return executor


def asr_executor() -> ThreadPoolExecutor:
    """Threads that talk to the decoder processes (one job per provider at a
    time); they mostly wait on a pipe, so there are a few per core."""
    return _executor("asr", max(8, 4 * (os.cpu_count() or 2)))


def tts_executor() -> ThreadPoolExecutor:
    """espeak-ng's one thread: the library keeps global state."""
    return _executor("espeak", 1)
