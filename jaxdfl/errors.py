"""Errors a user can cause and fix. The CLI prints them as one line and exits 2."""


class UserError(Exception):
    """A mistake in what the user asked for (bad config, missing file, infeasible constraint)."""


class ConfigError(UserError):
    """A config key is unknown or its value is not allowed. The message names the key path."""


class ModelError(UserError):
    """A model file or a model's own config that jaxdfl cannot read or does not support (names the file)."""
