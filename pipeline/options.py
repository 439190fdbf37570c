"""Validate the command line once into a run description.

Past this module nothing re-checks user input: paths exist, the cipher is an enum, keys and
certificates are loaded (so a bad one fails before any file is touched), the root UID is
valid and the per-file operation is built.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import NamedTuple

from pipeline.job import MODE_FLAGS, PROCESSES_FROM, PROCESSES_FROM_BYTES, Mode, TreeJob, Tuning
from pipeline.state import (
    check_ancestors,
    check_folder,
    check_private_folder,
    default_secret_path,
    load_secret,
    state_dir,
    state_dir_path,
)
from tasks.crypto import (
    Cipher,
    EnvelopeEncryptor,
    certificate_fingerprint,
    load_certificate,
    recipient_problems,
)
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.errors import InputNotFoundError, ProfileError, UsageError
from tasks.model import FileOperation
from tasks.pixels.clean import DEFAULT_POLICY as DEFAULT_PIXEL_POLICY
from tasks.profile import DEFAULT_PROFILE, ProfileSpec, get_profile, load_profile
from tasks.uids import DEFAULT_ROOT, secret_fingerprint, validate_root

#: with --local-pool processes, smaller passes stay inline: the same break-evens as the
#: default's process-pool tier (pipeline.job)
PROCESSES_INLINE_BELOW = PROCESSES_FROM
PROCESSES_INLINE_BELOW_BYTES = PROCESSES_FROM_BYTES
CRYPTO_BACKENDS = ("openssl", "openssl-p7")
#: where ``-p``'s value may come from without showing in the process list
PASSWORD_ENV = "ANONPIPE_PASSWORD"


class SingleFileRun(NamedTuple):
    """One file, processed inline (no cluster start-up)."""

    mode: Mode
    src: Path
    dst: Path
    operation: FileOperation
    verbosity: int


class PrintJobScript(NamedTuple):
    cluster: str
    driver_command: list[str] | None = None  # --driver: the run to wrap in a job


Run = SingleFileRun | TreeJob | PrintJobScript


def build_run(args: argparse.Namespace) -> Run:
    """Turn parsed arguments into a validated run."""
    if args.driver and not args.print_job_script:
        raise UsageError("--driver goes with --print-job-script")
    if args.print_job_script:
        if not args.cluster:
            raise UsageError("--print-job-script needs --cluster NAME")
        return PrintJobScript(args.cluster, _driver_command(args) if args.driver else None)
    mode = _mode(args)
    src, dst = _paths(args)
    verbosity = 1 if args.verbosity is None else args.verbosity
    if args.resources_path is not None and not Path(args.resources_path).is_dir():
        raise UsageError(f"Specified Resources Path is not valid: {args.resources_path}")
    if args.crypto is not None and args.crypto not in CRYPTO_BACKENDS:
        raise UsageError(f"Cryptography library id not recognized: {args.crypto} "
                         f"(use {' or '.join(CRYPTO_BACKENDS)})")
    _check_mode_options(args, mode)
    listed: tuple[tuple[str, ...] | None, Path | None] = (None, None)
    if src.is_dir():
        _check_state_paths(args, src, dst)  # before the secret is created
        listed = _listed_files(args, dst), _plan(args)  # ... and so are these
    else:
        if args.files_from or args.retry_failed or args.plan:
            raise UsageError("--files-from, --retry-failed and --plan are for directory runs")
        if dst.exists() and dst.is_dir():
            dst = dst / src.name
        if _same_file(src, dst):
            raise UsageError("output is the input file: inputs are never modified")
        if not args.force:
            _check_overwrite(dst)
    operation, extra = _operation(args, mode)
    if src.is_dir():
        return _tree_job(args, mode, src, dst, operation, verbosity, extra)._replace(
            files=listed[0], plan=listed[1])
    return SingleFileRun(mode, src, dst, operation, verbosity)


def _driver_command(args: argparse.Namespace) -> list[str]:
    """This command line without the printing flags, run by this interpreter; its input
    must exist (the rest is checked when the job runs it)."""
    _mode(args)
    _paths(args)
    argv = [arg for arg in args.argv if arg not in ("--print-job-script", "--driver")]
    return [sys.executable, "-m", "pipeline.cli", *argv]


def _mode(args: argparse.Namespace) -> Mode:
    """The one operating mode (-e when none is given)."""
    modes = sorted(set(args.mode or ["e"]))
    if len(modes) > 1:
        raise UsageError("choose one operating mode: -e, -d or --dumb")
    return MODE_FLAGS[modes[0]]


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    positional = list(args.paths)
    src = args.input if args.input is not None else (positional.pop(0) if positional else None)
    dst = args.output if args.output is not None else (positional.pop(0) if positional else None)
    if positional:
        raise UsageError(f"unexpected extra argument: {positional[0]}")
    if src is None or dst is None:
        raise UsageError("need an input and an output (anonpipe [options] IN OUT)")
    source = Path(src)
    if not source.exists():
        reason = "dangling symbolic link" if source.is_symlink() else "no such file"
        raise InputNotFoundError(f"Could not find file: {src} ({reason})")
    return source, Path(dst)


def _check_overwrite(dst: Path) -> None:
    """Single-file mode writes over an existing ``dst`` only when it is a de-identified
    file ((0400,0500), or (0012,0062) YES, as every ``-e`` output has): swapped arguments
    (``anonpipe out.dcm original.dcm``) would otherwise destroy the original."""
    if not os.path.lexists(dst):
        return
    from tasks.inventory import scan_file

    if dst.is_symlink() or not dst.is_file():
        raise UsageError(f"output {dst} exists and is not a regular file: refused "
                         "(--force replaces it)")
    if not scan_file(dst).get("deidentified"):
        raise UsageError(f"output {dst} exists and is not a de-identified file: not "
                         "overwritten (swapped arguments? --force overwrites it)")


def _check_state_paths(args: argparse.Namespace, src: Path, dst: Path) -> None:
    """The store, the secret and the run reports link originals to pseudonyms: never
    inside the output (it gets released) nor the input (inputs are never modified)."""
    paths = [("state folder", state_dir_path())]
    if args.store:
        paths += [("store", Path(args.store)), ("secret", Path(args.store + ".secret"))]
    if args.secret_file:
        paths.append(("secret file", Path(args.secret_file)))
    for what, path in paths:
        where = path.resolve()
        for name, folder in (("output", dst), ("input", src)):
            if where.is_relative_to(folder.resolve()):
                raise UsageError(f"the {what} {path} must not be inside the {name} folder "
                                 "(it links originals to pseudonyms)")
    preview = getattr(args, "pixels_preview", None)
    for name, folder in (("output", dst), ("input", src)):
        if preview and Path(preview).resolve().is_relative_to(folder.resolve()):
            raise UsageError(f"--pixels-preview {preview} must not be inside the {name} folder "
                             "(its images show the burned-in text)")
    state_dir()  # a state folder others may write is refused now, before any output
    if args.store and Path(args.store).parent.is_dir():
        check_folder(Path(args.store).parent, "store's folder")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_mode_options(args: argparse.Namespace, mode: Mode) -> None:
    dumb_ops = args.empty or args.clear or args.remove or args.replace
    if mode is not Mode.DUMB and dumb_ops:
        raise UsageError("--empty/--clear/--remove/--replace need --dumb")
    profile_flags = (args.profile or args.profile_options or args.allow_burned_in
                     or args.pixels or args.pixels_preview)
    if mode is not Mode.DEIDENTIFY and (args.ciphers or args.irreversible or profile_flags):
        raise UsageError("cipher, profile (--profile, --retain-*, --clean-*, --pixels*, "
                         "--allow-burned-in) and --irreversible options apply to -e only")
    if mode is not Mode.DEIDENTIFY and (args.output_names or args.keep_names):
        raise UsageError("--output-names and --keep-names apply to -e only")
    if args.keep_names and args.output_names == "uid":
        raise UsageError("choose one: --output-names uid or --keep-names")
    if mode is Mode.REIDENTIFY and args.certificate:
        raise UsageError("-d needs the private key (-k), not a certificate")
    if args.new_secret and not args.secret_file:
        raise UsageError("--new-secret creates the --secret-file: name it")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be 0 (inline) or more, not {args.workers}")
    if args.dashboard and (args.workers == 0 or args.local_pool == "processes"):
        raise UsageError("--dashboard shows a dask cluster: not with --workers 0 or "
                         "--local-pool processes")
    _check_cluster_options(args)


def _check_cluster_options(args: argparse.Namespace) -> None:
    """The scheduler and cluster config exist and are reached with TLS (pipeline.tls).
    Their modules are imported only when one is named (dask's configuration, ~6 ms)."""
    if args.worker_timeout is not None and not args.worker_timeout > 0:
        raise UsageError(f"--worker-timeout must be a number of seconds > 0, "
                         f"not {args.worker_timeout:g}")
    address = args.scheduler
    if args.cluster:
        from pipeline.clusterconfig import load_cluster_config

        config = load_cluster_config(args.cluster)
        address = address or (config.address if config.kind == "scheduler" else None)
        _check_tls_folder(config.options.get("shared_temp_directory"))
    if address:
        from pipeline.tls import check_scheduler_address

        check_scheduler_address(address, args.insecure_scheduler)


def _check_tls_folder(shared: object) -> None:
    """The job queue's ``shared_temp_directory`` gets the run's TLS key (in a private
    folder made there): no one else may be able to swap that folder for theirs, so the
    folder and those above it are checked as the state folder's are (a sticky one such
    as ``/scratch`` is fine)."""
    if shared:
        folder = Path(os.path.expandvars(str(shared))).expanduser()
        check_ancestors(folder / "anonpipe-tls", "TLS certificates' folder")


def _cipher(args: argparse.Namespace) -> Cipher:
    chosen = sorted(set(args.ciphers or []))
    if len(chosen) > 1:
        raise UsageError(f"choose one cipher, got: {', '.join('--' + c for c in chosen)}")
    return Cipher(chosen[0]) if chosen else Cipher.AES256


def _secret(args: argparse.Namespace) -> bytes:
    """The run's HMAC secret.  One named with --secret-file must exist unless --new-secret
    (a typo would otherwise silently start another set of pseudonyms); the one beside a
    --store and the per-user one are made on first use.  A new secret is always said."""
    if args.secret_file:
        path, create = Path(args.secret_file), args.new_secret
    elif args.store:
        path, create = Path(args.store + ".secret"), True  # beside the store it keys
    else:
        path, create = default_secret_path(), True
    secret, created = load_secret(path, create=create)
    if created and (args.verbosity is None or args.verbosity >= 1):
        print(f"anonpipe: created a new secret in {path} (keep it: the same secret gives "
              "the same replacements)", file=sys.stderr)
    return secret


def _password(args: argparse.Namespace) -> bytes | None:
    """``-p``, ``--password-file`` (first line) or ``$ANONPIPE_PASSWORD``, in that order
    of precedence; one on the command line shows in the process list, so it is warned."""
    if args.password is not None and args.password_file is not None:
        raise UsageError("give the password once: -p or --password-file")
    if args.password is not None:
        if args.verbosity is None or args.verbosity >= 1:
            print(f"anonpipe: warning: -p shows the password to every user of this machine "
                  f"(ps); use --password-file or {PASSWORD_ENV}", file=sys.stderr)
        return os.fsencode(args.password)
    if args.password_file is not None:
        try:
            with open(args.password_file, "rb") as fh:
                text = fh.readline().rstrip(b"\r\n")
                shared = os.fstat(fh.fileno()).st_mode & (stat.S_IRGRP | stat.S_IROTH)
        except OSError as exc:
            raise UsageError(f"cannot read the password file {args.password_file}: "
                             f"{exc.strerror or exc}") from None
        if not text:
            raise UsageError(f"the password file {args.password_file} is empty")
        if shared and (args.verbosity is None or args.verbosity >= 1):
            print(f"anonpipe: warning: the password file {args.password_file} is readable "
                  f"by other users; run: chmod 600 {args.password_file}", file=sys.stderr)
        return text
    value = os.environ.get(PASSWORD_ENV)
    return os.fsencode(value) if value else None


def _certificates(args: argparse.Namespace) -> tuple[bytes, ...]:
    """Recipient certificates, refused when weak (RSA under 2048 bits, a key usage without
    keyEncipherment) unless --allow-weak-keys; an expired one is warned about."""
    certs = []
    for name in args.certificate or []:
        der = load_certificate(Path(name))
        refusals, warnings = recipient_problems(der)
        if refusals and not args.allow_weak_keys:
            raise UsageError(f"certificate {name} refused: {'; '.join(refusals)} "
                             "(--allow-weak-keys accepts it, for test keys)")
        if args.verbosity is None or args.verbosity >= 1:
            for warning in warnings:
                print(f"anonpipe: warning: certificate {name} {warning}", file=sys.stderr)
        certs.append(der)
    return tuple(certs)


def _root_uid(args: argparse.Namespace) -> str:
    root = args.root_uid or os.environ.get("GDCM_ROOT_UID") or DEFAULT_ROOT
    return validate_root(root)


def _operation(args: argparse.Namespace, mode: Mode) -> tuple[FileOperation, dict[str, object]]:
    """The per-file operation and the (PHI-free) options to echo in reports."""
    password = _password(args)
    if mode is Mode.DEIDENTIFY:
        spec, options = _profile(args)
        pixels, preview = _pixels(args)  # checked before a secret may be made
        encryptor = None
        fingerprints: list[str] = []
        if not args.irreversible:
            certs = _certificates(args)
            if not certs and password is None:
                raise UsageError("-e needs a certificate (-c) or a password (-p); "
                                 "use --irreversible to keep no encrypted payload")
            encryptor = EnvelopeEncryptor(certificates=certs, cipher=_cipher(args),
                                          password=password)
            fingerprints = [certificate_fingerprint(c) for c in certs]
        elif args.certificate or args.password is not None or args.password_file is not None:
            raise UsageError("--irreversible keeps no payload: drop -c/-p/--password-file")
        secret = _secret(args)
        settings = DeidentifySettings(secret=secret, root_uid=_root_uid(args), profile=spec,
                                      encryptor=encryptor, options=options,
                                      pixels=pixels, pixels_preview=preview)
        return Deidentify(settings), {
            # a name, or the YAML path for a site profile (scan workers load it by that)
            "profile": args.profile or DEFAULT_PROFILE,
            "profile_options": sorted(get_profile(spec, options).options),
            "allow_burned_in": pixels == "keep",
            "pixels": pixels,
            "irreversible": encryptor is None,
            "cipher": _cipher(args).value if encryptor else None,
            "certificates": fingerprints, "password_recipient": password is not None,
            "root_uid": settings.root_uid, "secret_fingerprint": secret_fingerprint(secret),
        }
    if mode is Mode.REIDENTIFY:
        from tasks.reidentify import Reidentify, ReidentifySettings

        key_pem = None
        if args.key is not None:
            key_pem = _read_key(Path(args.key), password)
        elif password is None:
            raise UsageError("-d needs the private key (-k) or the password (-p)")
        return Reidentify(ReidentifySettings(key_pem=key_pem, key_password=password,
                                             password=password)), {}
    from tasks.dumb import DumbEdit, DumbSettings, parse_dumb_ops, type1_warnings

    ops = parse_dumb_ops([_keyword_tag(t) for t in args.empty],
                         [_keyword_tag(t) for t in args.clear],
                         [_keyword_tag(t) for t in args.remove],
                         [_keyword_tag(t, replace=True) for t in args.replace])
    if not args.force and (args.verbosity is None or args.verbosity >= 1):
        for message in type1_warnings(ops):  # once per run, not once per file
            print(f"anonpipe: warning: {message}", file=sys.stderr)
    return DumbEdit(DumbSettings(ops=ops, force=args.force), warn=_already_warned), {
        "operations": len(ops)}


def _keyword_tag(text: str, replace: bool = False) -> str:
    """A dumb-mode tag given by its PS3.6 keyword (``PatientName``, ``PatientID=ANON``) as
    gdcmanon's ``g,e`` form; anything else is left to ``tasks.tagspec`` to check."""
    head, sep, value = text.partition("=") if replace else (text, "", "")
    name = head.strip()
    if not name.isidentifier():
        return text
    from tasks.datadict import keywords, tag_for_keyword

    tag = tag_for_keyword(name)
    if tag is None:
        import difflib

        close = difflib.get_close_matches(name, keywords(), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"{name} is no DICOM keyword (PS3.6){hint}; give the tag as g,e")
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}{sep}{value}"


def _already_warned(message: str) -> None:
    """Per-file Type 1 warnings were printed once for the run by :func:`_operation`."""


def _profile(args: argparse.Namespace) -> tuple[ProfileSpec, tuple[str, ...]]:
    """The validated profile and the Options from the command line (checked here, once)."""
    options = tuple(sorted(set(args.profile_options or ())))
    try:
        spec = load_profile(args.profile or DEFAULT_PROFILE)
        get_profile(spec, options)  # an option on a profile without Table E.1-1 fails now
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    return spec, options


def explain_settings(args: argparse.Namespace) -> DeidentifySettings:
    """Settings for ``--explain FILE``: the profile options, a throw-away secret."""
    if args.mode and {MODE_FLAGS[flag] for flag in args.mode} != {Mode.DEIDENTIFY}:
        raise UsageError("--explain describes de-identification (-e)")
    if args.explain and not Path(args.explain).exists():
        raise UsageError(f"Could not find file: {args.explain}")
    spec, options = _profile(args)
    pixels, _ = _pixels(args)
    return DeidentifySettings(secret=b"explain", profile=spec, options=options, pixels=pixels)


def _pixels(args: argparse.Namespace) -> tuple[str, str | None]:
    """The pixel policy (--allow-burned-in is --pixels keep) and the preview folder."""
    if args.allow_burned_in and args.pixels not in (None, "keep"):
        raise UsageError(f"--allow-burned-in is --pixels keep: not with --pixels {args.pixels}")
    policy = "keep" if args.allow_burned_in else (args.pixels or DEFAULT_PIXEL_POLICY)
    preview = args.pixels_preview
    if preview is not None:
        if policy != "clean":
            raise UsageError("--pixels-preview shows what --pixels clean blanks")
        if Path(preview).exists() and not Path(preview).is_dir():
            raise UsageError(f"--pixels-preview {preview} is not a directory")
        check_private_folder(Path(preview), "--pixels-preview folder")
        preview = str(Path(preview).resolve())
    return policy, preview


def _read_key(path: Path, password: bytes | None) -> bytes:
    """Load once in the driver so a bad key or passphrase fails before any file (and the
    operation and forked workers find it loaded: ``tasks.reidentify.checked_key``)."""
    from tasks.reidentify import checked_key

    return checked_key(path, password)


def _plan(args: argparse.Namespace) -> Path | None:
    if args.plan is None:
        return None
    if not args.dry_run:
        raise UsageError("--plan FILE goes with --dry-run")
    plan = Path(args.plan)
    if plan.exists() and plan.is_dir():
        raise UsageError(f"--plan {plan} is a folder")
    return plan


def _listed_files(args: argparse.Namespace, dst: Path) -> tuple[str, ...] | None:
    """The paths of ``--files-from LIST`` or ``--retry-failed`` (validated here, once)."""
    from pipeline.walk import check_listed

    if args.files_from and args.retry_failed:
        raise UsageError("choose --files-from or --retry-failed")
    if args.retry_failed:
        from pipeline.store import Store, job_store_path

        store = Path(args.store) if args.store else job_store_path(dst)
        if not store.exists():
            raise UsageError(f"--retry-failed: no store {store} (run without it first)")
        with Store(store, read_only=True) as opened:
            rels = tuple(opened.failed_paths())
        if not rels:
            raise UsageError("--retry-failed: the last run left no file unwritten")
        return rels
    if not args.files_from:
        return None
    try:
        text = Path(args.files_from).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"--files-from {args.files_from}: {exc.strerror or exc}") from None
    listed: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        rel = line.split("\t", 1)[0]
        if not rel.strip():
            continue
        why = check_listed(rel)
        if why is not None:  # the line number only: the path may hold a name
            raise UsageError(f"--files-from {args.files_from}, line {number}: {why}")
        listed.append(rel)
    if not listed:
        raise UsageError(f"--files-from {args.files_from} lists no file")
    return tuple(listed)


def _local_pool(kind: str | None, dashboard: bool) -> tuple[str, Tuning]:
    """The local workers and their tuning: the process pool by default (it starts in
    ~0.1 s and costs less CPU per file than a LocalCluster: 20,000 small files 1.3-1.5x
    faster on 2 cores, benchmarks/README.md), a dask LocalCluster when asked for or when
    its dashboard is wanted (pipeline.cluster).  ``--scheduler`` and ``--cluster`` always
    use dask."""
    if kind is None:
        kind = "dask" if dashboard else "processes"
    if kind == "processes":
        return "processes", Tuning(inline_below=PROCESSES_INLINE_BELOW,
                                   inline_below_bytes=PROCESSES_INLINE_BELOW_BYTES)
    return "dask", Tuning()


def _tree_job(args: argparse.Namespace, mode: Mode, src: Path, dst: Path,
              operation: FileOperation, verbosity: int, extra: dict[str, object]) -> TreeJob:
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"Could not create directory since {dst} is already a file")
    local_pool, tuning = _local_pool(args.local_pool, bool(args.dashboard))
    return TreeJob(
        mode=mode, input=src, output=dst, operation=operation,
        recursive=args.recursive, continue_on_error=args.continue_on_error,
        follow_symlinks=args.follow_symlinks,
        store=Path(args.store) if args.store else None,
        workers=args.workers, scheduler=args.scheduler, cluster=args.cluster,
        output_names=args.output_names or "mirror", keep_names=args.keep_names,
        force=args.force, sync=args.sync,
        insecure_scheduler=args.insecure_scheduler, worker_timeout=args.worker_timeout,
        scan_only=args.scan_only, dry_run=args.dry_run, verbosity=verbosity,
        dashboard="127.0.0.1:0" if args.dashboard else None,
        local_pool=local_pool, tuning=tuning,
        report_options={"mode": mode.value, "recursive": args.recursive,
                        "continue": args.continue_on_error, **extra},
    )
