import numpy as np
from numpy.typing import NDArray

def add_power_phasors(
    coefs: NDArray[np.float64],
    power_sum: NDArray[np.float64],
    phasor_sum: NDArray[np.float64],
) -> None: ...
