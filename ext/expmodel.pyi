import numpy as np
from numpy.typing import NDArray

def add_exp_model(
    data: NDArray[np.float64],
    rows: NDArray[np.intp],
    amps: NDArray[np.float64],
    tau_ms: NDArray[np.float64],
    col0: int,
    n: int,
    j0: int,
    dt_ms: float,
    scale: float,
) -> None: ...
