"""Running the `sicog` command in-process as a user would, with what it printed."""


def sicog(*argv: str) -> tuple[int, str]:
    """Run `sicog ARGV` in-process: (exit status, what it printed to stderr or exited with)."""
    import contextlib
    import io

    from sicog.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:  # argparse errors and the commands' own one-line exits
            rc = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str):
                err.write(e.code)
    return rc, err.getvalue()
