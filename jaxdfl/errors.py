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

    print(f"jaxdfl: warning: {message}", file=sys.stderr)


class Diverged(Exception):
    """A run stopped because a device's loss or adapter went non-finite (``on_nonfinite: stop``); the CLI
    prints the message and exits with status 3."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM after saving what it could: ``out`` holds round ``saved_round``
    (None: nothing saved) of ``rounds``."""

    def __init__(self, out, saved_round: int | None, rounds: int):
        super().__init__(f"interrupted; {out} holds round {saved_round} of {rounds}")
        self.out, self.saved_round, self.rounds = out, saved_round, rounds
