"""Per-pulse logs of the neuronavigation systems TMS labs use, read as pulse-table rows.

* **Localite TMS Navigator**: the ``TriggerMarkers_Coil0_<date>.xml`` file of a session's
  ``TMSTrigger`` folder. One ``<TriggerMarker>`` per pulse the navigator received:
  ``recordingTime`` (ms on the navigator's clock), ``<ResponseValues>`` (``amplitudeA``: the
  stimulator output in % MSO; ``valueA``: the measured dI/dt in A/µs) and ``<Matrix4D>`` (the
  coil's pose: rotation ``data00`` … ``data22``, position ``data03``, ``data13``, ``data23``
  in mm; the identity matrix when the coil was not tracked).
* **Brainsight** (Rogue Research): the "Exported Brainsight Data" text file. ``#`` header
  lines, then the table under ``# Sample Name\\tSession Name\\tIndex\\tAssoc. Target\\t…``:
  one row per sample, with ``Loc. X/Y/Z`` (mm), the coil axes ``m0n0`` … ``m2n2``,
  ``Stim. Power``, ``Date``/``Time``, ``Creation Cause`` (``TTL1`` … for a pulse,
  other causes for samples taken by hand) and ``EMG Peak-to-peak 1`` … when the
  Brainsight EMG pod recorded MEPs.

Both become rows with the columns the pipeline and plug-ins read: ``nav_time_s`` (seconds on
the navigator's clock from its first row), ``intensity_pct``, ``coil_x_mm``, ``coil_y_mm``,
``coil_z_mm``, ``coil_r00`` … ``coil_r22`` (rotation; column j is the coil's j-th axis, in the
navigation system's coordinate space), ``coil_tracked`` and, where the file has them,
``site`` (Brainsight's target), ``didt_a_per_us`` (Localite) and ``nav_mep_ptp_uv``
(Brainsight's EMG). Every other column is carried through under its own name. The
navigator's clock is not the EEG's: :class:`~tmseeg.stream.pulseinfo.PulseTable` joins the
rows to the pulses in order and follows the intervals of ``nav_time_s``.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["NavLogError", "nav_log_kind", "read_nav_log"]

_POSITION = ("coil_x_mm", "coil_y_mm", "coil_z_mm")
_ROTATION = tuple(f"coil_r{i}{j}" for i in range(3) for j in range(3))


class NavLogError(ValueError):
    """A navigation log that cannot be used; the message names the file, row and field."""


def nav_log_kind(path: Path) -> str | None:
    """``"localite"``, ``"brainsight"`` or None (not a navigation log), from the content."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    if "<TriggerMarkerList" in head or "<TriggerMarker " in head:
        return "localite"
    if (head.lstrip("\ufeff").startswith("# Version") and "Brainsight" in head) \
            or "# Sample Name" in head:
        return "brainsight"
    return None


def read_nav_log(path: Path) -> tuple[str, list[str], list[dict[str, Any]], list[str]]:
    """Read a Localite or Brainsight per-pulse export.

    Returns
    -------
    kind : str
        ``"localite"`` or ``"brainsight"``.
    columns : list of str
    rows : list of dict
        One per pulse, in the file's order.
    notes : list of str
        What was left out (Brainsight samples not created by a trigger, untracked coils).
    """
    kind = nav_log_kind(path)
    if kind == "localite":
        return (kind, *_read_localite(path))
    if kind == "brainsight":
        return (kind, *_read_brainsight(path))
    raise NavLogError(f"{path}: neither a Localite TriggerMarkers XML nor a Brainsight export")


def _number(text: Any) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        return math.nan


def _pose(rotation: list[list[float]], position: list[float]) -> dict[str, Any]:
    """Position and rotation columns; an identity pose (not tracked) gives NaN position."""
    identity = all(abs(rotation[i][j] - (i == j)) < 1e-9 for i in range(3) for j in range(3)) \
        and all(abs(p) < 1e-9 for p in position)
    out: dict[str, Any] = {"coil_tracked": not identity}
    for name, value in zip(_POSITION, position):
        out[name] = math.nan if identity else value
    for i in range(3):
        for j in range(3):
            out[f"coil_r{i}{j}"] = math.nan if identity else rotation[i][j]
    return out


def _read_localite(path: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise NavLogError(f"{path}: not readable XML ({exc})") from exc
    rows: list[dict[str, Any]] = []
    t0 = None
    for n, marker in enumerate(root.iter("TriggerMarker"), start=1):
        where = f"{path}, TriggerMarker {n}"
        t_ms = _number(marker.get("recordingTime"))
        if not math.isfinite(t_ms):
            raise NavLogError(f"{where}: recordingTime {marker.get('recordingTime')!r} is "
                              "not a number of ms")
        t0 = t_ms if t0 is None else t0
        row: dict[str, Any] = {"nav_time_s": (t_ms - t0) / 1000.0}
        values = {v.get("key"): _number(v.get("response"))
                  for v in marker.iter("Value") if v.get("key")}
        amplitude = values.pop("amplitudeA", math.nan)
        didt = values.pop("valueA", math.nan)
        row["intensity_pct"] = amplitude
        row["didt_a_per_us"] = didt
        for key, value in values.items():
            row[f"localite_{key}"] = value
        matrix = marker.find("Matrix4D")
        if matrix is None:
            raise NavLogError(f"{where}: no <Matrix4D> (coil pose)")
        m = [[_number(matrix.get(f"data{i}{j}")) for j in range(4)] for i in range(4)]
        if not all(math.isfinite(m[i][j]) for i in range(3) for j in range(4)):
            raise NavLogError(f"{where}: <Matrix4D> lacks a number in data00 ... data23")
        row.update(_pose([r[:3] for r in m[:3]], [m[0][3], m[1][3], m[2][3]]))
        if marker.get("description"):
            row["nav_label"] = marker.get("description")
        rows.append(row)
    if not rows:
        raise NavLogError(f"{path}: no <TriggerMarker>; export the session's "
                          "TriggerMarkers_Coil0_*.xml after the pulses were given")
    notes = []
    untracked = sum(not r["coil_tracked"] for r in rows)
    if untracked:
        notes.append(f"{untracked} of {len(rows)} Localite trigger markers have no coil "
                     "position (coil not tracked): their coil columns are empty")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return columns, rows, notes


def _brainsight_time(date: str, clock: str) -> float | None:
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S.%f"):
        try:
            return datetime.strptime(f"{date.strip()} {clock.strip()}", fmt).timestamp()
        except ValueError:
            continue
    return None


def _read_brainsight(path: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("# Sample Name"))
    except StopIteration as exc:
        raise NavLogError(f"{path}: no '# Sample Name' table; export the session's samples "
                          "from Brainsight (File > Export ...) with them") from exc
    header = [h.strip() for h in lines[start][2:].split("\t")]
    missing = [c for c in ("Loc. X", "Loc. Y", "Loc. Z") if c not in header]
    if missing:
        raise NavLogError(f"{path}: the sample table has no column {missing[0]!r}")
    samples = []
    for n in range(start + 1, len(lines)):
        line = lines[n]
        if line.startswith("#"):
            break  # the next table (landmarks, electrodes ...)
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < len(header):
            cells += [""] * (len(header) - len(cells))
        samples.append((n + 1, dict(zip(header, (c.strip() for c in cells)))))
    if not samples:
        raise NavLogError(f"{path}: the sample table is empty")
    by_trigger = [s for s in samples if s[1].get("Creation Cause", "").upper().startswith("TTL")]
    notes = []
    if by_trigger and len(by_trigger) < len(samples):
        notes.append(f"{len(samples) - len(by_trigger)} Brainsight samples were not created "
                     "by a trigger (Creation Cause not TTL): left out, they are not pulses")
        samples = by_trigger
    rows: list[dict[str, Any]] = []
    t0 = None
    for n, cells in samples:
        where = f"{path}, line {n}"
        position = []
        for axis in "XYZ":
            value = _number(cells.get(f"Loc. {axis}"))
            if not math.isfinite(value):
                raise NavLogError(f"{where}, column 'Loc. {axis}': "
                                  f"{cells.get(f'Loc. {axis}')!r} is not a number")
            position.append(value)
        # m<a>n<b>: component b of the coil's axis a -> rotation[b][a]
        rotation = [[_number(cells.get(f"m{a}n{b}", "nan")) for a in range(3)] for b in range(3)]
        row: dict[str, Any] = {}
        t = _brainsight_time(cells.get("Date", ""), cells.get("Time", ""))
        if t is not None:
            t0 = t if t0 is None else t0
            row["nav_time_s"] = t - t0
        power = _number(cells.get("Stim. Power", "nan"))
        row["intensity_pct"] = power
        row.update(_pose(rotation, position))
        target = cells.get("Assoc. Target", "")
        if target and target != "(null)":
            row["site"] = target
        mep = _number(cells.get("EMG Peak-to-peak 1", "nan"))
        if math.isfinite(mep):
            row["nav_mep_ptp_uv"] = mep
        for key, value in cells.items():
            if key.startswith(("Loc. ", "EMG Data")) or key in ("Stim. Power", "Assoc. Target",
                                                                "EMG Peak-to-peak 1") \
                    or (len(key) == 4 and key[0] == "m" and key[2] == "n"):
                continue
            row[f"brainsight_{key.lower().replace('. ', '_').replace(' ', '_')}"] = value
        rows.append(row)
    if "nav_time_s" in rows[0] and any("nav_time_s" not in r for r in rows):
        raise NavLogError(f"{path}: some samples have no readable Date/Time")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return columns, rows, notes
