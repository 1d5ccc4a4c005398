#!/usr/bin/env python3
"""Send DICOM files with C-STORE over one association, using pynetdicom (an independent DICOM client).

The tests use it where DCMTK 3.6.7's storescu cannot help: it does not know the HTJ2K transfer syntaxes
(1.2.840.10008.1.2.4.201/.202/.203), so it cannot propose them. Each file's dataset is sent as it is in
the file (pynetdicom's chunked sending: the bytes after the File Meta header, never decoded or
re-encoded), on a presentation context for its SOP class and transfer syntax.

  store_with_pynetdicom.py --port 11112 --report out.json [--also 1.2.840.10008.1.2.1] FILE...

Proposes, per distinct (SOP class, transfer syntax) of the files, one context with that syntax, plus the
`--also` syntaxes after it. The report (JSON) lists what the receiver accepted per context and each
file's C-STORE status. Exit status: 0 when the association was accepted (whatever the statuses), 2 when
it was refused or aborted, 1 on a usage error.
"""
import argparse
import json
import sys

from pydicom import dcmread
from pynetdicom import AE, _config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--calling-ae", default="STORESCU")
    parser.add_argument("--called-ae", default="BONETRIAGE")
    parser.add_argument("--also", action="append", default=[], help="a further transfer syntax to propose with each context")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for the association, each DIMSE answer and the network")
    parser.add_argument("--report", required=True, help="where to write the JSON report")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    # Send each dataset's bytes straight from its file.
    _config.STORE_SEND_CHUNKED_DATASET = True

    pairs = []
    for path in args.files:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        if pair not in pairs:
            pairs.append(pair)
    if len(pairs) > 128:
        print("at most 128 presentation contexts per association", file=sys.stderr)
        return 1

    ae = AE(ae_title=args.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = args.timeout
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, [syntax] + [s for s in args.also if s != syntax])

    report = {"established": False, "accepted": [], "rejected": [], "results": []}
    assoc = ae.associate(args.host, args.port, ae_title=args.called_ae)
    if assoc.is_established:
        report["established"] = True
        report["accepted"] = [{"sop_class": str(c.abstract_syntax), "transfer_syntax": str(c.transfer_syntax[0])}
                              for c in assoc.accepted_contexts]
        report["rejected"] = [{"sop_class": str(c.abstract_syntax),
                               "result": c.status} for c in assoc.rejected_contexts]
        for path in args.files:
            entry = {"file": path, "status": None, "error": None}
            try:
                status = assoc.send_c_store(path)
                if status and "Status" in status:
                    entry["status"] = int(status.Status)
                else:
                    entry["error"] = "no C-STORE response (connection closed, aborted or timed out)"
            except Exception as error:  # a context not accepted for the file, a broken connection
                entry["error"] = f"{type(error).__name__}: {error}"
            report["results"].append(entry)
            if not assoc.is_established:
                break
        if assoc.is_established:
            assoc.release()
    report["aborted"] = assoc.is_aborted
    with open(args.report, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=1)
    return 0 if report["established"] else 2


if __name__ == "__main__":
    sys.exit(main())
