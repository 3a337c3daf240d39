"Errors a user can fix: the CLI prints their one-line message and exits with code 2."
import errno
import re
from contextlib import contextmanager


class Message(Exception):
    "An exception whose str is its message as given."

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # fastai rewrites the args of errors raised in callbacks ("Exception occured in ..."); keep ours clean
        return self.message


class FxpError(Message):
    "Bad input: the message says what was wrong, where, and how to fix it."


class ConfigError(FxpError):
    "The composed config is invalid (unknown key or choice, wrong type or value)."


class SweepStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a sweep (fxp.sweeps): a KeyboardInterrupt, so Hydra lets it through and the job it
    reaches ends `interrupted`; its message says where the sweep stands and how to go on (exit code 130)."""


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
        interrupt = interrupt_under(e)
        if interrupt is not None:  # a Ctrl-C that the library's clean-up turned into an error of its own
            raise interrupt from None
        why = [f"{type(x).__name__}: {str(x).strip().splitlines()[0]}"
               for x in (e, e.__cause__) if x is not None and str(x).strip()]
        raise ConfigError(f"{key} cannot be built: {'; '.join(why) or type(e).__name__}") from e


def interrupt_under(e: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that `e` was raised from or while handling, if any: a Ctrl-C that a library's clean-up
    turned into its own error (OmegaConf, interrupted half-way through a list, trips on it as it restores its flags)."""
    todo, seen = [e], set()
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        if isinstance(x, KeyboardInterrupt):
            return x
        seen.add(id(x))
        todo += [x.__cause__, x.__context__]
    return None


# the place's, not fxp's: read-only, not allowed, full, not there (a folder), not a folder, a folder
CANNOT_WRITE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR,
                errno.EISDIR}


@contextmanager
def writing(dest, command: str, fix: str = "give a file in a folder you can write to"):
    """Writes into `dest` (a file or a folder): a place that cannot be written (a read-only mount, no permission, a
    full disk, a missing folder) is one line naming it and `fix`, not a traceback. Only writes go in the block."""
    try:
        yield
    except OSError as e:
        if e.errno not in CANNOT_WRITE:
            raise
        raise FxpError(f"{command}: cannot write {dest} ({e.strerror}); {fix}") from None


RUN_COPY = "copy the run folder where you can write (cp -r) and give the copy"


def check_writable(folder, command: str, fix: str = RUN_COPY) -> None:
    """One line now, before any work, if `folder` cannot be written (a read-only mount, no permission): a file made
    and removed there, as the command's own writes would be."""
    import tempfile

    with writing(f"in {folder}", command, fix):
        tempfile.TemporaryFile(dir=folder).close()


class Diverged(FxpError):
    "The loss became NaN or infinite."


class Pruned(Message):
    "An Optuna trial the study's pruner stopped after an epoch: the run ends as `pruned`, which is no error."


# fastai's Callback.__call__ replaces the message of whatever a callback raises with this header and the old message
FASTAI_WRAPPED = re.compile(r"Exception occured in `(\w+)` when calling event `(\w+)`:\s*(.*)", re.S)


def describe(e: BaseException) -> str:
    """An unforeseen error in one line: its type and first line. fastai's wrapper of a callback's error is taken off
    (the callback and event kept at the end), as it leaves only its header on the first line; an OSError keeps its
    own text (errno, strerror, file), which the wrapper replaced with the errno alone."""
    text = str(e).strip()
    if isinstance(e, OSError) and e.strerror:
        text = str(OSError(e.errno, e.strerror, *[f for f in (e.filename, e.filename2) if f is not None]))
    wrapped = FASTAI_WRAPPED.match(str(e.args[0]) if e.args else "")
    where = f" (in {wrapped[1]}.{wrapped[2]})" if wrapped else ""
    if wrapped and not (isinstance(e, OSError) and e.strerror):
        text = wrapped[3].strip()
    return f"{type(e).__name__}: {(text.splitlines() or [''])[0]}{where}"
