"""Signal processing shared by the metrics and the closed loop: the instantaneous phase
estimate up to the pulse (phase.py) and spatial filters over named electrodes (spatial.py)."""
