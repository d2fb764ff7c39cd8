#!/usr/bin/python3
"""Verifies every DKIM-Signature of a message with dkimpy, an
implementation independent of mtad's.

    dkim_verify.py MESSAGE-FILE NAME=RECORD...

NAME is `<selector>._domainkey.<domain>`, RECORD its TXT value
(`v=DKIM1; k=...; p=...`); no DNS is asked. Prints one JSON object per
line for each signature, in the order of the header: {"d": ..., "s": ...,
"ok": true|false}. Exits 0 when there is at least one signature and all
verify, 1 otherwise.
"""
import json
import sys

import dkim


def main():
    message = open(sys.argv[1], "rb").read()
    records = {}
    for arg in sys.argv[2:]:
        name, record = arg.split("=", 1)
        records[name.lower().rstrip(".") + "."] = record.encode()

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        return records.get(name.lower().rstrip(".") + ".")

    d = dkim.DKIM(message)
    headers = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    all_ok = bool(headers)
    for i, value in enumerate(headers):
        tags = dict(
            t.strip().split("=", 1)
            for t in value.decode().replace("\r\n", "").split(";")
            if "=" in t
        )
        try:
            ok = bool(d.verify(idx=i, dnsfunc=dnsfunc))
        except Exception as e:  # dkimpy raises on malformed input
            print("error: %s" % e, file=sys.stderr)
            ok = False
        all_ok = all_ok and ok
        print(json.dumps({"d": tags.get("d", "").strip(), "s": tags.get("s", "").strip(), "ok": ok}))
    sys.exit(0 if all_ok else 1)


main()
