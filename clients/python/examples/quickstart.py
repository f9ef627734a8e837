"""Submit a batch from a dict, watch its events, print its results.

Usage: python quickstart.py [URL]  (default: $VOLLEY_COORDINATOR or 127.0.0.1:7070;
the token from $VOLLEY_TOKEN or $VOLLEY_TOKEN_FILE)
"""
import sys

from volley import Client

batch = {
    "name": "quickstart",
    "ops": [
        {"id": "greet", "kind": "echo", "args": {"text": "hello"}},
        {"id": "shout", "kind": "shell", "after": ["greet"],
         "args": {"cmd": "echo '${ops.greet.output}, world' | tr a-z A-Z"}},
        {"id": "save", "kind": "memory.put",
         "args": {"key": "greeting", "value": "${ops.shout.output}"}},
    ],
}

with Client(sys.argv[1] if len(sys.argv) > 1 else None) as client:
    batch_id = client.submit(batch)
    for event in client.watch(batch_id):
        print(f"{event.seq:>3} {event.kind:<15} {event.op_id}")
    status = client.status(batch_id)
    for op in status.ops:
        print(f"{op.id:<6} {op.state:<10} {op.output.strip()!r}")
    print(f"{status.state} in {status.wall_ms} ms")
    sys.exit(0 if status.ok else 1)
