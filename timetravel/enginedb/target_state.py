"""What an engine-0.32 rewind changes when the target frame has a snapshot (pure, no SQL).

Upstream 0.32's ``jumpToFrame`` makes the database match the target snapshot, inside its
transaction and after deleting frames, snapshots and the attempts started after the target
frame:

* **outputs** (``restoreOutputSet``): the snapshot's rows are gathered per physical table
  (every key of ``outputs_json`` whose value is a list, resolved like
  :func:`~timetravel.enginedb.outputs.resolve_output_table`; the engine writes each table under
  its physical name *and* its schema key, so rows repeat; a later row with the same
  ``(node_id, iteration)`` wins). The tables considered are those plus the resolved
  ``output_table`` of every current node of the run; for each that exists, the run's rows
  absent from the snapshot are deleted and every snapshot row is upserted (its values are the
  truth, so a post-target overwrite with the same key does not survive).
* **provenance**: the run's ``_smithers_output_provenance`` rows whose ``(table, node,
  iteration)`` is not a snapshot row are deleted; a snapshot row with a finite
  ``__smithersProvenanceSeq`` upserts its provenance row.
* **signals**: with ``__smithersSignalProvenanceHorizon`` in the snapshot, the run's signals
  with ``seq`` above it are deleted.
* **nodes** (``restoreNodeSet``): nodes absent from the snapshot are deleted; every snapshot
  node is upserted with its snapshot values and ``updated_at_ms`` = the snapshot's value or now.
* **attempts** (``restoreAttemptsToNodeSnapshot``): an attempt is deleted when its node is
  absent from the snapshot, when the snapshot node's ``lastAttempt`` is null, or when its
  number exceeds ``lastAttempt``.

Use: :func:`tables_to_restore` names the physical tables to read (their columns and the run's
row keys); then :func:`compute_target_state` returns a :class:`TargetState` plan. Apply deletes
before upserts (provenance has ``UNIQUE (run_id, seq)``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

from timetravel.enginedb.outputs import (
    OutputRow,
    camel_case,
    js_number,
    resolve_name,
    signal_horizon,
    snapshot_output_rows,
)

__all__ = [
    "NODE_COLUMNS",
    "NODE_COMPARED",
    "CurrentState",
    "NodeRow",
    "OutputTablePlan",
    "OutputTableState",
    "ProvenanceRow",
    "TargetState",
    "compute_target_state",
    "snapshot_rows_by_table",
    "tables_to_restore",
]

#: Columns of ``_smithers_nodes`` (engine 0.16 and 0.32 alike).
NODE_COLUMNS = (
    "run_id",
    "node_id",
    "iteration",
    "state",
    "last_attempt",
    "updated_at_ms",
    "output_table",
    "label",
)

#: The node columns a snapshot node is compared on (``updated_at_ms`` is not): a node whose
#: snapshot values of these equal the current ones is not written again.
NODE_COMPARED = ("state", "last_attempt", "output_table", "label")

Key = tuple[str, int]  # (node_id, iteration)
AttemptKey = tuple[str, int, int]  # (node_id, iteration, attempt)


class NodeRow(NamedTuple):
    node_id: str
    iteration: int
    output_table: str | None = None


class ProvenanceRow(NamedTuple):
    output_table: str
    node_id: str
    iteration: int
    seq: int


@dataclass(frozen=True)
class OutputTableState:
    """A physical output table: its columns and the run's current row keys."""

    columns: Sequence[str]
    row_keys: Collection[Key] = ()
    #: the run's rows by key, tuples in ``columns`` order: when given, the plan's ``upsert``
    #: leaves out the snapshot rows that would change nothing
    rows: Mapping[Key, Sequence[Any]] | None = None


@dataclass(frozen=True)
class CurrentState:
    """The run's rows as they are now (after frames/attempts past the target were deleted)."""

    nodes: Sequence[NodeRow] = ()
    attempts: Collection[AttemptKey] = ()
    #: physical table → state, for every name :func:`tables_to_restore` returned that exists
    output_tables: Mapping[str, OutputTableState] = field(default_factory=dict)
    provenance: Sequence[ProvenanceRow] = ()
    #: the current nodes' :data:`NODE_COMPARED` values by key: when given, ``nodes_upsert``
    #: leaves out the snapshot nodes whose values of those columns are equal
    node_values: Mapping[Key, Sequence[Any]] | None = None


@dataclass(frozen=True)
class OutputTablePlan:
    delete: list[Key]
    #: (node_id, iteration) → column values to upsert on (run_id, node_id, iteration)
    upsert: dict[Key, dict[str, Any]]


@dataclass(frozen=True)
class TargetState:
    nodes_delete: list[Key]
    #: column values for ``_smithers_nodes``, upserted on (run_id, node_id, iteration)
    nodes_upsert: list[dict[str, Any]]
    attempts_delete: list[AttemptKey]
    outputs: dict[str, OutputTablePlan]
    provenance_delete: list[ProvenanceRow]
    provenance_upsert: list[ProvenanceRow]
    #: delete the run's signals with ``seq`` greater than this (None: leave signals alone)
    signals_after: int | None

    @property
    def deleted_outputs(self) -> int:
        return sum(len(p.delete) for p in self.outputs.values())


def snapshot_rows_by_table(
    snapshot_outputs: Mapping[str, Any], physical_tables: Collection[str]
) -> dict[str, list[Mapping[str, Any]]]:
    """Snapshot rows gathered per physical table, in ``outputs_json`` order.

    The engine writes each table's rows under its physical name and its schema key, the same
    list twice: a list equal to the last one gathered for the same table is left out. The
    result of converting the rows is the same (of two equal rows the later wins, and keys
    keep the order of their first rows), for half the work."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    last: dict[str, list[Any]] = {}
    for name, rows in snapshot_outputs.items():
        if not isinstance(rows, list):
            continue
        physical = resolve_name(name, physical_tables)
        if physical is None:
            continue
        if physical in last and last[physical] == rows:
            continue
        last[physical] = rows
        # (a dict is a Mapping: no ABC check for the rows json.loads gives)
        out.setdefault(physical, []).extend(
            r for r in rows if type(r) is dict or isinstance(r, Mapping)
        )
    return out


def tables_to_restore(
    snapshot_outputs: Mapping[str, Any],
    node_output_tables: Iterable[str | None],
    physical_tables: Collection[str],
) -> list[str]:
    """The existing physical tables upstream restores: those of the snapshot's rows and those
    of the run's current nodes (``_smithers_nodes.output_table``, resolved), sorted."""
    names = set(snapshot_rows_by_table(snapshot_outputs, physical_tables))
    for name in set(node_output_tables):  # a run's nodes share a few names: resolve each once
        if name:
            physical = resolve_name(name, physical_tables)
            if physical is not None:
                names.add(physical)
    return sorted(names)


def _node_key(node: Mapping[str, Any]) -> Key | None:
    node_id = node.get("nodeId", node.get("node_id"))
    iteration = node.get("iteration", 0)
    if type(iteration) is not int:
        iteration = js_number(iteration)
    if not isinstance(node_id, str) or iteration is None:
        return None
    return node_id, iteration


#: A snapshot node's keys (camelCase or not) → ``_smithers_nodes`` column.
_NODE_BY_KEY = {camel_case(c): c for c in NODE_COLUMNS}
#: A snapshot node's values of :data:`NODE_COMPARED`, as a tuple (KeyError: one is missing).
_NODE_COMPARED_KEYS = itemgetter(*(camel_case(c) for c in NODE_COMPARED))


def compute_target_state(
    run_id: str,
    snapshot_nodes: Sequence[Mapping[str, Any]],
    snapshot_outputs: Mapping[str, Any],
    current: CurrentState,
    *,
    now_ms: int,
    keys_only: bool = False,
) -> TargetState:
    """The changes that make the run's rows match the target snapshot (see module doc).

    With ``keys_only`` (what a plan counts), output rows are only keyed: each table's
    ``upsert`` maps the snapshot's keys to empty dicts and the provenance lists are empty;
    everything else is as without it.

    Given the current values (:attr:`CurrentState.node_values`, :attr:`OutputTableState.rows`),
    the upserts leave out what is already equal: upserting it would change nothing, and a
    rewind near the end of a run keeps almost everything."""
    # -- nodes and attempts ------------------------------------------------------------
    desired_nodes: dict[Key, Mapping[str, Any]] = {}
    for node in snapshot_nodes:
        key = _node_key(node)
        if key is not None:
            desired_nodes[key] = node
    by_camel = _NODE_BY_KEY
    compared = current.node_values
    nodes_upsert: list[dict[str, Any]] = []
    limits: dict[Key, int | None] = {}
    for key, node in desired_nodes.items():
        limit = node.get("lastAttempt", node.get("last_attempt"))
        limits[key] = limit if limit is None or type(limit) is int else js_number(limit)
        if compared is not None:
            now = compared.get(key)
            if now is not None:
                try:
                    if _NODE_COMPARED_KEYS(node) == now:
                        continue  # every compared value equal: nothing to write
                except KeyError:
                    pass  # a value the node leaves out: compared by whoever writes it
        values: dict[str, Any] = {}
        for k, v in node.items():
            column = by_camel.get(k)
            if column is not None:
                values[column] = v
        updated = node.get("updatedAtMs", node.get("updated_at_ms"))
        if updated is None:
            updated = now_ms
        elif type(updated) is not int:
            updated = js_number(updated)
        values.update(
            run_id=run_id,
            node_id=key[0],
            iteration=key[1],
            updated_at_ms=updated,
        )
        nodes_upsert.append(values)
    nodes_delete = sorted({(n.node_id, n.iteration) for n in current.nodes} - desired_nodes.keys())
    attempts_delete = sorted(
        a for a in current.attempts if (limit := limits.get((a[0], a[1]))) is None or a[2] > limit
    )

    # -- outputs and provenance ---------------------------------------------------------
    tables = set(current.output_tables)
    gathered = snapshot_rows_by_table(snapshot_outputs, tables)
    outputs: dict[str, OutputTablePlan] = {}
    desired_rows: dict[str, dict[Key, OutputRow]] = {}
    for table in sorted(tables):
        state = current.output_tables[table]
        if keys_only:
            keys = _snapshot_keys(gathered.get(table, []))
            outputs[table] = OutputTablePlan(
                delete=sorted(set(state.row_keys) - keys.keys()), upsert=keys
            )
            continue
        rows = snapshot_output_rows(run_id, gathered.get(table, []), state.columns, state.rows)
        desired_rows[table] = rows
        outputs[table] = OutputTablePlan(
            delete=sorted(set(state.row_keys) - rows.keys()),
            upsert={k: r.values for k, r in rows.items() if not r.unchanged},
        )
    keep = {(t, k[0], k[1]) for t, rows in desired_rows.items() for k in rows}
    provenance_delete = [p for p in current.provenance if p[:3] not in keep]
    provenance_upsert = [
        ProvenanceRow(t, r.node_id, r.iteration, r.provenance_seq)
        for t, rows in desired_rows.items()
        for r in rows.values()
        if r.provenance_seq is not None
    ]
    return TargetState(
        nodes_delete=nodes_delete,
        nodes_upsert=nodes_upsert,
        attempts_delete=attempts_delete,
        outputs=outputs,
        provenance_delete=provenance_delete,
        provenance_upsert=provenance_upsert,
        signals_after=signal_horizon(snapshot_outputs),
    )


def _snapshot_keys(rows: Iterable[Mapping[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The keys :func:`~timetravel.enginedb.outputs.snapshot_output_rows` gives these rows,
    each with an empty dict (no values converted)."""
    out: dict[Key, dict[str, Any]] = {}
    for row in rows:
        node_id = row.get("nodeId", row.get("node_id"))
        iteration = row.get("iteration", 0)
        if type(iteration) is not int:
            iteration = js_number(iteration)
        if isinstance(node_id, str) and iteration is not None:
            out[(node_id, iteration)] = {}
    return out
