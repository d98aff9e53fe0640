import numpy as np
from numpy.typing import NDArray

def sosfilt_channels(
    sos: NDArray[np.float64],
    x: NDArray[np.float64],
    z: NDArray[np.float64],
    backward: bool = ...,
) -> None: ...
