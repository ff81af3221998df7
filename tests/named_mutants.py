"""Apply the mutations named in issue 18, one at a time, and check a test fails.

    python -m tests.named_mutants [pytest args...]   (default: the detection tests)

Each mutation is a one-line change of `detection/`, applied to a copy of the
repository (the working tree is never touched); the detection tests run
against the copy and must fail. Prints one line per mutant and exits 1 if
any survived. `make mutation` runs this first, then mutmut over the whole of
`detection/machine.py`, `detection/params.py` and `detection/kernel.py`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TESTS = ["tests/test_detection_table.py", "tests/test_detection_rules.py"]

# (name, file, exact text, replacement)
MUTANTS: list[tuple[str, str, str, str]] = [
    (
        "coincidence 60 -> 600 s",
        "detection/params.py",
        "COINCIDENCE_MS: Final = 60_000",
        "COINCIDENCE_MS: Final = 600_000",
    ),
    (
        "steam memory 5 min -> 1 h",
        "detection/params.py",
        "STEAM_MEMORY_MS: Final = 300_000",
        "STEAM_MEMORY_MS: Final = 3_600_000",
    ),
    (
        "pre-alarm clear fraction 0.8 -> 0.2",
        "detection/params.py",
        "PRE_ALARM_CLEAR_FRACTION: Final = 0.8",
        "PRE_ALARM_CLEAR_FRACTION: Final = 0.2",
    ),
    (
        "minimum rate span 20 -> 59 s",
        "detection/params.py",
        "RATE_MIN_SPAN_MS: Final = 20_000",
        "RATE_MIN_SPAN_MS: Final = 59_000",
    ),
    (
        "drift tracking 4.5x faster (step)",
        "detection/params.py",
        "DRIFT_UP: Final = 0.1 ",
        "DRIFT_UP: Final = 0.45 ",
    ),
    (
        "drift tracking 4.5x faster (epoch)",
        "detection/params.py",
        "DRIFT_EPOCH_MS: Final = 3_600_000",
        "DRIFT_EPOCH_MS: Final = 800_000",
    ),
    (
        "clear() leaves the device disarmed",
        "detection/machine.py",
        '.discard(slot)\n            d.fire, d.win, d.armed, d.sup_at = "", None, True, None',
        '.discard(slot)\n            d.fire, d.win, d.armed, d.sup_at = "", None, False, None',
    ),
    (
        "restored pending fire dropped",
        "detection/machine.py",
        'if verdict == "pending":\n                d.fire = "pending"',
        'if verdict == "pending":\n                return\n                d.fire = "pending"',
    ),
    (
        "restored electrical alarm dropped",
        "detection/machine.py",
        '        elif typ == "electrical":\n            d.elec = verdict',
        '        elif typ == "electrical":\n            return\n            d.elec = verdict',
    ),
    (
        "recharge grace 24 h -> 240 h",
        "detection/params.py",
        "EVAC_RECHARGE_GRACE_MS: Final = 24 * 3_600_000",
        "EVAC_RECHARGE_GRACE_MS: Final = 240 * 3_600_000",
    ),
    # Survivors of a first mutmut run over detection/machine.py, killed since.
    (
        "clear() keeps a call point confirming its zone",
        "detection/machine.py",
        "self.callpoints.get(self.cfg.zone(slot), set()).discard(slot)",
        "self.callpoints.get(self.cfg.zone(slot), set()).discard(None)",
    ),
    (
        "clear() of a pre-alarm ignored",
        "detection/machine.py",
        'elif typ == "pre_alarm":\n            d.pre = False',
        'elif typ == "XXpre_alarmXX":\n            d.pre = False',
    ),
    (
        "clear() of a fault ignored",
        "detection/machine.py",
        'elif typ in ("fault", "evac_fault"):\n            d.causes.clear()',
        'elif typ in ("XXfaultXX",):\n            d.causes.clear()',
    ),
    (
        "restored pending fire outside its zone",
        "detection/machine.py",
        '"restored")\n                self.pending.setdefault(self.cfg.zone(slot), set())',
        '"restored")\n                self.pending.setdefault(None, set())',
    ),
    (
        "restored call point outside its zone",
        "detection/machine.py",
        "self.callpoints.setdefault(self.cfg.zone(slot), set()).add(slot)",
        "self.callpoints.setdefault(None, set()).add(slot)",
    ),
    (
        "restored pre-alarm dropped",
        "detection/machine.py",
        'elif typ == "pre_alarm":\n            d.pre = True',
        'elif typ == "pre_alarm":\n            d.pre = False',
    ),
    (
        "restored window's default reason",
        "detection/machine.py",
        'reason or "restored"',
        'reason or "XXrestoredXX"',
    ),
    (
        "electrical confirmation without evidence",
        "detection/machine.py",
        "d.elec_reason, at, detail)",
        "d.elec_reason, at, {})",
    ),
    (
        "a second press opens a second call point alarm",
        "detection/machine.py",
        'if d.fire != "confirmed":\n                d.fire = "confirmed"',
        'if d.fire != "XX":\n                d.fire = "confirmed"',
    ),
    (
        "an electrical reading without values suppresses",
        "detection/machine.py",
        "elif not high and flags & Flag.ELEC_BELOW:",
        "elif not high or flags & Flag.ELEC_BELOW:",
    ),
    (
        "an electrical transient never re-arms",
        "detection/machine.py",
        'd.elec = ""\n            self.elec_pending.discard(slot)\n            self._emit(',
        'd.elec = "XX"\n            self.elec_pending.discard(slot)\n            self._emit(',
    ),
    (
        "drift band exclusive",
        "detection/kernel.py",
        "track = d <= p.DRIFT_TRACK_BAND",
        "track = d < p.DRIFT_TRACK_BAND",
    ),
    (
        "drift recovers without bound",
        "detection/kernel.py",
        "np.clip(d, -p.DRIFT_DOWN, p.DRIFT_UP)",
        "np.clip(d, None, p.DRIFT_UP)",
    ),
    (
        "drift limit exclusive",
        "detection/kernel.py",
        "hit = target >= limit",
        "hit = target > limit",
    ),
    # The two rule findings of the first mutmut run, fixed since.
    (
        "a coincidence leaves a partner's suppressed fire suppressed",
        "detection/machine.py",
        'elif d.fire == "" and d.sup_at is not None',
        'elif False and d.fire == "" and d.sup_at is not None',
    ),
    (
        "a coincidence leaves a pending partner pending",
        "detection/machine.py",
        'if d.fire == "pending":\n                self._confirm_fire(y, ts, "coincidence"',
        'if False:\n                self._confirm_fire(y, ts, "coincidence"',
    ),
    (
        "a partner's window over is not resolved before the coincidence",
        "detection/machine.py",
        "d.win.deadline <= ts:\n                self._resolve_fire(y)",
        "d.win.deadline <= ts:\n                pass",
    ),
    (
        "a restored self_test_fail becomes a device_fault",
        "detection/machine.py",
        "d.causes.add(reason if reason in RESTORABLE_CAUSES else",
        "d.causes.add(reason if reason in CONDITION_CAUSES else",
    ),
    (
        "a window ending at the zone activity's ms still coincides",
        "detection/machine.py",
        "if w is None or w.deadline <= ts:",
        "if w is None or w.deadline < ts:",
    ),
    (
        "fast growth ignored at the window's end",
        "detection/machine.py",
        'return "fast_growth" if fast else self.reason',
        "return self.reason",
    ),
    (
        "a signal falling fast at alarm level is not a decay",
        "detection/machine.py",
        "        elif w.falling:\n",
        "        elif False:\n",
    ),
    (
        "a decaying signal still at alarm level never opens again",
        "detection/machine.py",
        "rearm = rearm or ts >= d.rearm_at",
        "rearm = rearm or False",
    ),
    (
        "falling fast needs one reading, not two",
        "detection/kernel.py",
        "fall = fall_raw & ((prev_flags & np.uint32(Flag.FALL_RAW)) != 0)",
        "fall = fall_raw",
    ),
    (
        "a hot shower's heat rise corroborates",
        "detection/kernel.py",
        "heat_raw &= ~steam",
        "heat_raw &= heat_raw",
    ),
    (
        "a thick aerosol gets no second window",
        "detection/machine.py",
        "            if w.thick and self._extend(slot, w, hover=False):",
        "            if False and w.thick and self._extend(slot, w, hover=False):",
    ),
    (
        "the second window may run past 60 s",
        "detection/machine.py",
        "more = min(verify, int(p.VERIFICATION_MAX_S * 1000) - verify)",
        "more = verify",
    ),
    (
        "evidence in the second window waits for its end",
        "detection/machine.py",
        "elif d.win.extended and flags & _EVIDENCE:",
        "elif d.win.extended and flags & _EVIDENCE and False:",
    ),
    (
        "a lone spike at the window's end counts as persistence",
        "detection/machine.py",
        "elif w.n_above <= p.SPIKE_MAX_SAMPLES and w.rows >= 2 and w.prev_below:",
        "elif False:",
    ),
    (
        "a lone last spike suppressed does not re-arm",
        "detection/machine.py",
        "            d.rearm_at = w.deadline\n",
        "            d.rearm_at = NEVER\n",
    ),
    (
        "drift hours on the clock, not the device's own",
        "detection/engine.py",
        "np.copyto(an, t, where=np.isnan(an))",
        "np.copyto(an, 0, where=np.isnan(an))",
    ),
    (
        "a stored drift baseline is not given back",
        "detection/engine.py",
        "        self.base_b[s] = b\n",
        "        self.base_b[s] = 0.0 * b\n",
    ),
    (
        "a moved baseline is not marked for storage",
        "detection/engine.py",
        "self.base_changed[s_tr[nb != b[tr]]] = True",
        "self.base_changed[s_tr[nb != nb]] = True",
    ),
    (
        "a neighbour at pre-alarm corroborates an aerosol on a multi",
        "detection/machine.py",
        "                and not (weak and aerosol_only)\n",
        "                and not (weak and aerosol_only and False)\n",
    ),
    (
        "the aerosol-only level back at the thick level",
        "detection/params.py",
        "MULTI_AEROSOL_ONLY_ALARM: Final = 20.0",
        "MULTI_AEROSOL_ONLY_ALARM: Final = 10.0",
    ),
    (
        "a signal hovering under the level is transient at once",
        "detection/machine.py",
        "elif (w.hovering or w.dipping) and self._extend(slot, w, hover=True):",
        "elif w.dipping and self._extend(slot, w, hover=True):",
    ),
    (
        "a signal falling fast at pre-alarm level counts as hovering",
        "detection/machine.py",
        "return self.rows > 0 and not (self.last_alarm or self.below or self.dropping)",
        "return self.rows > 0 and not (self.last_alarm or self.below)",
    ),
    (
        "a hovering multi confirms without evidence",
        "detection/machine.py",
        "                and (not multi or d.win.evidence)\n",
        "",
    ),
    (
        "a hovering window waits its whole second part",
        "detection/machine.py",
        "                d.win.hover\n                and flags & _ALARM\n",
        "                False\n                and flags & _ALARM\n",
    ),
    (
        "a lone last sample after a hovering one is a spike",
        "detection/machine.py",
        "elif w.n_above <= p.SPIKE_MAX_SAMPLES and w.rows >= 2 and w.prev_below:",
        "elif w.n_above <= p.SPIKE_MAX_SAMPLES and w.rows >= 2:",
    ),
    (
        "a warming ceiling is no evidence for a persisting aerosol",
        "detection/machine.py",
        "and not w.evidence and w.warm:",
        "and not w.evidence and w.warm and False:",
    ),
    (
        "warming needs the heat-rise rate",
        "detection/params.py",
        "MULTI_WARM_C_PER_MIN: Final = 3.0",
        "MULTI_WARM_C_PER_MIN: Final = 5.0",
    ),
    (
        "one fast fall at the window's end is persistence",
        "detection/machine.py",
        "elif (w.hovering or w.dipping) and self._extend(slot, w, hover=True):",
        "elif w.hovering and self._extend(slot, w, hover=True):",
    ),
    (
        "a falling reading in the second part confirms",
        "detection/machine.py",
        "                and not flags & Flag.DROP\n",
        "",
    ),
    (
        "a ceiling warming after a suppression does not re-arm",
        "detection/machine.py",
        "_REARM: Final = int(Flag.COX | Flag.DENSE | Flag.THICK | Flag.WARM)",
        "_REARM: Final = int(Flag.COX | Flag.DENSE | Flag.THICK)",
    ),
    (
        "a shower's warm air re-arms an aerosol",
        "detection/machine.py",
        "new &= ~Flag.WARM  # a shower's warm air is no new evidence (steam memory)",
        "new &= ~0",
    ),
]


def _copy(dst: Path) -> None:
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        ".firesafe",
        "mutants",
        "__pycache__",
        "*.egg-info",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
    )
    shutil.copytree(ROOT, dst, ignore=ignore, dirs_exist_ok=True)


def run(tests: list[str]) -> int:
    survived = 0
    with tempfile.TemporaryDirectory(prefix="firesafe-mutant-") as tmp:
        work = Path(tmp)
        _copy(work)
        for name, rel, old, new in MUTANTS:
            path = work / rel
            original = path.read_text()
            if original.count(old) != 1:
                print(f"STALE    {name}: the text to mutate is not in {rel} exactly once")
                survived += 1
                continue
            path.write_text(original.replace(old, new))
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                    cwd=work,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            finally:
                path.write_text(original)
            if proc.returncode == 1:
                failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
                print(f"killed   {name}: {failed[0][7:] if failed else 'a test failed'}")
            else:
                survived += 1
                print(f"SURVIVED {name} (pytest exit {proc.returncode})")
                if proc.returncode != 0:
                    print(proc.stdout[-2000:], proc.stderr[-2000:])
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:] or DEFAULT_TESTS))
