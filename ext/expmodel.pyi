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

def exp_model_moments(
    y: NDArray[np.float64],
    amps: NDArray[np.float64],
    tau_ms: NDArray[np.float64],
    dt_ms: float,
    scales: NDArray[np.float64],
    sum_ym: NDArray[np.float64],
    sum_mm: NDArray[np.float64],
) -> None: ...
