"""Batch dicts and files → volley.v1.Batch, without a cluster: the same
schema and errors as the Rust client's batch_file.rs."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from volley import InvalidBatch, batch_from_dict, parse_batch, parse_duration_ms, read_batch_file
from volley._proto.volley.v1 import volley_pb2 as pb

GOOD_YAML = """
name: release-check
max_parallel: 8
on_failure: fail_fast
hazards: order
namespace: team-a
labels: {team: x}
deadline: 1h
retry_failed: sequential
strict: true
allow_unwritten: true
ops:
  - id: lint
    kind: shell
    args: {cmd: "cargo clippy", env: {A: "1"}}
    timeout: 10m
    attempts: 3
    priority: high
    store_as: swarm/lint
    requires: {gpu: true, n: 8}
  - id: report
    kind: write
    after: [lint]
    run_if: always
    timeout: 1500
    args:
      path: reports/ready.md
      content: "lint: ${ops.lint.status}"
    wait_for: [k1]
    wait_for_any: [k2, k3]
    wait_timeout: 30s
    backoff: {initial: 250ms, max: 10s, multiplier: 3}
    retry_on: [timeout, lost_worker]
    reads: [a.txt]
    writes: [b.txt]
  - id: idle
    kind: noop
"""


def problem_of(error: InvalidBatch) -> Tuple[str, str]:
    [problem] = error.problems
    return problem.op_id, problem.field


def test_a_full_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(GOOD_YAML)

    batch = read_batch_file(path)

    assert (batch.name, batch.max_parallel, batch.namespace) == ("release-check", 8, "team-a")
    assert batch.on_failure == pb.ON_FAILURE_FAIL_FAST
    assert batch.hazards == pb.HAZARDS_ORDER
    assert batch.retry_failed == pb.RETRY_FAILED_SEQUENTIAL
    assert (batch.deadline_ms, batch.strict, batch.allow_unwritten) == (3_600_000, True, True)
    assert dict(batch.labels) == {"team": "x"}
    lint, report, idle = batch.ops
    assert (lint.kind, lint.timeout_ms, lint.attempts) == ("shell", 600_000, 3)
    assert json.loads(lint.args_json) == {"cmd": "cargo clippy", "env": {"A": "1"}}
    assert lint.priority == pb.PRIORITY_HIGH
    assert lint.store_as == "swarm/lint"
    assert dict(lint.requires) == {"gpu": "true", "n": "8"}
    assert list(report.after) == ["lint"] and report.run_if == pb.RUN_IF_ALWAYS
    assert report.timeout_ms == 1500
    assert "${ops.lint.status}" in report.args_json
    assert (list(report.wait_for), list(report.wait_for_any)) == (["k1"], ["k2", "k3"])
    assert report.wait_timeout_ms == 30_000
    backoff = report.backoff
    assert (backoff.initial_ms, backoff.max_ms, backoff.multiplier, backoff.no_jitter) == (
        250,
        10_000,
        3.0,
        False,
    )
    assert list(report.retry_on) == [pb.RETRY_ON_TIMEOUT, pb.RETRY_ON_LOST_WORKER]
    assert (list(report.reads), list(report.writes)) == (["a.txt"], ["b.txt"])
    assert idle.args_json == "" and idle.priority == pb.PRIORITY_UNSPECIFIED
    assert not idle.HasField("backoff")


def test_json_and_a_dict_give_the_same_batch() -> None:
    document: Dict[str, Any] = {
        "name": "j",
        "ops": [
            {"id": "a", "kind": "echo", "args": {"text": "hi"}, "timeout": "2s", "priority": "low"},
            {"id": "b", "kind": "noop", "after": ["a"], "timeout": 50},
        ],
    }
    from_json = parse_batch(json.dumps(document), "j.json")
    from_dict = batch_from_dict(document)
    assert from_json == from_dict
    assert from_dict.ops[0].args_json == '{"text":"hi"}'
    assert (from_dict.ops[0].timeout_ms, from_dict.ops[1].timeout_ms) == (2000, 50)


@pytest.mark.parametrize(
    ("batch", "op_id", "field", "text"),
    [
        ({"nmae": "x", "ops": []}, "", "nmae", "did you mean `name`"),
        (
            {"ops": [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop", "afer": ["a"]}]},
            "b",
            "afer",
            "unknown field `afer`",
        ),
        (
            {"ops": [{"id": "a", "kind": "noop"}, {"kind": "noop"}]},
            "",
            "id",
            "op #2 (counting from 1): missing field `id`",
        ),
        ({"ops": [{"id": "a"}]}, "a", "kind", "missing field `kind`"),
        (
            {"ops": [{"id": "slow", "kind": "noop", "timeout": "10 parsecs"}]},
            "slow",
            "timeout",
            "10 parsecs",
        ),
        (
            {"ops": [{"id": "p", "kind": "noop", "priority": "urgent"}]},
            "p",
            "priority",
            "`critical`",
        ),
        ({"ops": [{"id": "a", "kind": "echo", "args": [1]}]}, "a", "args", "mapping"),
        ({"ops": [{"id": "a", "kind": "echo", "after": "b"}]}, "a", "after", "list of strings"),
        ({"ops": [{"id": "a", "kind": "echo", "attempts": -1}]}, "a", "attempts", "out of range"),
        ({"ops": [{"id": "a", "kind": "echo", "attempts": "3"}]}, "a", "attempts", "whole number"),
        (
            {"ops": [{"id": "a", "kind": "echo", "backoff": {"inital": "1s"}}]},
            "a",
            "inital",
            "did you mean `initial`",
        ),
        ({"ops": [{"id": "a", "kind": "echo", "retry_on": ["crash"]}]}, "a", "retry_on", "crash"),
        ({"ops": [{"id": "a", "kind": "echo", "args": {"x": object()}}]}, "a", "args", "JSON"),
        ({"ops": "a"}, "", "ops", "list of ops"),
        ({"ops": ["a"]}, "", "op", "op #1"),
        ({"on_failure": "stop"}, "", "on_failure", "`fail_fast`"),
        ({"strict": "yes"}, "", "strict", "true or false"),
        ({"allow_unwritten": 1}, "", "allow_unwritten", "true or false"),
        ({"labels": {"a": [1]}}, "", "labels", "`a`"),
    ],
)
def test_bad_input_names_the_op_and_field(
    batch: Dict[str, Any], op_id: str, field: str, text: str
) -> None:
    with pytest.raises(InvalidBatch) as raised:
        batch_from_dict(batch)
    assert problem_of(raised.value) == (op_id, field)
    assert text in str(raised.value)
    assert raised.value.code is None
    if op_id:
        assert f"op `{op_id}`" in str(raised.value)


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidBatch) as raised:
        batch_from_dict(["a", "b"])  # type: ignore[arg-type]
    assert problem_of(raised.value) == ("", "batch")
    with pytest.raises(InvalidBatch):
        parse_batch("- a\n- b\n", "t.yaml")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("ops:\n  - id: a\n    kind: noop\n  - id: b\n    kind: noop\n    afer: [a]\n")
    with pytest.raises(InvalidBatch) as raised:
        read_batch_file(path)
    assert str(raised.value).startswith(f"{path}: op `b`: field `afer`: ")


def test_syntax_errors_have_line_and_column() -> None:
    with pytest.raises(InvalidBatch) as raised:
        parse_batch("name: x\nops:\n  - id: a\n    after: [b\n", "bad.yaml")
    assert str(raised.value).startswith("bad.yaml:5:1: ")
    with pytest.raises(InvalidBatch) as raised:
        parse_batch('{"ops": [\n  {"id": "a",, }\n]}', "bad.json")
    assert str(raised.value).startswith("bad.json:2:14: ")


def test_durations() -> None:
    assert parse_duration_ms("10m") == 600_000
    assert parse_duration_ms("1h 30m") == 5_400_000
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("250ms") == 250
    assert parse_duration_ms(" 2 s ") == 2000
    assert parse_duration_ms("1500us") == 1
    assert parse_duration_ms(1500) == 1500
    assert parse_duration_ms(datetime.timedelta(seconds=1.5)) == 1500
    for bad in ("", "10", "ten minutes", "5 parsecs", -1, 1.5, True):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)  # type: ignore[arg-type]


def test_a_dict_converts_to_the_equivalent_proto() -> None:
    batch = pb.Batch(name="raw", ops=[pb.Op(id="a", kind="noop")])
    assert batch_from_dict({"name": "raw", "ops": [{"id": "a", "kind": "noop"}]}) == batch


def test_retry_lost_worker_sets_the_batch_s_lost_worker_retries() -> None:
    unset = batch_from_dict({"ops": []})
    none = batch_from_dict({"retry": {"lost_worker": 0}, "ops": []})
    five = batch_from_dict({"retry": {"lost_worker": 5}, "ops": []})
    with pytest.raises(InvalidBatch, match="unknown field `lost_workers`"):
        batch_from_dict({"retry": {"lost_workers": 1}})
    with pytest.raises(InvalidBatch, match="expected a mapping"):
        batch_from_dict({"retry": 3})

    assert not unset.HasField("lost_worker_retries")
    assert none.HasField("lost_worker_retries") and none.lost_worker_retries == 0
    assert five.lost_worker_retries == 5
