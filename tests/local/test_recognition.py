"""The pooled pocketsphinx decoders: the starting cepstral mean a pool measures on
its first decoder, and that decoder recognising speech afterwards."""

from __future__ import annotations

from harness import read_pcm

from voxrelay.providers._recognition import _WARM_UP_TEXT, DecoderPool, DecoderProcess
from voxrelay.providers._speech import INPUT_RATE
from voxrelay.providers._synthesis import synthesize_blocking


def _recognised(decoder: DecoderProcess, pcm: bytes, cmn: str | None = None) -> tuple[str, str]:
    """What ``decoder`` hears in ``pcm`` (starting from ``cmn``), and the mean it leaves."""
    decoder.call("start", cmn)
    decoder.call("feed", pcm, False)
    text, cmn = decoder.call("finish")
    return text, cmn


def test_the_cepstral_mean_is_the_one_recognising_the_utterance_leaves() -> None:
    warm_up = synthesize_blocking(_WARM_UP_TEXT, "en-US", None, rate=INPUT_RATE)
    speech, _ = read_pcm("goforward.raw")
    decoding, measuring = DecoderProcess(), DecoderProcess()
    try:
        _, after_recognising = _recognised(decoding, warm_up)
        assert measuring.call("cepstral_mean", warm_up) == after_recognising
        # The language model is the search again: the same decoder hears real speech.
        assert _recognised(measuring, speech)[0] == "go forward ten meters"
        # And measuring again (from the mean it now has) still works.
        assert measuring.call("cepstral_mean", warm_up).count(",") == 12
    finally:
        decoding.close()
        measuring.close()


def test_a_pool_measures_its_starting_mean_on_its_first_decoder() -> None:
    pool = DecoderPool(keep=1)
    try:
        pool.prewarm()
        assert pool.created == 1 and pool.initial_cmn is not None
        decoder = pool.take()
        # Not the model's generic prior: the mean of the synthetic utterance, thirteen
        # cepstral coefficients.
        assert pool.initial_cmn != decoder.cmn and pool.initial_cmn.count(",") == 12
        speech, _ = read_pcm("goforward.raw")
        assert _recognised(decoder, speech, pool.initial_cmn)[0] == "go forward ten meters"
        pool.give(decoder)
        assert pool.created == 1  # the measured decoder was pooled, not thrown away
    finally:
        pool.close()
