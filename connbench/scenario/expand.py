"""TOML scenario -> validated Scenario -> cells (matrix, include, exclude, pruning with reasons, ids).

Every error names the file, the key and what is allowed, and happens before anything starts.
The file is refused before it is read when it is no regular file or too large, so a FIFO or a
device cannot hang the harness and a huge file cannot exhaust it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from connbench.errors import ScenarioError
from connbench.scenario.knobs import (
    KNOB_NAMES,
    SAFE_NAME,
    Expect,
    Fault,
    Knobs,
    ProbeSettings,
    ScenarioMeta,
    allowed,
    normalize_knob,
    normalize_rule,
    prune_reason,
    rule_matches,
)
from connbench.scenario.model import SECTIONS, GeneratorSpec, ScenarioFile, ServerSpec
from connbench.scenario.project import Project, redact_scenario
from connbench.scenario.project import resolve as resolve_project
from connbench.scenario.reading import MAX_DEPTH, depth, file_label, read_toml
from connbench.text import clip, clip_list

DEFAULT_MAX_CELLS = 500
MAX_ID_LEN = 100
# Validation is a product of cells and rules: bounded so that no file can make it slow.
MAX_ITEMS = {"matrix.exclude": 1000, "matrix.include": 1000, "expect": 1000, "faults": 100}
OVERHEAD_PER_CELL_S = 3.0  # start/verify/stop, measured ~1.2-1.5 s here; rounded up for the estimate

# Short names keep cell ids readable: "pool-direct_cma-none_w2".
SHORT = {"pooling": "pool", "conn_max_age": "cma", "health_checks": "hc", "workers": "w", "threads": "t",
         "dynos": "d", "worker_class": "k", "max_connections": "maxc", "users": "u", "arrival_rate": "ar",
         "arrival": "arr", "max_in_flight": "mif"}


@dataclass(frozen=True)
class Cell:
    cell_id: str
    group: str
    repeat: int
    knobs: Knobs
    axes: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        return self.knobs.model_dump()


@dataclass
class Pruned:
    axes: dict[str, Any]
    reason: str


@dataclass
class Scenario:
    path: Path
    meta: ScenarioMeta
    defaults: dict[str, Any]
    axes: dict[str, list[Any]]
    exclude: list[dict[str, Any]]
    cells: list[Cell]
    pruned: list[Pruned]
    raw: dict[str, Any]
    faults: list[Fault] = field(default_factory=list)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    expect: list[Expect] = field(default_factory=list)
    project: Project = field(default_factory=Project)
    server: ServerSpec | None = None  # [server] url: an existing PostgreSQL
    generator: GeneratorSpec = field(default_factory=GeneratorSpec)  # [generator]: Locust's master/workers

    @property
    def hash(self) -> str:
        blob = json.dumps(redact_scenario(self.raw), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def faults_for(self, cell: Cell) -> list[Fault]:
        return [f for f in self.faults if f.selects(cell.cell_id, cell.group, cell.knobs.model_dump())]

    def pruned_by(self, reason_for: Callable[[Cell], str | None]) -> Scenario:
        """The same scenario with the cells `reason_for(cell)` gives a reason for moved to `pruned` (one entry
        per setting, not per repeat): e.g. cells an existing server cannot run."""
        kept, pruned, seen = [], list(self.pruned), set()
        for cell in self.cells:
            why = reason_for(cell)
            if why is None:
                kept.append(cell)
            elif cell.group not in seen:
                seen.add(cell.group)
                pruned.append(Pruned(cell.axes, why))
        return dataclasses.replace(self, cells=kept, pruned=pruned)


SHIPPED = Path(__file__).resolve().parents[1] / "scenarios"  # installed with the package (scenarios/ links here)


def resolve(path: Path | str) -> Path:
    """A scenario path as given; if nothing is there, a shipped scenario of that name ("quick",
    "quick.toml" or "scenarios/quick.toml"), so the README's commands work outside the checkout too."""
    p = Path(path)
    try:
        if p.exists() or p.is_symlink() or p.parent not in (Path("."), Path("scenarios")):
            return p
        shipped = SHIPPED / (p.name if p.suffix == ".toml" else f"{p.name}.toml")
        return shipped if shipped.is_file() else p
    except (OSError, ValueError):  # a name too long, a NUL: read_toml says so, cleanly
        return p


def load(path: Path | str, max_cells: int = DEFAULT_MAX_CELLS) -> Scenario:
    path = resolve(path)
    return from_dict(read_toml(path), path, max_cells=max_cells)


Axes = dict[str, list[Any]]  # knob -> its values, normalised
Rule = dict[str, list[Any]]  # an exclude rule: knob -> the values it matches


# -- validation ------------------------------------------------------------------------------
def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for x in loc:
        if x != "__root__":
            out += f"[{x}]" if isinstance(x, int) else f".{x}" if out else str(x)
    return out


def _msg(err: ErrorDetails) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    return msg if isinstance(got, dict) else f"{msg} (got {clip(got)})"


def _errors(where: str, e: ValidationError, describe: Callable[[ErrorDetails], str]) -> ScenarioError:
    msgs = [describe(err) for err in e.errors()]
    shown = "; ".join(dict.fromkeys(msgs[:10])) + (f"; ... and {len(msgs) - 10} more" if len(msgs) > 10 else "")
    if len(shown) > 1500:
        shown = shown[:1500] + f"... ({len(msgs)} problems)"
    return ScenarioError(f"{where}: {shown}")


def knobs_from(path: Path | str, where: str, values: dict[str, Any]) -> Knobs:
    unknown = [k for k in values if k not in Knobs.model_fields]
    if unknown:
        keys = clip_list([f"'{k}'" if k.isprintable() else clip(k) for k in unknown], 10)
        raise ScenarioError(f"{file_label(path)}: unknown key{'s' if len(unknown) > 1 else ''} {keys} in {where}; "
                            f"allowed keys: {', '.join(KNOB_NAMES)}")
    try:
        return Knobs(**values)
    except ValidationError as e:
        def describe(err: ErrorDetails) -> str:
            key = _loc(err["loc"])
            top = str(err["loc"][0]) if err["loc"] else ""
            if err["type"] == "extra_forbidden":
                return f"unknown key {clip(key)} in {where}; allowed keys: {', '.join(KNOB_NAMES)}"
            return f"{where}.{key}: {_msg(err)}; allowed: {allowed(top)}"
        raise _errors(file_label(path), e, describe) from None


def _file_model(raw: dict[str, Any], path: Path | str) -> ScenarioFile:
    try:
        return ScenarioFile(**raw)
    except ValidationError as e:
        def describe(err: ErrorDetails) -> str:
            loc = err["loc"]
            key = _loc(loc)
            if err["type"] == "extra_forbidden":
                names = [str(x) for x in loc[:-1] if not isinstance(x, int)]
                model = SECTIONS.get(names[-1]) if names else None
                fields = (model or ScenarioFile).model_fields
                return f"unknown key {clip(key)}; allowed: {', '.join(fields)}"
            if err["type"] == "missing":
                return f"missing required key '{key}'"
            return f"{key}: {_msg(err)}"
        raise _errors(file_label(path), e, describe) from None


def from_dict(raw: dict[str, Any], path: Path | str = Path("<scenario>"), *,
              max_cells: int = DEFAULT_MAX_CELLS) -> Scenario:
    path = Path(path)
    where = file_label(path)
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: a scenario is a TOML table")
    if depth(raw) > MAX_DEPTH:
        raise ScenarioError(f"{where}: nested too deeply; scenarios nest at most {MAX_DEPTH} levels")
    _check_counts(raw, where)
    sf = _file_model(raw, path)
    defaults = dict(sf.defaults)
    knobs_from(path, "[defaults]", defaults)  # defaults alone must be valid
    axes, exclude, include, include_ids = _matrix(dict(sf.matrix), where)
    _check_size(sf, defaults, axes, include, where, max_cells)
    project = resolve_project(sf.app, sf.load, path)
    cells, pruned = _expand(sf, path, defaults, axes, exclude, include, include_ids, project)
    _check_selectors(sf, cells, where)
    return Scenario(path, sf.scenario, defaults, axes, exclude, cells, pruned, raw, list(sf.faults), sf.probe,
                    list(sf.expect), project, sf.server, sf.generator)


def _check_counts(raw: dict[str, Any], where: str) -> None:
    found = raw.get("matrix")
    matrix: dict[str, Any] = found if isinstance(found, dict) else {}
    for key, limit in MAX_ITEMS.items():
        items = matrix.get(key.split(".")[1]) if key.startswith("matrix.") else raw.get(key)
        if isinstance(items, list) and len(items) > limit:
            raise ScenarioError(f"{where}: {key} has {len(items):,} entries; at most {limit:,} are allowed")


def _matrix(matrix: dict[str, Any], where: str) -> tuple[Axes, list[Rule], list[dict[str, Any]], list[Any]]:
    exclude = matrix.pop("exclude", [])
    include = matrix.pop("include", [])
    for name, given in (("exclude", exclude), ("include", include)):
        if not isinstance(given, list) or not all(isinstance(r, dict) and r for r in given):
            raise ScenarioError(f"{where}: matrix.{name} must be a list of non-empty tables, e.g. "
                                f'[[matrix.{name}]] pooling = "django-pool"')
    axes: dict[str, list[Any]] = {}
    for key, values in matrix.items():
        if key not in Knobs.model_fields:
            raise ScenarioError(f"{where}: unknown key {clip('matrix.' + key)}; allowed axes: {', '.join(KNOB_NAMES)}")
        if not isinstance(values, list):
            raise ScenarioError(f"{where}: matrix.{key} must be a list of values (got {clip(values)})")
        if not values:
            raise ScenarioError(f"{where}: matrix.{key} is an empty axis; give at least one value")
        normal: list[Any] = []
        for v in values:
            try:
                n = normalize_knob(key, v)
            except ValueError as e:
                raise ScenarioError(f"{where}: matrix.{key}: {e}") from None
            if n in normal:
                raise ScenarioError(f"{where}: matrix.{key} lists {clip(v)} and {clip(values[normal.index(n)])}, "
                                    "which are the same setting; list it once")
            normal.append(n)
        axes[key] = normal
    rules: list[Rule] = []
    for i, rule in enumerate(exclude):
        for key in rule:
            if key not in Knobs.model_fields:
                raise ScenarioError(f"{where}: unknown key {clip(f'matrix.exclude[{i}].{key}')}; "
                                    f"allowed: {', '.join(KNOB_NAMES)}")
        try:
            rules.append(normalize_rule(rule))
        except ValueError as e:
            raise ScenarioError(f"{where}: matrix.exclude[{i}]: {e}") from None
    include = [dict(r) for r in include]
    ids = [r.pop("id", None) for r in include]
    for i, (cid, rule) in enumerate(zip(ids, include, strict=True)):
        if cid is not None and not (isinstance(cid, str) and SAFE_NAME.fullmatch(cid)):
            raise ScenarioError(f"{where}: matrix.include[{i}].id must be 1-80 letters, digits, '-', '_' or '.', "
                                f"starting with a letter or digit (got {clip(cid)})")
        for key in rule:
            if key not in Knobs.model_fields:
                raise ScenarioError(f"{where}: unknown key {clip(f'matrix.include[{i}].{key}')}; "
                                    f"allowed: {', '.join(KNOB_NAMES)}")
            try:
                rule[key] = normalize_knob(key, rule[key])
            except ValueError as e:
                raise ScenarioError(f"{where}: matrix.include[{i}].{key}: {e}") from None
    return axes, rules, include, ids


def _check_size(sf: ScenarioFile, defaults: dict[str, Any], axes: Axes, include: list[dict[str, Any]], where: str,
                max_cells: int) -> None:
    combos = math.prod(len(v) for v in axes.values()) if axes else (0 if include else 1)
    total = (combos + len(include)) * sf.scenario.repeats
    if total <= max_cells:
        return
    d = Knobs(**{k: v for k, v in defaults.items()})
    per_cell = d.warmup + d.duration + d.cooldown + OVERHEAD_PER_CELL_S
    hours = total * per_cell / 3600
    raise ScenarioError(f"{where}: the matrix expands to {total:,} cells (before pruning), about {hours:,.1f} h at "
                        f"{per_cell:.0f} s a cell; the limit is {max_cells}. Narrow the matrix, or pass "
                        f"--max-cells {total} to run it on purpose")


def _value_id(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, dict):
        return "-".join(f"{k}{_value_id(x)}" for k, x in sorted(v.items()))
    return str(v).replace(".", "p").replace("/", "-").replace(" ", "")


def cell_id_for(axes: dict[str, Any]) -> str:
    if not axes:
        return "default"
    cid = "_".join(f"{SHORT.get(k, k)}-{_value_id(v)}" for k, v in axes.items())
    if len(cid) > MAX_ID_LEN or not SAFE_NAME.fullmatch(cid[:80]):
        digest = hashlib.sha256(cid.encode()).hexdigest()[:8]
        keep = "".join(c if c.isalnum() or c in "_.-" else "-" for c in cid[: MAX_ID_LEN - 9]).lstrip("._-")
        cid = f"{keep}-{digest}" if keep else f"cell-{digest}"
    return cid


def _expand(sf: ScenarioFile, path: Path, defaults: dict[str, Any], axes: Axes, exclude: list[Rule],
            include: list[dict[str, Any]], include_ids: list[Any], project: Project) -> tuple[list[Cell], list[Pruned]]:
    cells: list[Cell] = []
    pruned: list[Pruned] = []
    seen: set[str] = set()
    # no axes: the defaults are the one cell, unless include lists the cells explicitly
    combos = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())] \
        if axes else ([] if include else [{}])
    # include (like asv): extra cells over [defaults], not subject to exclude
    planned = [(a, None, False) for a in combos] + [(a, i, True) for a, i in zip(include, include_ids, strict=True)]
    for assignment, explicit, included in planned:
        where = "[matrix] " + ", ".join(f"{k}={clip(v, 60)}" for k, v in assignment.items()) if assignment \
            else "[defaults]"
        knobs = knobs_from(path, where, {**defaults, **assignment})
        dumped = knobs.model_dump()
        if not included and any(rule_matches(rule, dumped) for rule in exclude):
            pruned.append(Pruned(assignment, "excluded by matrix.exclude"))
            continue
        reason = prune_reason(knobs, sf.scenario) or project.prune_reason(knobs)
        if reason:
            pruned.append(Pruned(assignment, reason))
            continue
        group = explicit or cell_id_for(assignment)
        if group in seen:
            raise ScenarioError(f"{file_label(path)}: two matrix cells share the id '{group}'; make them distinct")
        seen.add(group)
        for r in range(sf.scenario.repeats):
            cid = group if sf.scenario.repeats == 1 else f"{group}_r{r + 1}"
            cells.append(Cell(cid, group, r, knobs, assignment))
    if not cells:
        why = "; ".join(sorted({p.reason for p in pruned})) or "the matrix is empty"
        raise ScenarioError(f"{file_label(path)}: no cells left to run after exclusion and pruning ({why})")
    return cells, pruned


def _check_selectors(sf: ScenarioFile, cells: list[Cell], where: str) -> None:
    names = sorted({c.cell_id for c in cells} | {c.group for c in cells})
    known = set(names)
    dumped = [c.knobs.model_dump() for c in cells]
    for section, items in (("expect", sf.expect), ("faults", sf.faults)):
        for i, item in enumerate(items):
            name = getattr(item, "name", None)  # an expectation has a name, a fault none
            label = f"{section}[{i}]" + (f" ({clip(name, 60)})" if name else "")
            unknown = [c for c in item.cells if c not in known]
            if unknown:
                raise ScenarioError(f"{where}: {label}.cells names no cell: {clip_list(unknown)}; "
                                    f"cells: {clip_list(names)}")
            chosen = [c for c, d in zip(cells, dumped, strict=True) if item.selects(c.cell_id, c.group, d)]
            if not chosen:
                raise ScenarioError(f"{where}: {label} selects no cell; cells: {clip_list(names)}")
            if isinstance(item, Fault):
                _check_fault(item, chosen, f"{where}: {label}")


def _check_fault(f: Fault, chosen: list[Cell], where: str) -> None:
    late = [c.cell_id for c in chosen if f.at >= c.knobs.duration]
    if late:
        raise ScenarioError(f"{where}.at = {f.at:g} s is not within the measure window (0 <= at < duration) "
                            f"of: {clip_list(late)}")
    if f.action == "kill_worker":
        out = [c.cell_id for c in chosen if f.dyno >= c.knobs.dynos]
        if out:
            raise ScenarioError(f"{where}.dyno = {f.dyno} is out of range (dynos are 0..dynos-1) in: {clip_list(out)}")
    elif f.dyno:
        raise ScenarioError(f"{where}.dyno applies to action = \"kill_worker\" only")
    if f.action == "restart_pgbouncer":
        plain = [c.cell_id for c in chosen if not c.knobs.pooling.startswith("pgbouncer")]
        if plain:
            raise ScenarioError(f"{where}: restart_pgbouncer selects cells without PgBouncer: {clip_list(plain)}")
