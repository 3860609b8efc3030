#!/usr/bin/env python3
"""Fill a manual page template (man/*.in) from the --help of the binary it documents, so the
page lists exactly the settings and commands the binary has:

    gen-man.py TEMPLATE OUTPUT BINARY VERSION

@SETTINGS@ becomes one tagged paragraph per setting of "Settings (environment variables):",
@COMMANDS@ the "Commands:" block as it is printed, @VERSION@ the version."""
import re
import subprocess
import sys


def roff(text):
    """text safe in a roff line: backslashes doubled, a leading dot or quote escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def section(help_text, heading):
    lines = help_text.splitlines()
    start = lines.index(heading) + 1
    out = []
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


def settings(help_text):
    out = []
    for line in section(help_text, "Settings (environment variables):"):
        m = re.match(r"^  (\S+)\s+(.*?)(?: \[default: (.*)\])?$", line)
        if not m:
            sys.exit(f"gen-man: cannot read the setting line {line!r}")
        name, what, default = m.groups()
        out += [".TP", f".B {name}", roff(what[:1].upper() + what[1:] + ".")]
        if default is not None:
            out.append(f"Default: \\fB{roff(default)}\\fR.")
    return "\n".join(out)


def commands(help_text):
    body = [roff(line) if line.strip() else "" for line in section(help_text, "Commands:")]
    return "\n".join([".RS 2", ".nf", *body, ".fi", ".RE"])


def main():
    template, output, binary, version = sys.argv[1:5]
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True,
                               check=True).stdout
    page = open(template).read().replace("@VERSION@", version)
    if "@SETTINGS@" in page:
        page = page.replace("@SETTINGS@", settings(help_text))
    if "@COMMANDS@" in page:
        page = page.replace("@COMMANDS@", commands(help_text))
    with open(output, "w") as f:
        f.write(page)


if __name__ == "__main__":
    main()
