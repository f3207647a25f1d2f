"""A subcommand, ``tunesmith rows FILE``: how many rows a JSONL file has and which fields.

``arguments`` adds the options; ``run`` does the work and returns the exit code. A user's
mistake raises a tunesmith error, which the CLI prints as one line with exit 2."""

from __future__ import annotations

import json


def arguments(parser) -> None:
    parser.add_argument("file", help="a JSONL file")


def run(args, plugins) -> int:
    from tunesmith import DataError

    rows, fields = 0, {}
    try:
        with open(args.file, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"not JSON: {exc.msg}", file=args.file, line=number) from None
                if not isinstance(row, dict):
                    raise DataError("a row must be a JSON object", file=args.file, line=number)
                rows += 1
                for key in row:
                    fields[key] = fields.get(key, 0) + 1
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", file=args.file) from None
    print(json.dumps({"rows": rows, "fields": fields}))   # results on stdout
    return 0
