"""Files and outlets: recordings read from disk (files.py, NeurOne's folders in neurone.py),
written as they arrive (recorder.py), replayed as live LSL streams (replay.py), and the metrics
outlet that sends the session's results over LSL (metrics_outlet.py)."""
