"""An outside consumer that knows only the published JSON Schema.

Reads every message of the events stream with nats-py (a JetStream pull consumer), validates
each against events/schema/lifecycle-event.schema.json with jsonschema, and prints one JSON summary
line: {"validated": N, "types": {...}, "processes": [...]}. With --stdin it validates JSON
lines from standard input instead (the output of `pc-eventd watch --json`). Exits 1 on the
first payload that does not validate, naming it.

    python tests/schema_client.py --nats-url nats://127.0.0.1:4222 --schema events/schema/lifecycle-event.schema.json
    pc-eventd watch --all --json | python tests/schema_client.py --stdin --schema ...
"""

import argparse
import asyncio
import collections
import json
import sys

import jsonschema
import nats


def validator(path):
    with open(path, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def check(validate, payload, where):
    event = json.loads(payload)
    errors = sorted(validate.iter_errors(event), key=str)
    if errors:
        print(f"{where}: {errors[0].message}\n{payload}", file=sys.stderr)
        sys.exit(1)
    return event


def summary(events):
    return {
        "validated": len(events),
        "types": dict(collections.Counter(e["type"] for e in events)),
        "processes": sorted({f'{e["namespace"]}/{e["process"]}' for e in events}),
    }


async def from_stream(url, stream, validate):
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(stream)
    total = info.state.messages
    # Lifecycle events only: loss markers live under the `_pc-eventd` namespace token.
    sub = await js.pull_subscribe("core.process.>", stream=stream)
    events = []
    seen = 0
    while seen < total:
        for msg in await sub.fetch(min(256, total - seen), timeout=10):
            seen += 1
            await msg.ack()
            if msg.subject.split(".")[2] == "_pc-eventd":
                continue
            events.append(check(validate, msg.data.decode(), msg.subject))
    await nc.close()
    return events


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--schema", required=True)
    parser.add_argument("--nats-url")
    parser.add_argument("--stream", default="PROCESS_EVENTS")
    parser.add_argument("--stdin", action="store_true")
    args = parser.parse_args()
    validate = validator(args.schema)
    if args.stdin:
        events = [
            check(validate, line, f"line {n}")
            for n, line in enumerate(sys.stdin, 1)
            if line.strip()
        ]
    else:
        events = asyncio.run(from_stream(args.nats_url, args.stream, validate))
    print(json.dumps(summary(events)))


if __name__ == "__main__":
    main()
