"""The offline commands: ``analyze`` (a recording or a BIDS dataset), ``config`` (print or
check a configuration) and ``bench``."""
from __future__ import annotations

import sys


def cmd_analyze(args) -> int:
    import json

    from tmseeg.config import input_overrides
    from tmseeg.report.analyze import analyze_file
    from tmseeg.study.cli import is_bids_request, run_bids_analyze
    if is_bids_request(args):
        return run_bids_analyze(args)
    if args.out is None:
        raise ValueError(f"--out DIR is required when analyzing one file ({args.file}); "
                         "only a BIDS dataset root has a default (derivatives/tmseeg)")
    roi = args.roi.split(",") if args.roi else None
    summary = analyze_file(args.file, args.out, config=args.config, roi=roi,
                           progress=not args.no_progress, report=not args.no_report,
                           overrides=input_overrides(args))
    peaks = {k: (round(v["latency_ms"], 1), round(v["amplitude_uv"], 2))
             for k, v in summary["peaks"].items() if v.get("found")}
    print(f"{summary['n_pulses']} pulses, {summary['n_kept']} kept, {summary['n_rejected']} "
          f"rejected {summary['rejection_reasons'] or ''}")
    print(f"coil site {summary['coil_site']}, ROI {','.join(summary['roi'])}; SNR "
          f"{summary['snr']}; peaks (latency ms, amplitude uV): {json.dumps(peaks)}")
    written = ["summary.json", "pulses.csv"] + ([] if args.no_report else ["report.html"]) + (
        ["*-epo.fif", "*-ave.fif"] if summary["n_kept"] else [])
    print(f"outputs in {args.out}: {', '.join(written)}")
    return 0


def cmd_config(args) -> int:
    from tmseeg.config import DEFAULT_CONFIG_TOML, ConfigError, load_config
    if args.check:
        cfg = load_config(args.check)  # keys, types and the pipeline's own rules
        if args.no_rehearsal:
            print(f"{args.check}: valid keys and values (not rehearsed)")
            return 0
        from tmseeg.report.rehearse import rehearse_config
        try:
            done = rehearse_config(cfg, n_channels=args.channels, sfreq_hz=args.sfreq)
        except (OSError, ValueError, RuntimeError, LookupError) as err:
            # said by main() like every documented error; a KeyError's text is its quoted key
            why = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise ConfigError(f"{args.check}: a session would refuse this configuration: "
                              f"{why}") from err
        print(f"{args.check}: valid; {done.line()}. Channel names are checked against the "
              "stream when a session starts.")
        return 0
    sys.stdout.write(DEFAULT_CONFIG_TOML)
    return 0


def cmd_bench(args) -> int:
    from tmseeg.bench import main as bench_main
    return bench_main(args.duration)
