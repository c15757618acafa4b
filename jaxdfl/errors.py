"""Errors a user can cause and fix. The CLI prints them as one line and exits 2."""


class UserError(Exception):
    """A mistake in what the user asked for (bad config, missing file, infeasible constraint)."""


class ConfigError(UserError):
    """A config key is unknown or its value is not allowed. The message names the key path."""


class ModelError(UserError):
    """A model file or a model's own config that jaxdfl cannot read or does not support (names the file)."""


def warn(message: str) -> None:
    """One line on stderr for a value that is legal but almost surely a mistake (the run goes on)."""
    import sys

    print(f"jaxdfl: warning: {one_line(message)}", file=sys.stderr)


# Every character ``str.splitlines`` breaks a line at, shown as its escape (``\\n``, ``\\x1e``, ...).
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message) -> str:
    """The message with its line breaks escaped, so it prints as one line (a value from the user may hold some)."""
    return str(message).translate(_LINE_BREAKS)


class Diverged(Exception):
    """A run stopped because a device's loss or adapter went non-finite (``on_nonfinite: stop``); the CLI
    prints the message and exits with status 3."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM after saving what it could: ``out`` holds round ``saved_round``
    (None: nothing saved) of ``rounds``."""

    def __init__(self, out, saved_round: int | None, rounds: int):
        super().__init__(f"interrupted; {out} holds round {saved_round} of {rounds}")
        self.out, self.saved_round, self.rounds = out, saved_round, rounds
