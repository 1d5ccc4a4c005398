#!/usr/bin/env python3
"""Writes bonetriage(1) from the commands themselves: the JSON that `bonetriage --experimental-dump-help`
prints (ArgumentParser's description of every command, option and help text) and `bonetriage --version`.
Nothing here restates a command: a new option or command shows up in the man page at the next build.

    python3 tools/make_manpage.py .build/release/bonetriage > bonetriage.1
"""
import json
import subprocess
import sys

FILES = [
    ("/etc/bonetriage/bonetriage.toml", "The configuration (`bonetriage serve --check-config` checks it)."),
    ("/var/lib/bonetriage/worklist.sqlite", "The worklist: studies, triage results and the reviews' audit trail."),
    ("/var/lib/bonetriage/models/humerus.safetensors", "The default model."),
    ("/run/bonetriage/status", "The running daemon's counts, read by `bonetriage status` ([service] status_file)."),
]


def roff(text):
    """Text for a roff line: backslashes and hyphens escaped, no line starting as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # Non-ASCII as groff's own escapes, so that the page needs no preconv (groff -ww stays quiet).
    text = "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in text)
    lines = []
    for line in text.split("\n"):
        line = line.strip()
        if line.startswith(".") or line.startswith("'"):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def paragraphs(text):
    out = []
    for block in text.strip().split("\n\n"):
        if block.strip():
            out.append(".PP\n" + roff(" ".join(block.split())))
    return "\n".join(out)


def option_label(arg):
    names = arg.get("names") or []
    flags = []
    for n in names:
        prefix = {"long": "--", "short": "-", "longWithSingleDash": "-"}[n["kind"]]
        flags.append("\\fB" + roff(prefix + n["name"]) + "\\fR")
    value = arg.get("valueName")
    if arg["kind"] == "positional":
        return "\\fI" + roff(value or "argument") + "\\fR" + (" ..." if arg.get("isRepeating") else "")
    label = ", ".join(flags)
    if arg["kind"] == "option" and value:
        label += " \\fI" + roff(value) + "\\fR"
    return label


def synopsis(path, command):
    parts = ["\\fB" + roff(" ".join(path)) + "\\fR"]
    if command.get("subcommands"):
        parts.append("\\fIcommand\\fR")
    for arg in command.get("arguments") or []:
        if not arg.get("shouldDisplay", True) or {n["name"] for n in arg.get("names") or []} & {"help", "version"}:
            continue
        label = option_label(arg)
        parts.append("[" + label + "]" if arg.get("isOptional") else label)
    return " ".join(parts)


def describe_arguments(command):
    out = []
    for arg in command.get("arguments") or []:
        if not arg.get("shouldDisplay", True):
            continue
        text = arg.get("abstract") or ""
        if arg.get("discussion"):
            text += " " + arg["discussion"]
        if arg.get("defaultValue") not in (None, "", "false"):
            text += " (default: " + arg["defaultValue"] + ")"
        out.append(".TP\n" + option_label(arg) + "\n" + roff(" ".join(text.split())))
    return "\n".join(out)


def commands(path, command):
    """Every displayed subcommand, depth first, with its path: (["bonetriage", "model", "join"], info)."""
    for sub in command.get("subcommands") or []:
        if not sub.get("shouldDisplay", True) or sub["commandName"] == "help":
            continue
        yield path + [sub["commandName"]], sub
        yield from commands(path + [sub["commandName"]], sub)


def main():
    binary = sys.argv[1]
    tool = json.loads(subprocess.run([binary, "--experimental-dump-help"], check=True, capture_output=True, text=True).stdout)
    version = subprocess.run([binary, "--version"], check=True, capture_output=True, text=True).stdout.strip()
    root = tool["command"]
    name = root["commandName"]
    out = [
        '.TH %s 1 "" "%s" "BoneTriage"' % (name.upper(), roff(version)),
        ".SH NAME",
        "%s \\- %s" % (name, roff(root.get("abstract", ""))),
        ".SH SYNOPSIS",
        synopsis([name], root),
        ".SH DESCRIPTION",
        paragraphs(root.get("discussion", "")),
        ".SH COMMANDS",
    ]
    for path, command in commands([name], root):
        out.append('.SS "%s"' % roff(" ".join(path[1:])))
        out.append(synopsis(path, command))
        out.append(".PP\n" + roff(command.get("abstract", "")))
        if command.get("discussion"):
            out.append(paragraphs(command["discussion"]))
        if not command.get("subcommands"):
            out.append(describe_arguments(command))
    out.append(".SH OPTIONS")
    out.append(describe_arguments(root))
    out.append(".SH FILES")
    for path, what in FILES:
        out.append(".TP\n.I %s\n%s" % (roff(path), roff(what)))
    out.append(".SH SEE ALSO")
    out.append("\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBstorescu\\fR(1)")
    sys.stdout.write("\n".join(line for line in out if line) + "\n")


if __name__ == "__main__":
    main()
