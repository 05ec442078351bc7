"""``voxrelay serve`` keeps garbage-collection pauses off the audio path."""

from __future__ import annotations

import gc

from voxrelay.server import tune_garbage_collector


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 1000  # the imported libraries, out of the collector's way
        assert gc.get_threshold()[0] >= 10 * before[0]
        assert gc.get_threshold()[1:] == before[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
