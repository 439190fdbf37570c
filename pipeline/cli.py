"""``anonpipe``: gdcmanon's command line, plus the pipeline's options.

The parser copies gdcmanon 3.0.21's grammar (groups named after its help sections); unlike
gdcmanon, unknown options, conflicting ciphers and repeated single-valued options are errors.
``main`` is the only place that turns exceptions into exit codes.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import __version__
from pipeline.exits import Exit, of_argparse
from tasks.errors import AnonpipeError, UsageError

if TYPE_CHECKING:
    from pipeline.options import Run


#: The ten PS3.15 E.1-1 Options (names as in tasks.profile.OPTIONS, dashes for underscores)
OPTION_FLAGS = (
    ("--retain-safe-private", "keep private attributes of Table E.3.10-1 (Retain Safe Private)"),
    ("--retain-uids", "keep UIDs (Retain UIDs)"),
    ("--retain-device-identity", "keep device identifiers (Retain Device Identity)"),
    ("--retain-institution-identity", "keep institution identifiers (Retain Institution Identity)"),
    ("--retain-patient-characteristics",
     "keep sex, age, size, weight... (Retain Patient Characteristics)"),
    ("--retain-long-full-dates", "keep dates and times (Retain Longitudinal Full Dates)"),
    ("--retain-long-modified-dates",
     ("shift dates by a per-patient offset derived from the secret (Retain Longitudinal "
      "Modified Dates)")),
    ("--clean-descriptors",
     ("keep descriptions, emptied unless the profile's clean_allow lists the value "
      "(Clean Descriptors)")),
    ("--clean-structured-content",
     ("keep SR and acquisition context content, cleaned item by item (Clean Structured "
      "Content)")),
    ("--clean-graphics", "keep overlays, curves and graphic annotations (Clean Graphics)"),
)


class _Formatter(argparse.HelpFormatter):
    """Wrapped help texts, the examples of the epilog as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples"):
            return text
        return super()._fill_text(text, width, indent)


class _Once(argparse.Action):
    """Store an option that may be given once (gdcmanon aborts on a second -c, -k, ...)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice")
        setattr(namespace, self.dest, values)


#: the epilog of --help: the manpage's examples, then the pipeline's (the README runs them)
EXAMPLES = """\
examples (gdcmanon's manpage):
  anonpipe --certificate certificate.pem -e original.dcm original_anonymized.dcm
  anonpipe --key privatekey.pem -d original_anonymized.dcm original_copy.dcm
  anonpipe --dumb --empty 10,10 --clear 10,20 --remove 10,40 --remove 10,1010 \\
      --replace 10,1030,10 012345.002.050.dcm out.dcm
  anonpipe --dumb --clear "0029,20,SIEMENS MEDCOM HEADER" input.dcm output.dcm
  anonpipe --dumb --remove PatientName --replace PatientID=ANON input.dcm output.dcm

examples (directories):
  anonpipe -c cert.pem -r --continue /data/in /data/out     # both passes, all cores
  anonpipe -c cert.pem -r --dry-run --plan plan.tsv /data/in /data/out
  anonpipe -c cert.pem -r --cluster slurm --store run.sqlite /data/in /data/out
  anonpipe-status run.sqlite                                 # progress, from anywhere
  anonpipe -c cert.pem -r --retry-failed --store run.sqlite /data/in /data/out
  anonpipe-audit --store run.sqlite /data/out                # identifiers left?
  anonpipe-crosswalk run.sqlite --csv crosswalk.csv          # original -> replacement

exit status: 0 every file written (or already done; with --continue, files not DICOM
or refused are skipped), 1 a file failed or the run stopped, 2 a usage error (nothing
written)."""


class _Parser(argparse.ArgumentParser):
    """argparse, plus "did you mean" for a mistyped option."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            known = [o for action in self._actions for o in action.option_strings
                     if o.startswith("--")]
            hints = []
            for word in message.split(":", 1)[1].split():
                name = word.split("=", 1)[0]
                if name.startswith("-"):
                    import difflib  # only for a mistyped option

                    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
                    if close:
                        hints.append(f"{name}: did you mean {close[0]}?")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="anonpipe",
        usage="anonpipe [options] file-in file-out\n       anonpipe [options] dir-in dir-out",
        description="PS3.15 E.1 Basic Application Level Confidentiality Profile: de-identify "
        "(-e), re-identify (-d) and dumb-mode edits, compatible with GDCM's gdcmanon, run as "
        "a two-pass parallel pipeline for directories.",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
        allow_abbrev=False,
        add_help=False,
    )
    parser.add_argument("paths", nargs="*", metavar="IN OUT",
                        help="input and output file or directory")

    mode = parser.add_argument_group("Options (one operating mode)")
    mode.add_argument("-e", "--de-identify", dest="mode", action="append_const", const="e",
                      help="de-identify DICOM (default)")
    mode.add_argument("-d", "--re-identify", dest="mode", action="append_const", const="d",
                      help="re-identify DICOM")
    mode.add_argument("--dumb", dest="mode", action="append_const", const="dumb",
                      help="dumb mode anonymizer (--empty/--clear/--remove/--replace)")

    io = parser.add_argument_group("Options")
    io.add_argument("-i", "--input", action=_Once, help="DICOM filename / directory")
    io.add_argument("-o", "--output", action=_Once, help="DICOM filename / directory")
    io.add_argument("-r", "--recursive", action="store_true",
                    help="recursively process (sub-)directories")
    io.add_argument("--continue", dest="continue_on_error", action="store_true",
                    help="do not stop on a bad file: report it and go on")
    io.add_argument("--root-uid", action=_Once,
                    help="root UID of new UIDs (env GDCM_ROOT_UID; default 2.25)")
    io.add_argument("--resources-path", action=_Once,
                    help="accepted for gdcmanon compatibility (Part3.xml is not needed)")
    io.add_argument("-k", "--key", action=_Once, help="path to RSA private key (PEM)")
    io.add_argument("-c", "--certificate", action="append",
                    help="path to recipient certificate (PEM or DER); repeat for several")
    io.add_argument("-p", "--password", action=_Once,
                    help="-e: add a password recipient; -d: open it, or unlock an encrypted -k "
                    "(visible in ps: prefer --password-file or $ANONPIPE_PASSWORD)")
    io.add_argument("--password-file", action=_Once, metavar="FILE",
                    help="read -p's password from the first line of FILE")
    io.add_argument("--allow-weak-keys", action="store_true",
                    help="accept RSA certificates under 2048 bits or without keyEncipherment "
                    "in their key usage (test keys only)")

    crypto = parser.add_argument_group("Encryption algorithm options")
    crypto.add_argument("--crypto", action=_Once, metavar="{openssl,openssl-p7}",
                        help="accepted for compatibility; both give the same CMS")
    for flag, name, text in (
        ("--des", "des3", "Triple DES (gdcmanon takes --des as --des3; so do we)"),
        ("--des3", "des3", "Triple DES"),
        ("--aes128", "aes128", "AES 128"),
        ("--aes192", "aes192", "AES 192"),
        ("--aes256", "aes256", "AES 256 (default)"),
    ):
        crypto.add_argument(flag, dest="ciphers", action="append_const", const=name, help=text)

    dumb = parser.add_argument_group("Dumb mode options")
    dumb.add_argument("--empty", action="append", default=[], metavar="g,e[,CREATOR]|KEYWORD",
                      help="DICOM tag(s) to empty (created when absent)")
    dumb.add_argument("--clear", action="append", default=[], metavar="g,e[,CREATOR]|KEYWORD",
                      help="DICOM tag(s) to clear (only when present)")
    dumb.add_argument("--remove", action="append", default=[], metavar="g,e[,CREATOR]|KEYWORD",
                      help="DICOM tag(s) to remove")
    dumb.add_argument("--replace", action="append", default=[],
                      metavar="g,e[,CREATOR]=VALUE|KEYWORD=VALUE",
                      help="DICOM tag(s) to replace (g,e=VALUE or g,e,VALUE; a public "
                      "attribute also by its keyword: PatientID=ANON)")
    dumb.add_argument("--force", action="store_true",
                      help="allow emptying/removing Type 1 attributes in dumb mode; in "
                      "single-file mode, overwrite an output file that is not de-identified; in "
                      "directory mode, run into an output holding files this store did not "
                      "write (they are removed)")

    prof = parser.add_argument_group("Profile options (anonpipe)")
    prof.add_argument("--profile", action=_Once, metavar="NAME|PATH",
                      help="de-identification profile: basic (default, PS3.15 Table E.1-1), "
                      "gdcmanon (its 48 attributes), or a site profile YAML file")
    for flag, text in OPTION_FLAGS:
        prof.add_argument(flag, dest="profile_options", action="append_const",
                          const=flag[2:].replace("-", "_"), help=text)
    prof.add_argument("--pixels", choices=("clean", "refuse", "keep"), action=_Once,
                      help="files whose pixels may show text (burned-in check, region rules): "
                      "clean (default: blank rule boxes and OCR-found text, verify by OCR), "
                      "refuse them, or keep their pixels as they are")
    prof.add_argument("--allow-burned-in", action="store_true",
                      help="the older name of --pixels keep")
    prof.add_argument("--pixels-preview", action=_Once, metavar="DIR",
                      help="write a before/after PNG of each file cleaned, blanked boxes "
                      "outlined (it shows the burned-in text: protect DIR)")
    prof.add_argument("--explain", action=_Once, metavar="FILE",
                      help="print what the profile does to each attribute of FILE and why, "
                      "then exit (no output file, no values shown)")
    prof.add_argument("--irreversible", action="store_true",
                      help="-e without (0400,0500), (0012,0062), (0012,0063): no certificate needed")
    prof.add_argument("--secret-file", action=_Once,
                      help="HMAC secret for replacement values (must exist unless --new-secret)")
    prof.add_argument("--new-secret", action="store_true",
                      help="create the --secret-file (0600) when it does not exist")

    pipe = parser.add_argument_group("Pipeline options (anonpipe, directory mode)")
    pipe.add_argument("--store", action=_Once, help="sqlite store of the run (default: state folder)")
    pipe.add_argument("--workers", type=int, action=_Once,
                      help="local workers (default: all cores; 1: the work runs in this "
                      "process, as with 0 unless --dashboard asks for a cluster; 0: inline, "
                      "no dask)")
    pipe.add_argument("--scheduler", action=_Once,
                      help="tls://HOST:PORT of a dask scheduler (TLS settings from dask's "
                      "configuration, distributed.comm.tls)")
    pipe.add_argument("--local-pool", choices=("dask", "processes"), default=None,
                      help="local workers: the process pool (default: starts in ~0.1 s, "
                      "least overhead per file) or a dask LocalCluster (the default with "
                      "--dashboard)")
    pipe.add_argument("--dashboard", action="store_true",
                      help="run every pass with workers on a local dask cluster that serves "
                      "its dashboard on a free port, and print the address (a fixed one: "
                      "dashboard_address in a cluster config); off by default: it costs "
                      "~0.3 s of start-up")
    pipe.add_argument("--cluster", action=_Once, metavar="NAME|PATH.yaml",
                      help="workers as batch jobs: a cluster config by name (slurm, pbs, "
                      "local, scheduler: configs/cluster/NAME.yaml) or the path of one")
    pipe.add_argument("--print-job-script", action="store_true",
                      help="print the job script --cluster would submit, then exit")
    pipe.add_argument("--output-names", choices=("mirror", "uid"), default=None,
                      help="mirror: the input's folder and file names (the default; refused "
                      "when one holds a patient identifier); uid: PSEUDONYM/STUDY/SERIES/"
                      "INSTANCE.dcm, named by the replacement values")
    pipe.add_argument("--keep-names", action="store_true",
                      help="mirror the input's names even when they hold patient identifiers")
    pipe.add_argument("--driver", action="store_true",
                      help="with --print-job-script and IN OUT: print a batch script (sbatch "
                      "or qsub) that runs this whole command as a job, which submits the "
                      "worker jobs itself")
    pipe.add_argument("--follow-symlinks", action="store_true",
                      help="follow input links that point outside the input folder (skipped "
                      "by default, with a reason)")
    pipe.add_argument("--sync", action="store_true",
                      help="return only once every output is on disk (by default the run "
                      "ends when the outputs are written, as cp does; a restart of the "
                      "machine before the kernel wrote them out makes the next run write "
                      "them again)")
    pipe.add_argument("--scan-only", action="store_true", help="stop after pass 1 (scan)")
    pipe.add_argument("--dry-run", action="store_true",
                      help="scan and plan, write no output: the sorted plan (input -> output "
                      "paths) goes to --plan FILE or beside the report (0600), or to stdout "
                      "with -D")
    pipe.add_argument("--plan", action=_Once, metavar="FILE",
                      help="--dry-run: write the plan to FILE (0600)")
    pipe.add_argument("--files-from", action=_Once, metavar="LIST",
                      help="run only the files LIST names (paths relative to the input, one "
                      "a line; text after a tab is ignored, so a run's failed list works)")
    pipe.add_argument("--retry-failed", action="store_true",
                      help="run only the files the store's last run did not write (failed, "
                      "refused, not DICOM), with the options given now")
    pipe.add_argument("--insecure-scheduler", action="store_true",
                      help="accept a plain tcp:// --scheduler (anyone who reaches it can run "
                      "code in its workers and read the secret)")
    pipe.add_argument("--worker-timeout", type=float, action=_Once, metavar="SECONDS",
                      help="stop the run when no worker has connected after SECONDS, or "
                      "none has been left for SECONDS (worker jobs, --scheduler; default: "
                      "wait, saying why every few seconds)")

    general = parser.add_argument_group("General Options")
    general.add_argument("-V", "--verbose", dest="verbosity", action="store_const", const=2,
                         help="verbose mode (warning+error)")
    general.add_argument("-W", "--warning", dest="verbosity", action="store_const", const=1,
                         help="warning mode")
    general.add_argument("-E", "--error", dest="verbosity", action="store_const", const=0,
                         help="error mode")
    general.add_argument("-D", "--debug", dest="verbosity", action="store_const", const=3,
                         help="debug mode (may print patient data and file names)")
    general.add_argument("-h", "--help", action="help", help="print this help text and exit")
    general.add_argument("-v", "--version", action="version",
                         version=f"anonpipe {__version__} (gdcmanon 3.0.21 compatible)",
                         help="print version information and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 a file failed, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return of_argparse(exc.code)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for --driver job scripts
    return _run(args)


def run() -> None:
    """The ``anonpipe`` command: :func:`main`, then :func:`leave`."""
    leave(main())


def leave(code: int) -> None:
    """Exit with ``code``, without tearing the interpreter down when nothing needs it.

    A normal exit frees every object of every module one by one (~12 ms after a directory
    run, a twentieth of a short run), where the kernel frees the process at once.  That is
    skipped only when a normal exit would do nothing else: no other thread left to wait
    for and no exit handler registered (a run with dask registers ``logging``'s, and then
    exits normally).  Everything the run wrote is closed by then; standard output and
    error are flushed here.
    """
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon]
    handlers = getattr(atexit, "_ncallbacks", lambda: 1)()
    if others or handlers:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the normal exit says so
        sys.exit(code)
    os._exit(code)


def _run(args: argparse.Namespace) -> int:
    from pipeline import collector

    try:
        with collector.start_up():
            from pipeline.options import build_run

            if args.explain is not None:
                return _explain(args)
            run = build_run(args)
        return _execute(run)
    except UsageError as exc:
        print(f"anonpipe: {exc}", file=sys.stderr)
        return Exit.USAGE
    except AnonpipeError as exc:
        print(f"anonpipe: {exc}", file=sys.stderr)
        return Exit.FAILED
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (pipeline.signals)
        from pipeline.signals import exit_status, signal_name

        print(f"anonpipe: interrupted by {signal_name(exc)}; rerun the same command to "
              "resume", file=sys.stderr)
        return exit_status(exc)


def _execute(run: Run) -> int:
    """Carry ``run`` out.  Only a directory run imports the listing and the pools (a
    single file's run would spend a third of its time importing them)."""
    from pipeline.job import TreeJob
    from pipeline.run import execute

    if not isinstance(run, TreeJob):
        return execute(run)
    from pipeline import earlypool

    # forked from the driver as it is now: the options read, the profile and its pixel
    # rules loaded (pipeline.earlypool)
    earlypool.start(run)
    try:
        return execute(run)
    finally:
        earlypool.close()


def _explain(args: argparse.Namespace) -> int:
    from pipeline.options import explain_settings
    from tasks.engine import read_input
    from tasks.explain import explain_bytes

    if args.paths or args.input or args.output:
        raise UsageError("--explain FILE takes no other input or output")
    settings = explain_settings(args)
    try:
        text = explain_bytes(read_input(Path(args.explain)), settings)
    except AnonpipeError as exc:
        raise type(exc)(f"{args.explain}: {exc}") from None
    sys.stdout.write(text)
    return Exit.OK


if __name__ == "__main__":  # pragma: no cover
    run()
