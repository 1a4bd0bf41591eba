"""The chaos suite: real service processes under crashes, poison, hostile hosts and floods; one table of what
survived (docs/CHAOS.md says what each scenario does and which targets it checks).

    make chaos                                           # every scenario, default sizes (about 8 minutes, 2 cores)
    .venv/bin/python scripts/chaos.py --only poison      # one scenario (or a comma-separated list)
    .venv/bin/python scripts/chaos.py --kills 15 --products 60 --env FASHION_SOME_SETTING=value

Prints `scenario | tried | survived | lost | duplicated | result | notes`, writes the same as JSON
(var/chaos/results.json by default) and exits 1 when any target is missed, 2 when a scenario could not run.
Not part of `make test`: it takes minutes and measures defects still being fixed.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `scripts.chaos` and this worktree's services/shared before any installed copy

from scripts.chaos.harness import Row, Workspace, quiet_clients  # noqa: E402

SCENARIOS = ("kill", "poison", "slow", "flood", "grpc", "drain")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help=f"comma-separated scenarios to run (default: all of {', '.join(SCENARIOS)})")
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "chaos",
                   help="checkpoint and catalogue cache, logs of each run (default var/chaos)")
    p.add_argument("--json", type=Path, default=None, help="results file (default WORKDIR/results.json)")
    p.add_argument("--seed", type=int, default=11, help="seed of every random choice (event stream, kill times)")
    p.add_argument("--keep", action="store_true", help="keep the scenario databases (fashion_chaos_*)")
    p.add_argument("--cold", action="store_true",
                   help="start every process as a plain `python -m ...` (no held starts, no spares; slower)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for every service process (e.g. a setting of a fix under test)")
    p.add_argument("--max-delay", type=float, default=2.0,
                   help="target: longest a good record behind poison may wait, publish to claimed (s)")
    kill = p.add_argument_group("kill: ingest SIGKILLed under an external broker")
    kill.add_argument("--kills", type=int, default=12)
    kill.add_argument("--products", type=int, default=40)
    kill.add_argument("--updates", type=int, default=None, help="events after the first upserts (default 2 x products)")
    kill.add_argument("--catchup", type=float, default=180.0, help="longest wait for the last ingest to catch up (s)")
    slow = p.add_argument_group("slow: a dripping and a silent image host")
    slow.add_argument("--slow-window", type=float, default=40.0,
                      help="how long good records behind the slow hosts are waited for (s); past it they count as "
                      "delayed beyond the window and the hosts are shut")
    flood = p.add_argument_group("flood: pixel flood")
    flood.add_argument("--flood-images", type=int, default=12)
    flood.add_argument("--flood-side", type=int, default=6300)
    flood.add_argument("--max-rss-growth-mb", type=float, default=300.0)
    attack = p.add_argument_group("grpc: bad requests and slow-URI exhaustion against search")
    attack.add_argument("--attackers", type=int, default=20)
    attack.add_argument("--attack-deadline", type=float, default=5.0)
    attack.add_argument("--attack-seconds", type=float, default=12.0, help="how long health is probed")
    drain = p.add_argument_group("drain: embedded broker, SIGTERM")
    drain.add_argument("--drain-events", type=int, default=200)
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; expected some of {', '.join(SCENARIOS)}")
    if args.updates is None:
        args.updates = 2 * args.products
    if any("=" not in e for e in args.env):
        p.error("--env expects KEY=VALUE")
    return args


def run_scenario(name: str, ws: Workspace, args: argparse.Namespace) -> list[Row]:
    if name == "kill":
        from scripts.chaos import kill

        return kill.run(ws, kills=args.kills, products=args.products, updates=args.updates, seed=args.seed,
                        catchup_s=args.catchup)
    if name == "poison":
        from scripts.chaos import poison

        return poison.run(ws, max_delay_s=args.max_delay)
    if name == "slow":
        from scripts.chaos import slow

        return slow.run(ws, window_s=args.slow_window, max_delay_s=args.max_delay)
    if name == "flood":
        from scripts.chaos import flood

        return flood.run(ws, images=args.flood_images, side=args.flood_side, max_growth_mb=args.max_rss_growth_mb)
    if name == "grpc":
        from scripts.chaos import grpc_attack

        return grpc_attack.run(ws, attackers=args.attackers, deadline_s=args.attack_deadline,
                               attack_s=args.attack_seconds)
    from scripts.chaos import drain

    return drain.run(ws, events=args.drain_events)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def format_table(rows: list[Row]) -> str:
    header = ["scenario", "tried", "survived", "lost", "duplicated", "result", "notes"]
    cells = [[r.scenario, _cell(r.tried), _cell(r.survived), _cell(r.lost), _cell(r.duplicated),
              "info" if r.informational else "PASS" if r.ok else "FAIL", r.notes] for r in rows]
    widths = [max(len(header[i]), *(len(c[i]) for c in cells)) if cells else len(header[i]) for i in range(6)]
    lines = [" | ".join([*(h.ljust(w) for h, w in zip(header, widths, strict=False)), header[6]])]
    lines.append("-|-".join("-" * w for w in [*widths, len(header[6])]))
    lines += [" | ".join([*(c[i].ljust(widths[i]) for i in range(6)), c[6]]) for c in cells]
    return "\n".join(lines)


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    quiet_clients()
    log = logging.getLogger("chaos")
    log.setLevel(logging.INFO)
    extra_env = dict(e.split("=", 1) for e in args.env)
    ws = Workspace(args.workdir, extra_env=extra_env, keep=args.keep, cold=args.cold)
    rows: list[Row] = []
    errors = 0
    interrupted: str | None = None
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # so the finally blocks stop what we started
    try:
        for index, name in enumerate(args.only):
            t0 = time.monotonic()
            ws.spare_wanted = index < len(args.only) - 1
            log.info("scenario %s: starting (logs in %s)", name, ws.run_dir / name)
            try:
                found = run_scenario(name, ws, args)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others' results
                errors += 1
                log.error("scenario %s could not run: %s", name, exc)
                traceback.print_exc()
                found = [Row(name, 0, 0, ok=False, notes=f"ERROR: {str(exc).splitlines()[0][:200]}")]
            finally:
                ws.cleanup(keep_spare=True)
            for row in found:
                row.details["seconds"] = round(time.monotonic() - t0, 1)
            rows += found
            log.info("scenario %s: done in %.0fs", name, time.monotonic() - t0)
    except KeyboardInterrupt as exc:
        interrupted = str(exc) or "SIGINT"
        log.error("interrupted (%s): stopping what this run started; the table has the scenarios that finished",
                  interrupted)
        rows.append(Row("interrupted", 0, 0, ok=False, notes=f"run stopped by {interrupted}"))
    finally:
        ws.cleanup()
    runtime = time.monotonic() - started
    table = format_table(rows)
    print(table)
    checks = [r for r in rows if not r.informational]
    print(f"\n{sum(r.ok for r in checks)}/{len(checks)} checks passed in {runtime:.0f}s on commit {git_commit()} "
          f"(logs: {ws.run_dir})")
    path = args.json or args.workdir / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"commit": git_commit(), "seconds": round(runtime, 1), "args": sys.argv[1:],
                                "passed": all(r.ok for r in rows) and not errors,
                                "rows": [r.as_dict() for r in rows], "table": table}, indent=2, default=str) + "\n")
    if errors or interrupted:
        return 2
    return 0 if all(r.ok for r in rows) else 1


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


if __name__ == "__main__":
    sys.exit(main())
