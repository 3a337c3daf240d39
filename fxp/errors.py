"Errors a user can fix: the CLI prints their one-line message and exits with code 2."


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


class Diverged(FxpError):
    "The loss became NaN or infinite."
