"""Multi-object tracking over the detector's boxes: roboflow's ``trackers`` (ByteTrack, OC-SORT, SORT).

:class:`Tracker` tracks one video or camera (a plain ``Detector`` loop); :class:`TrackingProcessor` gives
each source of a :class:`~engine.stream.Stream` its own tracker (``Stream(..., tracker="bytetrack")``,
``python -m engine.stream --track``). The ``trackers`` package (the ``track`` extra) is imported when the
first tracker is made.
"""
from .stream import TrackingProcessor
from .tracker import KINDS, Tracker, TrackerConfig

__all__ = ["Tracker", "TrackerConfig", "TrackingProcessor", "KINDS"]
