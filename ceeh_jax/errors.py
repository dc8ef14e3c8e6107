"""The one base class of errors caused by the user's input, not by a bug.

A bad config value, a misspelled key, a missing file, a data row that cannot be read, a
checkpoint written for other data: each module raises its own subclass (`ConfigError`,
`DataError`, ...) with a message that names what to fix. `ceeh_jax.main` prints such an error
as one line, `error: <message>`, and exits 2; anything else is a bug and keeps its traceback.
A `RunError` (the run itself went wrong, e.g. its updates turned non-finite) is printed the
same way and exits 1.
"""


class UserError(Exception):
  """Bad input (config, data, files): reported as `error: <message>`, exit status 2."""


class RunError(Exception):
  """A run that failed on its own terms (persistent NaN updates, a final state that is not
  finite or whose accuracy collapsed): reported as `error: <message>`, exit status 1."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or directory the user named (model, tokenizer, data, results) does not exist.

  Still a FileNotFoundError, so callers that catch that keep working.
  """
