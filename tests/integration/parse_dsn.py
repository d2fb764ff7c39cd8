#!/usr/bin/env python3
"""Reads one DSN (RFC 3464) with Python's email package and prints what a
mail client or a bounce processor would find in it, as JSON, so that the
integration tests check mtad's DSNs with a parser that is not ours.

Usage: parse_dsn.py FILE (a Maildir file: LF or CRLF line ends).

Output: {"content_type", "report_type", "subject", "from", "to",
"parts": [content types], "text": the first part, "per_message": {field:
value}, "recipients": [{field: value}]}, field names as written (case
kept), values unfolded. Exits 1 when the message is not a multipart/report
with a delivery-status part.
"""

import email
import email.policy
import json
import sys


def fields(block):
    """The fields of one block of the delivery-status part, unfolded."""
    return {name: " ".join(str(value).split()) for name, value in block.items()}


def main():
    with open(sys.argv[1], "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    if msg.get_content_type() != "multipart/report":
        print(f"not a multipart/report: {msg.get_content_type()}", file=sys.stderr)
        return 1
    parts = list(msg.iter_parts())
    status = [
        p
        for p in parts
        if p.get_content_type()
        in ("message/delivery-status", "message/global-delivery-status")
    ]
    if not status:
        print("no delivery-status part", file=sys.stderr)
        return 1
    # The email package reads message/delivery-status as a list of
    # header blocks: the per-message fields, then one per recipient.
    blocks = status[0].get_payload()
    if not isinstance(blocks, list) or not blocks:
        print("the delivery-status part has no field blocks", file=sys.stderr)
        return 1
    out = {
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "subject": str(msg.get("Subject", "")),
        "from": str(msg.get("From", "")),
        "to": str(msg.get("To", "")),
        "parts": [p.get_content_type() for p in parts],
        "text": parts[0].get_content() if parts[0].get_content_maintype() == "text" else "",
        "per_message": fields(blocks[0]),
        "recipients": [fields(b) for b in blocks[1:]],
    }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
