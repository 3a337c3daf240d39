"Errors a user can fix: the CLI prints their one-line message and exits with code 2."
from contextlib import contextmanager


class FxpError(Exception):
    "Bad input: the message says what was wrong, where, and how to fix it."

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # fastai rewrites the args of errors raised in callbacks ("Exception occured in ..."); keep ours clean
        return self.message


class ConfigError(FxpError):
    "The composed config is invalid (unknown key or choice, wrong type or value)."


@contextmanager
def building(key: str):
    """Build what the config's `key` names (an architecture's dotted path, a `_target_` node): whatever fails there
    is the config's (a name that is not there, an argument it does not take, a value it refuses), one line naming
    the key, not a crash."""
    try:
        yield
    except FxpError:
        raise
    except Exception as e:
        why = [f"{type(x).__name__}: {str(x).strip().splitlines()[0]}"
               for x in (e, e.__cause__) if x is not None and str(x).strip()]
        raise ConfigError(f"{key} cannot be built: {'; '.join(why) or type(e).__name__}") from e


class Diverged(FxpError):
    "The loss became NaN or infinite."
