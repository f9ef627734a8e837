"""``foreach:`` expanded by the Python client: the cases of the Rust
client's matrix.rs unit tests, then a real cluster (outputs, ``group``,
hostile items staying data), then the Python expansion against the Rust
one (`volley submit`) on the same files, compared through the status the
coordinator reports."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest
from cluster import Cluster, volley_bin

from volley import (
    BatchState,
    Client,
    InvalidBatch,
    OpState,
    batch_from_dict,
    parse_batch,
    read_batch_file,
)
from volley._proto.volley.v1 import volley_pb2 as pb
from volley.matrix import MAX_EXPANSION, ForeachError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def args(op: pb.Op) -> Any:
    return json.loads(op.args_json)


def ids(batch: pb.Batch) -> List[str]:
    return [op.id for op in batch.ops]


def refused(text: str, source: str = "m.yaml") -> str:
    with pytest.raises(InvalidBatch) as caught:
        parse_batch(text, source)
    return str(caught.value)


# ------------------------------------------------ the Rust unit tests' cases


def test_a_list_expands_into_ops_named_by_their_items() -> None:
    batch = parse_batch(
        "ops:\n  - id: test\n    kind: echo\n    foreach: [unit, api]\n"
        '    args: {text: "suite ${item} #${index}"}\n'
        "  - id: sum\n    kind: noop\n    after: [test]\n",
        "m.yaml",
    )
    assert ids(batch) == ["test-unit", "test-api", "sum"]
    assert args(batch.ops[1]) == {"text": "suite api #2"}
    assert list(batch.ops[2].after) == ["test-unit", "test-api"]
    assert [op.group for op in batch.ops] == ["test", "test", ""]


def test_a_range_numbers_its_ops_and_memory_keys_take_the_item() -> None:
    batch = parse_batch(
        "ops:\n  - id: grep\n    kind: echo\n    foreach: {range: [1, 200]}\n"
        '    args: {text: "${item}"}\n    store_as: out/${item}\n',
        "m.yaml",
    )
    assert len(batch.ops) == 200
    assert batch.ops[0].id == "grep-1"
    assert batch.ops[199].id == "grep-200"
    assert batch.ops[199].store_as == "out/200"


def test_mapping_items_fill_fields_and_a_missing_field_names_the_item() -> None:
    batch = parse_batch(
        "ops:\n  - id: t\n    kind: echo\n    foreach: [{suite: a, n: 1}, {suite: b, n: 2}]\n"
        '    args: {text: "${item.suite}=${item.n}"}\n',
        "m.yaml",
    )
    assert batch.ops[1].id == "t-2"
    assert args(batch.ops[1]) == {"text": "b=2"}
    text = refused(
        "ops:\n  - id: test\n    kind: echo\n    foreach: [{suite: a}, {suite: b}, {name: api}]\n"
        '    args: {text: "${item.suite}"}\n'
    )
    assert "op `test` (line 4) item 3 (`{name: api}`): field `args.text`" in text, text
    assert "no field `suite`" in text, text
    assert text == (
        "m.yaml: op `test` (line 4) item 3 (`{name: api}`): field `args.text`: "
        "`${item.suite}`: the item has no field `suite` (it has name)"
    )


@pytest.mark.parametrize(
    ("foreach", "expected"),
    [
        ("{range: [1, 100000000000]}", "at most 10000"),
        ("{range: [5, 1]}", "is empty"),
        ("[]", "empty list"),
        ("[[[1]]]", "item 1"),
        ("[{a: {b: 1}}]", "not a list or a mapping"),
        ('{glob: "/etc/*"}', "stays inside"),
        ('{glob: "../*"}', "stays inside"),
        ("{sql: x}", "unknown source"),
        ("7", "expected a list"),
        ("{range: [1.5, 3]}", "takes two integers"),
        ("{range: [1, true]}", "takes two integers"),
        ("{range: [1]}", "takes two integers"),
        ("{glob: 7}", "takes a pattern"),
        ('{glob: ""}', "an empty `glob` pattern"),
        ('{glob: "a/{b,c"}', "unclosed alternate group; missing '}'"),
        ('{glob: "a/b}"}', "unopened alternate group"),
        ('{glob: "a/[b"}', "unclosed character class"),
        ("{range: [1, 2], glob: x}", "expected a list"),
        ("[null]", "an item is a string, a number, a boolean or a mapping"),
        ('[{"a-b": 1}]', "a field's name is letters, digits and `_`"),
        ('["a\\0b"]', "NUL byte"),
    ],
)
def test_hostile_sources_are_refused_with_the_op_named(foreach: str, expected: str) -> None:
    text = refused(f"ops:\n  - id: bad\n    kind: noop\n    foreach: {foreach}\n")
    assert text.startswith("m.yaml: op `bad` (line 4): field `foreach`: "), text
    assert expected in text, text


def test_a_source_over_the_limits_is_refused() -> None:
    many = ",".join(str(number) for number in range(MAX_EXPANSION + 1))
    text = refused(f"ops:\n  - id: big\n    kind: noop\n    foreach: [{many}]\n")
    assert "10001 items: a `foreach` expands into at most 10000 ops" in text, text
    # Eleven foreachs of 10,000 ops each: over the batch's 100,000.
    ops = "".join(
        f"  - id: r{number}\n    kind: noop\n    foreach: {{range: [1, 10000]}}\n"
        for number in range(11)
    )
    text = refused(f"ops:\n{ops}")
    assert "op `r10` (line 34): field `foreach`: the batch's `foreach`s expand into more than " in (
        text
    ), text


def test_an_expanded_id_clashing_with_another_op_is_an_error() -> None:
    text = refused(
        "ops:\n  - id: t-a\n    kind: noop\n  - id: t\n    kind: noop\n    foreach: [a, b]\n"
    )
    assert text == (
        "m.yaml: op `t`: field `id`: its expansion `t-a` has the id of another op: "
        "rename one of them"
    )


def test_items_in_a_shell_cmd_go_through_the_environment() -> None:
    batch = parse_batch(
        "ops:\n  - id: s\n    kind: shell\n"
        '    foreach: ["$(touch pwned)", "${memory.k}"]\n'
        '    args: {cmd: "echo ${item} \'${item}\' \\"${item}\\" ${ops.x.output}", '
        'cwd: "d-${item}"}\n',
        "m.yaml",
    )
    assert batch.ops[0].id == "s-1"
    first = args(batch.ops[0])
    assert first["cmd"] == (
        'echo "$${VOLLEY_ITEM}" \'\'"$${VOLLEY_ITEM}"\'\' "$${VOLLEY_ITEM}" ${ops.x.output}'
    )
    assert first["env"]["VOLLEY_ITEM"] == "$(touch pwned)"
    second = args(batch.ops[1])
    # An item spelling a template stays text for the template pass.
    assert second["env"]["VOLLEY_ITEM"] == "$${memory.k}"
    assert second["cwd"] == "d-$${memory.k}"


@pytest.mark.parametrize(
    ("item", "cmd", "quoted"),
    [
        ("'; rm -rf /", "rm ${item}", 'rm "$${VOLLEY_ITEM}"'),
        ("x", 'echo "a $(cat ${item})"', 'echo "a $(cat "$${VOLLEY_ITEM}")"'),
        ("x", "echo $(( ${index} + 1 ))", "echo $(( 1 + 1 ))"),
        ("x", "echo $(echo ${index})", 'echo $(echo "$${VOLLEY_INDEX}")'),
    ],
)
def test_a_cmd_quotes_each_reference_for_where_it_stands(item: str, cmd: str, quoted: str) -> None:
    batch = parse_batch(
        json.dumps(
            {"ops": [{"id": "s", "kind": "agent", "foreach": [item], "args": {"cmd": cmd}}]}
        ),
        "m.json",
    )
    filled = args(batch.ops[0])
    assert filled["cmd"] == quoted
    assert filled["env"] == (
        {"VOLLEY_INDEX": "1"} if "index" in cmd else {"VOLLEY_ITEM": item.replace("${", "$${")}
    )


def test_inside_arithmetic_a_whole_number_is_pasted_and_anything_else_refused() -> None:
    cmd = 'test $((${item} % 37)) -ne 0 && echo \\"$(( ${item} + $(wc -c < ${item}) ))\\"'
    batch = parse_batch(
        'ops:\n  - id: s\n    kind: shell\n    foreach: [" 74", "-3"]\n'
        f'    args: {{cmd: "{cmd}"}}\n'
    )
    assert [args(op)["cmd"] for op in batch.ops] == [
        f'test $(({n} % 37)) -ne 0 && echo "$(( {n} + $(wc -c < "$${{VOLLEY_ITEM}}") ))"'
        for n in ("74", "-3")
    ]
    for hostile in ["a[$(touch pwned)]", "1+1", "", "1 2", "0x10", "99999999999999999999"]:
        text = refused(
            "ops:\n  - id: s\n    kind: shell\n"
            f'    foreach: [{json.dumps(hostile)}]\n    args: {{cmd: "{cmd}"}}\n'
        )
        assert text == (
            f"m.yaml: op `s` (line 4) item 1 (`{hostile}`): field `args.cmd`: `${{item}}` stands "
            "inside `$((\u2026))`, where only a whole number can go, and its value "
            f"`{hostile}` is not one"
        ), text


def test_a_cmd_refuses_a_reference_after_a_backslash_and_a_taken_variable() -> None:
    text = refused(
        'ops:\n  - id: s\n    kind: shell\n    foreach: [a]\n    args: {cmd: "echo \\\\${item}"}\n'
    )
    assert text == (
        "m.yaml: op `s` (line 4) item 1 (`a`): field `args.cmd`: `${item}` right after a "
        "backslash: remove the backslash (a filled value is always one quoted word)"
    )
    text = refused(
        "ops:\n  - id: s\n    kind: shell\n    foreach: [a]\n"
        '    args: {cmd: "echo ${item}", env: {VOLLEY_ITEM: x}}\n'
    )
    assert "field `args.env.VOLLEY_ITEM`: `VOLLEY_ITEM` holds the item for `cmd`" in text, text


def test_a_glob_lists_files_relative_to_the_batch_file_sorted(tmp_path: Path) -> None:
    (tmp_path / "tests" / "deep").mkdir(parents=True)
    for name in ["b.py", "a.py", "c.txt", "deep/d.py"]:
        (tmp_path / "tests" / name).write_text("x")
    path = tmp_path / "batch.yaml"
    path.write_text(
        'ops:\n  - id: py\n    kind: echo\n    foreach: {glob: "tests/*.py"}\n'
        '    args: {text: "${item}"}\n'
    )
    batch = read_batch_file(path)
    assert ids(batch) == ["py-tests_a.py", "py-tests_b.py"]
    assert args(batch.ops[0]) == {"text": "tests/a.py"}
    # `**` crosses directories; `{a,b}` and classes as globset reads them.
    for pattern, expected in [
        ("tests/**/*.py", ["py-tests_a.py", "py-tests_b.py", "py-tests_deep_d.py"]),
        ("**/d.py", ["py-tests_deep_d.py"]),
        ("tests/{a,c}.*", ["py-tests_a.py", "py-tests_c.txt"]),
        ("tests/[!a].*", ["py-tests_b.py", "py-tests_c.txt"]),
        ("tests/?.py", ["py-tests_a.py", "py-tests_b.py"]),
    ]:
        path.write_text(f'ops:\n  - id: py\n    kind: noop\n    foreach: {{glob: "{pattern}"}}\n')
        assert ids(read_batch_file(path)) == expected, pattern
    path.write_text('ops:\n  - id: py\n    kind: echo\n    foreach: {glob: "nothing/*.rs"}\n')
    with pytest.raises(InvalidBatch, match="matches no file"):
        read_batch_file(path)


def test_a_json_batch_file_expands_and_names_the_line_of_its_foreach() -> None:
    text = (
        '{"ops": [\n {"id": "a", "kind": "noop"},\n'
        ' {"id": "t", "kind": "echo", "foreach": [1, 2], "args": {"text": "${item}"}},\n'
        ' {"id": "u", "kind": "noop", "foreach": {"range": [3, 1]}}\n]}'
    )
    with pytest.raises(InvalidBatch) as caught:
        parse_batch(text, "m.json")
    assert str(caught.value).startswith("m.json: op `u` (line 4): field `foreach`: ")
    cause = caught.value.__cause__
    assert isinstance(cause, ForeachError) and cause.line == 4 and cause.op_id == "u"
    batch = parse_batch(text.replace("[3, 1]", "[1, 1]"), "m.json")
    assert ids(batch) == ["a", "t-1", "t-2", "u-1"]


def test_ops_without_foreach_are_untouched() -> None:
    batch = parse_batch('ops:\n  - id: a\n    kind: echo\n    args: {text: "${item}"}\n', "m.yaml")
    assert args(batch.ops[0]) == {"text": "${item}"}


# ------------------------------------------------------- more of the same


def test_a_dict_expands_too_without_lines() -> None:
    batch = batch_from_dict(
        {
            "ops": [
                {
                    "id": "n",
                    "kind": "echo",
                    "foreach": [1.5, True, 1e-05, 10**20],
                    "args": {"text": "${item}"},
                },
                {"id": "z", "kind": "noop", "foreach": [{"a": 1}], "after": ["n"]},
            ]
        }
    )
    # Numbers read as serde_json prints them; `+` is no id character.
    assert ids(batch) == ["n-1", "n-2", "n-3", "n-4", "z-1"]
    assert [args(op)["text"] for op in batch.ops[:4]] == ["1.5", "true", "0.00001", "1e+20"]
    assert list(batch.ops[4].after) == ids(batch)[:4]
    with pytest.raises(InvalidBatch) as caught:
        batch_from_dict(
            {"ops": [{"id": "z", "kind": "echo", "foreach": [{"a": 1}], "args": {"t": "${item}"}}]}
        )
    assert str(caught.value) == (
        "op `z` item 1 (`{a: 1}`): field `args.t`: `${item}` of a mapping item: name a field, "
        "`${item.FIELD}` (it has a)"
    )


def test_ids_are_numbered_when_an_item_cannot_name_one() -> None:
    for items, expected in [
        ("[a b, c]", ["o-1", "o-2"]),
        ("[a, A, a]", ["o-1", "o-2", "o-3"]),
        (f"[{'x' * 49}]", ["o-1"]),
        (f"[{'x' * 48}]", [f"o-{'x' * 48}"]),
        ("[dir/a.txt, é]", ["o-1", "o-2"]),
    ]:
        batch = parse_batch(f"ops:\n  - id: o\n    kind: noop\n    foreach: {items}\n")
        assert ids(batch) == expected, items


def test_every_field_that_takes_an_item_takes_it() -> None:
    batch = parse_batch(
        "ops:\n  - id: w\n    kind: write\n    foreach: [a]\n"
        '    args: {path: "out/${item}.txt", content: "${index}",\n'
        '           list: ["${item}", {k: "${item}"}]}\n'
        '    store_as: k/${item}\n    wait_for: ["w/${item}"]\n    wait_for_any: ["x/${item}"]\n'
        '    reads: ["in/${item}"]\n    writes: ["out/${item}.txt"]\n    after: ["p-${item}"]\n'
        "  - id: p\n    kind: noop\n    foreach: [a]\n"
    )
    op = batch.ops[0]
    assert args(op) == {"content": "1", "list": ["a", {"k": "a"}], "path": "out/a.txt"}
    assert (op.store_as, list(op.wait_for), list(op.wait_for_any)) == ("k/a", ["w/a"], ["x/a"])
    assert (list(op.reads), list(op.writes), list(op.after)) == (["in/a"], ["out/a.txt"], ["p-a"])
    text = refused('ops:\n  - id: w\n    kind: noop\n    foreach: [a]\n    reads: ["${item.f}"]\n')
    assert "item 1 (`a`): field `reads`: `${item.f}`: the item is not a mapping" in text, text


def test_a_comment_naming_foreach_does_not_move_the_line() -> None:
    text = refused(
        "# foreach: in a comment\nops:\n  - id: x   # foreach: here too\n    kind: noop\n"
        "    foreach: []\n"
    )
    assert text.startswith("m.yaml: op `x` (line 5): field `foreach`: an empty list"), text


def test_a_glob_leaving_the_directory_through_a_symlink_finds_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    inside = tmp_path / "batch"
    inside.mkdir()
    (inside / "link").symlink_to(outside)
    (inside / "file.txt").symlink_to(outside / "secret.txt")
    path = inside / "b.yaml"
    path.write_text('ops:\n  - id: g\n    kind: noop\n    foreach: {glob: "**/*.txt"}\n')
    with pytest.raises(InvalidBatch, match="matches no file"):
        read_batch_file(path)


# ------------------------------------------------------------- on a cluster

E2E = """name: pytest-foreach
namespace: {namespace}
max_parallel: 4
ops:
  - id: say
    kind: shell
    foreach: ["$(touch pwned1)", "`touch pwned2`", "x'; touch pwned3; echo '", "${{memory.k}}",
              "a\\"; touch pwned4; echo \\"b", "'; rm -rf /"]
    args: {{cmd: "printf '%s|%s|%s' ${{item}} '${{item}}' \\"${{item}}\\""}}
  - id: square
    kind: shell
    foreach: [{{n: 2, name: two}}, {{n: 3, name: three}}]
    args: {{cmd: "echo ${{item.name}}=$(expr ${{item.n}} '*' ${{item.n}})"}}
    store_as: squares/${{item.name}}
  - id: cat
    kind: shell
    foreach: {{glob: "suites/*.txt"}}
    args: {{cmd: "cat ${{item}}"}}
  - id: count
    kind: echo
    foreach: {{range: [1, 3]}}
    args: {{text: "n=${{item}} i=${{index}}"}}
  - id: read
    kind: echo
    after: [say, square, cat, count]
    args: {{text: "${{memory.squares/three}}"}}
"""

HOSTILE = [
    "$(touch pwned1)",
    "`touch pwned2`",
    "x'; touch pwned3; echo '",
    "${memory.k}",
    'a"; touch pwned4; echo "b',
    "'; rm -rf /",
]


def write_e2e_batch(cluster: Cluster, namespace: str) -> Path:
    suites = cluster.root / "suites"
    suites.mkdir(exist_ok=True)
    for name in ["api.txt", "unit.txt", "skip.md"]:
        (suites / name).write_text(f"suite {name}\n")
    path = cluster.root / f"matrix-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(E2E.format(namespace=namespace))
    return path


def test_a_foreach_batch_runs_on_a_cluster_with_groups_and_items_as_data(
    client: Client, cluster: Cluster, namespace: str
) -> None:
    path = write_e2e_batch(cluster, namespace)
    status = client.wait(client.submit_file(path), timeout=60)
    assert status.state is BatchState.SUCCEEDED, status
    ops = {op.id: op for op in status.ops}
    for number, item in enumerate(HOSTILE, start=1):
        op = ops[f"say-{number}"]
        assert op.output == f"{item}|{item}|{item}", op
        assert op.group == "say"
    assert not [name for name in os.listdir(cluster.root) if name.startswith("pwned")]
    assert ops["square-2"].output == "three=9\n" and ops["square-2"].group == "square"
    assert ops["cat-suites_api.txt"].output == "suite api.txt\n"
    assert sorted(op_id for op_id in ops if op_id.startswith("cat-")) == [
        "cat-suites_api.txt",
        "cat-suites_unit.txt",
    ]
    assert [ops[f"count-{n}"].output for n in (1, 2, 3)] == [f"n={n} i={n}" for n in (1, 2, 3)]
    assert ops["read"].group == ""
    assert ops["read"].output.startswith("three=9")
    assert set(ops["read"].after) == set(ops) - {"read"}
    assert all(op.state is OpState.SUCCEEDED for op in status.ops)


# ------------------------------------------------ against the Rust expansion


def digest(client: Client, batch_id: str) -> Dict[str, Any]:
    """What the coordinator knows of each op: enough to tell two expansions
    apart (ids, order of `after`, groups, kinds, what each printed)."""
    status = client.wait(batch_id, timeout=60)
    return {op.id: (op.kind, sorted(op.after), op.group, op.state, op.output) for op in status.ops}


@pytest.mark.parametrize("source", ["e2e", "mixed", "examples/matrix.yaml"])
def test_the_python_expansion_is_the_rust_one(
    client: Client, cluster: Cluster, namespace: str, source: str
) -> None:
    if source == "e2e":
        path = write_e2e_batch(cluster, namespace)
    elif source == "mixed":
        path = cluster.root / f"mixed-{uuid.uuid4().hex[:8]}.json"
        path.write_text(
            json.dumps(
                {
                    "name": "mixed",
                    "namespace": namespace,
                    "ops": [
                        {
                            "id": "m",
                            "kind": "shell",
                            "foreach": [{"f": "a b", "g": 1.5}, {"f": "${secret.x}", "g": True}],
                            "args": {
                                "cmd": "printf '[%s]' \"${item.f}\" ${item.g} '${index}'",
                                "env": {"OTHER": "${item.f}"},
                            },
                            "store_as": "m/${index}",
                        },
                        {
                            "id": "e",
                            "kind": "echo",
                            "foreach": ["1", "01", "a/b", "-"],
                            "args": {"text": "${item}${index}$${item}"},
                        },
                        {"id": "last", "kind": "echo", "after": ["m", "e"], "args": {"text": "x"}},
                    ],
                }
            )
        )
    else:
        # The example's commands read the repository: run the copy under
        # the workers' root, beside the files its glob lists.
        example = (EXAMPLES / "matrix.yaml").read_text()
        path = cluster.root / "examples" / "matrix.yaml"
        path.parent.mkdir(exist_ok=True)
        for copied in (EXAMPLES).glob("*.yaml"):
            (path.parent / copied.name).write_text(copied.read_text())
        path.write_text(example.replace("name: matrix", f"name: matrix\nnamespace: {namespace}"))
    python_id = client.submit_file(path)
    submitted = cluster.volley("submit", str(path))
    assert submitted.returncode == 0, submitted.stderr
    rust_id = submitted.stdout.split()[-1] if submitted.stdout.split() else ""
    python_ops = digest(client, python_id)
    rust_ops = digest(client, rust_id)
    assert list(python_ops) == list(rust_ops)
    assert python_ops == rust_ops
    assert any(group for _, _, group, _, _ in python_ops.values())


BAD_FILES = [
    "ops:\n  - id: t\n    kind: echo\n    foreach: [{s: a}, {n: b}]\n"
    '    args: {text: "${item.s}"}\n',
    "ops:\n  - id: t\n    kind: noop\n    foreach: {range: [0, 9999999999]}\n",
    "ops:\n  - id: t\n    kind: noop\n    foreach: {range: [3, 1]}\n",
    "ops:\n  - id: t-a\n    kind: noop\n  - id: t\n    kind: noop\n    foreach: [a, b]\n",
    'ops:\n  - id: t\n    kind: shell\n    foreach: [a]\n    args: {cmd: "echo \\\\${item}"}\n',
    "ops:\n  - id: t\n    kind: shell\n    foreach: [a]\n"
    '    args: {cmd: "${item}", env: {VOLLEY_ITEM: x}}\n',
    'ops:\n  - id: t\n    kind: noop\n    foreach: {glob: "a/[b"}\n',
    'ops:\n  - id: t\n    kind: noop\n    foreach: {glob: "a/{b,{c}"}\n',
    'ops:\n  - id: t\n    kind: noop\n    foreach: {glob: "a/b,c}"}\n',
    'ops:\n  - id: t\n    kind: noop\n    foreach: {glob: "a/{b,{c,d}}"}\n',
    'ops:\n  - id: t\n    kind: noop\n    foreach: {glob: "a/[z-a]"}\n',
    'ops:\n  - id: t\n    kind: noop\n    foreach: {glob: "a\\\\"}\n',
    'ops:\n  - id: t\n    kind: noop\n    foreach: {glob: "x/../y"}\n',
    'ops:\n  - id: t\n    kind: noop\n    foreach: {glob: "none/*.txt"}\n',
    "ops:\n  - id: t\n    kind: noop\n    foreach: [[1]]\n",
    "ops:\n  - id: t\n    kind: noop\n    foreach: [{a: [1]}]\n",
    "ops:\n  - id: t\n    kind: noop\n    foreach: {sql: x}\n",
    'ops:\n  - id: t\n    kind: noop\n    foreach: ["a\\0"]\n',
    "ops:\n  - id: t\n    kind: noop\n    foreach: [x]\n    store_as: ${item.k}\n",
    'ops:\n  - id: t\n    kind: shell\n    foreach: ["1; touch x"]\n'
    '    args: {cmd: "echo $((${item} + 1))"}\n',
    'ops:\n  - id: t\n    kind: shell\n    foreach: [{n: "2\\tx\'\\""}]\n'
    '    args: {cmd: "echo $(( $(echo 1) + ${item.n} ))"}\n',
    '{"ops": [\n {"id": "t", "kind": "noop",\n  "foreach": {"range": [1]}}]}',
]


@pytest.mark.parametrize("text", BAD_FILES)
def test_a_bad_foreach_is_refused_in_the_rust_clients_words(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InvalidBatch) as caught:
        read_batch_file(path)
    python_error = str(caught.value)
    assert f"{path}: op `t" in python_error, python_error
    # `volley run` refuses the file before running anything (exit 2).
    rust = subprocess.run(
        [str(volley_bin()), "run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert rust.returncode == 2, rust.stderr
    assert python_error in rust.stderr, f"python: {python_error}\nrust: {rust.stderr}"


GLOBS = [
    "**",
    "*",
    "**/*.txt",
    "d/**",
    "d/**/x*",
    "{a,d/*}.txt",
    "[a-c]*",
    "[!a-c]*.txt",
    "d/*/e.txt",
    ".*",
    "**/.h*",
    "d/{e,f}/**",
    "d/**/*.{txt,md}",
    "d/f/e[.]md",
    "?.txt",
    "**/x y*",
    "d/{f/{e,z},g}*",
]


def test_a_glob_lists_the_files_the_rust_client_lists(tmp_path: Path) -> None:
    for name in [
        "a.txt",
        "b.txt",
        "c.md",
        ".hidden.txt",
        "z.txt",
        "d/e.txt",
        "d/x1.txt",
        "d/f/e.md",
        "d/f/e.txt",
        "d/f/x y.txt",
        "d/g.txt",
        "d/.h/deep.txt",
        "./a.txt,b.txt",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    ops = "".join(
        f"  - id: g{number}\n    kind: echo\n    foreach: {{glob: {json.dumps(pattern)}}}\n"
        f'    args: {{text: "${{index}}:${{item}}"}}\n'
        for number, pattern in enumerate(GLOBS)
    )
    path = tmp_path / "globs.yaml"
    path.write_text(f"name: globs\nops:\n{ops}")
    rust = subprocess.run(
        [str(volley_bin()), "run", str(path), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert rust.returncode == 0, rust.stderr
    rust_ops = [(op["id"], op["group"], op["output"]) for op in json.loads(rust.stdout)["ops"]]
    python_ops = [(op.id, op.group, args(op)["text"]) for op in read_batch_file(path).ops]
    assert python_ops == rust_ops


def test_plain_yaml_items_read_as_the_rust_client_reads_them(tmp_path: Path) -> None:
    # PyYAML reads YAML 1.1 (`yes` is true, `010` is 8, `1e3` a string);
    # the Rust client YAML 1.2: a foreach's items are read its way.
    items = (
        "[yes, on, 010, 0o17, 1_000, 0x1F, 1e3, .5, 1:30, +5, 0b11, 1.0, 2.50, -0, True, TRUE,"
        " 12e03, 0.1e-7, 1E5, 2001-12-14, -0x10, 18446744073709551615, 1e300, 1.5e-300,"
        " 123456789e10, 0.00001234, 'yes', é, ~x]"
    )
    path = tmp_path / "items.yaml"
    path.write_text(
        f"ops:\n  - id: y\n    kind: echo\n    foreach: {items}\n"
        '    args: {text: "${item}"}\n'
        "  - id: m\n    kind: echo\n    foreach: [{a: yes, b: 010}]\n"
        '    args: {text: "${item.a} ${item.b}"}\n'
    )
    rust = subprocess.run(
        [str(volley_bin()), "run", str(path), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert rust.returncode == 0, rust.stderr
    rust_ops = [(op["id"], op["output"]) for op in json.loads(rust.stdout)["ops"]]
    python_ops = [(op.id, args(op)["text"]) for op in read_batch_file(path).ops]
    assert python_ops == rust_ops
    assert python_ops[0] == ("y-1", "yes")
