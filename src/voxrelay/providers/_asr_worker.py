"""One pocketsphinx decoder in a process of its own.

pocketsphinx keeps the GIL while it loads its model (~0.4 s) and while it
decodes, so a decoder in a server thread would stall the event loop and every
other session with it. In a child process it uses another core and the server
only waits on a pipe. Requests and replies are small tuples over a
``multiprocessing`` connection over a socket pair; see ``serve``. The server
starts it with ``main()`` and the socket's file descriptor as the argument.
"""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

# The second (flat lexicon) pass costs up to ~0.6 s at the end of a long
# utterance for no measured gain in accuracy on real speech.
DECODER_CONFIG: dict[str, Any] = {"fwdflat": False, "loglevel": "FATAL"}
FEED_PIECE = 640 * 2  # 40 ms at 16 kHz per process_raw call
# The search a cepstral mean is measured under (see _cepstral_mean).
_FEATURES_ONLY = "_features_only"


def serve(conn: Connection) -> None:
    """Answer requests until ``("quit",)`` or the parent goes away.

    ``("start", cmn | None)`` begins an utterance (with that cepstral mean);
    ``("feed", pcm, want_partial)`` decodes more of it and returns the partial
    hypothesis when asked; ``("finish",)`` ends it and returns ``(text, cmn)``;
    ``("abort",)`` ends it quietly; ``("cepstral_mean", pcm)`` returns the cepstral
    mean after an utterance of ``pcm`` without recognising it. Every reply is
    ``("ok", value)`` or ``("error", message)``.
    """
    from pocketsphinx import Decoder  # type: ignore[import-untyped]

    try:
        decoder = Decoder(**DECODER_CONFIG)
    except Exception as error:
        conn.send(("error", f"could not load the speech model: {error!r}"))
        return
    conn.send(("ok", str(decoder.get_cmn(False))))
    in_utterance = False
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        op = request[0]
        if op == "quit":
            return
        try:
            value: Any = None
            if op == "start":
                if in_utterance:
                    decoder.end_utt()
                if request[1]:
                    decoder.set_cmn(request[1])
                decoder.start_utt()
                in_utterance = True
            elif op == "feed":
                pcm: bytes = request[1]
                for start in range(0, len(pcm), FEED_PIECE):
                    decoder.process_raw(pcm[start : start + FEED_PIECE], False, False)
                if request[2]:
                    hyp = decoder.hyp()
                    value = str(hyp.hypstr) if hyp is not None else ""
            elif op == "cepstral_mean":
                if in_utterance:
                    in_utterance = False
                    decoder.end_utt()
                value = _cepstral_mean(decoder, request[1])
            elif op in ("finish", "abort"):
                if in_utterance:
                    in_utterance = False
                    decoder.end_utt()
                    if op == "finish":
                        hyp = decoder.hyp()
                        text = str(hyp.hypstr).strip() if hyp is not None else ""
                        value = (text, str(decoder.get_cmn(False)))
                elif op == "finish":
                    value = ("", str(decoder.get_cmn(False)))
            else:
                raise ValueError(f"unknown request {op!r}")
            conn.send(("ok", value))
        except Exception as error:
            in_utterance = False
            conn.send(("error", repr(error)))


def _cepstral_mean(decoder: Any, pcm: bytes) -> str:
    """The mean an utterance of ``pcm`` leaves, through a one-word keyphrase search:
    the features (and so the mean) are the same as under the language model, whose
    search would take about half the utterance's length in time."""
    language_model = decoder.current_search()
    if decoder.get_kws(_FEATURES_ONLY) is None:
        decoder.add_keyphrase(_FEATURES_ONLY, "hello")
    decoder.activate_search(_FEATURES_ONLY)
    try:
        decoder.start_utt()
        for start in range(0, len(pcm), FEED_PIECE):
            decoder.process_raw(pcm[start : start + FEED_PIECE], False, False)
        decoder.end_utt()
        return str(decoder.get_cmn(False))
    finally:
        decoder.activate_search(language_model)


def main() -> None:
    # The server decides when this ends (it closes the pipe), not a Ctrl-C
    # meant for the server's graceful shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(sys.argv[1]))
    os.dup2(2, 1)  # whatever the library prints goes to stderr, not into the protocol
    try:
        serve(conn)
    finally:
        conn.close()
